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
    /// When the report was made, as the caller formats it (e.g. RFC 3339 UTC, which
    /// [`utc_rfc3339`] writes).
    pub created_utc: String,
}

/// For callers filling [`Provenance::created_utc`]: now, as RFC 3339 UTC, or the time that
/// `SOURCE_DATE_EPOCH` gives in seconds since 1970 (the reproducible-builds convention), so
/// that a re-run can give a byte-identical report. [`crate::write_report`] never calls it.
pub fn created_utc_now() -> crate::Result<String> {
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| crate::ReportError::Input {
                origin: "environment variable SOURCE_DATE_EPOCH".into(),
                field: "value".into(),
                expected: "whole seconds since 1970-01-01 UTC".into(),
                found: format!("{s:?}"),
            })?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    Ok(utc_rfc3339(secs))
}

/// For callers filling [`Provenance::commands`] or a results file's `command`: `args` as a
/// shell would read them back. An argument with a space, a quote or a shell metacharacter is
/// single-quoted (`'` inside as `'\''`); one that is not UTF-8 (clap accepts those in paths)
/// is shown lossily rather than panicking. Pass `std::env::args_os()` for this process.
///
/// ```
/// let line = layerzero_report::shell_command_line(["layerzero", "ablate", "--out", "my runs/r.json"]);
/// assert_eq!(line, "layerzero ablate --out 'my runs/r.json'");
/// ```
pub fn shell_command_line<I>(args: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<std::ffi::OsStr>,
{
    args.into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
            if plain {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `secs` seconds after the Unix epoch as RFC 3339 UTC, e.g. `2026-11-27T03:56:52Z`, for
/// [`Provenance::created_utc`]. A pure function: the caller reads the clock (or honours
/// `SOURCE_DATE_EPOCH` for a byte-identical re-run), so the report itself stays deterministic.
pub fn utc_rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`), in eras of
    // 400 years (146,097 days) that start on 1 March, so the leap day is the era year's last.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// A weights file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WeightsChecksum {
    /// The path as recorded.
    pub path: String,
    /// SHA-256 of the file, 64 lowercase hex digits.
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::utc_rfc3339;

    #[test]
    fn utc_rfc3339_matches_known_instants() {
        // Checked with `date -u -d @SECS +%FT%TZ`.
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_799, "2000-02-29T23:59:59Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (1_798_343_812, "2026-12-27T03:56:52Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
        ] {
            assert_eq!(utc_rfc3339(secs), want, "{secs}");
        }
    }
}
