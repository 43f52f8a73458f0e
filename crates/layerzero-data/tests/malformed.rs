//! Malformed data sets give the documented errors, naming the file and the offending values.

mod support;

use layerzero_data::{read_batch_file, CifarSet, DataError, Dataset, Split};

#[test]
fn missing_file_is_named_with_how_to_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let err = CifarSet::load(dir.path(), Dataset::Cifar10, Split::Test).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::MissingFile { .. }), "{msg}");
    assert!(msg.contains("batches.meta.txt"), "{msg}");
    assert!(msg.contains("layerzero data fetch"), "{msg}");
}

#[test]
fn missing_batch_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    support::write_cifar10_dir(dir.path());
    std::fs::remove_file(dir.path().join("data_batch_3.bin")).unwrap();
    let err = CifarSet::load(dir.path(), Dataset::Cifar10, Split::Train).unwrap_err();
    assert!(err.to_string().contains("data_batch_3.bin"), "{err}");
}

#[test]
fn truncated_file_reports_size_and_record_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test_batch.bin");
    let mut bytes = support::records(3, 0);
    bytes.truncate(3 * 3073 - 100);
    std::fs::write(&path, &bytes).unwrap();
    let err = read_batch_file(&path, Dataset::Cifar10).unwrap_err();
    match &err {
        DataError::BadFileSize {
            path: p,
            size,
            record_size,
            ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(*size, (3 * 3073 - 100) as u64);
            assert_eq!(*record_size, 3073);
        }
        other => panic!("expected BadFileSize, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("test_batch.bin") && msg.contains("9119") && msg.contains("3073"),
        "{msg}"
    );
}

#[test]
fn label_out_of_range_reports_file_record_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_1.bin");
    let mut bytes = support::records(5, 0);
    bytes[3 * 3073] = 42; // record 3's label
    std::fs::write(&path, &bytes).unwrap();
    let err = read_batch_file(&path, Dataset::Cifar10).unwrap_err();
    match err {
        DataError::LabelOutOfRange {
            index, value, max, ..
        } => {
            assert_eq!((index, value, max), (3, 42, 9));
        }
        other => panic!("expected LabelOutOfRange, got {other}"),
    }
}

#[test]
fn cifar100_fine_label_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.bin");
    let mut rec = vec![3u8, 150];
    rec.extend(std::iter::repeat_n(0u8, 3072));
    std::fs::write(&path, &rec).unwrap();
    let err = read_batch_file(&path, Dataset::Cifar100).unwrap_err();
    assert!(err.to_string().contains("fine label 150"), "{err}");
}

#[test]
fn shortened_split_reports_expected_and_found_counts() {
    let dir = tempfile::tempdir().unwrap();
    support::write_cifar10_dir(dir.path());
    // A whole number of records, but fewer than the official 10,000.
    std::fs::write(
        dir.path().join("test_batch.bin"),
        support::records(9_999, 0),
    )
    .unwrap();
    let err = CifarSet::load(dir.path(), Dataset::Cifar10, Split::Test).unwrap_err();
    match err {
        DataError::WrongRecordCount {
            expected, found, ..
        } => assert_eq!((expected, found), (10_000, 9_999)),
        other => panic!("expected WrongRecordCount, got {other}"),
    }
}

#[test]
fn valid_synthetic_set_loads_from_root_or_folder() {
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("cifar-10-batches-bin");
    support::write_cifar10_dir(&folder);
    for dir in [root.path(), folder.as_path()] {
        let set = CifarSet::load(dir, Dataset::Cifar10, Split::Train).unwrap();
        assert_eq!(set.len(), 50_000);
        assert_eq!(set.class_counts(), vec![5_000; 10]);
        assert_eq!(set.image(17)[0], 17);
        assert_eq!(set.class_names()[9], "truck");
    }
}

/// The hint names a command that fetches that data set: `cargo xtask fetch` only fetches
/// CIFAR-10, so it is not offered for CIFAR-100.
#[test]
fn missing_file_hint_names_a_command_for_that_data_set() {
    let dir = tempfile::tempdir().unwrap();
    let msg = |dataset| {
        CifarSet::load(dir.path(), dataset, Split::Test)
            .unwrap_err()
            .to_string()
    };
    let cifar10 = msg(Dataset::Cifar10);
    assert!(
        cifar10.contains("`layerzero data fetch --dataset cifar10`")
            && cifar10.contains("`cargo xtask fetch`"),
        "{cifar10}"
    );
    let cifar100 = msg(Dataset::Cifar100);
    assert!(
        cifar100.contains("fine_label_names.txt")
            && cifar100.contains("`layerzero data fetch --dataset cifar100`"),
        "{cifar100}"
    );
    assert!(!cifar100.contains("xtask"), "{cifar100}");
}
