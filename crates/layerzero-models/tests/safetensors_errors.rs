//! Malformed safetensors files are refused with messages that name the file, the field, and
//! the expected and found values (docs/reliability.md), not just the parser's verdict.

use layerzero_models::weights::to_safetensors_bytes;
use layerzero_models::{
    create_model, read_safetensors, read_safetensors_bytes, ModelConfig, ModelError,
    WeightsMetadata,
};

/// A file made of a length field, `header` and `data`, with the length field saying
/// `claimed` bytes (the true header length unless a test lies about it).
fn file_with(claimed: u64, header: &[u8], data: &[u8]) -> Vec<u8> {
    [&claimed.to_le_bytes()[..], header, data].concat()
}

fn file(header: &str, data: &[u8]) -> Vec<u8> {
    file_with(header.len() as u64, header.as_bytes(), data)
}

/// The message of the malformed-file error that `bytes` gives; fails on any other outcome.
fn message(bytes: &[u8]) -> String {
    match read_safetensors_bytes(bytes, "bad.safetensors") {
        Err(e @ ModelError::MalformedFile { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("bad.safetensors"), "file not named: {msg}");
            println!("{msg}");
            msg
        }
        other => panic!("expected a malformed-file error, got {other:?}"),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{p}` missing from: {msg}");
    }
}

#[test]
fn short_file_names_the_eight_bytes_expected() {
    let msg = message(&[1, 2, 3]);
    assert_has(&msg, &["expected at least 8 bytes", "found 3"]);
    let msg = message(&[]);
    assert_has(&msg, &["expected at least 8 bytes", "found 0"]);
}

#[test]
fn header_length_past_the_end_names_both_sizes() {
    let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = file(header, &[0; 4]);
    bytes.truncate(20);
    let msg = message(&bytes);
    let claimed = header.len().to_string();
    assert_has(
        &msg,
        &[
            &format!("claims {claimed} bytes"),
            "only 12 follow",
            "file of 20 bytes",
            "truncated",
            // The library's own verdict is kept as the cause.
            "invalid header length",
        ],
    );
    let msg = message(&file_with(u64::MAX, b"{}", &[]));
    assert_has(
        &msg,
        &[&format!("claims {} bytes", u64::MAX), "only 2 follow"],
    );
}

#[test]
fn truncated_real_file_names_the_sizes_or_the_tensor_cut_off() {
    let net = create_model("resnet20", &ModelConfig::new(10)).unwrap();
    let good =
        to_safetensors_bytes(net.as_ref(), &WeightsMetadata::for_network(net.as_ref())).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    // The audit's case: resnet20's header is longer than 5000 bytes, so the cut is in it.
    assert!(header_len + 8 > 5000);
    let msg = message(&good[..5000]);
    assert_has(
        &msg,
        &[
            &format!("the header claims {header_len} bytes"),
            "only 4992 follow",
            "file of 5000 bytes: truncated?",
        ],
    );
    // Cut inside the data: the tensor the cut falls in is named.
    let cut = 8 + header_len + 5000;
    let msg = message(&good[..cut]);
    assert_has(
        &msg,
        &[
            "tensor `",
            "F32 [",
            "data section of 5000 bytes",
            &format!("file of {cut} bytes: truncated?"),
        ],
    );
}

#[test]
fn bad_header_text_says_utf8_or_json() {
    let msg = message(&file_with(8, b"not json", &[]));
    assert_has(&msg, &["8-byte header", "invalid JSON", "line 1 column"]);
    let msg = message(&file_with(4, &[b'{', 0xff, 0xfe, b'}'], &[]));
    assert_has(&msg, &["invalid UTF-8"]);
    let msg = message(&file("[]", &[]));
    assert_has(
        &msg,
        &["expected the header to be a JSON object", "found []"],
    );
}

#[test]
fn bad_entries_name_the_tensor_and_the_field() {
    let msg = message(&file(r#"{"w":{"dtype":"F32","shape":[2]}}"#, &[]));
    assert_has(&msg, &["tensor `w`", "data_offsets"]);
    let msg = message(&file(
        r#"{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    ));
    assert_has(&msg, &["tensor `w`", "F33"]);
    let msg = message(&file(r#"{"__metadata__":{"n":5}}"#, &[]));
    assert_has(&msg, &["`__metadata__`", "strings"]);
}

#[test]
fn wrong_size_for_dtype_and_shape_names_everything() {
    let msg = message(&file(
        r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#,
        &[0; 20],
    ));
    assert_has(
        &msg,
        &[
            "tensor `w`",
            "F32 [2, 3]",
            "data_offsets [0, 20]",
            "expected 24 bytes (6 elements of 4 bytes), found 20",
            "data section has 20 bytes",
        ],
    );
}

#[test]
fn offsets_past_the_data_name_the_section_size() {
    let msg = message(&file(
        r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 4],
    ));
    assert_has(
        &msg,
        &[
            "tensor `w`",
            "F32 [2]",
            "data_offsets [0, 8]",
            "data section of 4 bytes",
            "ending at byte 8",
        ],
    );
}

#[test]
fn gaps_overlaps_and_leftovers_are_located() {
    let msg = message(&file(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
        &[0; 12],
    ));
    assert_has(
        &msg,
        &[
            "tensor `b`",
            "expected to begin at byte 4 (where `a` ends), found 8 (a gap)",
        ],
    );
    let msg = message(&file(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 5],
    ));
    assert_has(
        &msg,
        &[
            "whole data section of 5 bytes",
            "ending at byte 4",
            "1 bytes unaccounted",
        ],
    );
    let msg = message(&file(
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#,
        &[0; 4],
    ));
    assert_has(
        &msg,
        &["tensor `a`", "data_offsets [4, 0]", "end before the begin"],
    );
}

#[test]
fn read_safetensors_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("trunc.safetensors");
    std::fs::write(&p, [7u8; 5]).unwrap();
    let msg = read_safetensors(&p).unwrap_err().to_string();
    assert_has(
        &msg,
        &["trunc.safetensors", "expected at least 8 bytes", "found 5"],
    );
}
