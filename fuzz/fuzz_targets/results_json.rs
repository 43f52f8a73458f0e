//! `results.json` parsing and validation on arbitrary text. Whatever parses must serialise
//! again and read back equal (the schema round-trips).
#![no_main]

use layerzero_ablate::ResultsFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(results) = ResultsFile::from_json_str(text, "fuzz.json") {
        let again = results
            .to_json_string()
            .expect("a validated file serialises");
        let back = ResultsFile::from_json_str(&again, "again.json").expect("round trip");
        assert_eq!(
            back.to_json_string().expect("serialises"),
            again,
            "round trip changed the file"
        );
    }
});
