//! Text renderings of a [`Summary`]: `report.md` and `layers.csv`.

use std::fmt::Write as _;

use layerzero_ablate::{AblationMode, Metrics};

use crate::claims::{ClaimEvaluation, ClaimOutcome, COMBINATION_RULE};
use crate::summary::{
    seed_label, Consensus, Family, LayerSummary, ModeSummary, NetworkSummary, Stat, Summary,
};

/// A fraction as a percentage with two decimals: `0.9312` → `93.12`.
pub fn pct(fraction: f64) -> String {
    format!("{:.2}", fraction * 100.0)
}

/// A fraction difference as signed percentage points with two decimals: `-0.0211` →
/// `-2.11`, `0.0` → `+0.00`.
pub fn pp(fraction: f64) -> String {
    let v = fraction * 100.0;
    // Avoid "-0.00" for tiny negatives.
    if v.abs() < 0.005 {
        "+0.00".to_string()
    } else {
        format!("{v:+.2}")
    }
}

/// A measured Δ (a fraction) beside its verdict, as signed percentage points with two
/// decimals, its magnitude rounded **up** to the next hundredth: `-0.010001` → `-1.01`.
///
/// Why up: the verdict compares |Δ| with a threshold of whole hundredths of a point (1.00 pp by
/// default), and a magnitude rounded up is at most such a threshold exactly when the true one
/// is. Rounded to nearest, a Δ of −1.0001 pp (9,999 test images) read "−1.00" beside a
/// non-trivial verdict. On CIFAR's 10,000 test images every Δ is a whole hundredth of a point
/// and prints as it is. The tolerance absorbs the float error of `k / n * 100 * 100` (a few
/// 1e-12) and is exact for any image count below about 10⁹: a Δ that is not a whole hundredth
/// lies at least 1/n hundredths past one.
pub fn pp_delta(fraction: f64) -> String {
    let v = fraction * 100.0;
    if !v.is_finite() {
        return format!("{v}");
    }
    let hundredths = (v.abs() * 100.0 - 1e-9).ceil().max(0.0);
    if hundredths == 0.0 {
        "+0.00".to_string()
    } else {
        format!("{:+.2}", v.signum() * hundredths / 100.0)
    }
}

/// One end of a range of Δ over seeds (a fraction) in signed percentage points with two
/// decimals, rounded outward: down (more negative) for the lower end, up for the upper end, so
/// that the printed range holds every value in it and the mean printed beside it (rounded to
/// nearest, it cannot leave a range rounded outward). Same tolerance as [`pp_delta`].
fn pp_range_end(fraction: f64, upper: bool) -> String {
    let v = fraction * 100.0;
    if !v.is_finite() {
        return format!("{v}");
    }
    let hundredths = if upper {
        (v * 100.0 - 1e-9).ceil()
    } else {
        (v * 100.0 + 1e-9).floor()
    };
    if hundredths == 0.0 {
        "+0.00".to_string()
    } else {
        format!("{:+.2}", hundredths / 100.0)
    }
}

/// A p-value: three significant digits, cut rather than rounded, from 0.001 up (`0.0123`,
/// `0.00985`, `0.500`; `1` exactly for 1), else scientific (`1.2e-30`).
pub fn pvalue(p: f64) -> String {
    if p >= 1.0 {
        "1".to_string()
    } else if p >= 1e-3 {
        // Three significant digits, cut rather than rounded: with a fixed three decimals
        // 0.009853 read "0.010", and rounding would still turn 0.0099996 into "0.0100", either
        // beside a verdict that a p below 0.01 made non-trivial. (The tiny factor keeps a p
        // such as 0.0123, stored a hair below itself, from losing its last digit.)
        let decimals = (2.0 - p.log10().floor()).max(0.0) as i32;
        let scale = 10f64.powi(decimals);
        let cut = (p * scale * (1.0 + 1e-12)).floor() / scale;
        format!("{cut:.0$}", decimals as usize)
    } else if p == 0.0 {
        "0 (underflow)".to_string()
    } else {
        format!("{p:.1e}")
    }
}

/// Mean ± std of a fraction in percentage points (`-2.11 ± 0.35`); only the mean when there
/// is one value.
fn pp_stat(s: &Stat) -> String {
    match s.std {
        Some(std) => format!("{} ± {:.2}", pp(s.mean), std * 100.0),
        None => pp(s.mean),
    }
}

fn pct_stat(s: &Stat) -> String {
    match s.std {
        Some(std) => format!("{} ± {:.2}", pct(s.mean), std * 100.0),
        None => pct(s.mean),
    }
}

fn seeds_label(seeds: &[Option<u64>]) -> String {
    if seeds == [None] {
        return "none recorded".to_string();
    }
    seeds
        .iter()
        .map(|s| seed_label(*s))
        .collect::<Vec<_>>()
        .join(", ")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A value for a Markdown table cell: `|` would end the cell, line breaks the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Markdown for `report.md`.
pub fn render_markdown(summary: &Summary) -> String {
    let mut md = String::new();
    let p = &summary.provenance;
    let _ = writeln!(md, "# Layer-ablation report\n");
    let _ = writeln!(
        md,
        "Generated {} by layerzero {} ({}), git commit {}.\n",
        or_unknown(&p.created_utc),
        or_unknown(&p.layerzero_version),
        summary.generator,
        p.git_commit.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        md,
        "Question (after \"Is Each Layer Non-trivial in CNN?\", Liang et al., arXiv 2009.09938): \
         when one layer's kernel is replaced by zeros and the network is evaluated again, does its \
         accuracy change? Accuracies are percentages of the evaluated images; **Δtop-1 = ablated − \
         baseline top-1 in percentage points (pp)**, negative when the ablation hurts. One measurement's Δ is shown \
         with its magnitude rounded up to the hundredth, so that it lies on its verdict's side \
         of a threshold in whole hundredths such as the default 1.00 pp (on CIFAR's 10,000 test \
         images every Δ is a whole hundredth and shown exactly); ranges over seeds are rounded \
         outward, means over seeds and interval bounds to nearest. The 95 % \
         interval of Δtop-1 is the Wald interval of the paired difference; the McNemar p-value is \
         the exact two-sided test on the paired per-image correctness. With few flipped images \
         the Wald interval is the more optimistic of the two: it can exclude 0 where the exact \
         test finds no difference, and the verdicts follow the test. *Trivial* means no change \
         beyond the rule's thresholds was found, not that the layer was shown to do nothing; \
         each layer is tested on its own, without correction for the number of layers tested.\n"
    );
    let mut rules: Vec<&str> = summary
        .networks
        .iter()
        .flat_map(|n| &n.modes)
        .map(|m| m.verdict_rule.as_str())
        .collect();
    rules.sort_unstable();
    rules.dedup();
    for rule in &rules {
        let _ = writeln!(md, "Verdict rule: {rule}.\n");
    }
    let _ = writeln!(
        md,
        "Inputs: {} results file(s), {} training-metrics file(s).\n",
        summary.inputs.len(),
        summary.training.len()
    );

    let _ = writeln!(md, "## Summary\n");
    baseline_section(&mut md, summary);
    claims_overview(&mut md, summary);
    claims_detail(&mut md, summary);

    for net in &summary.networks {
        network_section(&mut md, net);
    }
    training_section(&mut md, summary);
    figures_section(&mut md, summary);
    reproducibility_section(&mut md, summary);
    md
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "(unknown)"
    } else {
        s
    }
}

fn baseline_section(md: &mut String, summary: &Summary) {
    let _ = writeln!(md, "### Baseline accuracy\n");
    if summary.networks.is_empty() {
        let _ = writeln!(md, "No results files were given.\n");
        return;
    }
    let _ = writeln!(
        md,
        "| network | shortcuts | seed | weights (sha256, first 12) | images | top-1 (%) | top-5 (%) | loss |"
    );
    let _ = writeln!(md, "|---|---|---|---|---:|---:|---:|---:|");
    for net in &summary.networks {
        for b in &net.baselines {
            let _ = writeln!(
                md,
                "| {} | {} | {} | `{}` | {} | {} | {} | {:.4} |",
                net.arch,
                net.family.describe(),
                seeds_label(&b.seeds),
                short_sha(&b.weights.sha256),
                b.n_images,
                pct(b.metrics.top1),
                pct(b.metrics.top5),
                b.metrics.loss
            );
        }
        if net.baselines.len() > 1 {
            let _ = writeln!(
                md,
                "| {} | {} | mean ± std over {} weights | | | {} | | |",
                net.arch,
                net.family.describe(),
                net.baselines.len(),
                pct_stat(&net.baseline_top1)
            );
        }
    }
    let _ = writeln!(md);
    for caution in underpowered(summary) {
        let _ = writeln!(md, "**Caution:** {caution}\n");
    }
}

/// Evaluations below which the verdicts say little: on fewer than this many images a 95 %
/// interval of Δtop-1 is several points wide against the rule's 1 point ... (The report
/// cautions under such a baseline or held-out curve; the CLI warns before such a run.)
pub const FEW_IMAGES: u64 = 5_000;
/// ... and a network below this top-1 has not learnt the features whose layers the seed paper
/// asks about (a smoke run ends near 10-20 %).
const WEAK_TOP1: f64 = 0.5;

/// A sentence for each baseline whose verdicts cannot carry the paper's question, so that a
/// smoke run's "holds" is not read as a finding.
fn underpowered(summary: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    for net in &summary.networks {
        for b in &net.baselines {
            let few = b.n_images < FEW_IMAGES;
            let weak = b.metrics.top1 < WEAK_TOP1;
            if !(few || weak) {
                continue;
            }
            let mut why = Vec::new();
            if few {
                why.push(format!(
                    "only {} images were evaluated (the 95 % intervals of Δtop-1 are a few points \
                     wide, against the rule's 1 point)",
                    b.n_images
                ));
            }
            if weak {
                why.push(format!(
                    "its baseline top-1 is {} %, a network that has not learnt much",
                    pct(b.metrics.top1)
                ));
            }
            let which = if b.seeds == [None] {
                net.arch.clone()
            } else {
                format!("{} (seed {})", net.arch, seeds_label(&b.seeds))
            };
            out.push(format!(
                "{which}: {}. Read its verdicts and claims as a check of the pipeline, not as \
                 findings; the quick or paper profile on the full test set gives findings.",
                why.join("; and ")
            ));
        }
    }
    out
}

fn claims_overview(md: &mut String, summary: &Summary) {
    let _ = writeln!(md, "### Claims of the seed paper\n");
    let _ = writeln!(md, "| # | claim | outcome | deciding numbers |");
    let _ = writeln!(md, "|---|---|---|---|");
    for c in &summary.claims {
        let numbers = if c.outcome == ClaimOutcome::NotTested {
            format!("not tested: {}", c.note)
        } else {
            c.by_network
                .iter()
                .filter(|n| n.tested_in > 0)
                .map(|n| {
                    let evals: Vec<&ClaimEvaluation> =
                        c.evaluations.iter().filter(|e| e.arch == n.arch).collect();
                    let counts: Vec<String> = evals
                        .iter()
                        .filter(|e| e.outcome != ClaimOutcome::NotTested)
                        .map(|e| eval_count(c.id, e, true))
                        .collect();
                    if n.tested_in > 1 {
                        format!(
                            "{}: {} — holds in {} of {} seeds ({})",
                            n.arch,
                            n.outcome,
                            n.holds_in,
                            n.tested_in,
                            counts.join("; ")
                        )
                    } else {
                        format!("{}: {} — {}", n.arch, n.outcome, counts.join("; "))
                    }
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = writeln!(
            md,
            "| {} | {} | **{}** | {} |",
            c.id, c.statement, c.outcome, numbers
        );
    }
    let _ = writeln!(md);
}

/// `seed 1: 12/16 residual-branch convs trivial (75.0 %)` etc. (`with_seed`: the prefix).
fn eval_count(claim: u32, e: &ClaimEvaluation, with_seed: bool) -> String {
    let frac = if e.considered > 0 {
        100.0 * e.as_claimed as f64 / e.considered as f64
    } else {
        0.0
    };
    let what = match claim {
        1 => "channel-preserving residual-branch convs trivial",
        2 => "channel-changing convs non-trivial",
        _ => "conv/linear layers non-trivial",
    };
    let seed = if with_seed && e.seed.is_some() {
        format!("seed {}: ", seed_label(e.seed))
    } else {
        String::new()
    };
    format!(
        "{seed}{}/{} {what} ({frac:.1} %)",
        e.as_claimed, e.considered
    )
}

fn claims_detail(md: &mut String, summary: &Summary) {
    let _ = writeln!(md, "{COMBINATION_RULE}\n");
    for c in &summary.claims {
        let _ = writeln!(md, "#### Claim {}: {}\n", c.id, c.statement);
        let _ = writeln!(md, "Rule: {}\n", c.rule);
        let _ = writeln!(
            md,
            "Outcome: **{}** (holds in {} of {} tested network/seed evaluations).\n",
            c.outcome, c.holds_in, c.tested_in
        );
        if !c.note.is_empty() {
            let _ = writeln!(md, "Not tested: {}.\n", c.note);
        }
        for e in &c.evaluations {
            let seed = match e.seed {
                Some(s) => format!(", seed {s}"),
                None => String::new(),
            };
            let _ = writeln!(
                md,
                "- {}{} ({}): **{}** — {}.",
                e.arch,
                seed,
                e.source,
                e.outcome,
                eval_count(c.id, e, false)
            );
            let threshold = e
                .max_abs_delta_top1
                .filter(|_| c.id == 1 && e.as_claimed > 0);
            if let Some(t) = threshold {
                let shown = e
                    .layers
                    .iter()
                    .filter(|l| l.as_claimed && l.within_threshold == Some(true))
                    .count();
                let rest = match e.as_claimed - shown {
                    0 => String::new(),
                    1 => " The other one was not shown to differ at the rule's p-value, nor \
                          shown not to."
                        .to_string(),
                    n => format!(
                        " The other {n} were not shown to differ at the rule's p-value, nor \
                         shown not to."
                    ),
                };
                // On fewer images no interval fits within ±t, whatever the layer.
                let needed = layerzero_ablate::tango_min_pairs_within(t, layerzero_ablate::Z95);
                let rest = if shown < e.as_claimed && e.n_images > 0 && e.n_images < needed {
                    format!(
                        "{rest} On {} images none could be: a 95 % interval within ±{:.2} pp \
                         needs at least {needed}, even for a layer that flips no image.",
                        e.n_images,
                        t * 100.0
                    )
                } else {
                    rest
                };
                let verb = if shown == 1 { "has its" } else { "have their" };
                let _ = writeln!(
                    md,
                    "  Of the {} trivial, {shown} {verb} whole 95 % interval of Δtop-1 within \
                     ±{:.2} pp: by this test they move top-1 by less than the rule's \
                     threshold (Tango's score interval, which unlike the Wald interval in the \
                     tables keeps a width when no image flips; an asymptotic test, whose error \
                     near the threshold stayed at or under its nominal 2.5 % in exact \
                     calculations from 100 to 10,000 images).{rest}",
                    e.as_claimed,
                    t * 100.0,
                );
            }
            if let (1, Some(t)) = (c.id, e.max_abs_delta_top1) {
                // With 10,000 test images a drop well under the threshold can still be
                // significant; a reader comparing with accuracy-only judgements wants both.
                let small = e
                    .layers
                    .iter()
                    .filter(|l| l.delta_top1.abs() <= t + 1e-12)
                    .count();
                let _ = writeln!(
                    md,
                    "  By |Δtop-1| ≤ {:.2} pp alone (the accuracy drop without the rule's \
                     p-value): {small}/{} ({:.1} %).",
                    t * 100.0,
                    e.considered,
                    if e.considered > 0 {
                        100.0 * small as f64 / e.considered as f64
                    } else {
                        0.0
                    }
                );
            }
            let listed: Vec<_> = if c.id == 2 {
                // Claim 2 has few layers: list them all.
                e.layers.iter().collect()
            } else {
                e.exceptions().collect()
            };
            if listed.is_empty() {
                if e.considered > 0 {
                    let _ = writeln!(md, "  No exceptions.");
                }
                continue;
            }
            let label = if c.id == 2 {
                "Considered layers"
            } else {
                "Exceptions"
            };
            let items: Vec<String> = listed
                .iter()
                .map(|l| {
                    format!(
                        "`{}` {} pp [{}, {}], p = {}, {}",
                        cell(&l.layer),
                        pp_delta(l.delta_top1),
                        pp(l.ci95_delta_top1[0]),
                        pp(l.ci95_delta_top1[1]),
                        pvalue(l.mcnemar_p),
                        l.verdict
                    )
                })
                .collect();
            let _ = writeln!(md, "  {label}: {}.", items.join("; "));
        }
        let _ = writeln!(md);
    }
}

fn network_section(md: &mut String, net: &NetworkSummary) {
    let twin = net
        .twin
        .as_ref()
        .map(|t| format!("; twin: {t}"))
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "## Network {} ({}{twin})\n",
        net.arch,
        net.family.describe()
    );
    let _ = writeln!(
        md,
        "Dataset {} ({} split); baseline top-1 {} %{}.\n",
        net.dataset,
        net.split,
        pct_stat(&net.baseline_top1),
        if net.baseline_top1.n > 1 {
            format!(" (mean ± std over {} weights)", net.baseline_top1.n)
        } else {
            String::new()
        }
    );
    for m in &net.modes {
        let _ = writeln!(md, "### {} — {}\n", net.arch, m.mode);
        let _ = writeln!(
            md,
            "{}. Seeds: {}. Files: {}.\n",
            capitalise(m.mode.description()),
            seeds_label(&m.seeds),
            m.sources
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if m.mode.is_cumulative() {
            cumulative_intro(md, m);
            cumulative_tables(md, m);
        } else if m.mode.is_swept() {
            sweep_table(md, m);
        } else {
            if net.family == Family::Plain && m.mode == AblationMode::ZeroKernel {
                let _ = writeln!(
                    md,
                    "Without shortcuts, a zeroed kernel cuts the network at that layer: \
                     everything after it sees a constant (at most the batch norm's shift), so \
                     every image gets the same class and top-1 falls to that class's share of \
                     the images. Rows with the same accuracy and flips are that, not a bug.\n"
                );
            }
            layer_table(md, m);
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn layer_table(md: &mut String, m: &ModeSummary) {
    if m.seeds.len() <= 1 {
        let _ = writeln!(
            md,
            "| # | layer | kind | role | changes channels | top-1 (%) | Δtop-1 (pp) | 95 % CI of Δtop-1 (pp) | McNemar p | flips right→wrong / wrong→right | verdict |"
        );
        let _ = writeln!(md, "|---:|---|---|---|---|---:|---:|---|---:|---:|---|");
        for l in &m.layers {
            let Some(s) = l.per_seed.first() else {
                continue;
            };
            let r = &s.record;
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {} | {} | {} | {} | [{}, {}] | {} | {} / {} | {} |",
                l.index,
                cell(&l.layer),
                cell(&l.kind),
                cell(&l.role),
                yes_no(l.changes_channels),
                pct(r.top1),
                pp_delta(r.delta_top1),
                pp(r.ci95.delta_top1[0]),
                pp(r.ci95.delta_top1[1]),
                pvalue(r.mcnemar_p),
                r.flips_right_to_wrong,
                r.flips_wrong_to_right,
                r.verdict
            );
        }
    } else {
        let _ = writeln!(
            md,
            "Over {} seeds: Δtop-1 as mean ± sample std and range; the largest McNemar p over \
             seeds; the number of seeds with verdict `trivial`; the verdict when all seeds agree, \
             `mixed` otherwise.\n",
            m.seeds.len()
        );
        let _ = writeln!(
            md,
            "| # | layer | kind | role | changes channels | Δtop-1 mean ± std (pp) | Δtop-1 range (pp) | max McNemar p | trivial in | verdict |"
        );
        let _ = writeln!(md, "|---:|---|---|---|---|---:|---|---:|---:|---|");
        for l in &m.layers {
            let max_p = l
                .per_seed
                .iter()
                .map(|s| s.record.mcnemar_p)
                .fold(0.0f64, f64::max);
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {} | {} | {} | [{}, {}] | {} | {}/{} | {} |",
                l.index,
                cell(&l.layer),
                cell(&l.kind),
                cell(&l.role),
                yes_no(l.changes_channels),
                pp_stat(&l.delta_top1),
                pp_range_end(l.delta_top1.min, false),
                pp_range_end(l.delta_top1.max, true),
                pvalue(max_p),
                l.trivial,
                l.trivial + l.non_trivial,
                l.consensus
            );
        }
    }
    let counts = |c: Consensus| m.layers.iter().filter(|l| l.consensus == c).count();
    let _ = writeln!(
        md,
        "\n{} layers: {} trivial, {} non-trivial{}.\n",
        m.layers.len(),
        counts(Consensus::Trivial),
        counts(Consensus::NonTrivial),
        if counts(Consensus::Mixed) > 0 {
            format!(", {} mixed across seeds", counts(Consensus::Mixed))
        } else {
            String::new()
        }
    );
}

fn sweep_table(md: &mut String, m: &ModeSummary) {
    let mut levels: Vec<f64> = m.layers.iter().filter_map(|l| l.level).collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    let _ = writeln!(
        md,
        "Δtop-1 (pp{}) at each level (fraction of {} removed). **Bold**: non-trivial{}; \
         _italic_: the seeds disagree; plain: trivial.\n",
        if m.seeds.len() > 1 {
            ", mean over seeds"
        } else {
            ""
        },
        if m.mode == AblationMode::ZeroFilters {
            "output filters"
        } else {
            "weights"
        },
        if m.seeds.len() > 1 {
            " in every seed"
        } else {
            ""
        }
    );
    let _ = write!(md, "| # | layer | role |");
    for l in &levels {
        let _ = write!(md, " {} % |", fmt_level(*l));
    }
    let _ = writeln!(md);
    let _ = write!(md, "|---:|---|---|");
    for _ in &levels {
        let _ = write!(md, "---:|");
    }
    let _ = writeln!(md);
    let mut rows: Vec<(usize, &str, &str)> = m
        .layers
        .iter()
        .map(|l| (l.index, l.layer.as_str(), l.role.as_str()))
        .collect();
    rows.dedup();
    for (index, name, role) in rows {
        let _ = write!(md, "| {index} | `{}` | {} |", cell(name), cell(role));
        for level in &levels {
            let cell = m
                .layers
                .iter()
                .find(|l| l.index == index && l.layer == name && l.level == Some(*level))
                .map(sweep_cell)
                .unwrap_or_default();
            let _ = write!(md, " {cell} |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);
    if m.layers.iter().any(zeroed_none) {
        let _ = writeln!(
            md,
            "`0 zeroed`: at that level the layer has too few {} for any to go \
             (floor(level × count) = 0), so that cell measured the unchanged network; its \
             `trivial` says nothing about the layer.\n",
            if m.mode == AblationMode::ZeroFilters {
                "output filters"
            } else {
                "weights"
            }
        );
    }
}

fn fmt_level(level: f64) -> String {
    let v = level * 100.0;
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Whether every seed's record of a sweep cell zeroed nothing (the level rounds down to none
/// of the layer's filters or weights), so it measured the unchanged network.
fn zeroed_none(l: &LayerSummary) -> bool {
    !l.per_seed.is_empty() && l.per_seed.iter().all(|s| s.record.zeroed == Some(0))
}

fn sweep_cell(l: &LayerSummary) -> String {
    if zeroed_none(l) {
        return "0 zeroed".to_string();
    }
    // One seed: the cell is that seed's Δ beside its verdict (bold when non-trivial), so it
    // rounds as the per-layer tables do; a mean over seeds rounds to nearest.
    let v = if l.delta_top1.n == 1 {
        pp_delta(l.delta_top1.mean)
    } else {
        pp(l.delta_top1.mean)
    };
    match l.consensus {
        Consensus::NonTrivial => format!("**{v}**"),
        Consensus::Mixed => format!("_{v}_"),
        Consensus::Trivial => v,
    }
}

/// How many of a cumulative mode's curves were held out, and how many chosen and measured on
/// the same images.
fn held_and_same(m: &ModeSummary) -> (usize, usize) {
    let held = m
        .cumulative
        .iter()
        .filter(|c| c.selection_images.is_some())
        .count();
    (held, m.cumulative.len() - held)
}

/// What a cumulative curve chosen and measured on the same images is worth.
const SAME_TEXT: &str =
    "keeps the ablation that costs least on the evaluated images themselves, so \
     the path is chosen and scored on the same images: its accuracies are optimistic \
     for images it did not see (`layerzero ablate --selection-images N` chooses on the \
     first N images and measures on the others).";

/// What a held-out cumulative curve is worth.
const HELD_TEXT: &str =
    "keeps the ablation that costs least on the first images of the split (the \
     selection images); its top-1 and Δ (and in results.json its interval, p-value and \
     verdict) are measured on the images after them, which the choice never saw, so \
     they are those of a set of layers fixed in advance. \"Δtop-1 on the selection \
     images\" is the Δ the choice saw. Where the measured Δ is more negative, part of \
     the difference is what choosing and scoring on the same images would have hidden \
     and part is chance: the two parts are different images (their baselines differ \
     too), and each Δ has its own sampling error (its 95 % interval is in \
     results.json).";

/// How the path of a cumulative mode was chosen, and so what its numbers are worth.
fn cumulative_intro(md: &mut String, m: &ModeSummary) {
    let (held, same) = held_and_same(m);
    // One paragraph per kind of curve present; where both are, each names its tables.
    let kinds = [
        (
            same,
            held,
            "Where a table says it was chosen and measured on the same images, each step",
        ),
        (held, same, "Where a table says \"Held out\", each step"),
    ];
    for ((count, other, which), text) in kinds.into_iter().zip([SAME_TEXT, HELD_TEXT]) {
        if count > 0 {
            let which = if other > 0 { which } else { "Each step" };
            let _ = writeln!(md, "{which} {text}\n");
        }
    }
}

fn cumulative_tables(md: &mut String, m: &ModeSummary) {
    let mixed = {
        let (held, same) = held_and_same(m);
        held > 0 && same > 0
    };
    for c in &m.cumulative {
        if m.cumulative.len() > 1 {
            let _ = writeln!(md, "Seed {} (`{}`):\n", seed_label(c.seed), c.source);
        }
        match c.selection_images {
            Some(k) => {
                let there = c
                    .selection_baseline_top1
                    .map(|t| format!(" (baseline top-1 there {} %)", pct(t)))
                    .unwrap_or_default();
                let _ = writeln!(
                    md,
                    "Held out: the path chosen on the first {k} images{there}, measured on the {} \
                     after them.\n",
                    c.n_images
                );
                if c.n_images < FEW_IMAGES {
                    let _ = writeln!(
                        md,
                        "**Caution:** only {} images were measured: the 95 % interval of a Δtop-1 \
                         of a few points is about as wide as the rule's {:.2} pp (see \
                         results.json).\n",
                        c.n_images,
                        m.verdict_thresholds.max_abs_delta_top1 * 100.0
                    );
                }
                let _ = writeln!(
                    md,
                    "| step | layer ablated (in addition) | role | top-1 (%) | Δtop-1 vs baseline (pp) | Δtop-1 on the selection images (pp) |"
                );
                let _ = writeln!(md, "|---:|---|---|---:|---:|---:|");
                let _ = writeln!(
                    md,
                    "| 0 | (none) | | {} | +0.00 | +0.00 |",
                    pct(c.baseline_top1)
                );
            }
            None => {
                if mixed {
                    let _ = writeln!(
                        md,
                        "Chosen and measured on the same {} images.\n",
                        c.n_images
                    );
                }
                let _ = writeln!(
                    md,
                    "| step | layer ablated (in addition) | role | top-1 (%) | Δtop-1 vs baseline (pp) |"
                );
                let _ = writeln!(md, "|---:|---|---|---:|---:|");
                let _ = writeln!(md, "| 0 | (none) | | {} | +0.00 |", pct(c.baseline_top1));
            }
        }
        let mut idle = 0usize;
        for (k, r) in c.steps.iter().enumerate() {
            // Same loss to the bit and same accuracies as the step before (the baseline for
            // step 1): the layer was already cut off (a conv whose block's other conv is
            // zeroed) or its ablation changed nothing, so removing it costs nothing and says
            // nothing about the layer.
            let before = match k {
                0 => c.baseline,
                _ => {
                    let p = &c.steps[k - 1];
                    Some(Metrics {
                        top1: p.top1,
                        top5: p.top5,
                        loss: p.loss,
                    })
                }
            };
            let no_effect = before.is_some_and(|p| {
                r.loss.to_bits() == p.loss.to_bits() && r.top1 == p.top1 && r.top5 == p.top5
            });
            idle += usize::from(no_effect);
            let mark = if no_effect { " (no effect)" } else { "" };
            let chose = match (
                c.selection_images,
                r.selection_top1,
                c.selection_baseline_top1,
            ) {
                // Rounded as the measured Δ beside it is, so the two compare fairly.
                (Some(_), Some(t), Some(b)) => format!(" {} |", pp_delta(t - b)),
                (Some(_), _, _) => " |".to_string(),
                (None, _, _) => String::new(),
            };
            let _ = writeln!(
                md,
                "| {} | `{}`{mark} | {} | {} | {} |{chose}",
                r.step.unwrap_or(0),
                cell(&r.layer),
                cell(&r.role),
                pct(r.top1),
                pp_delta(r.delta_top1)
            );
        }
        let _ = writeln!(md);
        if idle > 0 {
            let _ = writeln!(
                md,
                "{idle} step(s) marked *no effect* changed neither an accuracy nor the loss: \
                 the layer no longer reached the output (its block's other convolution was \
                 already zeroed, say) or its ablation changed nothing, so they do not count as \
                 layers the network could lose.\n"
            );
        }
    }
}

fn training_section(md: &mut String, summary: &Summary) {
    let _ = writeln!(md, "## Training\n");
    if summary.training.is_empty() {
        let _ = writeln!(md, "No training metrics were given.\n");
        return;
    }
    let _ = writeln!(
        md,
        "| network | seed | epochs | final test top-1 (%) | best test top-1 (%) (epoch) | final train loss | mean images/s (32×32 epochs) | file |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|");
    for t in &summary.training {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} ({}) | {:.4} | {} | `{}` |",
            t.arch,
            seed_label(t.seed),
            epochs_label(t),
            pct(t.final_test_top1),
            pct(t.best_test_top1),
            t.best_epoch,
            t.final_train_loss,
            t.mean_images_per_s
                .map_or_else(|| "—".to_string(), |v| format!("{v:.0}")),
            t.path
        );
    }
    let _ = writeln!(md);
}

/// The epoch count, with how many of them trained on downscaled images.
fn epochs_label(t: &crate::summary::TrainingSummary) -> String {
    if t.resized_epochs == 0 {
        t.final_epoch.to_string()
    } else {
        format!("{} ({} downscaled)", t.final_epoch, t.resized_epochs)
    }
}

fn figures_section(md: &mut String, summary: &Summary) {
    let _ = writeln!(md, "## Figures\n");
    for f in summary.figures.iter().filter(|f| f.drawn) {
        let _ = writeln!(md, "### {}\n\n![{}]({})\n", f.title, f.title, f.file);
    }
    let omitted: Vec<_> = summary.figures.iter().filter(|f| !f.drawn).collect();
    if !omitted.is_empty() {
        let _ = writeln!(md, "Figures not drawn:\n");
        for f in omitted {
            let _ = writeln!(md, "- `{}` omitted: {}.", f.file, f.reason);
        }
        let _ = writeln!(md);
    }
}

fn reproducibility_section(md: &mut String, summary: &Summary) {
    let p = &summary.provenance;
    let _ = writeln!(md, "## Reproducibility\n");
    let _ = writeln!(
        md,
        "- layerzero version: {}\n- report generator: {}\n- git commit: {}\n- created (UTC): {}\n- seeds: {}\n- results schema: {}; summary.json schema: {}\n",
        or_unknown(&p.layerzero_version),
        summary.generator,
        p.git_commit.as_deref().unwrap_or("unknown"),
        or_unknown(&p.created_utc),
        if p.seeds.is_empty() {
            "(none given)".to_string()
        } else {
            p.seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
        layerzero_ablate::SCHEMA_VERSION,
        crate::summary::REPORT_SCHEMA
    );
    let _ = writeln!(md, "Commands:\n");
    if p.commands.is_empty() {
        let _ = writeln!(md, "(none recorded)\n");
    } else {
        let _ = writeln!(md, "```sh");
        for c in &p.commands {
            let _ = writeln!(md, "{c}");
        }
        let _ = writeln!(md, "```\n");
    }
    let _ = writeln!(md, "Weights (SHA-256):\n");
    if summary.weights.is_empty() {
        let _ = writeln!(md, "(none)\n");
    } else {
        let _ = writeln!(md, "| file | sha256 |");
        let _ = writeln!(md, "|---|---|");
        for w in &summary.weights {
            let _ = writeln!(md, "| `{}` | `{}` |", w.path, w.sha256);
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "Results files:\n");
    if summary.inputs.is_empty() {
        let _ = writeln!(md, "(none)\n");
    } else {
        let _ = writeln!(
            md,
            "| file | file sha256 (first 12) | arch | mode | seed | dataset/split | images | records | weights sha256 (first 12) | elapsed (s) |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---:|---:|---|---:|");
        for f in &summary.inputs {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} | {}/{} | {} | {} | `{}` | {:.1} |",
                f.path,
                f.sha256
                    .as_deref()
                    .map_or_else(|| "—".to_string(), |s| format!("`{}`", short_sha(s))),
                f.arch,
                f.mode,
                seed_label(f.seed),
                f.dataset,
                f.split,
                f.n_images,
                f.records,
                short_sha(&f.weights.sha256),
                f.elapsed_s
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "`layers.csv` has one row per record of every results file (fractions, not \
         percentages); `summary.json` holds everything in this report as data.\n"
    );
}

/// The CSV header of `layers.csv`.
pub const CSV_HEADER: &str = "arch,mode,seed,index,layer,kind,role,changes_channels,params,level,step,top1,top5,loss,delta_top1,ci95_delta_top1_lo,ci95_delta_top1_hi,mcnemar_p,flips_right_to_wrong,flips_wrong_to_right,verdict,source,selection_top1,zeroed";

/// `layers.csv`: one row per record of every results file, in report order, accuracies as
/// fractions; empty `seed`, `level`, `step`, `selection_top1`, `zeroed` when absent
/// (`selection_top1`, a held-out cumulative step's top-1 on the images that chose it, and
/// `zeroed`, how many filters or weights a sweep level zeroed, came last so that columns read
/// by position before them stay where they were).
pub fn render_csv(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{CSV_HEADER}");
    for net in &summary.networks {
        for m in &net.modes {
            let rows = m
                .layers
                .iter()
                .flat_map(|l| l.per_seed.iter().map(|s| (s.seed, &s.source, &s.record)))
                .chain(
                    m.cumulative
                        .iter()
                        .flat_map(|c| c.steps.iter().map(move |r| (c.seed, &c.source, r))),
                );
            for (seed, source, r) in rows {
                let fields = [
                    csv_field(&net.arch),
                    m.mode.name().to_string(),
                    seed.map(|s| s.to_string()).unwrap_or_default(),
                    r.index.to_string(),
                    csv_field(&r.layer),
                    csv_field(&r.kind),
                    csv_field(&r.role),
                    r.changes_channels.to_string(),
                    r.params.to_string(),
                    r.level.map(|l| l.to_string()).unwrap_or_default(),
                    r.step.map(|s| s.to_string()).unwrap_or_default(),
                    r.top1.to_string(),
                    r.top5.to_string(),
                    r.loss.to_string(),
                    r.delta_top1.to_string(),
                    r.ci95.delta_top1[0].to_string(),
                    r.ci95.delta_top1[1].to_string(),
                    r.mcnemar_p.to_string(),
                    r.flips_right_to_wrong.to_string(),
                    r.flips_wrong_to_right.to_string(),
                    r.verdict.to_string(),
                    csv_field(source),
                    r.selection_top1.map(|t| t.to_string()).unwrap_or_default(),
                    r.zeroed.map(|z| z.to_string()).unwrap_or_default(),
                ];
                let _ = writeln!(out, "{}", fields.join(","));
            }
        }
    }
    out
}

/// Quotes a CSV field when it contains a comma, quote or line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(pct(0.9312), "93.12");
        assert_eq!(pp(-0.0211), "-2.11");
        assert_eq!(pp(0.0), "+0.00");
        assert_eq!(pp(-0.00001), "+0.00");
        assert_eq!(pp(0.013), "+1.30");
        assert_eq!(pp(-0.010001), "-1.00");
        assert_eq!(pvalue(1.0), "1");
        assert_eq!(pvalue(0.0123), "0.0123");
        assert_eq!(pvalue(0.009853), "0.00985");
        assert_eq!(pvalue(0.5), "0.500");
        assert_eq!(pvalue(0.001), "0.00100");
        // Never shown at or above a threshold it is below.
        assert_eq!(pvalue(0.0099996), "0.00999");
        assert_eq!(pvalue(0.9996), "0.999");
        assert_eq!(pvalue(0.04999), "0.0499");
        assert_eq!(pvalue(1.2e-30), "1.2e-30");
        assert_eq!(fmt_level(0.5), "50");
        assert_eq!(fmt_level(0.125), "12.5");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("x\"y"), "\"x\"\"y\"");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }

    #[test]
    fn a_one_seed_sweep_cell_rounds_as_its_verdict_does() {
        let stat = |v: &[f64]| Stat::of(v).unwrap();
        let layer = |delta: Stat, consensus| LayerSummary {
            index: 0,
            layer: "layer1.0.conv1".into(),
            kind: "conv".into(),
            role: "residual-branch".into(),
            changes_channels: false,
            params: 0,
            level: Some(0.5),
            delta_top1: delta,
            top1: stat(&[0.9]),
            trivial: 0,
            non_trivial: 1,
            consensus,
            per_seed: Vec::new(),
        };
        let d = -100.0 / 9_999.0;
        assert_eq!(
            sweep_cell(&layer(stat(&[d]), Consensus::NonTrivial)),
            "**-1.01**"
        );
        // A mean over seeds is rounded to nearest, like the ± std beside it elsewhere.
        assert_eq!(
            sweep_cell(&layer(stat(&[d, d]), Consensus::Mixed)),
            "_-1.00_"
        );
    }

    #[test]
    fn a_delta_prints_on_the_side_of_the_threshold_its_verdict_is_on() {
        let rule = layerzero_ablate::VerdictRule::default();
        // Over 10,000 images: exact hundredths, float noise and all.
        for k in [
            -10_000i64, -211, -101, -100, -99, -1, 0, 1, 7, 99, 100, 101, 10_000,
        ] {
            let d = k as f64 / 10_000.0;
            let want = if k == 0 {
                "+0.00".to_string()
            } else {
                format!("{:+.2}", k as f64 / 100.0)
            };
            assert_eq!(pp_delta(d), want, "{k}/10000");
        }
        // Over other counts: the printed magnitude is within the default 1.00 pp exactly when
        // the true one is, which rounding to nearest broke (-100/9,999 read "-1.00").
        for n in [9_999u32, 10_001, 3_333, 777] {
            for k in 0..=(n as i64 / 20) {
                for sign in [-1.0, 1.0] {
                    let d = sign * k as f64 / n as f64;
                    let shown: f64 = pp_delta(d).parse().unwrap();
                    let trivial_by_delta =
                        rule.verdict(d, 1.0) == layerzero_ablate::Verdict::Trivial;
                    assert_eq!(
                        shown.abs() <= 1.0,
                        trivial_by_delta,
                        "{k}/{n}: {}",
                        pp_delta(d)
                    );
                    assert!((shown - d * 100.0).abs() < 0.01 + 1e-9, "{k}/{n}");
                }
            }
        }
        assert_eq!(pp_delta(-100.0 / 9_999.0), "-1.01");
        assert_eq!(pp_delta(f64::NAN), "NaN");
    }

    #[test]
    fn a_range_over_seeds_holds_its_values_and_their_mean() {
        // Two seeds at -100/9,999 (-1.0001 pp): the mean prints "-1.00" to nearest, and the
        // range, its ends each rounded up in magnitude as a single Δ is, read [-1.01, -1.01].
        let d = -100.0 / 9_999.0;
        assert_eq!(
            (pp_range_end(d, false), pp_range_end(d, true)),
            ("-1.01".into(), "-1.00".into())
        );
        assert_eq!(pp(d), "-1.00");
        // Exact hundredths, float noise and all, print as they are at either end.
        for k in [
            -10_000i64, -211, -101, -100, -99, -7, -1, 1, 7, 99, 100, 101, 10_000,
        ] {
            let d = k as f64 / 10_000.0;
            let want = format!("{:+.2}", k as f64 / 100.0);
            assert_eq!(pp_range_end(d, false), want, "{k}");
            assert_eq!(pp_range_end(d, true), want, "{k}");
        }
        assert_eq!(pp_range_end(0.0, false), "+0.00");
        // Half a hundredth below zero: outward, not "-0.00".
        assert_eq!(pp_range_end(-0.5 / 10_000.0, false), "-0.01");
        assert_eq!(pp_range_end(-0.5 / 10_000.0, true), "+0.00");
        // Any two values over other counts: lower end ≤ mean (to nearest) ≤ upper end, and the
        // ends hold the values.
        for n in [9_999u32, 3_333, 777] {
            for a in (-(n as i64) / 20..=n as i64 / 20).step_by(7) {
                for b in (-(n as i64) / 20..=n as i64 / 20).step_by(11) {
                    let (x, y) = (a as f64 / n as f64, b as f64 / n as f64);
                    let (lo, hi) = (x.min(y), x.max(y));
                    let show = |t: String| t.parse::<f64>().unwrap();
                    let (l, h) = (show(pp_range_end(lo, false)), show(pp_range_end(hi, true)));
                    let mean = show(pp((x + y) / 2.0));
                    assert!(
                        l <= mean && mean <= h,
                        "{a}/{n}, {b}/{n}: [{l}, {h}] ∌ {mean}"
                    );
                    assert!(
                        l <= lo * 100.0 + 1e-9 && hi * 100.0 - 1e-9 <= h,
                        "{a}, {b} / {n}"
                    );
                }
            }
        }
    }
}
