//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading report inputs or writing a report.
///
/// Every variant names the file (or other origin) involved and, where a value is at fault,
/// the field, what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A `results.json` could not be read or failed validation (the message comes from
    /// `layerzero-ablate` and names the file, field, expected and found value).
    #[error(transparent)]
    Results(#[from] layerzero_ablate::Error),

    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A line of a training-metrics file is not a JSON object of the expected shape.
    #[error("{}:{line}: invalid JSON: {source}", file.display())]
    MetricsJson {
        /// The metrics file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The underlying parse error.
        #[source]
        source: serde_json::Error,
    },

    /// A field of a training-metrics line has an invalid value.
    #[error("{}:{line}: field `{field}`: expected {expected}, found {found}", file.display())]
    Metrics {
        /// The metrics file.
        file: PathBuf,
        /// 1-based line number (0 when the problem is the file as a whole, e.g. no epochs).
        line: usize,
        /// The field at fault, e.g. `test_top1`.
        field: String,
        /// What a valid value looks like.
        expected: String,
        /// The offending value.
        found: String,
    },

    /// The inputs are individually valid but do not fit together (e.g. two results files
    /// for the same architecture, mode and seed, or a partial shard file).
    #[error("{origin}: field `{field}`: expected {expected}, found {found}")]
    Input {
        /// The input file (or other origin label) at fault.
        origin: String,
        /// The field at fault, e.g. `seed` or `verdict_thresholds`.
        field: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },

    /// A figure could not be drawn.
    #[error("figure {file}: {message}")]
    Figure {
        /// The figure's file name, e.g. `figures/cumulative.svg`.
        file: String,
        /// What went wrong.
        message: String,
    },

    /// A JSON document could not be produced.
    #[error("{what}: {source}")]
    Json {
        /// What was being serialised, e.g. `summary.json`.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn input(
        origin: impl Into<String>,
        field: impl Into<String>,
        expected: impl Into<String>,
        found: impl ToString,
    ) -> Self {
        ReportError::Input {
            origin: origin.into(),
            field: field.into(),
            expected: expected.into(),
            found: found.to_string(),
        }
    }
}
