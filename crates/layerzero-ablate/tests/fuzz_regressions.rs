//! Replays every input that once crashed the `results_json` or `shard_merge` fuzz targets
//! (`tests/data/fuzz-regressions/<target>/`, see docs/reliability.md) through the same code:
//! each must give a result or an error, never a panic.

use std::path::Path;

use layerzero_ablate::{merge, ResultsFile};

/// The inputs that once crashed `target` and the target's seeds (`fuzz/seeds/<target>/`).
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

/// What the `results_json` target does.
fn results_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(results) = ResultsFile::from_json_str(text, "fuzz.json") {
        let again = results
            .to_json_string()
            .expect("a validated file serialises");
        let back = ResultsFile::from_json_str(&again, "again.json").expect("round trip");
        assert_eq!(back.to_json_string().unwrap(), again);
    }
}

/// What the `shard_merge` target does: NUL-separated shard files, merged.
fn shard_merge(data: &[u8]) {
    let mut parts = Vec::new();
    for (i, chunk) in data.split(|&b| b == 0).take(8).enumerate() {
        let Ok(text) = std::str::from_utf8(chunk) else {
            return;
        };
        let origin = format!("shard-{i}.json");
        match ResultsFile::from_json_str(text, &origin) {
            Ok(r) => parts.push((origin, r)),
            Err(_) => return,
        }
    }
    if let Ok(merged) = merge(&parts) {
        merged.to_json_string().expect("a merged file validates");
    }
}

#[test]
fn fuzz_regressions_give_errors_not_panics() {
    assert!(!regressions("results_json").is_empty() && !regressions("shard_merge").is_empty());
    // The seeds are valid files: they must keep parsing, or the fuzzers start from nothing.
    for (name, bytes) in regressions("results_json") {
        if !name.starts_with("crash-") {
            ResultsFile::from_json_str(std::str::from_utf8(&bytes).unwrap(), &name).unwrap();
        }
    }
    for (name, bytes) in regressions("shard_merge") {
        if !name.starts_with("crash-") {
            for (i, part) in bytes.split(|&b| b == 0).enumerate() {
                let text = std::str::from_utf8(part).unwrap();
                ResultsFile::from_json_str(text, &format!("{name} part {i}")).unwrap();
            }
        }
    }
    for (name, bytes) in regressions("results_json") {
        eprintln!("results_json/{name}");
        results_json(&bytes);
    }
    for (name, bytes) in regressions("shard_merge") {
        eprintln!("shard_merge/{name}");
        shard_merge(&bytes);
    }
}
