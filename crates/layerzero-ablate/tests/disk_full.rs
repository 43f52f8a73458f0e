//! A full disk while writing `results.json` (and its CSV): an error naming the file, the
//! previous good files intact, no temporary file left behind.
//!
//! The full disk is simulated with `RLIMIT_FSIZE` in a child process (this test binary run
//! again, with `SIGXFSZ` ignored so an oversized write fails with `EFBIG` instead of killing
//! the process); the child is the `#[ignore]`d `child_results` test.

mod common;

use layerzero_ablate::{AblationMode, ResultsFile};
use layerzero_testkit::disk_full::{child_dir, listing, run_limited};

#[test]
#[ignore = "child of results_write_on_a_full_disk_keeps_the_previous_files"]
fn child_results() {
    let dir = child_dir();
    let mut r = common::unsharded(AblationMode::ZeroKernel, &[0.1, 0.5, 0.9]);
    r.elapsed_s = 7.0;
    let err = r.write(dir.join("results.json")).unwrap_err();
    println!("error: {err}");
}

#[test]
fn results_write_on_a_full_disk_keeps_the_previous_files() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let small = common::unsharded(AblationMode::ZeroKernel, &[]);
    small.write(&json).unwrap();
    let (good_json, good_csv) = (
        std::fs::read(&json).unwrap(),
        std::fs::read(dir.path().join("results.csv")).unwrap(),
    );
    // Room for the old files, not for the new ones (three times as many records).
    let limit = good_json.len().max(good_csv.len()) as u64 + 64;
    let out = run_limited("child_results", dir.path(), limit);
    assert!(out.contains("error: ") && out.contains("results."), "{out}");
    assert_eq!(
        std::fs::read(&json).unwrap(),
        good_json,
        "results.json changed"
    );
    assert_eq!(
        std::fs::read(dir.path().join("results.csv")).unwrap(),
        good_csv,
        "results.csv changed"
    );
    assert_eq!(ResultsFile::read(&json).unwrap(), small);
    assert_eq!(
        listing(dir.path()),
        ["results.csv", "results.json"],
        "temporary file left"
    );
}
