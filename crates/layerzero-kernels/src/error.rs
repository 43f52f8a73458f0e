//! Error type for invalid arguments; converted into [`candle_core::Error`] at the API boundary.

/// Why a kernel refused its arguments.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A tensor had the wrong rank or mismatching dimensions.
    #[error("{op}: {msg}")]
    Shape {
        /// The public operation that rejected the arguments.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// The fast path cannot run these arguments (dtype, device or memory layout).
    #[error("{op}: unsupported arguments: {msg}")]
    Unsupported {
        /// The public operation that rejected the arguments.
        op: &'static str,
        /// What was unsupported.
        msg: String,
    },
}

impl KernelError {
    pub(crate) fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Self::Shape {
            op,
            msg: msg.into(),
        }
    }

    pub(crate) fn unsupported(op: &'static str, msg: impl Into<String>) -> Self {
        Self::Unsupported {
            op,
            msg: msg.into(),
        }
    }
}

impl From<KernelError> for candle_core::Error {
    fn from(e: KernelError) -> Self {
        candle_core::Error::wrap(e)
    }
}
