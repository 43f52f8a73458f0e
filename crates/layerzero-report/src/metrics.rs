//! Training metrics: the `metrics.jsonl` file a training run writes, one JSON object per
//! epoch.
//!
//! ```text
//! {"epoch": 1, "step": 390, "lr": 0.1, "train_loss": 1.5, "train_top1": 0.45,
//!  "test_loss": 1.2, "test_top1": 0.56, "test_top5": 0.95, "images_per_s": 800.0, "wall_s": 61.2}
//! ```
//!
//! Required: `epoch` (≥ 1, strictly increasing from line to line), `train_loss`,
//! `train_top1`, `test_loss`, `test_top1`. Optional: `step`, `lr`, `test_top5`,
//! `images_per_s`, `wall_s`, `image_side` (the training images' side when progressive resizing
//! shrank them; absent or 32 otherwise). Accuracies are fractions in `[0, 1]`, losses finite and ≥ 0.
//! Unknown fields are ignored; blank lines are skipped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ReportError, Result};

/// One epoch's line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: u64,
    /// Optimiser steps taken so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// Learning rate in this epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Mean training cross-entropy over the epoch.
    pub train_loss: f64,
    /// Training top-1 accuracy over the epoch, a fraction.
    pub train_top1: f64,
    /// Test cross-entropy after the epoch.
    pub test_loss: f64,
    /// Test top-1 accuracy after the epoch, a fraction.
    pub test_top1: f64,
    /// Test top-5 accuracy after the epoch, a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_top5: Option<f64>,
    /// Training throughput.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_s: Option<f64>,
    /// Wall-clock seconds, as the trainer recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    /// Side of the epoch's training images (progressive resizing trains the first epochs on
    /// smaller ones); absent in files written before the trainer recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_side: Option<u64>,
}

/// Side of a full-size CIFAR image (`layerzero_data::IMAGE_SIDE`; repeated here because this
/// crate reads metrics files, not images, and does not depend on the data crate).
const FULL_IMAGE_SIDE: u64 = 32;

impl EpochMetrics {
    /// Whether the epoch trained on downscaled images.
    pub fn resized(&self) -> bool {
        self.image_side.is_some_and(|s| s < FULL_IMAGE_SIDE)
    }
}

/// The training curve of one run: which network and seed it trained, and its epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSeries {
    /// Architecture name, e.g. `resnet20`.
    pub arch: String,
    /// Training seed, if known.
    pub seed: Option<u64>,
    /// Where the metrics were read from.
    pub path: PathBuf,
    /// One entry per epoch, in order.
    pub epochs: Vec<EpochMetrics>,
}

impl MetricsSeries {
    /// Reads `path` with [`load_metrics`] and labels it with `arch` and `seed`.
    ///
    /// Where the run's `config.json` lies beside the file (as `layerzero train` and
    /// `cargo xtask reproduce` write it), its `arch` and `seed` must be the labels given: a
    /// ResNet-56's curve labelled `resnet20` would otherwise stand in the report as
    /// ResNet-20's training.
    pub fn read(arch: &str, seed: Option<u64>, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        check_run_config(arch, seed, path)?;
        Ok(MetricsSeries {
            arch: arch.to_string(),
            seed,
            path: path.to_path_buf(),
            epochs: load_metrics(path)?,
        })
    }
}

/// Compares `arch` and `seed` with the `config.json` beside `path`, if there is one that
/// records them; a file that is missing or not a run configuration is not an error.
fn check_run_config(arch: &str, seed: Option<u64>, path: &Path) -> Result<()> {
    let config = path.with_file_name("config.json");
    let Ok(text) = std::fs::read_to_string(&config) else {
        return Ok(());
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(());
    };
    let origin = config.display().to_string();
    // `resnetN-a` is an alias of `resnetN` (option A): `layerzero train` records the name as
    // given, the results files the network's own.
    let canonical = |a: &str| a.strip_suffix("-a").unwrap_or(a).to_string();
    if let Some(found) = value.get("arch").and_then(|v| v.as_str()) {
        if canonical(found) != canonical(arch) {
            return Err(ReportError::input(
                origin,
                "arch",
                format!("{arch}, the architecture {} was given for", path.display()),
                found,
            ));
        }
    }
    if let (Some(given), Some(found)) = (seed, value.get("seed").and_then(|v| v.as_u64())) {
        if found != given {
            return Err(ReportError::input(
                origin,
                "seed",
                format!("{given}, the seed {} was given for", path.display()),
                found.to_string(),
            ));
        }
    }
    Ok(())
}

/// Reads a `metrics.jsonl` file (see the module docs). Errors name the file, the 1-based
/// line, the field, what was expected and what was found.
pub fn load_metrics(path: impl AsRef<Path>) -> Result<Vec<EpochMetrics>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    parse_metrics(&text, path)
}

/// Parses the text of a `metrics.jsonl` file; `file` labels errors.
pub fn parse_metrics(text: &str, file: &Path) -> Result<Vec<EpochMetrics>> {
    let mut epochs: Vec<EpochMetrics> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let bad = |field: &str, expected: &str, found: String| ReportError::Metrics {
            file: file.to_path_buf(),
            line,
            field: field.to_string(),
            expected: expected.to_string(),
            found,
        };
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|source| ReportError::MetricsJson {
                file: file.to_path_buf(),
                line,
                source,
            })?;
        let Some(object) = value.as_object() else {
            return Err(bad("(line)", "a JSON object", raw.trim().to_string()));
        };
        for field in [
            "epoch",
            "train_loss",
            "train_top1",
            "test_loss",
            "test_top1",
        ] {
            if !object.contains_key(field) {
                return Err(bad(
                    field,
                    "a number (required field)",
                    "no such field".into(),
                ));
            }
        }
        let m: EpochMetrics =
            serde_json::from_value(value).map_err(|source| ReportError::MetricsJson {
                file: file.to_path_buf(),
                line,
                source,
            })?;
        if m.epoch == 0 {
            return Err(bad("epoch", "a 1-based epoch number >= 1", "0".into()));
        }
        if let Some(prev) = epochs.last() {
            if m.epoch <= prev.epoch {
                return Err(bad(
                    "epoch",
                    &format!("greater than the previous line's epoch {}", prev.epoch),
                    m.epoch.to_string(),
                ));
            }
        }
        let fractions = [
            ("train_top1", Some(m.train_top1)),
            ("test_top1", Some(m.test_top1)),
            ("test_top5", m.test_top5),
        ];
        for (field, v) in fractions {
            if let Some(v) = v {
                if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                    return Err(bad(field, "a fraction in [0, 1]", v.to_string()));
                }
            }
        }
        let non_negative = [
            ("train_loss", Some(m.train_loss)),
            ("test_loss", Some(m.test_loss)),
            ("lr", m.lr),
            ("images_per_s", m.images_per_s),
            ("wall_s", m.wall_s),
        ];
        for (field, v) in non_negative {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(bad(field, "a finite number >= 0", v.to_string()));
                }
            }
        }
        epochs.push(m);
    }
    if epochs.is_empty() {
        return Err(ReportError::Metrics {
            file: file.to_path_buf(),
            line: 0,
            field: "(file)".into(),
            expected: "at least one epoch line".into(),
            found: "no epoch lines".into(),
        });
    }
    Ok(epochs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"epoch": 1, "step": 390, "lr": 0.1, "train_loss": 1.5, "train_top1": 0.45, "test_loss": 1.2, "test_top1": 0.56, "test_top5": 0.95, "images_per_s": 800.0, "wall_s": 61.2, "extra": [1, 2]}

{"epoch": 2, "train_loss": 1.1, "train_top1": 0.6, "test_loss": 1.0, "test_top1": 0.65}
"#;

    #[test]
    fn parses_and_ignores_unknown_fields_and_blank_lines() {
        let m = parse_metrics(GOOD, Path::new("m.jsonl")).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].step, Some(390));
        assert_eq!(m[1].test_top5, None);
        assert_eq!(m[1].test_top1, 0.65);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let err = |text: &str| {
            parse_metrics(text, Path::new("run/metrics.jsonl"))
                .unwrap_err()
                .to_string()
        };
        let e = err("{\"epoch\": 1, \"train_loss\": 1, \"train_top1\": 0.5, \"test_loss\": 1, \"test_top1\": 56}");
        assert!(e.contains("run/metrics.jsonl:1"), "{e}");
        assert!(
            e.contains("`test_top1`") && e.contains("[0, 1]") && e.contains("56"),
            "{e}"
        );

        let e = err(&format!(
            "{}\n{{\"epoch\": 2}}",
            GOOD.lines().next().unwrap()
        ));
        assert!(e.contains(":2:") && e.contains("`train_loss`"), "{e}");

        let e = err(&format!("{}\nnot json", GOOD.lines().next().unwrap()));
        assert!(e.contains(":2: invalid JSON"), "{e}");

        let first = GOOD.lines().next().unwrap();
        let e = err(&format!("{first}\n{first}"));
        assert!(e.contains(":2:") && e.contains("`epoch`"), "{e}");

        let e = err("\n\n");
        assert!(e.contains("at least one epoch"), "{e}");

        let e = err("[1, 2]");
        assert!(e.contains("a JSON object"), "{e}");
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let e = load_metrics("/no/such/metrics.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/metrics.jsonl"), "{e}");
    }
}
