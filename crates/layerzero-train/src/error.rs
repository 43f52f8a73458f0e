//! Errors of the training crate.

use std::path::PathBuf;

/// Errors from training, checkpoints and metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that cannot be trusted: unreadable, truncated, or failing its checksum.
    #[error("{path}: corrupt checkpoint: {reason}")]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Saved state that does not fit the model or optimiser being restored.
    #[error("checkpoint does not match the model: {0}")]
    StateMismatch(String),
    /// `--resume` found a run it must not continue: trained with other options or another
    /// architecture, or with trained epochs but no checkpoint left.
    #[error("cannot resume: {0}")]
    CannotResume(String),
    /// Another process is training in the run directory.
    #[error(
        "{path}: another process is training in this run directory (it holds {lock}); wait \
             for it to finish, or use another run directory"
    )]
    RunInUse {
        /// The run directory.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The loss became NaN or infinite.
    #[error("the loss became {value} at epoch {epoch}, step {step}; the last good checkpoint is kept. A lower learning rate (--lr) is a new run: --resume continues only with the same options")]
    NonFiniteLoss {
        /// The loss value.
        value: f32,
        /// Epoch (1-based) in which it happened.
        epoch: usize,
        /// Global optimiser step.
        step: usize,
    },
    /// The thread pools of the ghost batches could not be started.
    #[error("cannot start the threads of the ghost batches: {0}")]
    Threads(String),
    /// A bad configuration value.
    #[error("invalid {what}: expected {expected}, found {found}")]
    InvalidConfig {
        /// The field.
        what: &'static str,
        /// What is accepted.
        expected: String,
        /// What was given.
        found: String,
    },
    /// Reading the data failed.
    #[error(transparent)]
    Data(#[from] layerzero_data::DataError),
    /// Building, loading or running the model failed.
    #[error(transparent)]
    Model(#[from] layerzero_models::ModelError),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
