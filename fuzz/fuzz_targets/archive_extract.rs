//! Archive extraction on arbitrary bytes (fed as a `.tar.gz`, and gzipped as a plain `.tar`):
//! an error or a success, and never a file written outside the destination folder.
#![no_main]

use std::io::Write;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fn files_under(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            n += 1;
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                n += files_under(&e.path());
            }
        }
    }
    n
}

fn check(archive_bytes: &[u8]) {
    let root = tempfile::tempdir().expect("temp dir");
    let archive = root.path().join("a.tar.gz");
    std::fs::write(&archive, archive_bytes).expect("write archive");
    let dest = root.path().join("dest");
    std::fs::create_dir(&dest).expect("dest");
    let _ = layerzero_data::extract_archive(&archive, &dest);
    // Only `a.tar.gz` and `dest/` may exist beside each other: anything else escaped.
    let mut names: Vec<_> = std::fs::read_dir(root.path())
        .expect("read root")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a.tar.gz", "dest"],
        "an entry escaped the destination"
    );
    // No link was created inside the destination either.
    fn no_links(dir: &Path) {
        for e in std::fs::read_dir(dir).expect("read dest").flatten() {
            let t = e.file_type().expect("file type");
            assert!(!t.is_symlink(), "link {} created", e.path().display());
            if t.is_dir() {
                no_links(&e.path());
            }
        }
    }
    no_links(&dest);
    let _ = files_under(&dest);
}

fuzz_target!(|data: &[u8]| {
    // Too large a raw input just slows the fuzzer down; tar headers are 512 bytes.
    if data.len() > 64 * 1024 {
        return;
    }
    check(data);
    // Most random bytes fail gzip's magic: also present them as the *tar* inside a gzip stream,
    // so the tar parser and the path checks are exercised.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip");
    check(&gz.finish().expect("gzip"));
});
