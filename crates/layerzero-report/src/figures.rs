//! SVG figures drawn with plotters: Δtop-1 per layer, cumulative ablation, sweep
//! sensitivity and training curves.
//!
//! Text is written as SVG `<text>` elements and rendered by whatever displays the SVG, so no
//! font library is needed here; layout uses a fixed estimate of glyph widths.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use layerzero_ablate::AblationMode;

use crate::error::{ReportError, Result};
use crate::summary::{
    delta_figure_file, sensitivity_figure_file, Consensus, LayerSummary, NetworkSummary, Summary,
    CUMULATIVE_FIGURE, SINGLE_LAYER_MODES, SWEPT_MODES, TRAINING_FIGURE,
};

/// One rendered figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// Path relative to the report directory, e.g. `figures/cumulative.svg`.
    pub file: String,
    /// The SVG document.
    pub svg: String,
}

const FONT: &str = "sans-serif";
/// Estimated width of one character per pixel of font size (generous for sans-serif).
const CHAR_WIDTH: f64 = 0.6;

/// A font of `px` pixels as rendered: plotters' SVG backend writes `font-size` as the
/// requested size divided by 1.24, so the request is scaled up by that factor.
fn font(px: f64) -> FontDesc<'static> {
    (FONT, px * 1.24).into_font()
}

/// Splits `text` into lines of at most `max_px` estimated pixels at `px` font size.
fn wrap(text: &str, px: f64, max_px: i32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if text_width(&candidate, px) > max_px && !line.is_empty() {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Tick labels with as many decimals as the axis span needs.
fn tick_formatter(span: f64) -> impl Fn(&f64) -> String {
    let decimals = if span > 20.0 {
        0
    } else if span > 2.0 {
        1
    } else {
        2
    };
    move |v: &f64| format!("{v:.decimals$}")
}

/// The colour of an architectural role (unknown roles get the `other` grey).
pub fn role_color(role: &str) -> RGBColor {
    match role {
        "stem" => RGBColor(44, 160, 44),
        "residual-branch" => RGBColor(31, 119, 180),
        "shortcut" => RGBColor(148, 103, 189),
        "plain" => RGBColor(255, 127, 14),
        "head" => RGBColor(140, 86, 75),
        "classifier" => RGBColor(214, 39, 40),
        _ => RGBColor(127, 127, 127),
    }
}

/// Roles in legend order.
const ROLES: [&str; 7] = [
    "stem",
    "residual-branch",
    "shortcut",
    "plain",
    "head",
    "classifier",
    "other",
];

/// Distinct line colours (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn text_width(text: &str, size: f64) -> i32 {
    (text.chars().count() as f64 * size * CHAR_WIDTH).ceil() as i32
}

fn fig_err<E: std::fmt::Display>(file: &str) -> impl Fn(E) -> ReportError + '_ {
    move |e| ReportError::Figure {
        file: file.to_string(),
        message: e.to_string(),
    }
}

/// Renders every figure the summary marks as drawn.
pub fn render_figures(summary: &Summary) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    let drawn = |file: &str| summary.figures.iter().any(|f| f.file == file && f.drawn);
    for mode in SINGLE_LAYER_MODES {
        let file = delta_figure_file(mode);
        if drawn(&file) {
            let svg = delta_figure(&file, summary, mode)?;
            out.push(Figure { file, svg });
        }
    }
    if drawn(CUMULATIVE_FIGURE) {
        out.push(Figure {
            file: CUMULATIVE_FIGURE.to_string(),
            svg: cumulative_figure(CUMULATIVE_FIGURE, summary)?,
        });
    }
    for mode in SWEPT_MODES {
        let file = sensitivity_figure_file(mode);
        if drawn(&file) {
            let svg = sensitivity_figure(&file, summary, mode)?;
            out.push(Figure { file, svg });
        }
    }
    if drawn(TRAINING_FIGURE) {
        out.push(Figure {
            file: TRAINING_FIGURE.to_string(),
            svg: training_figure(TRAINING_FIGURE, summary)?,
        });
    }
    Ok(out)
}

/// A legend entry drawn in a figure's header.
enum Key {
    /// A filled swatch.
    Swatch(RGBColor, f64),
    /// An outlined, unfilled swatch.
    Outline,
    /// A dashed line sample.
    Dashed(RGBColor),
    /// An error bar sample.
    ErrorBar,
}

/// A figure's title, subtitle (wrapped to the figure's width) and legend.
struct Header {
    title: String,
    subtitle: Vec<String>,
    legend: Vec<(Key, String)>,
    width: u32,
}

const TITLE_PX: f64 = 18.0;
const SUBTITLE_PX: f64 = 13.0;
const LEGEND_PX: f64 = 13.0;
const LEGEND_ROW: i32 = 22;

impl Header {
    fn new(width: u32, title: &str, subtitle: &str, legend: Vec<(Key, String)>) -> Self {
        Header {
            title: title.to_string(),
            subtitle: wrap(subtitle, SUBTITLE_PX, width as i32 - 24),
            legend,
            width,
        }
    }

    /// Legend entries with their positions (x, row).
    fn layout(&self) -> Vec<(i32, i32)> {
        let mut x = 12;
        let mut row = 0;
        let mut out = Vec::with_capacity(self.legend.len());
        for (_, label) in &self.legend {
            let w = 22 + 6 + text_width(label, LEGEND_PX) + 20;
            if x + w > self.width as i32 - 12 && x > 12 {
                x = 12;
                row += 1;
            }
            out.push((x, row));
            x += w;
        }
        out
    }

    fn legend_top(&self) -> i32 {
        34 + 18 * self.subtitle.len() as i32 + 6
    }

    fn height(&self) -> u32 {
        let rows = self.layout().last().map_or(0, |&(_, r)| r + 1);
        (self.legend_top() + rows * LEGEND_ROW + 10) as u32
    }

    fn draw(
        &self,
        area: &DrawingArea<SVGBackend<'_>, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        let title_style = TextStyle::from(font(TITLE_PX).style(FontStyle::Bold));
        area.draw(&Text::new(self.title.clone(), (12, 8), title_style))?;
        for (i, line) in self.subtitle.iter().enumerate() {
            area.draw(&Text::new(
                line.clone(),
                (12, 36 + 18 * i as i32),
                font(SUBTITLE_PX),
            ))?;
        }
        let top = self.legend_top();
        for ((key, label), (x, row)) in self.legend.iter().zip(self.layout()) {
            let y = top + row * LEGEND_ROW;
            match key {
                Key::Swatch(c, alpha) => {
                    area.draw(&Rectangle::new(
                        [(x, y + 2), (x + 22, y + 16)],
                        c.mix(*alpha).filled(),
                    ))?;
                }
                Key::Outline => {
                    area.draw(&Rectangle::new(
                        [(x, y + 2), (x + 22, y + 16)],
                        BLACK.stroke_width(2),
                    ))?;
                }
                Key::Dashed(c) => {
                    for k in 0..3 {
                        let x0 = x + k * 8;
                        area.draw(&PathElement::new(
                            vec![(x0, y + 9), (x0 + 5, y + 9)],
                            c.stroke_width(2),
                        ))?;
                    }
                }
                Key::ErrorBar => {
                    let style = BLACK.stroke_width(1);
                    area.draw(&PathElement::new(
                        vec![(x + 11, y), (x + 11, y + 18)],
                        style,
                    ))?;
                    area.draw(&PathElement::new(vec![(x + 7, y), (x + 15, y)], style))?;
                    area.draw(&PathElement::new(
                        vec![(x + 7, y + 18), (x + 15, y + 18)],
                        style,
                    ))?;
                }
            }
            area.draw(&Text::new(
                label.clone(),
                (x + 28, y + 9),
                TextStyle::from(font(LEGEND_PX)).pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        Ok(())
    }
}

/// Arranges `n` equal panels: one row for up to two, else two columns.
fn grid(n: usize) -> (usize, usize) {
    if n <= 2 {
        (1, n.max(1))
    } else {
        (n.div_ceil(2), 2)
    }
}

fn svg_string(
    file: &str,
    (w, h): (u32, u32),
    draw: impl FnOnce(
        &DrawingArea<SVGBackend<'_>, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>>,
) -> Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(fig_err(file))?;
        draw(&root).map_err(fig_err(file))?;
        root.present().map_err(fig_err(file))?;
    }
    Ok(buf)
}

fn verdict_alpha(c: Consensus) -> f64 {
    match c {
        Consensus::NonTrivial => 1.0,
        Consensus::Mixed => 0.6,
        Consensus::Trivial => 0.3,
    }
}

fn delta_figure(file: &str, summary: &Summary, mode: AblationMode) -> Result<String> {
    let nets: Vec<&NetworkSummary> = summary
        .networks
        .iter()
        .filter(|n| n.mode(mode).is_some_and(|m| !m.layers.is_empty()))
        .collect();
    let max_layers = nets
        .iter()
        .filter_map(|n| n.mode(mode))
        .map(|m| m.layers.len())
        .max()
        .unwrap_or(1);
    let max_label = nets
        .iter()
        .filter_map(|n| n.mode(mode))
        .flat_map(|m| m.layers.iter().map(|l| l.layer.chars().count()))
        .max()
        .unwrap_or(4);
    let label_size = 13.0;
    let x_label_area = (max_label as f64 * label_size * 0.56) as u32 + 40;
    let panel_w = (110 + 18 * max_layers as u32).max(560);
    let panel_h = 380 + x_label_area;
    let (rows, cols) = grid(nets.len());
    let width = panel_w * cols as u32;

    let multi_seed = nets
        .iter()
        .filter_map(|n| n.mode(mode))
        .any(|m| m.seeds.len() > 1);
    let thr = nets
        .iter()
        .filter_map(|n| n.mode(mode))
        .map(|m| m.verdict_thresholds.max_abs_delta_top1)
        .next()
        .unwrap_or(0.01);
    let mut legend: Vec<(Key, String)> = Vec::new();
    for role in ROLES {
        let present = nets
            .iter()
            .filter_map(|n| n.mode(mode))
            .any(|m| m.layers.iter().any(|l| role_key(&l.role) == role));
        if present {
            legend.push((Key::Swatch(role_color(role), 1.0), role.to_string()));
        }
    }
    legend.push((
        Key::Swatch(RGBColor(127, 127, 127), verdict_alpha(Consensus::Trivial)),
        "pale bar: trivial".into(),
    ));
    if multi_seed {
        legend.push((
            Key::Swatch(RGBColor(127, 127, 127), verdict_alpha(Consensus::Mixed)),
            "half-tone: seeds disagree".into(),
        ));
    }
    legend.push((Key::Outline, "outlined: changes channels".into()));
    legend.push((
        Key::Dashed(RGBColor(90, 90, 90)),
        format!("trivial band ±{:.2} pp", thr * 100.0),
    ));
    // Each panel draws the spread it has: a network with one seed has no std (a bar of
    // width 0 under a "± 1 std" legend, before), so it keeps its confidence interval.
    let single_seed = nets
        .iter()
        .filter_map(|n| n.mode(mode))
        .any(|m| m.seeds.len() <= 1);
    legend.push((
        Key::ErrorBar,
        match (multi_seed, single_seed) {
            (true, true) => {
                "error bar: ± 1 std over seeds, or 95 % CI of Δtop-1 for a single seed".into()
            }
            (true, false) => "error bar: ± 1 std over seeds".into(),
            _ => "error bar: 95 % CI of Δtop-1".into(),
        },
    ));
    let title = format!("Δ top-1 when one layer is ablated ({mode})");
    let subtitle = format!(
        "{}; layers in network order; bar = {}",
        mode.description(),
        if multi_seed {
            "mean over seeds"
        } else {
            "single seed"
        }
    );
    let header = Header::new(width, &title, &subtitle, legend);
    let header_h = header.height();
    let height = header_h + panel_h * rows as u32;
    svg_string(file, (width, height), |root| {
        let (header_area, body) = root.split_vertically(header_h);
        header.draw(&header_area)?;
        let panels = body.split_evenly((rows, cols));
        for (net, area) in nets.iter().zip(&panels) {
            if let Some(m) = net.mode(mode) {
                let panel_multi_seed = m.seeds.len() > 1;
                delta_panel(
                    root,
                    area,
                    net,
                    &m.layers,
                    thr,
                    panel_multi_seed,
                    label_size,
                )?;
            }
        }
        Ok(())
    })
}

fn role_key(role: &str) -> &str {
    if ROLES.contains(&role) {
        role
    } else {
        "other"
    }
}

fn delta_panel(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    net: &NetworkSummary,
    layers: &[LayerSummary],
    thr: f64,
    multi_seed: bool,
    label_size: f64,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let n = layers.len();
    let bar = |l: &LayerSummary| -> (f64, f64, f64) {
        let mean = l.delta_top1.mean * 100.0;
        if multi_seed {
            let s = l.delta_top1.std.unwrap_or(0.0) * 100.0;
            (mean, mean - s, mean + s)
        } else {
            let ci = l
                .per_seed
                .first()
                .map_or([l.delta_top1.mean; 2], |s| s.record.ci95.delta_top1);
            (mean, ci[0] * 100.0, ci[1] * 100.0)
        }
    };
    let bars: Vec<(f64, f64, f64)> = layers.iter().map(bar).collect();
    let lo = bars
        .iter()
        .map(|b| b.1.min(b.0))
        .fold(-thr * 100.0, f64::min);
    let hi = bars
        .iter()
        .map(|b| b.2.max(b.0))
        .fold(thr * 100.0, f64::max);
    let pad = (hi - lo) * 0.06;
    let (ylo, yhi) = (lo - pad, hi + pad);
    let x_label_area = (layers
        .iter()
        .map(|l| l.layer.chars().count())
        .max()
        .unwrap_or(4) as f64
        * label_size
        * 0.56) as u32
        + 40;
    let seeds = layers.iter().map(|l| l.per_seed.len()).max().unwrap_or(1);
    let caption = format!(
        "{} ({}{}) — baseline top-1 {:.2} %",
        net.arch,
        net.family.describe(),
        if seeds > 1 {
            format!(", {seeds} seeds")
        } else {
            String::new()
        },
        net.baseline_top1.mean * 100.0
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(15.0))
        .margin(12)
        .margin_right(20)
        .x_label_area_size(x_label_area)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.6f64..(n as f64 - 0.4), ylo..yhi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(10)
        .y_label_formatter(&tick_formatter(yhi - ylo))
        .y_desc("Δ top-1 (percentage points)")
        .x_desc("layer (network order)")
        .axis_desc_style(font(14.0))
        .label_style(font(12.0))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    // Trivial band and zero line.
    let xs = (-0.6, n as f64 - 0.4);
    for y in [-thr * 100.0, thr * 100.0] {
        chart.draw_series(DashedLineSeries::new(
            vec![(xs.0, y), (xs.1, y)],
            6,
            4,
            RGBColor(90, 90, 90).stroke_width(1),
        ))?;
    }
    chart.draw_series(LineSeries::new(vec![(xs.0, 0.0), (xs.1, 0.0)], &BLACK))?;
    for (i, (l, &(mean, elo, ehi))) in layers.iter().zip(&bars).enumerate() {
        let x = i as f64;
        let color = role_color(role_key(&l.role));
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x - 0.38, 0.0), (x + 0.38, mean)],
            color.mix(verdict_alpha(l.consensus)).filled(),
        )))?;
        if l.changes_channels {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(x - 0.38, 0.0), (x + 0.38, mean)],
                BLACK.stroke_width(2),
            )))?;
        }
        if ehi > elo {
            let style = BLACK.stroke_width(1);
            chart.draw_series([
                PathElement::new(vec![(x, elo), (x, ehi)], style),
                PathElement::new(vec![(x - 0.18, elo), (x + 0.18, elo)], style),
                PathElement::new(vec![(x - 0.18, ehi), (x + 0.18, ehi)], style),
            ])?;
        }
    }
    // Layer names under the axis, rotated to read bottom-to-top.
    let style = TextStyle::from(font(label_size))
        .transform(FontTransform::Rotate270)
        .pos(Pos::new(HPos::Right, VPos::Center));
    for (i, l) in layers.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64, ylo));
        root.draw(&Text::new(l.layer.clone(), (px, py + 6), style.clone()))?;
    }
    Ok(())
}

fn chance_level(dataset: &str) -> Option<f64> {
    match dataset {
        "cifar10" => Some(10.0),
        "cifar100" => Some(1.0),
        _ => None,
    }
}

fn cumulative_figure(file: &str, summary: &Summary) -> Result<String> {
    let modes: Vec<AblationMode> = AblationMode::ALL
        .into_iter()
        .filter(|m| m.is_cumulative())
        .filter(|&m| {
            summary.networks.iter().any(|n| {
                n.mode(m)
                    .is_some_and(|s| s.cumulative.iter().any(|c| !c.steps.is_empty()))
            })
        })
        .collect();
    let panel_w = 720u32;
    let panel_h = 540u32;
    let (rows, cols) = grid(modes.len());
    let width = panel_w * cols as u32;
    let chance = summary
        .networks
        .first()
        .and_then(|n| chance_level(&n.dataset));
    let title = "Cumulative ablation: top-1 as more layers are ablated";
    let curves = || {
        summary
            .networks
            .iter()
            .flat_map(|n| &n.modes)
            .flat_map(|m| &m.cumulative)
    };
    let held = curves().filter(|c| c.selection_images.is_some()).count();
    let subtitle = match (held, curves().count() - held) {
        (0, _) => {
            "greedy multiple deletion: each step ablates, in addition, the layer whose \
             ablation hurts least on the plotted images; step 0 = baseline"
        }
        (_, 0) => {
            "greedy multiple deletion: each step ablates, in addition, the layer whose \
             ablation hurts least on the selection images; plotted: held-out images"
        }
        _ => {
            "greedy multiple deletion: each step ablates, in addition, the least harmful \
             layer; some curves measured on held-out images, see the report"
        }
    };
    let legend: Vec<(Key, String)> = Vec::new();
    let header = Header::new(width, title, subtitle, legend);
    let header_h = header.height();
    let height = header_h + panel_h * rows as u32;
    svg_string(file, (width, height), |root| {
        let (header_area, body) = root.split_vertically(header_h);
        header.draw(&header_area)?;
        let panels = body.split_evenly((rows, cols));
        for (mode, area) in modes.iter().zip(&panels) {
            let curves: Vec<(usize, &NetworkSummary, &crate::summary::CumulativeCurve)> = summary
                .networks
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.mode(*mode).map(|m| (i, n, m)))
                .flat_map(|(i, n, m)| m.cumulative.iter().map(move |c| (i, n, c)))
                .collect();
            let max_step = curves
                .iter()
                .flat_map(|(_, _, c)| c.steps.iter().filter_map(|r| r.step))
                .max()
                .unwrap_or(1)
                .max(1);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{mode}"), font(15.0))
                .margin(12)
                .margin_right(24)
                .x_label_area_size(50)
                .y_label_area_size(64)
                .build_cartesian_2d(-0.3f64..(max_step as f64 + 0.3), 0f64..100f64)?;
            chart
                .configure_mesh()
                .x_labels(max_step.min(20) + 1)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&tick_formatter(100.0))
                .y_desc("test top-1 (%)")
                .x_desc(if mode.targets_blocks() {
                    "residual branches skipped"
                } else {
                    "layers with zeroed kernel"
                })
                .axis_desc_style(font(14.0))
                .label_style(font(12.0))
                .light_line_style(TRANSPARENT)
                .bold_line_style(RGBColor(215, 215, 215))
                .draw()?;
            if let Some(ch) = chance {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(-0.3, ch), (max_step as f64 + 0.3, ch)],
                        6,
                        4,
                        RGBColor(120, 120, 120).stroke_width(1),
                    ))?
                    .label(format!("chance ({ch:.0} %)"))
                    .legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(120, 120, 120))
                    });
            }
            let mut labelled: Vec<usize> = Vec::new();
            for (i, net, c) in &curves {
                let color = palette(*i);
                let mut points = vec![(0.0, c.baseline_top1 * 100.0)];
                points.extend(
                    c.steps
                        .iter()
                        .map(|r| (r.step.unwrap_or(0) as f64, r.top1 * 100.0)),
                );
                let series =
                    chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
                if !labelled.contains(i) {
                    labelled.push(*i);
                    let seeds = net.mode(*mode).map_or(1, |m| m.seeds.len());
                    let label = if seeds > 1 {
                        format!("{} ({seeds} seeds)", net.arch)
                    } else {
                        net.arch.clone()
                    };
                    series.label(label).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .margin(12)
                .label_font(font(13.0))
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(160, 160, 160))
                .draw()?;
        }
        Ok(())
    })
}

/// One layer's sensitivity curve: (index, name, [(level %, Δ pp)]).
type SensitivityLine = (usize, String, Vec<(f64, f64)>);

fn sensitivity_figure(file: &str, summary: &Summary, mode: AblationMode) -> Result<String> {
    const TOP: usize = 8;
    let nets: Vec<&NetworkSummary> = summary
        .networks
        .iter()
        .filter(|n| n.mode(mode).is_some_and(|m| !m.layers.is_empty()))
        .collect();
    let panel_w = 720u32;
    let panel_h = 560u32;
    let (rows, cols) = grid(nets.len());
    let width = panel_w * cols as u32;
    let thr = nets
        .iter()
        .filter_map(|n| n.mode(mode))
        .map(|m| m.verdict_thresholds.max_abs_delta_top1)
        .next()
        .unwrap_or(0.01);
    let what = if mode == AblationMode::ZeroFilters {
        "output filters zeroed, smallest L1 norm first"
    } else {
        "weights zeroed, smallest magnitude first"
    };
    let title = format!("Sensitivity to {mode}: Δ top-1 against sparsity level");
    let subtitle = format!(
        "one line per layer; the {TOP} most sensitive (most negative mean Δ over levels) coloured and named, the rest grey"
    );
    let legend = vec![(
        Key::Dashed(RGBColor(90, 90, 90)),
        format!("trivial band ±{:.2} pp", thr * 100.0),
    )];
    let header = Header::new(width, &title, &subtitle, legend);
    let header_h = header.height();
    let height = header_h + panel_h * rows as u32;
    svg_string(file, (width, height), |root| {
        let (header_area, body) = root.split_vertically(header_h);
        header.draw(&header_area)?;
        let panels = body.split_evenly((rows, cols));
        for (net, area) in nets.iter().zip(&panels) {
            let Some(m) = net.mode(mode) else { continue };
            // Group by layer: (index, name) → [(level %, Δ pp)].
            let mut lines: Vec<SensitivityLine> = Vec::new();
            for l in &m.layers {
                let point = (l.level.unwrap_or(0.0) * 100.0, l.delta_top1.mean * 100.0);
                match lines
                    .iter_mut()
                    .find(|(i, name, _)| *i == l.index && *name == l.layer)
                {
                    Some((_, _, pts)) => pts.push(point),
                    None => lines.push((l.index, l.layer.clone(), vec![point])),
                }
            }
            for (_, _, pts) in &mut lines {
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            let mean = |pts: &[(f64, f64)]| pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
            let mut ranked: Vec<usize> = (0..lines.len()).collect();
            ranked.sort_by(|&a, &b| mean(&lines[a].2).total_cmp(&mean(&lines[b].2)));
            let top: Vec<usize> = ranked.into_iter().take(TOP).collect();
            let all = lines.iter().flat_map(|(_, _, p)| p.iter());
            let (mut xlo, mut xhi, mut ylo, mut yhi) =
                (f64::INFINITY, f64::NEG_INFINITY, -thr * 100.0, thr * 100.0);
            for &(x, y) in all {
                xlo = xlo.min(x);
                xhi = xhi.max(x);
                ylo = ylo.min(y);
                yhi = yhi.max(y);
            }
            if xhi <= xlo {
                xlo -= 5.0;
                xhi += 5.0;
            }
            let pad = (yhi - ylo) * 0.06;
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{} ({}) — baseline top-1 {:.2} %",
                        net.arch,
                        net.family.describe(),
                        net.baseline_top1.mean * 100.0
                    ),
                    font(15.0),
                )
                .margin(12)
                .margin_right(24)
                .x_label_area_size(50)
                .y_label_area_size(70)
                .build_cartesian_2d(xlo..xhi, (ylo - pad)..(yhi + pad))?;
            chart
                .configure_mesh()
                .x_desc(format!("sparsity level (%): {what}"))
                .y_desc("Δ top-1 (percentage points)")
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&tick_formatter(yhi - ylo + 2.0 * pad))
                .axis_desc_style(font(14.0))
                .label_style(font(12.0))
                .light_line_style(TRANSPARENT)
                .bold_line_style(RGBColor(215, 215, 215))
                .draw()?;
            for y in [-thr * 100.0, thr * 100.0] {
                chart.draw_series(DashedLineSeries::new(
                    vec![(xlo, y), (xhi, y)],
                    6,
                    4,
                    RGBColor(90, 90, 90).stroke_width(1),
                ))?;
            }
            let mut grey_labelled = false;
            for (k, (_, _, pts)) in lines.iter().enumerate() {
                if top.contains(&k) {
                    continue;
                }
                let s = chart.draw_series(LineSeries::new(
                    pts.clone(),
                    RGBColor(190, 190, 190).stroke_width(1),
                ))?;
                if !grey_labelled {
                    grey_labelled = true;
                    s.label(format!("other layers ({})", lines.len() - top.len()))
                        .legend(|(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], RGBColor(190, 190, 190))
                        });
                }
            }
            for (rank, &k) in top.iter().enumerate() {
                let (_, name, pts) = &lines[k];
                let color = palette(rank);
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .margin(12)
                .label_font(font(12.0))
                .background_style(WHITE.mix(0.9))
                .border_style(RGBColor(160, 160, 160))
                .draw()?;
        }
        Ok(())
    })
}

fn training_figure(file: &str, summary: &Summary) -> Result<String> {
    let panel_w = 640u32;
    let panel_h = 500u32;
    let width = panel_w * 2;
    let mut archs: Vec<&str> = Vec::new();
    for t in &summary.training {
        if !archs.contains(&t.arch.as_str()) {
            archs.push(&t.arch);
        }
    }
    let color_of = |arch: &str| palette(archs.iter().position(|a| *a == arch).unwrap_or(0));
    let legend: Vec<(Key, String)> = archs
        .iter()
        .map(|a| {
            let seeds = summary.training.iter().filter(|t| t.arch == *a).count();
            let label = if seeds > 1 {
                format!("{a} ({seeds} seeds)")
            } else {
                a.to_string()
            };
            (Key::Swatch(color_of(a), 1.0), label)
        })
        .collect();
    let title = "Training curves";
    let subtitle =
        "left: test top-1 after each epoch; right: mean training cross-entropy per epoch";
    let header = Header::new(width, title, subtitle, legend);
    let header_h = header.height();
    let height = header_h + panel_h;
    let max_epoch = summary
        .training
        .iter()
        .map(|t| t.final_epoch)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let range = |pick: fn(&crate::metrics::EpochMetrics) -> f64, lo_clamp: f64, hi_clamp: f64| {
        let (lo, hi) = summary
            .training
            .iter()
            .flat_map(|t| t.curve.iter().map(pick))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let pad = ((hi - lo) * 0.06).max(0.5 * (hi_clamp - lo_clamp) / 100.0);
        ((lo - pad).max(lo_clamp), (hi + pad).min(hi_clamp))
    };
    type Pick = fn(&crate::metrics::EpochMetrics) -> f64;
    let top1: Pick = |e| e.test_top1 * 100.0;
    let loss: Pick = |e| e.train_loss;
    let max_loss = summary
        .training
        .iter()
        .flat_map(|t| t.curve.iter().map(loss))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let specs: [(&str, &str, (f64, f64), Pick); 2] = [
        (
            "Test top-1",
            "test top-1 (%)",
            range(top1, 0.0, 100.0),
            top1,
        ),
        (
            "Training loss",
            "training loss (cross-entropy, nats)",
            range(loss, 0.0, max_loss * 1.1),
            loss,
        ),
    ];
    svg_string(file, (width, height), |root| {
        let (header_area, body) = root.split_vertically(header_h);
        header.draw(&header_area)?;
        let panels = body.split_evenly((1, 2));
        for ((caption, ydesc, (ylo, yhi), pick), area) in specs.into_iter().zip(&panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(caption, font(15.0))
                .margin(12)
                .margin_right(24)
                .x_label_area_size(50)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..max_epoch, ylo..yhi)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(ydesc)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&tick_formatter(yhi - ylo))
                .axis_desc_style(font(14.0))
                .label_style(font(12.0))
                .light_line_style(TRANSPARENT)
                .bold_line_style(RGBColor(215, 215, 215))
                .draw()?;
            for t in &summary.training {
                let color = color_of(&t.arch);
                let pts: Vec<(f64, f64)> =
                    t.curve.iter().map(|e| (e.epoch as f64, pick(e))).collect();
                chart.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?;
                if pts.len() <= 40 {
                    chart
                        .draw_series(pts.into_iter().map(|p| Circle::new(p, 2, color.filled())))?;
                }
            }
        }
        Ok(())
    })
}
