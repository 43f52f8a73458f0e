//! Helpers shared by the integration tests.

use layerzero_data::{CifarSet, Dataset, Split};
use layerzero_models::{create_model, ModelConfig, Network};
use layerzero_train::EpochMetrics;

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

/// Asserts that two states (from [`state_bytes`]) are bit-identical, naming the first tensor
/// that differs and `what` was compared.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn assert_same_state(a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)], what: &str) {
    assert_eq!(a.len(), b.len(), "tensor count differs: {what}");
    for ((name, x), (_, y)) in a.iter().zip(b) {
        assert!(x == y, "{name} differs: {what}");
    }
}

/// Asserts that two runs have as many epochs, with bit-identical train loss, train top-1 and
/// test loss in each.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn assert_same_metrics(a: &[EpochMetrics], b: &[EpochMetrics], what: &str) {
    assert_eq!(a.len(), b.len(), "epoch count differs: {what}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(
            (x.train_loss, x.train_top1, x.test_loss),
            (y.train_loss, y.train_top1, y.test_loss),
            "epoch {}: {what}",
            x.epoch
        );
    }
}

/// Trains `config` in `dir` for its first epoch only, from `net(seeds.0)`, then resumes it to the
/// end in a fresh `net(seeds.1)`, as a new process would. Returns the resumed network and its
/// outcome, for comparing with an uninterrupted run.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn stop_after_one_epoch_then_resume(
    net: impl Fn(u64) -> Box<dyn Network>,
    seeds: (u64, u64),
    train_set: &CifarSet,
    test_set: &CifarSet,
    config: &layerzero_train::TrainConfig,
    dir: &std::path::Path,
) -> (Box<dyn Network>, layerzero_train::TrainOutcome) {
    use layerzero_train::{train, RunOptions};
    let stop = RunOptions {
        max_epochs: Some(1),
        ..RunOptions::default()
    };
    let first = train(
        net(seeds.0).as_ref(),
        train_set,
        test_set,
        config,
        dir,
        &stop,
    )
    .unwrap();
    assert!(!first.finished);
    let resumed = net(seeds.1);
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let out = train(resumed.as_ref(), train_set, test_set, config, dir, &resume).unwrap();
    assert!(out.finished);
    (resumed, out)
}
