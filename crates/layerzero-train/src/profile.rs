//! Training configurations, and the named profiles the command line offers.

use layerzero_data::IMAGE_SIDE;
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
    /// A short one-cycle schedule for a CPU: 26 epochs, the first 8 on 16×16 images, in ghost
    /// batches run side by side.
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
    /// With `augment`: flip each image in every other epoch (Jordan 2024's alternating flip)
    /// instead of with probability ½ each epoch. Absent from configurations written before it
    /// existed, which read as `false`.
    #[serde(default)]
    pub alternating_flip: bool,
    /// Train the first epochs on downscaled images (`None`: always at 32×32). Evaluation is
    /// always at full size.
    #[serde(default)]
    pub progressive_resize: Option<ProgressiveResize>,
    /// Ghost batches per step (Hoffer et al. 2017; 1: off): each batch is split into this many
    /// equal parts, each forwarded with batch-norm statistics of its own, and the step follows
    /// the batch's mean loss (the parts' gradients weighted by their share of the images). The
    /// running statistics are updated part by part, in order. On a CPU with two or more
    /// threads the parts run at the same time, a share of the threads each: one ResNet-20
    /// training pass over 32 images per thread keeps both cores of a 2-core machine busier
    /// than one pass over 64 on both. The results do not depend on how many run at once.
    /// Absent from configurations written before it existed, which read as 1.
    #[serde(default = "one_ghost_batch")]
    pub ghost_batches: usize,
}

fn one_ghost_batch() -> usize {
    1
}

/// Progressive resizing: the first epochs train on downscaled images, in phases of a side and a
/// number of epochs (`16:8` is 8 epochs at 16×16; `16:3,24:3` is 3 at 16×16, then 3 at
/// 24×24); the epochs after the last phase are at 32×32. The early epochs, where the network
/// learns coarse features at a high learning rate, then cost a fraction of a full one. Measured
/// with ResNet-20 at batch 64 on the 2-core CPU (2026-11-26), seconds per epoch with its
/// evaluation: 16×16 41–55, 20×20 73–76, 24×24 78–88, 28×28 104–117, 32×32 88–121 (90–96 on a
/// quieter day); so 16×16 is the side that pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressiveResize {
    /// The phases, in order.
    pub phases: Vec<ResizePhase>,
}

/// One phase of [`ProgressiveResize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizePhase {
    /// Side of the images: a multiple of 4 from 8 to 32.
    pub side: usize,
    /// Epochs at that side.
    pub epochs: usize,
}

impl ProgressiveResize {
    /// Side of the training images in epoch `epoch` (from 0).
    pub fn side_at(&self, epoch: usize) -> usize {
        let mut end = 0;
        for phase in &self.phases {
            end += phase.epochs;
            if epoch < end {
                return phase.side;
            }
        }
        IMAGE_SIDE
    }

    /// Epochs in all phases together (saturating: phases of absurd lengths add up to
    /// `usize::MAX`, more than any run, rather than wrapping round to a small number).
    pub fn resized_epochs(&self) -> usize {
        self.phases
            .iter()
            .fold(0usize, |total, p| total.saturating_add(p.epochs))
    }
}

impl std::str::FromStr for ProgressiveResize {
    type Err = TrainError;
    /// `SIDE:EPOCHS[,SIDE:EPOCHS…]`, e.g. `16:8` (8 epochs at 16×16, then full size).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || TrainError::InvalidConfig {
            what: "progressive resize",
            expected: "SIDE:EPOCHS[,SIDE:EPOCHS…], e.g. 16:8 (8 epochs at 16×16, then 32×32)"
                .into(),
            found: s.to_string(),
        };
        let phases = s
            .split(',')
            .map(|phase| {
                let (side, epochs) = phase.split_once(':').ok_or_else(bad)?;
                Ok(ResizePhase {
                    side: side.trim().parse().map_err(|_| bad())?,
                    epochs: epochs.trim().parse().map_err(|_| bad())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ProgressiveResize { phases })
    }
}

impl std::fmt::Display for ProgressiveResize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|p| format!("{}:{}", p.side, p.epochs))
            .collect();
        f.write_str(&phases.join(","))
    }
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
                    alternating_flip: false,
                    progressive_resize: None,
                    ghost_batches: 1,
                }
            }
            Profile::Quick => {
                // Sized for a 2-core CPU: 26 epochs, the first 8 on 16×16 images (progressive
                // resizing), with alternating flips, each batch of 64 in 2 ghost batches of 32
                // (side by side, one core each). ResNet-20, seed 0, alone on the 2-core Zen 5 VM
                // (2026-11-26): 90.73 % in 1,088 s (16×16 epochs 22–23 s with evaluation, 32×32
                // 49–52 s); seeds 0–3 90.73, 90.63, 90.12, 90.90 %, mean 90.60 %. The 2-core VM
                // of the earlier runs in docs/runs took 37–43 s and 75–99 s for the same epochs.
                // Seeds and the recipes tried on the way are in docs/runs/README.md: with 23
                // epochs seeds 0–3 gave a mean of 90.38 %, with 20 about 90.0 %; growing the side
                // 16→28 over 12 epochs, a peak of 0.2 or 0.05, batch 128 and one batch instead of
                // two ghost batches each did worse.
                let epochs = 26;
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
                    alternating_flip: true,
                    progressive_resize: Some(ProgressiveResize {
                        phases: vec![ResizePhase {
                            side: 16,
                            epochs: 8,
                        }],
                    }),
                    ghost_batches: 2,
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
                alternating_flip: false,
                progressive_resize: None,
                ghost_batches: 1,
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
        let ghosts = self.ghost_batches;
        if ghosts == 0 || !self.batch_size.is_multiple_of(ghosts) || self.batch_size / ghosts < 2 {
            return bad(
                "ghost batches",
                &format!(
                    "a divisor of the batch size {} that leaves at least 2 images per ghost batch",
                    self.batch_size
                ),
                ghosts.to_string(),
            );
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
        if let Some(r) = &self.progressive_resize {
            for phase in &r.phases {
                if !(8..=IMAGE_SIDE).contains(&phase.side) || phase.side % 4 != 0 {
                    return bad(
                        "progressive resize's side",
                        "a multiple of 4 from 8 to 32",
                        format!("{} in {r}", phase.side),
                    );
                }
                if phase.epochs == 0 {
                    return bad(
                        "progressive resize's epochs",
                        "at least 1 per phase",
                        format!("0 at side {}", phase.side),
                    );
                }
            }
            let resized = r.resized_epochs();
            if resized >= self.epochs {
                return bad(
                    "progressive resize's epochs",
                    &format!(
                        "fewer than the run's {} in all (at least the last at full size)",
                        self.epochs
                    ),
                    format!("{resized} in {r}"),
                );
            }
        }
        Ok(())
    }

    /// Side of the training images in epoch `epoch` (from 0): 32 unless progressive resizing
    /// shrinks it.
    pub fn image_side(&self, epoch: usize) -> usize {
        self.progressive_resize
            .as_ref()
            .map_or(IMAGE_SIDE, |r| r.side_at(epoch))
    }
}
