//! Helpers shared by the integration tests.

use layerzero_data::{CifarSet, Dataset, Split};
use layerzero_models::{create_model, ModelConfig, Network};

/// Synthetic images whose class is visible (a per-class colour), for tests that only need the
/// loop to run.
pub fn synthetic(n: usize, split: Split) -> CifarSet {
    let mut pixels = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = (i * 7 % 10) as u8;
        for c in 0..3 {
            for p in 0..1024 {
                let base = (label as usize * 25 + c * 60) % 256;
                pixels.push(((base + (p * (i + 1)) % 17) % 256) as u8);
            }
        }
        labels.push(label);
    }
    let names = (0..10).map(|i| format!("class{i}")).collect();
    CifarSet::from_parts(Dataset::Cifar10, split, pixels, labels, names).unwrap()
}

/// A ResNet-8 initialised from `seed`.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn net(seed: u64) -> Box<dyn Network> {
    create_model("resnet8", &ModelConfig::new(10).with_seed(seed)).unwrap()
}

/// Every tensor of the state dict (running statistics and batch counts included) as bytes, to
/// compare two networks exactly.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn state_bytes(net: &dyn Network) -> Vec<(String, Vec<u8>)> {
    net.params()
        .state_dict()
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let t = t.flatten_all().unwrap();
            let bytes = match t.dtype() {
                candle_core::DType::I64 => t
                    .to_vec1::<i64>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                _ => t
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            };
            (name, bytes)
        })
        .collect()
}
