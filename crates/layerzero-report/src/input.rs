//! What a report is made from: results files, training metrics and provenance.

use std::path::{Path, PathBuf};

use layerzero_ablate::ResultsFile;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::metrics::MetricsSeries;

/// Everything [`crate::analyze`] and [`crate::write_report`] need.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportInput {
    /// The ablation results, one file per (architecture, seed, mode), in any order.
    pub results: Vec<ResultsSource>,
    /// Training curves, zero or more.
    pub metrics: Vec<MetricsSeries>,
    /// Versions, commit, seeds, commands and checksums, recorded as given.
    pub provenance: Provenance,
}

/// One `results.json` and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsSource {
    /// The file's path (used to label errors and listed in the report).
    pub path: PathBuf,
    /// Its contents.
    pub results: ResultsFile,
    /// SHA-256 of the file's bytes, when it was read from disk ([`ResultsSource::read`]).
    pub sha256: Option<String>,
}

impl ResultsSource {
    /// Reads and validates a results file ([`ResultsFile::read`]) and records its SHA-256.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Ok(ResultsSource {
            path: path.to_path_buf(),
            results: ResultsFile::read(path)?,
            sha256: Some(layerzero_ablate::sha256_file(path)?),
        })
    }

    /// Wraps results already in memory (no checksum).
    pub fn new(path: impl Into<PathBuf>, results: ResultsFile) -> Self {
        ResultsSource {
            path: path.into(),
            results,
            sha256: None,
        }
    }
}

/// How the results were produced, for reproducibility. The caller supplies every field; the
/// report reads no clock and runs no command, so the same inputs give the same report.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// Version of the `layerzero` tool that ran the study.
    pub layerzero_version: String,
    /// Git commit of the source tree, if known.
    pub git_commit: Option<String>,
    /// Training seeds of the study.
    pub seeds: Vec<u64>,
    /// The commands that produced the inputs and the report, in order.
    pub commands: Vec<String>,
    /// Checksums of weights files (those named in results files are added automatically).
    pub weights: Vec<WeightsChecksum>,
    /// When the report was made, as the caller formats it (e.g. RFC 3339 UTC).
    pub created_utc: String,
}

/// A weights file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WeightsChecksum {
    /// The path as recorded.
    pub path: String,
    /// SHA-256 of the file, 64 lowercase hex digits.
    pub sha256: String,
}
