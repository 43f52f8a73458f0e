//! Archive extraction never writes outside its destination: `..` components, absolute paths,
//! symbolic and hard links (inside or pointing out of the destination) are refused with an
//! error naming the archive and the entry. Also replays the inputs that ever crashed the
//! `archive_extract` and `cifar_record` fuzz targets (`tests/data/fuzz-regressions/`).

mod support;

use std::io::Write;
use std::path::Path;

use layerzero_data::{extract_archive, parse_batch, DataError, Dataset};

/// A `.tar.gz` of one entry with a raw name, type and link target.
fn one_entry(name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    // `set_path` / `set_link_name` refuse unsafe names; write the raw bytes.
    let old = header.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        old.linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    header.set_cksum();
    tar.append(&header, data).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

/// The names directly in `dir`, sorted.
fn top_level(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

fn extract(bytes: &[u8], root: &Path) -> Result<(), DataError> {
    let archive = root.join("a.tar.gz");
    std::fs::write(&archive, bytes).unwrap();
    let dest = root.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    extract_archive(&archive, &dest)
}

#[test]
fn unsafe_entries_are_refused_and_named() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target.txt");
    let abs = outside.path().join("abs.txt");
    let cases = [
        ("../escaped.txt", tar::EntryType::Regular, None, "`..`"),
        ("a/../../escaped.txt", tar::EntryType::Regular, None, "`..`"),
        (
            abs.to_str().unwrap(),
            tar::EntryType::Regular,
            None,
            "absolute",
        ),
        (
            "link",
            tar::EntryType::Symlink,
            Some(target.to_str().unwrap()),
            "links",
        ),
        (
            "link",
            tar::EntryType::Symlink,
            Some("../target.txt"),
            "links",
        ),
        ("link", tar::EntryType::Symlink, Some("inside.txt"), "links"),
        (
            "hard",
            tar::EntryType::Link,
            Some(target.to_str().unwrap()),
            "links",
        ),
    ];
    for (name, kind, link, reason) in cases {
        let root = tempfile::tempdir().unwrap();
        let err = extract(&one_entry(name, kind, link, b"gotcha"), root.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DataError::UnsafeArchiveEntry { .. }),
            "{name}: {msg}"
        );
        assert!(msg.contains("a.tar.gz") && msg.contains(name), "{msg}");
        assert!(msg.contains(reason), "{name}: {msg}");
        assert!(
            support::listing(&root.path().join("dest")).is_empty(),
            "{name}"
        );
        assert!(!root.path().join("escaped.txt").exists());
        assert!(!abs.exists() && !target.exists(), "{name} wrote outside");
    }
}

/// One header declaring 2 GiB, then nothing: refused on the declared size, before any byte
/// of it is written.
#[test]
fn an_archive_declaring_more_than_the_cap_is_refused_before_writing() {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header
        .set_path("cifar-10-batches-bin/data_batch_1.bin")
        .unwrap();
    header.set_size(layerzero_data::MAX_EXTRACTED_BYTES + 1);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.get_mut().write_all(header.as_bytes()).unwrap();
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let root = tempfile::tempdir().unwrap();
    let e = extract(&bytes, root.path()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::UnsafeArchiveEntry { .. }), "{msg}");
    assert!(
        msg.contains("1 GiB") && msg.contains("data_batch_1.bin"),
        "{msg}"
    );
    assert!(top_level(&root.path().join("dest")).is_empty());
}

#[test]
fn damaged_archives_are_errors_naming_the_archive() {
    let good = support::tar_gz(&[("d/x.bin", vec![7; 3000])]);
    for bytes in [
        good[..good.len() / 2].to_vec(),
        b"not a gzip stream".to_vec(),
        Vec::new(),
    ] {
        let root = tempfile::tempdir().unwrap();
        match extract(&bytes, root.path()) {
            // An empty or cut gzip stream may read as an empty archive; a cut one may also
            // fail. Either way, nothing escapes and no error goes unnamed.
            Ok(()) => {}
            Err(e) => assert!(e.to_string().contains("a.tar.gz"), "{e}"),
        }
        assert_eq!(
            top_level(root.path()),
            ["a.tar.gz", "dest"],
            "extraction wrote beside its destination"
        );
    }
    let root = tempfile::tempdir().unwrap();
    extract(&good, root.path()).unwrap();
    assert_eq!(
        std::fs::read(root.path().join("dest/d/x.bin")).unwrap(),
        vec![7; 3000]
    );
}

/// Every file in `tests/data/fuzz-regressions/<target>/` (inputs that once crashed a fuzz
/// target) and in the target's seeds (`fuzz/seeds/<target>/`), to be fed to the same code
/// again: each must give a result, not a panic.
fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = [
        crate_dir.join("tests/data/fuzz-regressions").join(target),
        crate_dir.join("../../fuzz/seeds").join(target),
    ];
    let mut v: Vec<_> = dirs
        .iter()
        .flat_map(std::fs::read_dir)
        .flatten()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn fuzz_regressions_give_errors_not_panics() {
    assert!(!regressions("archive_extract").is_empty() && !regressions("cifar_record").is_empty());
    for (name, bytes) in regressions("archive_extract") {
        let root = tempfile::tempdir().unwrap();
        let _ = extract(&bytes, root.path());
        assert_eq!(top_level(root.path()), ["a.tar.gz", "dest"], "{name}");
    }
    for (name, bytes) in regressions("cifar_record") {
        for dataset in [Dataset::Cifar10, Dataset::Cifar100] {
            let _ = parse_batch(&bytes, Path::new(&name), dataset);
        }
    }
}

#[test]
fn a_missing_local_archive_is_named_as_an_archive_not_as_data() {
    use layerzero_data::{fetch, Location, Source};
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.tar.gz");
    let src = Source::new(Dataset::Cifar10).with_location(Location::Archive(missing.clone()));
    let err = fetch(&dir.path().join("data"), &src).unwrap_err();
    assert!(matches!(err, DataError::MissingArchive { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("nowhere.tar.gz: archive not found") && msg.contains("--archive"),
        "{msg}"
    );
    // Not the hint for a missing data set, which would send the user to fetch again.
    assert!(!msg.contains("layerzero data fetch"), "{msg}");
}
