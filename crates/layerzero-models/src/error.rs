//! Errors of the crate: one enum, so callers match on what went wrong rather than on strings.

use std::fmt;

/// Everything that can go wrong when building, running, loading or saving a network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch inside the network, device trouble, …).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),

    /// The registry knows no architecture of that name.
    #[error(
        "unknown architecture `{name}`; known: {known}; and every depth of the CIFAR families: \
         resnet{{6n+2}}, resnet{{6n+2}}-b, plain{{6n+2}} (e.g. resnet8), wrn{{6n+4}}-{{k}} (e.g. wrn10-2)"
    )]
    UnknownArchitecture {
        /// The name asked for.
        name: String,
        /// The names the registry knows, comma-separated, for the message.
        known: String,
    },

    /// An architecture was asked for with settings it cannot have (depth not 6n+2, zero classes, …).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// An input tensor does not have the shape the network or layer expects.
    #[error("bad input: {0}")]
    BadInput(String),

    /// An intervention does not fit the network (unknown layer, wrong kind of layer, wrong shape, …).
    #[error("invalid intervention: {0}")]
    InvalidIntervention(String),

    /// Weights do not fit the network; every problem found is listed, not only the first.
    #[error("{} problem(s) with weights from {origin}:{}", problems.len(), ProblemList(problems))]
    WeightMismatch {
        /// Where the weights came from (a path, `state dict`, …).
        origin: String,
        /// Every mismatch found.
        problems: Vec<WeightProblem>,
    },

    /// A safetensors file could not be parsed (truncated, bad header, bad offsets, …).
    #[error("malformed safetensors data from {origin}: {message}")]
    MalformedFile {
        /// Where the bytes came from.
        origin: String,
        /// What the parser reported.
        message: String,
    },

    /// A `layerzero.*` metadata entry has a value that cannot be understood.
    #[error("bad metadata entry `{key}` = `{value}`: {message}")]
    BadMetadata {
        /// The metadata key.
        key: String,
        /// The value found.
        value: String,
        /// Why it was rejected.
        message: String,
    },

    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// An `hf://` weight location could not be resolved.
    #[error("cannot resolve `{uri}`: {message}")]
    Hub {
        /// The location asked for.
        uri: String,
        /// Why it failed.
        message: String,
    },
}

/// One way in which a set of weights does not fit a network.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightProblem {
    /// The network has a tensor that the weights lack.
    Missing {
        /// PyTorch name of the tensor.
        name: String,
        /// Shape the network expects.
        expected_shape: Vec<usize>,
        /// Element type the network expects (`F32`, `I64`).
        expected_dtype: String,
    },
    /// The weights have a tensor that the network does not know.
    Unexpected {
        /// Name of the tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its element type.
        dtype: String,
    },
    /// A tensor has the wrong shape.
    WrongShape {
        /// Name of the tensor.
        name: String,
        /// Shape the network expects.
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    WrongDtype {
        /// Name of the tensor.
        name: String,
        /// Element type the network expects.
        expected: String,
        /// Element type found.
        found: String,
    },
    /// The file's `layerzero.arch` metadata names another architecture.
    ArchMismatch {
        /// The network's architecture name.
        expected: String,
        /// The name in the file.
        found: String,
    },
}

impl WeightProblem {
    /// The tensor the problem is about, if it is about one tensor.
    pub fn tensor_name(&self) -> Option<&str> {
        match self {
            WeightProblem::Missing { name, .. }
            | WeightProblem::Unexpected { name, .. }
            | WeightProblem::WrongShape { name, .. }
            | WeightProblem::WrongDtype { name, .. } => Some(name),
            WeightProblem::ArchMismatch { .. } => None,
        }
    }
}

impl fmt::Display for WeightProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightProblem::Missing {
                name,
                expected_shape,
                expected_dtype,
            } => write!(
                f,
                "missing tensor `{name}`: expected {expected_dtype} {expected_shape:?}, found nothing"
            ),
            WeightProblem::Unexpected { name, shape, dtype } => {
                write!(f, "unexpected tensor `{name}` ({dtype} {shape:?})")
            }
            WeightProblem::WrongShape {
                name,
                expected,
                found,
            } => write!(
                f,
                "wrong shape for `{name}`: expected {expected:?}, found {found:?}"
            ),
            WeightProblem::WrongDtype {
                name,
                expected,
                found,
            } => write!(
                f,
                "wrong dtype for `{name}`: expected {expected}, found {found}"
            ),
            WeightProblem::ArchMismatch { expected, found } => write!(
                f,
                "architecture mismatch: network is `{expected}`, file says `{found}`"
            ),
        }
    }
}

/// Formats a problem list as one indented line per problem, for `WeightMismatch`'s message;
/// a long list (weights of another architecture give one line per tensor, 181 for a
/// ResNet-56 file offered to a ResNet-20) shows its first [`SHOWN_PROBLEMS`] and counts the
/// rest by kind. The error's `problems` keeps them all.
struct ProblemList<'a>(&'a [WeightProblem]);

/// Problems a `WeightMismatch` message lists one by one when there are more than
/// `SHOWN_PROBLEMS + 4` (a list barely longer is shown whole).
const SHOWN_PROBLEMS: usize = 20;

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.0.len() > SHOWN_PROBLEMS + 4 {
            SHOWN_PROBLEMS
        } else {
            self.0.len()
        };
        for p in &self.0[..shown] {
            write!(f, "\n  - {p}")?;
        }
        let rest = &self.0[shown..];
        if !rest.is_empty() {
            let count = |kind: fn(&WeightProblem) -> bool| rest.iter().filter(|p| kind(p)).count();
            let kinds = [
                (
                    "missing",
                    count(|p| matches!(p, WeightProblem::Missing { .. })),
                ),
                (
                    "unexpected",
                    count(|p| matches!(p, WeightProblem::Unexpected { .. })),
                ),
                (
                    "wrong shape",
                    count(|p| matches!(p, WeightProblem::WrongShape { .. })),
                ),
                (
                    "wrong dtype",
                    count(|p| matches!(p, WeightProblem::WrongDtype { .. })),
                ),
                (
                    "architecture",
                    count(|p| matches!(p, WeightProblem::ArchMismatch { .. })),
                ),
            ];
            let kinds: Vec<String> = kinds
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(what, n)| format!("{n} {what}"))
                .collect();
            write!(f, "\n  … and {} more ({})", rest.len(), kinds.join(", "))?;
        }
        Ok(())
    }
}

/// Result type of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
