//! Training for layerzero: SGD with momentum, learning-rate schedules, resumable, atomic,
//! checksummed checkpoints, and the weights files (`weights.safetensors`, `init.safetensors`)
//! that the ablation engine reads.
//!
//! * [`train`] (and [`train_observed`], with progress hooks: [`TrainObserver`]) trains a
//!   [`layerzero_models::Network`] on a [`layerzero_data::CifarSet`] as a [`TrainConfig`] says,
//!   evaluating after each epoch and writing a run directory ([`RunDir`]: `config.json`,
//!   `metrics.jsonl` of [`EpochMetrics`], checkpoints, weights); [`RunOptions::resume`]
//!   continues from the last good checkpoint.
//! * [`TrainConfig::from_profile`] gives the named [`Profile`]s (`smoke`, `quick`, `paper`);
//!   [`LrSchedule`] (multi-step, one-cycle or cosine), [`SgdConfig`] / [`Sgd`], label smoothing
//!   ([`cross_entropy`]), ghost batches and [`ProgressiveResize`] are its parts.
//! * [`Checkpoint`] saves and loads model state, momentum buffers and position, refusing a file
//!   whose SHA-256 does not match; [`write_atomic`] writes a file so that a crash leaves either
//!   the old one or the new one.
//! * [`evaluate`] and [`score_logits`] give per-image top-1, top-5 and loss ([`PerImage`]).
//!
//! Determinism on the CPU: the same seed and configuration give bit-identical weights and
//! losses, whatever the number of threads (every kernel splits its work into a number of
//! tasks that depends only on the shapes and adds their partial sums in a fixed order; tested
//! with 1, 2 and 3 threads), and a run interrupted and resumed gives what an uninterrupted run
//! gives. On CUDA (candle's ops or cuDNN) there is no such promise.
//!
//! # Example
//!
//! ```
//! use layerzero_train::LrSchedule;
//!
//! // He et al. 2016: 0.1, divided by 10 at 32k and 48k iterations.
//! let schedule = LrSchedule::he_et_al();
//! assert_eq!(schedule.lr_at(0), 0.1);
//! assert!((schedule.lr_at(40_000) - 0.01).abs() < 1e-12);
//! ```
//!
//! # Example: a (tiny) training run
//!
//! One epoch of two steps on sixteen made-up images, then the run directory's checkpoint and an
//! evaluation of the trained network:
//!
//! ```
//! use candle_core::Device;
//! use layerzero_data::{CifarSet, Dataset, Split};
//! use layerzero_models::{create_model, Interventions, ModelConfig};
//! use layerzero_train::{
//!     evaluate, train, Checkpoint, LrSchedule, Profile, RunDir, RunOptions, TrainConfig,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Real code loads CIFAR with `CifarSet::load(dir, Dataset::Cifar10, Split::Train)`.
//! let names = (0..10).map(|c| format!("class{c}")).collect();
//! let pixels: Vec<u8> = (0..16 * 3072).map(|i| (i * 7 % 251) as u8).collect();
//! let labels: Vec<u8> = (0..16).map(|i| (i % 10) as u8).collect();
//! let set = CifarSet::from_parts(Dataset::Cifar10, Split::Train, pixels, labels, names)?;
//!
//! // The smoke profile, cut down to 16 images in batches of 8.
//! let mut config = TrainConfig::from_profile(Profile::Smoke, "resnet8", 0);
//! config.batch_size = 8;
//! config.train_limit = None;
//! config.test_limit = None;
//! config.schedule = LrSchedule::one_cycle(0.1, 2, 0.3);
//!
//! let net = create_model("resnet8", &ModelConfig::new(10).with_seed(0))?;
//! let dir = tempfile::tempdir()?;
//! let outcome = train(net.as_ref(), &set, &set, &config, dir.path(), &RunOptions::default())?;
//! assert!(outcome.finished && outcome.weights.exists() && outcome.init_weights.exists());
//! assert_eq!((outcome.metrics[0].epoch, outcome.metrics[0].step), (1, 2));
//!
//! // The epoch's checkpoint, verified against its checksum on load.
//! let checkpoint = Checkpoint::load(&RunDir::new(dir.path()).checkpoint(1), &Device::Cpu)?;
//! assert_eq!((checkpoint.meta.epoch, checkpoint.meta.step), (1, 2));
//!
//! let summary = evaluate(net.as_ref(), &set, 8, Interventions::none())?.summary();
//! assert_eq!(summary.n_images, 16);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod checkpoint;
mod error;
pub mod eval;
pub mod optim;
mod profile;
mod schedule;
pub mod trainer;

pub use checkpoint::{write_atomic, Checkpoint, CheckpointMeta};
pub use error::{Result, TrainError};
pub use eval::{evaluate, score_logits, EvalSummary, PerImage};
pub use optim::{Param, Sgd, SgdConfig};
pub use profile::{Profile, ProgressiveResize, ResizePhase, TrainConfig};
pub use schedule::LrSchedule;
pub use trainer::{
    cross_entropy, train, train_observed, trainable_params, EpochMetrics, Quiet, RunDir,
    RunOptions, TrainObserver, TrainOutcome,
};
