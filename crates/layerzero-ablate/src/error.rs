//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// Every variant names what was being read or checked (`file`/`origin`, `field`), what was
/// expected and what was found, so that a message is actionable without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line style argument or function argument is malformed or out of range.
    #[error("invalid {what}: expected {expected}, found {found}")]
    InvalidArgument {
        /// What was being parsed or checked, e.g. `--shard` or `fraction`.
        what: String,
        /// What a valid value looks like.
        expected: String,
        /// The offending value.
        found: String,
    },

    /// A layer-name pattern given to `--layers` matches no layer of the network.
    #[error(
        "layer pattern {pattern:?} matches no layer; available layers: {}",
        available.join(", ")
    )]
    PatternMatchesNothing {
        /// The pattern that matched nothing.
        pattern: String,
        /// All layer names the pattern was matched against, in network order.
        available: Vec<String>,
    },

    /// A field of a results file (or of an in-memory record) has an invalid value.
    #[error("{origin}: field `{field}`: expected {expected}, found {found}")]
    Schema {
        /// The file (or other origin label) being read or written.
        origin: String,
        /// The JSON path of the field, e.g. `layers[3].top1`.
        field: String,
        /// What a valid value looks like.
        expected: String,
        /// The offending value.
        found: String,
    },

    /// Shards given to `merge` disagree, are missing, or overlap.
    #[error("merge: {origin}: field `{field}`: expected {expected}, found {found}")]
    Merge {
        /// The shard file (or origin label) that disagrees with the first one.
        origin: String,
        /// The field that disagrees, e.g. `weights.sha256` or `shard.index`.
        field: String,
        /// The value from the reference (first) shard, or the requirement.
        expected: String,
        /// The disagreeing value.
        found: String,
    },

    /// Two per-image vectors that must be paired have different lengths, or are empty.
    #[error("{what}: expected {expected} entries, found {found}")]
    Length {
        /// Which vector, e.g. `ablated.top5`.
        what: String,
        /// The expected number of entries.
        expected: usize,
        /// The actual number of entries.
        found: usize,
    },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// Building, loading or running the network failed (a tensor operation, a weights file
    /// that cannot be read, an intervention the network rejects).
    #[error("{context}: {source}")]
    Model {
        /// What the engine was doing, e.g. `evaluating layer2.0.conv1 on images 0..1000`.
        context: String,
        /// The model crate's error.
        #[source]
        source: Box<layerzero_models::ModelError>,
    },

    /// Reading or batching the test images failed.
    #[error("{context}: {source}")]
    Data {
        /// What the engine was doing.
        context: String,
        /// The data crate's error.
        #[source]
        source: Box<layerzero_data::DataError>,
    },

    /// Scoring logits (top-1, top-5, cross-entropy) failed.
    #[error("{context}: {source}")]
    Train {
        /// What the engine was doing.
        context: String,
        /// The training crate's error.
        #[source]
        source: Box<layerzero_train::TrainError>,
    },

    /// A tensor needed from a weights file (e.g. `--init-weights` for `reinit`) is missing or
    /// does not fit the layer.
    #[error("{}: tensor `{tensor}`: expected {expected}, found {found}", path.display())]
    WeightsFile {
        /// The weights file.
        path: PathBuf,
        /// The tensor's PyTorch name, e.g. `layer2.0.conv1.weight`.
        tensor: String,
        /// What the layer needs, e.g. `an F32 tensor of shape [32, 16, 3, 3]`.
        expected: String,
        /// What the file holds.
        found: String,
    },

    /// The network has nothing the mode can ablate (e.g. `skip-branch` on a plain net).
    #[error("mode {mode} on `{arch}`: expected {expected}, found {found}")]
    NoCandidates {
        /// The ablation mode.
        mode: crate::mode::AblationMode,
        /// The network's architecture name.
        arch: String,
        /// What the mode needs, e.g. `at least one residual block`.
        expected: String,
        /// What the network has instead.
        found: String,
    },

    /// A file is not valid JSON, or does not have the results-file structure.
    #[error("{origin}: invalid results JSON: {source}")]
    Json {
        /// The file (or other origin label) being parsed.
        origin: String,
        /// The underlying parse error (it carries line and column).
        #[source]
        source: serde_json::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub(crate) fn invalid(
        what: impl Into<String>,
        expected: impl Into<String>,
        found: impl ToString,
    ) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            expected: expected.into(),
            found: found.to_string(),
        }
    }

    /// Shorthand for [`Error::Schema`].
    pub(crate) fn schema(
        origin: &str,
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl ToString,
    ) -> Self {
        Error::Schema {
            origin: origin.to_string(),
            field: field.into(),
            expected: expected.into(),
            found: found.to_string(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
