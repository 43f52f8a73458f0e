//! Helpers shared by the integration tests.

use std::path::Path;

use layerzero_data::{CifarSet, Dataset, Split};
use layerzero_models::{create_model, ModelConfig, Network};
use layerzero_train::{
    train_observed, EpochMetrics, Quiet, RunOptions, TrainConfig, TrainError, TrainObserver,
    TrainOutcome,
};

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

/// What a test run trains and evaluates on, and how: the seam between a test's set-up and the
/// runs it compares, so each run is one line.
#[allow(dead_code)] // not every test file that includes this module uses it
pub struct Setup {
    pub train_set: CifarSet,
    pub test_set: CifarSet,
    pub config: TrainConfig,
}

#[allow(dead_code)] // not every test file that includes this module uses every method
impl Setup {
    /// `train_images` and `test_images` [`synthetic`] images, trained with `config`.
    pub fn synthetic(train_images: usize, test_images: usize, config: TrainConfig) -> Self {
        Self {
            train_set: synthetic(train_images, Split::Train),
            test_set: synthetic(test_images, Split::Test),
            config,
        }
    }

    /// Trains `net` in `dir` with `options`.
    pub fn train(
        &self,
        net: &dyn Network,
        dir: &Path,
        options: &RunOptions,
    ) -> Result<TrainOutcome, TrainError> {
        self.train_observed(net, dir, options, &Quiet)
    }

    /// Trains `net` from its initialisation to the last epoch in a new temporary folder: the
    /// uninterrupted run that a stopped, resumed or otherwise varied run is compared with.
    /// Returns the folder (kept while the caller holds it) and the outcome.
    pub fn run_to_end(&self, net: &dyn Network) -> (tempfile::TempDir, TrainOutcome) {
        let dir = tempfile::tempdir().unwrap();
        let outcome = self.train(net, dir.path(), &RunOptions::default()).unwrap();
        assert!(outcome.finished, "an uninterrupted run stopped early");
        (dir, outcome)
    }

    /// [`Setup::train`], reporting to `observer`.
    pub fn train_observed(
        &self,
        net: &dyn Network,
        dir: &Path,
        options: &RunOptions,
        observer: &dyn TrainObserver,
    ) -> Result<TrainOutcome, TrainError> {
        train_observed(
            net,
            &self.train_set,
            &self.test_set,
            &self.config,
            dir,
            options,
            observer,
        )
    }
}

/// Runs `f` in a rayon pool of `threads` threads.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Options that stop a run after its first `epochs` epochs, as a killed process would.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn stop_after(epochs: usize) -> RunOptions {
    RunOptions {
        max_epochs: Some(epochs),
        ..RunOptions::default()
    }
}

/// Options that resume the run in the directory, to its end.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn resuming() -> RunOptions {
    RunOptions {
        resume: true,
        ..RunOptions::default()
    }
}

/// Trains `setup` in `dir` for its first epoch only, from `net(seeds.0)`, then resumes it to the
/// end in a fresh `net(seeds.1)`, as a new process would. Returns the resumed network and its
/// outcome, for comparing with an uninterrupted run.
#[allow(dead_code)] // not every test file that includes this module uses it
pub fn stop_after_one_epoch_then_resume(
    net: impl Fn(u64) -> Box<dyn Network>,
    seeds: (u64, u64),
    setup: &Setup,
    dir: &Path,
) -> (Box<dyn Network>, TrainOutcome) {
    let first = setup
        .train(net(seeds.0).as_ref(), dir, &stop_after(1))
        .unwrap();
    assert!(!first.finished);
    let resumed = net(seeds.1);
    let out = setup.train(resumed.as_ref(), dir, &resuming()).unwrap();
    assert!(out.finished);
    (resumed, out)
}
