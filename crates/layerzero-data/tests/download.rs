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
