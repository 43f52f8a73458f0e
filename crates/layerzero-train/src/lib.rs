//! Training for layerzero: SGD with momentum, learning-rate schedules, and atomic, checksummed
//! checkpoints that the ablation engine reads.
//!
//! Determinism on the CPU: the same seed and configuration give bit-identical weights and
//! losses, whatever the number of threads (every kernel splits its work into a number of
//! tasks that depends only on the shapes and adds their partial sums in a fixed order; tested
//! with 1, 2 and 3 threads), and a run interrupted and resumed gives what an uninterrupted run
//! gives. On CUDA, candle's kernels make no such promise.
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
