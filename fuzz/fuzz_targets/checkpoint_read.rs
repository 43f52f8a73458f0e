//! The checkpoint reader on arbitrary bytes: an error or a verified checkpoint, never a panic.
#![no_main]

use std::path::Path;

use candle_core::Device;
use layerzero_train::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Checkpoint::from_bytes(data, Path::new("fuzz.safetensors"), &Device::Cpu);
});
