//! Shard merging on arbitrary inputs: the bytes are split at NUL bytes into up to 8 shard
//! files, each parsed and validated, then merged. A merged file must itself validate.
#![no_main]

use layerzero_ablate::{merge, ResultsFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
