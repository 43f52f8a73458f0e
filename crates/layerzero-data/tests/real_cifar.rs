//! The readers against the real CIFAR-10 archive named by `LAYERZERO_CIFAR10_ARCHIVE`
//! (CI points it at `../shared/data/cifar-10-binary.tar.gz`); skipped, with the reason printed,
//! when the variable is not set.

use std::path::PathBuf;

use layerzero_data::{fetch, info, CifarSet, Dataset, FetchOutcome, Location, Source, Split};

fn real_archive() -> Option<PathBuf> {
    match std::env::var_os("LAYERZERO_CIFAR10_ARCHIVE") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!(
                "skipped: set LAYERZERO_CIFAR10_ARCHIVE=/path/to/cifar-10-binary.tar.gz to run the \
                 tests against the real data set"
            );
            None
        }
    }
}

#[test]
fn real_cifar10_has_the_official_counts() {
    let Some(archive) = real_archive() else {
        return;
    };
    // Extract into a private folder: this test also checks a fresh extraction.
    let dest = tempfile::tempdir().unwrap();
    let src = Source::new(Dataset::Cifar10).with_location(Location::Archive(archive));
    let outcome = fetch(dest.path(), &src).unwrap();
    assert!(matches!(outcome, FetchOutcome::Fetched(_)));

    let train = CifarSet::load(dest.path(), Dataset::Cifar10, Split::Train).unwrap();
    let test = CifarSet::load(dest.path(), Dataset::Cifar10, Split::Test).unwrap();
    assert_eq!(train.len(), 50_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.class_counts(), vec![5_000; 10]);
    assert_eq!(test.class_counts(), vec![1_000; 10]);
    assert_eq!(train.class_names()[0], "airplane");
    assert_eq!(train.class_names()[9], "truck");
    // Real photographs are not constant images.
    let img = test.image(0);
    assert!(img.iter().any(|&p| p != img[0]));

    let summary = info(dest.path(), Dataset::Cifar10).unwrap();
    assert_eq!(summary.splits[0].records, 50_000);
    assert_eq!(summary.splits[0].files.len(), 5);
    assert!(summary.splits[1].files[0].sha256.len() == 64);

    // Idempotent: a second fetch reuses what is there.
    let again = fetch(dest.path(), &src).unwrap();
    assert!(matches!(again, FetchOutcome::AlreadyPresent(_)));
}
