//! Writing a report directory.

use std::path::{Path, PathBuf};

use layerzero_ablate::write_atomic;

use crate::error::{ReportError, Result};
use crate::figures::render_figures;
use crate::input::ReportInput;
use crate::render::{render_csv, render_markdown};
use crate::summary::{analyze, Summary};

/// The files [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// The report directory.
    pub dir: PathBuf,
    /// `report.md`.
    pub report_md: PathBuf,
    /// `summary.json`.
    pub summary_json: PathBuf,
    /// `layers.csv`.
    pub layers_csv: PathBuf,
    /// The SVG figures drawn, under `figures/`.
    pub figures: Vec<PathBuf>,
}

/// Everything a report consists of, rendered in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedReport {
    /// The analysis.
    pub summary: Summary,
    /// `report.md`.
    pub markdown: String,
    /// `summary.json` (pretty-printed, trailing newline).
    pub summary_json: String,
    /// `layers.csv`.
    pub csv: String,
    /// The figures.
    pub figures: Vec<crate::figures::Figure>,
}

/// Analyses the inputs and renders every file of the report, without writing anything.
pub fn render_report(input: &ReportInput) -> Result<RenderedReport> {
    let summary = analyze(input)?;
    let mut summary_json =
        serde_json::to_string_pretty(&summary).map_err(|source| ReportError::Json {
            what: "summary.json".into(),
            source,
        })?;
    summary_json.push('\n');
    Ok(RenderedReport {
        markdown: render_markdown(&summary),
        csv: render_csv(&summary),
        figures: render_figures(&summary)?,
        summary_json,
        summary,
    })
}

/// Writes `report.md`, `summary.json`, `layers.csv` and `figures/*.svg` into `dir`
/// (created if needed), each file atomically (temporary file, then rename). Figures the
/// summary lists as omitted are removed if an earlier report left them there, so the
/// directory never shows a figure the report does not describe.
///
/// Everything is rendered before anything is written: bad input leaves `dir` untouched.
pub fn write_report(dir: impl AsRef<Path>, input: &ReportInput) -> Result<ReportFiles> {
    let dir = dir.as_ref();
    let rendered = render_report(input)?;
    let figures_dir = dir.join("figures");
    std::fs::create_dir_all(&figures_dir).map_err(|e| ReportError::io(&figures_dir, e))?;
    let mut figures = Vec::new();
    for fig in &rendered.figures {
        let path = dir.join(&fig.file);
        write_atomic(&path, fig.svg.as_bytes())?;
        figures.push(path);
    }
    for note in rendered.summary.figures.iter().filter(|f| !f.drawn) {
        let stale = dir.join(&note.file);
        if stale.is_file() {
            std::fs::remove_file(&stale).map_err(|e| ReportError::io(&stale, e))?;
        }
    }
    let files = ReportFiles {
        dir: dir.to_path_buf(),
        report_md: dir.join("report.md"),
        summary_json: dir.join("summary.json"),
        layers_csv: dir.join("layers.csv"),
        figures,
    };
    write_atomic(&files.layers_csv, rendered.csv.as_bytes())?;
    write_atomic(&files.summary_json, rendered.summary_json.as_bytes())?;
    // The report last: its presence means the rest is complete.
    write_atomic(&files.report_md, rendered.markdown.as_bytes())?;
    Ok(files)
}

/// Reads a `summary.json` back.
pub fn read_summary(path: impl AsRef<Path>) -> Result<Summary> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| ReportError::Json {
        what: path.display().to_string(),
        source,
    })
}
