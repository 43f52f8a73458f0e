//! The downloader against a loopback HTTP server: success, checksum mismatch, a body cut short,
//! HTTP 404, an archive without the data set, path traversal — and nothing left behind on failure.

mod support;

use std::sync::{Arc, OnceLock};

use layerzero_data::{fetch, Checksum, DataError, Dataset, FetchOutcome, Location, Source};
use sha2::{Digest, Sha256};
use support::{listing, Reply, TestServer};

fn archive() -> Arc<Vec<u8>> {
    static ARCHIVE: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| Arc::new(support::synthetic_cifar10_archive()))
        .clone()
}

fn source(url: &str, checksum: Option<Checksum>) -> Source {
    Source {
        dataset: Dataset::Cifar10,
        location: Location::Url(url.to_string()),
        checksum,
        progress: false,
    }
}

#[test]
fn download_with_correct_checksum_installs_and_is_reused_offline() {
    let body = archive();
    let sha = hex::encode(Sha256::digest(body.as_slice()));
    let server = TestServer::start(Reply::Body(body), 4);
    let dest = tempfile::tempdir().unwrap();
    let data = dest.path().join("data");
    let src = source(&server.url, Some(Checksum::sha256(&sha).unwrap()));

    let outcome = fetch(&data, &src).unwrap();
    assert_eq!(
        outcome,
        FetchOutcome::Fetched(data.join("cifar-10-batches-bin"))
    );
    let set = layerzero_data::CifarSet::load(&data, Dataset::Cifar10, layerzero_data::Split::Test)
        .unwrap();
    assert_eq!(set.len(), 10_000);
    // The archive is kept, no temporary file or folder is.
    let files = listing(&data);
    assert!(files
        .iter()
        .all(|f| !f.contains(".part") && !f.contains(".extract")));
    assert!(files.contains(&"cifar-10-binary.tar.gz".to_string()));
    assert_eq!(server.requests(), 1);

    // A second fetch finds the valid data set and does not touch the network.
    let again = fetch(&data, &src).unwrap();
    assert!(matches!(again, FetchOutcome::AlreadyPresent(_)));
    assert_eq!(server.requests(), 1);
}

#[test]
fn checksum_mismatch_is_named_and_leaves_nothing() {
    let server = TestServer::start(Reply::Body(archive()), 2);
    let dest = tempfile::tempdir().unwrap();
    let data = dest.path().join("data");
    // No checksum given: a mirror is checked against the official MD5, which the synthetic
    // archive cannot match.
    let err = fetch(&data, &source(&server.url, None)).unwrap_err();
    match &err {
        DataError::ChecksumMismatch {
            algorithm,
            expected,
            found,
            ..
        } => {
            assert_eq!(*algorithm, "md5");
            assert_eq!(expected, "c32a1d4ab5d03f1284b67883e8d87530");
            assert_eq!(found.len(), 32);
        }
        other => panic!("expected a checksum mismatch, got {other}"),
    }
    assert!(err.to_string().contains("c32a1d4ab5d03f1284b67883e8d87530"));
    assert!(!data.exists(), "left behind: {:?}", listing(&data));
}

#[test]
fn body_cut_short_is_reported_and_leaves_nothing() {
    let body = archive();
    let half = body.len() / 2;
    let server = TestServer::start(Reply::CutShort(body.clone(), half), 2);
    let dest = tempfile::tempdir().unwrap();
    let data = dest.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let err = fetch(&data, &source(&server.url, None)).unwrap_err();
    match err {
        DataError::Truncated {
            expected, received, ..
        } => {
            assert_eq!(expected, body.len() as u64);
            assert!(received < expected);
        }
        other => panic!("expected a truncated download, got {other}"),
    }
    assert!(
        listing(&data).is_empty(),
        "left behind: {:?}",
        listing(&data)
    );
}

#[test]
fn http_404_is_reported_and_leaves_nothing() {
    let server = TestServer::start(Reply::NotFound, 2);
    let dest = tempfile::tempdir().unwrap();
    let data = dest.path().join("data");
    let err = fetch(&data, &source(&server.url, None)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Http { .. }), "{msg}");
    assert!(msg.contains("404"), "{msg}");
    assert!(msg.contains(&server.url), "{msg}");
    assert!(!data.exists());
}

#[test]
fn archive_without_the_data_set_is_refused() {
    let wrong = support::tar_gz(&[("something-else/readme.txt", b"hello".to_vec())]);
    let sha = hex::encode(Sha256::digest(&wrong));
    let server = TestServer::start(Reply::Body(Arc::new(wrong)), 2);
    let dest = tempfile::tempdir().unwrap();
    let data = dest.path().join("data");
    let err = fetch(&data, &source(&server.url, Some(Checksum::Sha256(sha)))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::ArchiveContents { .. }), "{msg}");
    assert!(msg.contains("cifar-10-batches-bin"), "{msg}");
    assert!(msg.contains("something-else/readme.txt"), "{msg}");
    assert!(!data.join("cifar-10-batches-bin").exists());
    assert!(listing(&data).iter().all(|f| f == "cifar-10-binary.tar.gz"));
}

#[test]
fn threads_fetching_into_one_folder_at_once_all_get_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&path, support::synthetic_cifar10_archive()).unwrap();
    let data = dir.path().join("data");
    // Before, every call of a process extracted into the same `.extract-cifar10-PID` folder.
    std::thread::scope(|s| {
        let fetches: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let src = source("unused", None).with_location(Location::Archive(path.clone()));
                    fetch(&data, &src).map(|set| set.dir().to_path_buf())
                })
            })
            .collect();
        for f in fetches {
            let dir = f.join().unwrap().unwrap();
            assert_eq!(dir, data.join("cifar-10-batches-bin"));
        }
    });
    let left = listing(&data);
    assert!(left.iter().all(|f| !f.contains(".extract")), "{left:?}");
}

#[test]
fn local_archive_with_path_traversal_is_refused() {
    let evil = support::tar_gz(&[("../escaped.txt", b"gotcha".to_vec())]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.tar.gz");
    std::fs::write(&path, evil).unwrap();
    let data = dir.path().join("data");
    let src = source("unused", None).with_location(Location::Archive(path));
    let err = fetch(&data, &src).unwrap_err();
    assert!(matches!(err, DataError::UnsafeArchiveEntry { .. }), "{err}");
    assert!(!dir.path().join("escaped.txt").exists());
    assert!(!data.exists());
}

#[test]
fn bad_sha256_option_is_refused() {
    let err = Checksum::sha256("abc").unwrap_err();
    assert!(err.to_string().contains("64 hexadecimal digits"), "{err}");
}

/// `--dir data/cifar-10-batches-bin` names the data set's folder itself, which the loaders accept:
/// a valid set there is found without touching the network or the archive, whatever the folder
/// is called, and nothing is nested inside it.
#[test]
fn a_valid_set_in_the_folder_given_is_reused_without_network_or_archive() {
    let root = tempfile::tempdir().unwrap();
    for name in ["cifar-10-batches-bin", "my-cifar"] {
        let folder = root.path().join("d1").join(name);
        support::write_cifar10_dir(&folder);
        let before = listing(&folder);
        // A server that would serve a good archive: any request it gets is a failure.
        let server = TestServer::start(Reply::Body(archive()), 1);
        let sha = hex::encode(Sha256::digest(archive().as_slice()));
        let by_url = source(&server.url, Some(Checksum::sha256(&sha).unwrap()));
        assert_eq!(
            fetch(&folder, &by_url).unwrap(),
            FetchOutcome::AlreadyPresent(folder.clone()),
            "{name}"
        );
        assert_eq!(server.requests(), 0, "{name}");
        // An archive that is not there is not even looked at.
        let by_archive = source("unused", None)
            .with_location(Location::Archive(root.path().join("nowhere.tar.gz")));
        assert_eq!(
            fetch(&folder, &by_archive).unwrap(),
            FetchOutcome::AlreadyPresent(folder.clone()),
            "{name}"
        );
        assert_eq!(listing(&folder), before, "{name}: the folder changed");
    }
}

/// The batch files in `dir` itself (not nested), and nothing temporary.
fn assert_installed_in_place(dir: &std::path::Path) {
    assert!(
        !dir.join("cifar-10-batches-bin").exists(),
        "nested: {:?}",
        listing(dir)
    );
    let files = listing(dir);
    assert!(
        files
            .iter()
            .all(|f| !f.contains(".part") && !f.contains(".extract")),
        "{files:?}"
    );
    for split in [layerzero_data::Split::Train, layerzero_data::Split::Test] {
        let set = layerzero_data::CifarSet::load(dir, Dataset::Cifar10, split).unwrap();
        assert_eq!(set.dir(), dir);
    }
}

/// An empty, a missing or a partial folder named like the data set's folder gets the data set
/// extracted into it, not into a second `cifar-10-batches-bin/` inside it; files of the user's
/// there stay, earlier broken batch files are replaced.
#[test]
fn a_folder_named_like_the_data_set_is_filled_in_place() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&path, archive().as_slice()).unwrap();
    let by_archive = source("unused", None).with_location(Location::Archive(path));

    for case in ["empty", "missing", "partial"] {
        let folder = root.path().join(case).join("cifar-10-batches-bin");
        match case {
            "empty" => std::fs::create_dir_all(&folder).unwrap(),
            "missing" => {}
            _ => {
                support::write_cifar10_dir(&folder);
                std::fs::remove_file(folder.join("data_batch_3.bin")).unwrap();
                std::fs::write(folder.join("test_batch.bin"), b"cut short").unwrap();
                std::fs::write(folder.join("notes.txt"), b"mine").unwrap();
            }
        }
        assert_eq!(
            fetch(&folder, &by_archive).unwrap(),
            FetchOutcome::Fetched(folder.clone()),
            "{case}"
        );
        assert_installed_in_place(&folder);
        if case == "partial" {
            assert_eq!(std::fs::read(folder.join("notes.txt")).unwrap(), b"mine");
        }
        // And it is found there next time.
        assert_eq!(
            fetch(&folder, &by_archive).unwrap(),
            FetchOutcome::AlreadyPresent(folder.clone()),
            "{case}"
        );
    }
}

/// The same with a download: the archive is kept in the folder given, and reused.
#[test]
fn a_download_into_a_folder_named_like_the_data_set_is_extracted_in_place() {
    let body = archive();
    let sha = hex::encode(Sha256::digest(body.as_slice()));
    let server = TestServer::start(Reply::Body(body), 2);
    let root = tempfile::tempdir().unwrap();
    let folder = root.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&folder).unwrap();
    let src = source(&server.url, Some(Checksum::sha256(&sha).unwrap()));
    assert_eq!(
        fetch(&folder, &src).unwrap(),
        FetchOutcome::Fetched(folder.clone())
    );
    assert_installed_in_place(&folder);
    assert!(folder.join("cifar-10-binary.tar.gz").is_file());
    assert_eq!(
        fetch(&folder, &src).unwrap(),
        FetchOutcome::AlreadyPresent(folder.clone())
    );
    assert_eq!(server.requests(), 1);
}

/// A data root (any other name, empty or holding other things) still gets the nested folder.
#[test]
fn a_data_root_still_gets_the_nested_folder() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&path, archive().as_slice()).unwrap();
    let by_archive = source("unused", None).with_location(Location::Archive(path));
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("readme.txt"), b"mine").unwrap();
    let nested = data.join("cifar-10-batches-bin");
    assert_eq!(
        fetch(&data, &by_archive).unwrap(),
        FetchOutcome::Fetched(nested.clone())
    );
    assert!(!data.join("test_batch.bin").exists());
    assert_eq!(
        fetch(&data, &by_archive).unwrap(),
        FetchOutcome::AlreadyPresent(nested)
    );
}
