//! The safetensors weight import on arbitrary bytes: loading into a fixed ResNet-20 (names,
//! shapes, dtypes, header metadata), reading without a network, and building the network the
//! header names. Each returns an error or succeeds; none may panic or allocate by the header's
//! word alone.
#![no_main]

use std::sync::OnceLock;

use candle_core::Device;
use layerzero_models::{
    create_model, load_model_bytes, load_safetensors_bytes, read_safetensors_bytes, LoadOptions,
    ModelConfig, ModelRegistry, Network,
};
use libfuzzer_sys::fuzz_target;

struct Fixed {
    net: Box<dyn Network>,
    registry: ModelRegistry,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| Fixed {
        net: create_model("resnet20", &ModelConfig::new(10)).expect("resnet20"),
        registry: ModelRegistry::new(),
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixed();
    let _ = load_safetensors_bytes(
        f.net.as_ref(),
        data,
        "fuzz.safetensors",
        &LoadOptions::default(),
    );
    let _ = read_safetensors_bytes(data, "fuzz.safetensors");
    let _ = load_model_bytes(data, "fuzz.safetensors", &Device::Cpu, &f.registry);
});
