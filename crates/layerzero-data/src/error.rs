//! The one error type of this crate: every variant names the file (or URL) and what was expected
//! and found, so that a user can act on it without reading the source.

use std::path::PathBuf;

use crate::cifar::Dataset;

/// Errors from reading, fetching and batching CIFAR data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file of the data set is not there.
    #[error(
        "{path}: file not found; fetch the data set with {}, or point --data-dir at the folder \
         that holds it",
        fetch_commands(.dataset)
    )]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// The data set's command-line name (`cifar10`, `cifar100`).
        dataset: &'static str,
    },
    /// The local archive to fetch from is not there.
    #[error(
        "{path}: archive not found; expected a local copy of the {dataset} binary .tar.gz (as \
         given by --archive or LAYERZERO_CIFAR10_ARCHIVE / LAYERZERO_CIFAR100_ARCHIVE), or neither, to download the \
         official one"
    )]
    MissingArchive {
        /// The archive that was looked for.
        path: PathBuf,
        /// The data set's command-line name (`cifar10`, `cifar100`).
        dataset: &'static str,
    },
    /// A batch file whose size is not a whole number of records.
    #[error("{path}: size {size} bytes is not a multiple of the record size {record_size} bytes (truncated or not a {dataset} batch file?)")]
    BadFileSize {
        /// The batch file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The record size of the format, in bytes.
        record_size: usize,
        /// The data set's command-line name.
        dataset: &'static str,
    },
    /// A record whose label is outside the data set's classes.
    #[error("{path}: record {index} has {field} {value}, expected 0..={max}")]
    LabelOutOfRange {
        /// The batch file.
        path: PathBuf,
        /// Index of the record inside that file (0-based).
        index: usize,
        /// Which label byte (`label`, `coarse label`, `fine label`).
        field: &'static str,
        /// The value found.
        value: u8,
        /// The largest valid value.
        max: u8,
    },
    /// A split with the wrong number of records (a missing or shortened batch file).
    #[error("{dir}: the {split} split of {dataset} should hold {expected} records, found {found}")]
    WrongRecordCount {
        /// The data set folder.
        dir: PathBuf,
        /// `train` or `test`.
        split: &'static str,
        /// The data set's command-line name.
        dataset: &'static str,
        /// Records the official data set has.
        expected: usize,
        /// Records found.
        found: usize,
    },
    /// The class-name file does not list the expected number of classes.
    #[error("{path}: expected {expected} class names, found {found}")]
    BadClassNames {
        /// The class-name file.
        path: PathBuf,
        /// Number of classes of the data set.
        expected: usize,
        /// Non-empty lines found.
        found: usize,
    },
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A downloaded or local archive whose checksum differs from the expected one.
    #[error("{path}: {algorithm} checksum mismatch: expected {expected}, found {found}")]
    ChecksumMismatch {
        /// The archive (or partial download) that was checked.
        path: PathBuf,
        /// `md5` or `sha256`.
        algorithm: &'static str,
        /// Expected hex digest.
        expected: String,
        /// Digest of the bytes received.
        found: String,
    },
    /// The server answered with an error or could not be reached.
    #[error("download of {url} failed: {reason}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong (HTTP status, connection error).
        reason: String,
    },
    /// The connection ended before the announced body was received.
    #[error("download of {url} was cut short: expected {expected} bytes, received {received}")]
    Truncated {
        /// The URL requested.
        url: String,
        /// Bytes announced by the server (or the official size).
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The archive does not hold the files of the data set.
    #[error("{archive}: expected {expected} in the archive, found {found}")]
    ArchiveContents {
        /// The archive.
        archive: PathBuf,
        /// What was expected (folder and file names).
        expected: String,
        /// What the archive held instead.
        found: String,
    },
    /// An archive entry that would land outside the destination (path traversal, absolute path,
    /// or a link).
    #[error("{archive}: refusing unsafe entry {entry:?}: {reason}")]
    UnsafeArchiveEntry {
        /// The archive.
        archive: PathBuf,
        /// The entry's path as stored.
        entry: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An invalid option value (bad checksum string, empty batch size, ...).
    #[error("invalid {what}: expected {expected}, found {found:?}")]
    InvalidOption {
        /// The option.
        what: &'static str,
        /// What is accepted.
        expected: &'static str,
        /// The value given.
        found: String,
    },
    /// Building a tensor failed.
    #[error("building a tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The commands that fetch the data set named `dataset` (its command-line name): `cargo xtask
/// fetch` only fetches CIFAR-10.
fn fetch_commands(dataset: &str) -> String {
    let cli = format!("`layerzero data fetch --dataset {dataset}`");
    if dataset == Dataset::Cifar10.cli_name() {
        format!("{cli} (or `cargo xtask fetch`)")
    } else {
        cli
    }
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
