//! Report rendering from small hand-made results files: table rows, verdicts, claims,
//! multi-seed aggregation, figures and the written files.

mod common;

use common::*;
use layerzero_ablate::{AblationMode, LayerRecord, ResultsFile, Verdict};
use layerzero_report::{
    analyze, read_summary, render_report, write_report, ClaimOutcome, Consensus, Family,
    ReportInput,
};

fn claim_outcomes(input: &ReportInput) -> Vec<ClaimOutcome> {
    analyze(input)
        .unwrap()
        .claims
        .iter()
        .map(|c| c.outcome)
        .collect()
}

fn is_svg(text: &str) -> bool {
    text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>")
}

/// Replaces the flips of the named layers.
fn with_flips(
    layers: &[Layer],
    mut flips: Vec<(usize, usize)>,
    changes: &[(&str, (usize, usize))],
) -> Vec<(usize, usize)> {
    for (name, f) in changes {
        let i = layers.iter().position(|l| l.name == *name).unwrap();
        flips[i] = *f;
    }
    flips
}

#[test]
fn table_rows_verdicts_and_claims_for_a_single_seed_study() {
    let rendered = render_report(&standard()).unwrap();
    let s = &rendered.summary;

    // Networks: the ResNet first, its no-shortcut twin next.
    let archs: Vec<(&str, Family, Option<&str>)> = s
        .networks
        .iter()
        .map(|n| (n.arch.as_str(), n.family, n.twin.as_deref()))
        .collect();
    assert_eq!(
        archs,
        [
            ("resnet20", Family::Residual, Some("plain20")),
            ("plain20", Family::Plain, Some("resnet20"))
        ]
    );

    let md = &rendered.markdown;
    // A trivial branch conv: Δ = (2 − 3)/1000, Wald CI, p = 1 exactly.
    assert!(
        md.contains(
            "| 3 | `layer1.1.conv1` | conv | residual-branch | no | 89.90 | -0.10 | [-0.54, +0.34] | 1 | 3 / 2 | trivial |"
        ),
        "{md}"
    );
    // A channel-changing conv that hurts: Δ = (5 − 60)/1000.
    let row = md
        .lines()
        .find(|l| l.starts_with("| 7 | `layer2.0.conv1` |"))
        .unwrap();
    assert!(
        row.starts_with(
            "| 7 | `layer2.0.conv1` | conv | residual-branch | yes | 84.50 | -5.50 | [-7.04, -3.96] |"
        ),
        "{row}"
    );
    assert!(row.ends_with("| 60 / 5 | non-trivial |"), "{row}");
    // The stem and classifier of the plain net.
    assert!(
        md.contains("| 0 | `conv1` | conv | stem | yes | 10.00 | -80.00 |"),
        "{md}"
    );
    assert!(md.contains("| 19 | `fc` | linear | classifier | yes | 10.00 | -80.00 |"));
    assert!(md.contains("20 layers: 15 trivial, 5 non-trivial."), "{md}");
    assert!(md.contains("20 layers: 0 trivial, 20 non-trivial."), "{md}");

    // Baselines come first.
    let baseline = md.find("### Baseline accuracy").unwrap();
    assert!(baseline < md.find("### Claims of the seed paper").unwrap());
    assert!(md.contains("| resnet20 | with shortcuts | none recorded | `808080808080` | 1000 | 90.00 | 100.00 | 0.4000 |"), "{md}");

    // Claims, with their deciding numbers.
    assert_eq!(
        claim_outcomes(&standard()),
        [
            ClaimOutcome::Holds,
            ClaimOutcome::Holds,
            ClaimOutcome::Holds
        ]
    );
    let c1 = &s.claims[0];
    assert_eq!(
        (c1.evaluations[0].as_claimed, c1.evaluations[0].considered),
        (15, 16)
    );
    let exceptions: Vec<&str> = c1.evaluations[0]
        .exceptions()
        .map(|l| l.layer.as_str())
        .collect();
    assert_eq!(exceptions, ["layer1.0.conv1"]);
    let c2 = &s.claims[1];
    let considered: Vec<&str> = c2.evaluations[0]
        .layers
        .iter()
        .map(|l| l.layer.as_str())
        .collect();
    assert_eq!(considered, ["layer2.0.conv1", "layer3.0.conv1"]);
    assert_eq!(s.claims[2].evaluations[0].considered, 20);
    assert!(md.contains(
        "| 1 | In the ResNet most residual-branch convolutions are trivial. | **holds** | resnet20: holds — 15/16 channel-preserving residual-branch convs trivial (93.8 %) |"
    ), "{md}");
    assert!(md.contains("resnet20: holds — 2/2 channel-changing convs non-trivial (100.0 %)"));
    assert!(md.contains("plain20: holds — 20/20 conv/linear layers non-trivial (100.0 %)"));
    assert!(
        md.contains("Exceptions: `layer1.0.conv1` -5.50 pp [-7.04, -3.96], p = "),
        "{md}"
    );
    // The rules are stated.
    assert!(md.contains("more than half of them (k/n > 50 %)"));
    assert!(md.contains(
        "The stem convolution (image channels to features) and the classifier are excluded"
    ));

    // Reproducibility.
    assert!(md.contains("git commit: 0123456789abcdef0123456789abcdef01234567"));
    assert!(md.contains("layerzero ablate --mode zero-kernel"));
    assert!(md.contains(&format!(
        "| `runs/resnet20/seed0/final.safetensors` | `{}` |",
        sha(0x80)
    )));
    assert!(md.contains("created (UTC): 2025-01-02T03:04:05Z"));
}

#[test]
fn claims_that_do_not_hold_name_their_exceptions() {
    let res = resnet20_layers(false);
    let plain = resnet20_layers(true);
    // Exactly half (8 of 16) of the channel-preserving branch convs trivial: not "most".
    let hurt: Vec<String> = res
        .iter()
        .filter(|l| l.role == "residual-branch" && !l.changes_channels)
        .map(|l| l.name.clone())
        .take(8)
        .collect();
    let mut changes: Vec<(&str, (usize, usize))> =
        hurt.iter().map(|n| (n.as_str(), HURTS)).collect();
    changes.push(("layer1.0.conv1", HURTS));
    changes.push(("layer3.0.conv1", TRIVIAL)); // a channel-changing conv that is trivial
    let res_flips = with_flips(&res, resnet20_flips(), &changes);
    // plain20: one trivial layer; one only significant by McNemar (Δ −0.9 pp, p ≈ 0.004).
    let plain_flips = with_flips(
        &plain,
        plain20_flips(),
        &[("layer2.1.conv2", TRIVIAL), ("layer1.1.conv1", (9, 0))],
    );
    let input = input(vec![
        source(
            "a/resnet20.json",
            results(
                "resnet20",
                AblationMode::ZeroKernel,
                Some(1),
                &res,
                &res_flips,
            ),
        ),
        source(
            "a/plain20.json",
            results(
                "plain20",
                AblationMode::ZeroKernel,
                Some(1),
                &plain,
                &plain_flips,
            ),
        ),
    ]);
    let rendered = render_report(&input).unwrap();
    let s = &rendered.summary;
    assert_eq!(
        s.claims.iter().map(|c| c.outcome).collect::<Vec<_>>(),
        [
            ClaimOutcome::DoesNotHold,
            ClaimOutcome::DoesNotHold,
            ClaimOutcome::DoesNotHold
        ]
    );
    assert_eq!(
        (
            s.claims[0].evaluations[0].as_claimed,
            s.claims[0].evaluations[0].considered
        ),
        (8, 16)
    );
    let c2: Vec<(&str, bool)> = s.claims[1].evaluations[0]
        .layers
        .iter()
        .map(|l| (l.layer.as_str(), l.as_claimed))
        .collect();
    assert_eq!(c2, [("layer2.0.conv1", true), ("layer3.0.conv1", false)]);
    let c3 = &s.claims[2].evaluations[0];
    assert_eq!((c3.as_claimed, c3.considered), (19, 20));
    assert_eq!(
        c3.exceptions()
            .map(|l| l.layer.as_str())
            .collect::<Vec<_>>(),
        ["layer2.1.conv2"]
    );
    // The McNemar-only layer is non-trivial, as the results file says.
    let l = c3
        .layers
        .iter()
        .find(|l| l.layer == "layer1.1.conv1")
        .unwrap();
    assert_eq!(l.verdict, Verdict::NonTrivial);
    assert!(l.delta_top1.abs() <= 0.01 && l.mcnemar_p < 0.01);

    let md = &rendered.markdown;
    assert!(md.contains("| **does not hold** | resnet20: does not hold — seed 1: 8/16 channel-preserving residual-branch convs trivial (50.0 %) |"), "{md}");
    assert!(md.contains(
        "plain20: does not hold — seed 1: 19/20 conv/linear layers non-trivial (95.0 %)"
    ));
    assert!(
        md.contains("Exceptions: `layer2.1.conv2` -0.10 pp [-0.54, +0.34], p = 1, trivial."),
        "{md}"
    );
    assert!(
        md.contains("`layer3.0.conv1` -0.10 pp [-0.54, +0.34], p = 1, trivial"),
        "{md}"
    );
}

#[test]
fn claims_without_their_network_are_not_tested() {
    let only_plain = input(vec![source(
        "p.json",
        results(
            "plain20",
            AblationMode::ZeroKernel,
            None,
            &resnet20_layers(true),
            &plain20_flips(),
        ),
    )]);
    assert_eq!(
        claim_outcomes(&only_plain),
        [
            ClaimOutcome::NotTested,
            ClaimOutcome::NotTested,
            ClaimOutcome::Holds
        ]
    );
    let md = render_report(&only_plain).unwrap().markdown;
    assert!(md.contains("| 1 | In the ResNet most residual-branch convolutions are trivial. | **not tested** | not tested: no zero-kernel results for a network with shortcuts"), "{md}");

    // A ResNet with only skip-branch results: claims are about zero-kernel.
    let skip_only = input(vec![source(
        "r.json",
        results(
            "resnet20",
            AblationMode::SkipBranch,
            None,
            &resnet20_layers(false),
            &resnet20_flips(),
        ),
    )]);
    assert_eq!(claim_outcomes(&skip_only), [ClaimOutcome::NotTested; 3]);
}

/// Seeds 1–3 of resnet20: `layer1.1.conv1` has Δ −0.1, −0.5, −2.0 pp (trivial, trivial,
/// non-trivial); seed 3 has 9 of 16 channel-preserving branch convs non-trivial.
fn three_seeds() -> ReportInput {
    let res = resnet20_layers(false);
    let seed3_hurt: Vec<String> = res
        .iter()
        .filter(|l| l.role == "residual-branch" && !l.changes_channels)
        .map(|l| l.name.clone())
        .filter(|n| n != "layer1.1.conv1")
        .take(8)
        .collect();
    let mut seed3: Vec<(&str, (usize, usize))> =
        seed3_hurt.iter().map(|n| (n.as_str(), HURTS)).collect();
    seed3.push(("layer1.1.conv1", (20, 0)));
    let flips = [
        resnet20_flips(),
        with_flips(&res, resnet20_flips(), &[("layer1.1.conv1", (5, 0))]),
        with_flips(&res, resnet20_flips(), &seed3),
    ];
    let mut files = Vec::new();
    // Given out of order: the report sorts by seed.
    for seed in [3u64, 1, 2] {
        files.push(source(
            &format!("runs/resnet20/seed{seed}/zero-kernel.json"),
            results(
                "resnet20",
                AblationMode::ZeroKernel,
                Some(seed),
                &res,
                &flips[seed as usize - 1],
            ),
        ));
    }
    input(files)
}

#[test]
fn several_seeds_give_mean_std_and_verdict_stability() {
    let rendered = render_report(&three_seeds()).unwrap();
    let s = &rendered.summary;
    let net = &s.networks[0];
    assert_eq!(net.baselines.len(), 3, "one baseline per weights file");
    assert_eq!(net.baseline_top1.std, Some(0.0));
    let m = net.mode(AblationMode::ZeroKernel).unwrap();
    assert_eq!(m.seeds, [Some(1), Some(2), Some(3)]);
    let l = m
        .layers
        .iter()
        .find(|l| l.layer == "layer1.1.conv1")
        .unwrap();
    let expected_mean = (-0.001 - 0.005 - 0.020) / 3.0;
    assert!((l.delta_top1.mean - expected_mean).abs() < 1e-12);
    let dev: f64 = [-0.001f64, -0.005, -0.020]
        .iter()
        .map(|d| (d - expected_mean).powi(2))
        .sum();
    assert!((l.delta_top1.std.unwrap() - (dev / 2.0).sqrt()).abs() < 1e-12);
    assert_eq!((l.delta_top1.min, l.delta_top1.max), (-0.020, -0.001));
    assert_eq!(
        (l.trivial, l.non_trivial, l.consensus),
        (2, 1, Consensus::Mixed)
    );
    let stable = m
        .layers
        .iter()
        .find(|l| l.layer == "layer2.0.conv1")
        .unwrap();
    assert_eq!(stable.consensus, Consensus::NonTrivial);
    assert_eq!(stable.delta_top1.std, Some(0.0));

    // Claim 1 holds in seeds 1 and 2, not in 3: mixed; claim 2 holds in all three.
    let c1 = &s.claims[0];
    assert_eq!(
        (c1.outcome, c1.holds_in, c1.tested_in),
        (ClaimOutcome::Mixed, 2, 3)
    );
    let per_seed: Vec<(Option<u64>, ClaimOutcome, usize)> = c1
        .evaluations
        .iter()
        .map(|e| (e.seed, e.outcome, e.as_claimed))
        .collect();
    assert_eq!(
        per_seed,
        [
            (Some(1), ClaimOutcome::Holds, 15),
            (Some(2), ClaimOutcome::Holds, 15),
            (Some(3), ClaimOutcome::DoesNotHold, 7)
        ]
    );
    assert_eq!(
        (s.claims[1].outcome, s.claims[1].holds_in),
        (ClaimOutcome::Holds, 3)
    );

    let md = &rendered.markdown;
    assert!(md.contains("| 3 | `layer1.1.conv1` | conv | residual-branch | no | -0.87 ± 1.00 | [-2.00, -0.10] | 1 | 2/3 | mixed |"), "{md}");
    assert!(
        md.contains("resnet20: mixed — holds in 2 of 3 seeds (seed 1: 15/16"),
        "{md}"
    );
    assert!(md.contains("seed 3: 7/16 channel-preserving residual-branch convs trivial (43.8 %)"));
    assert!(
        md.contains(
            "| resnet20 | with shortcuts | mean ± std over 3 weights | | | 90.00 ± 0.00 | | |"
        ),
        "{md}"
    );
    assert!(
        md.contains("20 layers: 7 trivial, 5 non-trivial, 8 mixed across seeds."),
        "{md}"
    );
}

#[test]
fn writes_all_files_and_summary_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = three_seeds();
    input.results.extend(standard().results.into_iter().skip(1)); // plain20
    input.metrics = vec![
        training("resnet20", Some(1), 12, 0.91),
        training("plain20", Some(1), 12, 0.88),
    ];
    let files = write_report(dir.path(), &input).unwrap();
    let summary = read_summary(&files.summary_json).unwrap();
    assert_eq!(summary, analyze(&input).unwrap());

    let csv = std::fs::read_to_string(&files.layers_csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], layerzero_report::render::CSV_HEADER);
    assert_eq!(lines.len(), 1 + 3 * 20 + 20, "one row per record");
    let row = lines
        .iter()
        .find(|l| l.starts_with("resnet20,zero-kernel,2,3,layer1.1.conv1,"))
        .unwrap();
    assert!(
        row.contains(",-0.005,")
            && row.contains(",5,0,trivial,runs/resnet20/seed2/zero-kernel.json"),
        "{row}"
    );

    let names: Vec<String> = files
        .figures
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        ["figures/delta_top1_zero-kernel.svg", "figures/training.svg"]
    );
    for f in &files.figures {
        let svg = std::fs::read_to_string(f).unwrap();
        assert!(is_svg(&svg), "{}", f.display());
    }
    let delta = std::fs::read_to_string(&files.figures[0]).unwrap();
    for text in [
        "resnet20 (with shortcuts, 3 seeds)",
        "plain20 (no shortcuts)",
        "layer3.2.conv2",
        "Δ top-1 (percentage points)",
        "residual-branch",
        // plain20 has one seed: its panel keeps the confidence interval, and the legend says so.
        "error bar: ± 1 std over seeds, or 95 % CI of Δtop-1 for a single seed",
    ] {
        assert!(delta.contains(text), "{text} missing from the Δ figure");
    }
    let training_svg = std::fs::read_to_string(&files.figures[1]).unwrap();
    assert!(training_svg.contains("test top-1 (%)") && training_svg.contains("epoch"));

    let md = std::fs::read_to_string(&files.report_md).unwrap();
    assert!(md.contains(
        "![Δtop-1 per layer in network order, zero-kernel](figures/delta_top1_zero-kernel.svg)"
    ));
    assert!(md.contains("| resnet20 | 1 | 12 | 91.00 |"), "{md}");
    // No temporary files are left behind.
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["figures", "layers.csv", "report.md", "summary.json"]);
}

fn cumulative(
    arch: &str,
    layers: &[Layer],
    order: &[usize],
    flips: &[(usize, usize)],
) -> ResultsFile {
    let full = results(arch, AblationMode::ZeroKernel, None, layers, flips);
    let records: Vec<LayerRecord> = order
        .iter()
        .enumerate()
        .map(|(k, &i)| full.layers[i].clone().with_step(k + 1))
        .collect();
    file(arch, AblationMode::CumulativeZeroKernel, None, records)
}

#[test]
fn a_missing_figure_input_omits_the_figure_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // First with cumulative results: the figure is drawn.
    let res = resnet20_layers(false);
    let mut with_cumulative = standard();
    with_cumulative.results.push(source(
        "runs/resnet20/cumulative.json",
        cumulative(
            "resnet20",
            &res,
            &[3, 5, 9, 1],
            &[
                TRIVIAL,
                TRIVIAL,
                (10, 0),
                (20, 0),
                (30, 0),
                (40, 0),
                (50, 0),
                (60, 0),
                (70, 0),
                (80, 0),
                (90, 0),
                (95, 0),
                (100, 0),
                (110, 0),
                (120, 0),
                (130, 0),
                (140, 0),
                (150, 0),
                (160, 0),
                KILLS,
            ],
        ),
    ));
    let files = write_report(dir.path(), &with_cumulative).unwrap();
    let cum = dir.path().join("figures/cumulative.svg");
    assert!(files.figures.contains(&cum));
    assert!(is_svg(&std::fs::read_to_string(&cum).unwrap()));
    // The greedy path is chosen on the images it is scored on, and the report says so.
    let md = std::fs::read_to_string(&files.report_md).unwrap();
    assert!(md.contains("optimistic for images it did not see"), "{md}");
    let md = std::fs::read_to_string(&files.report_md).unwrap();
    assert!(md.contains(
        "| step | layer ablated (in addition) | role | top-1 (%) | Δtop-1 vs baseline (pp) |"
    ));
    assert!(md.contains("| 0 | (none) | | 90.00 | +0.00 |"));
    assert!(
        md.contains("| 2 | `layer1.2.conv1` | residual-branch | 86.00 | -4.00 |"),
        "{md}"
    );

    // Then without: the stale figure goes and the report says why it is missing.
    let files = write_report(dir.path(), &standard()).unwrap();
    assert!(!cum.exists());
    assert!(!files.figures.contains(&cum));
    let md = std::fs::read_to_string(&files.report_md).unwrap();
    assert!(md.contains("- `figures/cumulative.svg` omitted: no cumulative-zero-kernel or cumulative-skip-branch results among the inputs."), "{md}");
    assert!(md.contains("- `figures/training.svg` omitted: no training metrics among the inputs."));
    assert!(md
        .contains("- `figures/sensitivity_prune.svg` omitted: no prune results among the inputs."));
    assert!(md.contains("No training metrics were given."));
    let summary = read_summary(&files.summary_json).unwrap();
    let note = summary
        .figures
        .iter()
        .find(|f| f.file == "figures/cumulative.svg")
        .unwrap();
    assert!(!note.drawn);
}

#[test]
fn sweep_modes_get_a_level_table_and_a_sensitivity_figure() {
    let res = resnet20_layers(false);
    let base = results(
        "resnet20",
        AblationMode::ZeroKernel,
        None,
        &res,
        &resnet20_flips(),
    );
    let mut records = Vec::new();
    for (k, level) in [0.25, 0.5, 0.75].into_iter().enumerate() {
        let flips: Vec<(usize, usize)> = resnet20_flips()
            .iter()
            .enumerate()
            .map(|(i, _)| ((k * 30 + i * 2).min(BASE_RIGHT), 0))
            .collect();
        let r = results("resnet20", AblationMode::ZeroKernel, None, &res, &flips);
        records.extend(r.layers.into_iter().map(|l| l.with_level(level)));
    }
    let sweep = file("resnet20", AblationMode::Prune, None, records.clone());
    // The same points as a zero-filters sweep where the 25 % level of layer1.0.conv1 zeroed
    // no filter: its cell says so instead of a Δ and a verdict.
    let mut filters = records;
    for r in &mut filters {
        r.zeroed = Some(if r.layer == "layer1.0.conv1" && r.level == Some(0.25) {
            0
        } else {
            4
        });
    }
    let filters = file("resnet20", AblationMode::ZeroFilters, None, filters);
    let input = input(vec![
        source("z.json", base),
        source("p.json", sweep),
        source("f.json", filters),
    ]);
    let rendered = render_report(&input).unwrap();
    let md = &rendered.markdown;
    let (_, filters_md) = md.split_once("— zero-filters").unwrap();
    assert!(
        filters_md.contains("| 1 | `layer1.0.conv1` | residual-branch | 0 zeroed | **-3.20** |"),
        "{filters_md}"
    );
    assert!(
        filters_md.contains("`0 zeroed`: at that level the layer has too few output filters"),
        "{filters_md}"
    );
    // Only that cell: the prune sweep's records carry no count.
    assert_eq!(md.matches(" 0 zeroed |").count(), 1, "{md}");
    assert!(
        md.contains("| # | layer | role | 25 % | 50 % | 75 % |"),
        "{md}"
    );
    // layer1.0.conv1 (index 1): 2, 32, 62 flips → −0.20 (trivial), −3.20, −6.20 (non-trivial).
    assert!(
        md.contains("| 1 | `layer1.0.conv1` | residual-branch | -0.20 | **-3.20** | **-6.20** |"),
        "{md}"
    );
    let fig = rendered
        .figures
        .iter()
        .find(|f| f.file == "figures/sensitivity_prune.svg")
        .unwrap();
    assert!(is_svg(&fig.svg));
    assert!(fig.svg.contains("sparsity level (%): weights zeroed"));
    // The most sensitive layer (fc, index 19: most flips) is named in the legend.
    assert!(
        fig.svg.contains(">\nfc\n<") || fig.svg.contains(">fc<"),
        "fc not named"
    );
}

#[test]
fn inconsistent_inputs_are_errors_naming_the_files() {
    let r = || {
        results(
            "resnet20",
            AblationMode::ZeroKernel,
            Some(1),
            &resnet20_layers(false),
            &resnet20_flips(),
        )
    };
    let err = analyze(&input(vec![source("a.json", r()), source("b.json", r())]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("b.json") && err.contains("a.json") && err.contains("`weights`"),
        "{err}"
    );

    // The same seed on different weights (e.g. rerandomize's re-draw seed shared by two
    // training runs) is two files to aggregate, not a duplicate.
    let mut other_weights = r();
    other_weights.weights.sha256 = sha(0xee);
    let s = analyze(&input(vec![
        source("a.json", r()),
        source("d.json", other_weights),
    ]))
    .unwrap();
    let m = s.networks[0].mode(AblationMode::ZeroKernel).unwrap();
    assert_eq!(m.seeds, [Some(1), Some(1)]);
    assert_eq!(m.layers[0].per_seed.len(), 2);
    assert_eq!(s.claims[0].tested_in, 2);

    let mut sharded = r();
    sharded.shard = Some("0/2".parse().unwrap());
    sharded.layers = sharded.layers.into_iter().step_by(2).collect();
    let err = analyze(&input(vec![source("s.json", sharded)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("s.json") && err.contains("`shard`") && err.contains("merge"),
        "{err}"
    );

    // The same weights under another seed label: one network counted as two seeds.
    let mut relabelled = r();
    relabelled.seed = Some(2);
    let err = analyze(&input(vec![
        source("a.json", r()),
        source("c.json", relabelled.clone()),
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("c.json: field `weights`")
            && err.contains("other weights than a.json (seed 1)")
            && err.contains("leave one out")
            && err.contains("found the same weights (seed 2)"),
        "{err}"
    );
    // Rerandomize's label is its draw: the same weights under two draws are two files.
    let mut draws = [r(), relabelled];
    for (k, d) in draws.iter_mut().enumerate() {
        d.mode = AblationMode::Rerandomize;
        d.seed = Some(k as u64);
    }
    let s = analyze(&input(vec![
        source("d0.json", draws[0].clone()),
        source("d1.json", draws[1].clone()),
    ]))
    .unwrap();
    let m = s.networks[0].mode(AblationMode::Rerandomize).unwrap();
    assert_eq!(m.seeds, [Some(0), Some(1)]);
    // ... but one draw of one network twice is a duplicate.
    let err = analyze(&input(vec![
        source("d0.json", draws[0].clone()),
        source("d2.json", draws[0].clone()),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("d2.json: field `seed`"), "{err}");

    let mut other_rule = r();
    other_rule.seed = Some(2);
    other_rule.weights.sha256 = "ab".repeat(32);
    other_rule.verdict_thresholds.min_mcnemar_p = 0.05;
    other_rule.verdict_rule = other_rule.verdict_thresholds.describe();
    let err = analyze(&input(vec![
        source("a.json", r()),
        source("c.json", other_rule),
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("c.json") && err.contains("`verdict_thresholds`"),
        "{err}"
    );

    let mut broken = r();
    broken.layers[2].verdict = Verdict::NonTrivial; // contradicts the thresholds
    let err = analyze(&input(vec![source("bad.json", broken)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.json") && err.contains("layers[2].verdict"),
        "{err}"
    );
}

#[test]
fn results_read_from_disk_and_hand_written_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.json");
    let rf = results(
        "plain20",
        AblationMode::ZeroKernel,
        None,
        &resnet20_layers(true),
        &plain20_flips(),
    );
    rf.write_json(&path).unwrap();
    let src = layerzero_report::ResultsSource::read(&path).unwrap();
    assert_eq!(src.results, rf);
    let file_sha = layerzero_ablate::sha256_file(&path).unwrap();
    assert_eq!(src.sha256.as_deref(), Some(file_sha.as_str()));
    let md = render_report(&input(vec![src])).unwrap().markdown;
    assert!(
        md.contains(&format!(
            "| `{}` | `{}` | plain20 | zero-kernel |",
            path.display(),
            &file_sha[..12]
        )),
        "{md}"
    );

    // A minimal results.json written by hand: one trivial linear layer in a plain net.
    let text = format!(
        r#"{{"schema": 1, "arch": "plain8", "weights": {{"path": "w", "sha256": "{}"}},
        "dataset": "cifar10", "split": "test", "n_images": 100, "mode": "zero-kernel",
        "baseline": {{"top1": 0.5, "top5": 0.9, "loss": 1.0}},
        "verdict_rule": "r", "verdict_thresholds": {{"max_abs_delta_top1": 0.01, "min_mcnemar_p": 0.01}},
        "n_ablations": 2,
        "layers": [
          {{"index": 0, "layer": "conv1", "kind": "conv", "role": "plain", "changes_channels": true,
            "params": 432, "top1": 0.1, "top5": 0.5, "loss": 2.3, "delta_top1": -0.4,
            "ci95": {{"top1": [0.0552, 0.1744], "delta_top1": [-0.4960, -0.3040]}}, "mcnemar_p": 1.819e-12,
            "flips_right_to_wrong": 40, "flips_wrong_to_right": 0, "verdict": "non-trivial"}},
          {{"index": 1, "layer": "fc", "kind": "linear", "role": "classifier", "changes_channels": true,
            "params": 650, "top1": 0.5, "top5": 0.9, "loss": 1.0, "delta_top1": 0.0,
            "ci95": {{"top1": [0.4038, 0.5962], "delta_top1": [0.0, 0.0]}}, "mcnemar_p": 1.0,
            "flips_right_to_wrong": 0, "flips_wrong_to_right": 0, "verdict": "trivial"}}
        ],
        "elapsed_s": 1.0, "threads": 1}}"#,
        sha(7)
    );
    let hand = dir.path().join("hand.json");
    std::fs::write(&hand, text).unwrap();
    let src = layerzero_report::ResultsSource::read(&hand).unwrap();
    let s = analyze(&input(vec![src])).unwrap();
    assert_eq!(s.networks[0].family, Family::Plain);
    let c3 = &s.claims[2];
    assert_eq!(c3.outcome, ClaimOutcome::DoesNotHold);
    assert_eq!(
        c3.evaluations[0]
            .exceptions()
            .map(|l| l.layer.as_str())
            .collect::<Vec<_>>(),
        ["fc"]
    );

    let missing = layerzero_report::ResultsSource::read(dir.path().join("nope.json"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.json"), "{missing}");
}

#[test]
fn full_study_draws_every_figure() {
    // Every mode on resnet20 and plain20, three seeds of zero-kernel, training curves.
    let res = resnet20_layers(false);
    let plain = resnet20_layers(true);
    let mut inp = three_seeds();
    for seed in [1u64, 2, 3] {
        inp.results.push(source(
            &format!("runs/plain20/seed{seed}/zero-kernel.json"),
            results(
                "plain20",
                AblationMode::ZeroKernel,
                Some(seed),
                &plain,
                &plain20_flips(),
            ),
        ));
    }
    for mode in [AblationMode::Reinit, AblationMode::Rerandomize] {
        inp.results.push(source(
            &format!("runs/resnet20/{mode}.json"),
            results("resnet20", mode, None, &res, &resnet20_flips()),
        ));
        inp.results.push(source(
            &format!("runs/plain20/{mode}.json"),
            results("plain20", mode, None, &plain, &plain20_flips()),
        ));
    }
    // skip-branch: one record per block.
    let blocks: Vec<Layer> = (1..=3)
        .flat_map(|s| (0..3).map(move |b| (s, b)))
        .map(|(s, b)| Layer {
            name: format!("layer{s}.{b}"),
            kind: "block",
            role: "residual-branch",
            changes_channels: s > 1 && b == 0,
            params: 0,
        })
        .collect();
    let block_flips: Vec<(usize, usize)> = blocks
        .iter()
        .map(|b| if b.changes_channels { KILLS } else { TRIVIAL })
        .collect();
    inp.results.push(source(
        "runs/resnet20/skip-branch.json",
        results(
            "resnet20",
            AblationMode::SkipBranch,
            None,
            &blocks,
            &block_flips,
        ),
    ));
    for (arch, layers, flips) in [
        ("resnet20", &res, resnet20_flips()),
        ("plain20", &plain, plain20_flips()),
    ] {
        for mode in [AblationMode::ZeroFilters, AblationMode::Prune] {
            let mut records = Vec::new();
            for (k, level) in [0.1, 0.3, 0.5, 0.7, 0.9].into_iter().enumerate() {
                let f: Vec<(usize, usize)> = flips
                    .iter()
                    .map(|&(b, _)| ((b * (k + 1) / 5).min(BASE_RIGHT), 0))
                    .collect();
                let r = results(arch, AblationMode::ZeroKernel, None, layers, &f);
                records.extend(r.layers.into_iter().map(|l| l.with_level(level)));
            }
            inp.results.push(source(
                &format!("runs/{arch}/{mode}.json"),
                file(arch, mode, None, records),
            ));
        }
        let order: Vec<usize> = (1..layers.len() - 1).rev().collect();
        let cum_flips: Vec<(usize, usize)> = (0..layers.len())
            .map(|i| {
                (
                    if arch == "plain20" {
                        100 + i * 40
                    } else {
                        i * 12
                    }
                    .min(BASE_RIGHT - 1),
                    0,
                )
            })
            .collect();
        // Step k's record carries the flips of the k-th ablated set.
        let full = results(arch, AblationMode::ZeroKernel, None, layers, &cum_flips);
        let records: Vec<LayerRecord> = order
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let mut r = full.layers[k + 1].clone().with_step(k + 1);
                r.index = full.layers[i].index;
                r.layer = full.layers[i].layer.clone();
                r.role = full.layers[i].role.clone();
                r
            })
            .collect();
        inp.results.push(source(
            &format!("runs/{arch}/cumulative-zero-kernel.json"),
            file(arch, AblationMode::CumulativeZeroKernel, None, records),
        ));
    }
    inp.metrics = (1..=3)
        .flat_map(|s| {
            [
                training("resnet20", Some(s), 30, 0.91 + s as f64 * 0.002),
                training("plain20", Some(s), 30, 0.89 + s as f64 * 0.002),
            ]
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let files = write_report(dir.path(), &inp).unwrap();
    assert_eq!(files.figures.len(), 8, "{:?}", files.figures);
    for f in &files.figures {
        assert!(
            is_svg(&std::fs::read_to_string(f).unwrap()),
            "{}",
            f.display()
        );
    }
    let md = std::fs::read_to_string(&files.report_md).unwrap();
    assert!(!md.contains("omitted"), "every figure is drawn");
    assert!(md.contains("### resnet20 — skip-branch"));
    // For looking at the figures: LAYERZERO_REPORT_DEMO_DIR=/some/dir cargo test.
    if let Some(out) = std::env::var_os("LAYERZERO_REPORT_DEMO_DIR") {
        write_report(out, &inp).unwrap();
    }
}

#[test]
fn verdicts_from_few_images_or_a_weak_network_come_with_a_caution() {
    // The standard study evaluates 1,000 images at about 90 % top-1.
    let rendered = render_report(&standard()).unwrap();
    let caution = |md: &str| {
        md.lines()
            .filter(|l| l.starts_with("**Caution:**"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let lines = caution(&rendered.markdown);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("resnet20: only 1000 images were evaluated")
            && !lines[0].contains("has not learnt"),
        "{lines:?}"
    );
    // The full test set and a trained network: no caution.
    let mut summary = rendered.summary.clone();
    for net in &mut summary.networks {
        for b in &mut net.baselines {
            b.n_images = 10_000;
        }
    }
    assert!(caution(&layerzero_report::render_markdown(&summary)).is_empty());
    // A network near chance is flagged even on the full test set.
    summary.networks[0].baselines[0].metrics.top1 = 0.16;
    let lines = caution(&layerzero_report::render_markdown(&summary));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("baseline top-1 is 16.00 %"), "{lines:?}");
}

#[test]
fn the_plain_net_and_the_cumulative_path_say_how_to_read_them() {
    let md = render_report(&standard()).unwrap().markdown;
    let section = |title: &str| {
        let start = md
            .find(title)
            .unwrap_or_else(|| panic!("no {title} in {md}"));
        let end = md[start + 1..]
            .find("\n### ")
            .map_or(md.len(), |e| start + 1 + e);
        md[start..end].to_string()
    };
    // Only the plain net's zero-kernel table explains its identical rows.
    assert!(section("### plain20 — zero-kernel").contains("every image gets the same class"));
    assert!(!section("### resnet20 — zero-kernel").contains("every image gets the same class"));
}

/// A cumulative run held out as `layerzero ablate --selection-images 500` writes it: the path
/// chosen on other images (`selection_top1`), the baseline (95.00 %, not the zero-kernel
/// file's 90.00 %) and the steps measured on the file's own images.
fn held_out_cumulative(steps: &[(usize, usize, f64)]) -> ResultsFile {
    let layers = resnet20_layers(false);
    let base = evaluation((0, 50));
    let rule = layerzero_ablate::VerdictRule::default();
    let records = steps
        .iter()
        .enumerate()
        .map(|(k, &(layer, hurt, _))| {
            let l = &layers[layer];
            let info = layerzero_ablate::LayerInfo {
                index: layer,
                name: l.name.clone(),
                kind: l.kind.into(),
                role: l.role.into(),
                changes_channels: l.changes_channels,
                params: l.params,
            };
            let m = layerzero_ablate::measure(&base, &evaluation((hurt, 50)), &rule).unwrap();
            LayerRecord::new(&info, &m).with_step(k + 1)
        })
        .collect();
    let mut rf = file(
        "resnet20",
        AblationMode::CumulativeZeroKernel,
        None,
        Vec::new(),
    );
    rf.n_ablations = steps.len();
    rf.layers = records;
    rf.baseline = base.metrics();
    rf.selection_images = Some(500);
    rf.selection_baseline = Some(evaluation((0, 50)).metrics());
    for (r, &(_, _, chose)) in rf.layers.iter_mut().zip(steps) {
        r.selection_top1 = Some(chose);
    }
    rf.validate("held-out fixture").unwrap();
    rf
}

#[test]
fn a_held_out_cumulative_run_shows_what_chose_each_step_and_keeps_the_full_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let mut study = standard();
    study.results.push(source(
        "runs/resnet20/cumulative-held-out.json",
        held_out_cumulative(&[(3, 2, 0.949), (5, 30, 0.935)]),
    ));
    let files = write_report(dir.path(), &study).unwrap();
    let md = std::fs::read_to_string(&files.report_md).unwrap();
    assert!(md.contains("which the choice never saw"), "{md}");
    assert!(!md.contains("optimistic for images it did not see"), "{md}");
    assert!(
        md.contains(
            "Held out: the path chosen on the first 500 images (baseline top-1 there 95.00 %), measured on the 1000 after them."
        ),
        "{md}"
    );
    assert!(
        md.contains("| 0 | (none) | | 95.00 | +0.00 | +0.00 |"),
        "{md}"
    );
    // 1,000 held-out images: too few for the rule's 1 point, and the table says so.
    assert!(
        md.contains("**Caution:** only 1000 images were measured"),
        "{md}"
    );
    assert!(
        md.contains("| 1 | `layer1.1.conv1` | residual-branch | 94.80 | -0.20 | -0.10 |"),
        "{md}"
    );
    assert!(
        md.contains("| 2 | `layer1.2.conv1` | residual-branch | 92.00 | -3.00 | -1.50 |"),
        "{md}"
    );
    let csv = std::fs::read_to_string(&files.layers_csv).unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with("resnet20,cumulative-zero-kernel,,5,layer1.2.conv1,"))
        .unwrap();
    assert!(
        row.ends_with(",runs/resnet20/cumulative-held-out.json,0.935,"),
        "{row}"
    );
    // ResNet-20's baseline is the zero-kernel file's, measured on every image.
    let summary = layerzero_report::analyze(&study).unwrap();
    let net = summary
        .networks
        .iter()
        .find(|n| n.arch == "resnet20")
        .unwrap();
    assert_eq!(net.baselines.len(), 1);
    assert_eq!(net.baselines[0].metrics.top1, 0.9);
    assert_eq!(net.baseline_top1.mean, 0.9);
    let curve = &net
        .mode(AblationMode::CumulativeZeroKernel)
        .unwrap()
        .cumulative[0];
    assert_eq!((curve.n_images, curve.selection_images), (1000, Some(500)));
    assert_eq!(curve.baseline_top1, 0.95);
    // Also when the held-out file is read first (modes are read in their order, and
    // cumulative-zero-kernel comes before cumulative-skip-branch): a later full file's
    // baseline replaces it.
    let mut full_later = cumulative("resnet20", &resnet20_layers(false), &[3], &resnet20_flips());
    full_later.mode = AblationMode::CumulativeSkipBranch;
    full_later.validate("fixture").unwrap();
    let both = input(vec![
        source("runs/resnet20/cumulative-skip-branch.json", full_later),
        source(
            "runs/resnet20/cumulative-held-out.json",
            held_out_cumulative(&[(3, 2, 0.952)]),
        ),
    ]);
    let summary = layerzero_report::analyze(&both).unwrap();
    let net = &summary.networks[0];
    assert_eq!(net.baselines.len(), 1);
    assert_eq!(
        (net.baselines[0].metrics.top1, net.baselines[0].n_images),
        (0.9, 1000)
    );
    // Alone, the held-out file gives its own baseline (the only one there is).
    let alone = input(vec![source(
        "runs/resnet20/cumulative-held-out.json",
        held_out_cumulative(&[(3, 2, 0.952)]),
    )]);
    let summary = layerzero_report::analyze(&alone).unwrap();
    assert_eq!(summary.networks[0].baselines[0].metrics.top1, 0.95);

    // Beside a curve chosen on its own images, each table says which it is.
    let mut other_seed = cumulative(
        "resnet20",
        &resnet20_layers(false),
        &[3, 5],
        &resnet20_flips(),
    );
    // The same weights, chosen on all images: beside the held-out curve, not a duplicate.
    other_seed.seed = Some(1);
    study
        .results
        .push(source("runs/resnet20/cumulative.json", other_seed));
    let files = write_report(dir.path(), &study).unwrap();
    let md = std::fs::read_to_string(&files.report_md).unwrap();
    assert!(md.contains("optimistic for images it did not see"), "{md}");
    assert!(md.contains("which the choice never saw"), "{md}");
    assert!(
        md.contains("Chosen and measured on the same 1000 images."),
        "{md}"
    );
    assert!(
        md.contains("Held out: the path chosen on the first 500"),
        "{md}"
    );
}

#[test]
fn claim_one_says_how_many_trivial_layers_are_shown_to_change_less_than_the_threshold() {
    let res = resnet20_layers(false);
    // layer1.1.conv2: 40 right→wrong, 35 wrong→right of 1,000 images: Δ −0.5 pp, p ≈ 0.64, so
    // trivial, but its 95 % interval (about ±1.7 pp) reaches past ±1 pp: not shown to be within.
    let flips = with_flips(&res, resnet20_flips(), &[("layer1.1.conv2", (40, 35))]);
    let input = input(vec![source(
        "a/resnet20.json",
        results("resnet20", AblationMode::ZeroKernel, None, &res, &flips),
    )]);
    let rendered = render_report(&input).unwrap();
    let e = &rendered.summary.claims[0].evaluations[0];
    assert_eq!((e.considered, e.as_claimed), (16, 15));
    assert_eq!(e.max_abs_delta_top1, Some(0.01));
    let wide = e
        .layers
        .iter()
        .find(|l| l.layer == "layer1.1.conv2")
        .unwrap();
    assert!(
        wide.as_claimed && wide.within_threshold == Some(false),
        "{wide:?}"
    );
    assert!(wide.ci95_delta_top1[0] < -0.01);
    // The others trivial at 3/2 flips: Δ −0.1 pp, interval about ±0.45 pp.
    let shown = e
        .layers
        .iter()
        .filter(|l| l.within_threshold == Some(true))
        .count();
    assert_eq!(shown, 14);
    assert!(
        rendered.markdown.contains(
            "  Of the 15 trivial, 14 have their whole 95 % interval of Δtop-1 within ±1.00 pp: \
             by this test they move top-1 by less than the rule's threshold (Tango's score"
        ),
        "{}",
        rendered.markdown
    );
    assert!(rendered.markdown.contains(
        "The other one was not shown to differ at the rule's p-value, nor shown not to."
    ));
    // The accuracy drop alone: all but layer1.0.conv1 (−5.5 pp) are within 1 pp.
    assert!(
        rendered.markdown.contains(
            "  By |Δtop-1| ≤ 1.00 pp alone (the accuracy drop without the rule's p-value): \
             15/16 (93.8 %)."
        ),
        "{}",
        rendered.markdown
    );
    // A summary.json written before the count had no threshold: no sentence, not "±0.00 pp".
    let mut old = rendered.summary.clone();
    old.claims[0].evaluations[0].max_abs_delta_top1 = None;
    let md = layerzero_report::render_markdown(&old);
    assert!(!md.contains("Of the 15 trivial"), "{md}");
    // 1,000 images are enough for an interval within ±1 pp; 380 are not, 381 are.
    assert_eq!(rendered.summary.claims[0].evaluations[0].n_images, 1000);
    assert!(!rendered.markdown.contains("none could be"));
    for (n, said) in [(380, true), (381, false)] {
        let mut few = rendered.summary.clone();
        few.claims[0].evaluations[0].n_images = n;
        let md = layerzero_report::render_markdown(&few);
        let sentence = format!(
            "On {n} images none could be: a 95 % interval within ±1.00 pp needs at least 381"
        );
        assert_eq!(md.contains(&sentence), said, "{n}: {md}");
    }
}

#[test]
fn files_are_labelled_by_their_training_seed_as_by_the_older_seed_field() {
    // Files of cargo xtask reproduce before train_seed carried the training seed in `seed`;
    // now they carry it in `train_seed`, and `layerzero ablate --train-seed` writes it too.
    let legacy = three_seeds();
    let mut current = three_seeds();
    for src in &mut current.results {
        src.results.train_seed = src.results.seed.take();
    }
    assert!(current.results.iter().all(|s| s.results.seed.is_none()));
    assert_eq!(analyze(&current).unwrap(), analyze(&legacy).unwrap());
    let summary = analyze(&current).unwrap();
    let mode = summary.networks[0].mode(AblationMode::ZeroKernel).unwrap();
    assert_eq!(mode.seeds, [Some(1), Some(2), Some(3)]);
    // Rerandomize's draw seed labels its file where both are known.
    let mut draw = current.results[0].clone();
    draw.results.mode = AblationMode::Rerandomize;
    draw.results.seed = Some(9);
    draw.results.validate("draw").unwrap();
    current.results.push(draw);
    let summary = analyze(&current).unwrap();
    let mode = summary.networks[0].mode(AblationMode::Rerandomize).unwrap();
    assert_eq!(mode.seeds, [Some(9)]);
    // The weights' baseline lists their training seed, not the draw's.
    let baseline = &summary.networks[0].baselines[0];
    assert_eq!(baseline.seeds, [Some(1)], "{baseline:?}");
}

#[test]
fn a_metrics_file_labelled_against_its_runs_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("paper-r56");
    std::fs::create_dir_all(&run).unwrap();
    let metrics = run.join("metrics.jsonl");
    let lines: Vec<String> = training("resnet56", Some(0), 3, 0.92)
        .epochs
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    std::fs::write(&metrics, lines.join("\n")).unwrap();
    // No config.json beside it: the labels are taken as given.
    layerzero_report::MetricsSeries::read("resnet20", Some(4), &metrics).unwrap();
    std::fs::write(
        run.join("config.json"),
        r#"{"profile": "paper", "arch": "resnet56", "seed": 0, "epochs": 165}"#,
    )
    .unwrap();
    let read = |arch: &str, seed| layerzero_report::MetricsSeries::read(arch, seed, &metrics);
    assert_eq!(read("resnet56", Some(0)).unwrap().epochs.len(), 3);
    assert!(read("resnet56", None).is_ok());
    // The option-A alias is the same network.
    assert!(read("resnet56-a", Some(0)).is_ok());
    for (arch, seed, field, found) in [
        ("resnet20", Some(0), "arch", "resnet56"),
        ("resnet56", Some(1), "seed", "0"),
    ] {
        match read(arch, seed).unwrap_err() {
            layerzero_report::ReportError::Input {
                origin,
                field: f,
                found: got,
                ..
            } => {
                assert!(origin.ends_with("config.json"), "{origin}");
                assert_eq!((f.as_str(), got.as_str()), (field, found));
            }
            other => panic!("expected an input error, got {other}"),
        }
    }
}

#[test]
fn a_cumulative_step_that_changes_nothing_is_marked() {
    let res = resnet20_layers(false);
    // Steps 1 and 2 leave every image and the loss as they were after step 1 (the fixtures'
    // losses are all equal): step 2's layer no longer reached the output.
    let flips = with_flips(
        &res,
        resnet20_flips(),
        &[("layer1.0.conv2", (20, 0)), ("layer1.1.conv1", (20, 0))],
    );
    let file = cumulative("resnet20", &res, &[2, 3, 5], &flips);
    let md = render_report(&input(vec![source("runs/cum.json", file)]))
        .unwrap()
        .markdown;
    assert!(
        md.contains("| 2 | `layer1.1.conv1` (no effect) | residual-branch | 88.00 | -2.00 |"),
        "{md}"
    );
    assert!(
        md.contains("| 1 | `layer1.0.conv2` | residual-branch |"),
        "{md}"
    );
    assert!(!md.contains("| 3 | `layer1.2.conv1` (no effect)"), "{md}");
    assert!(md.contains("1 step(s) marked *no effect*"), "{md}");

    // Step 1 is compared with the baseline: an ablation that changed nothing at all.
    let flips = with_flips(&res, resnet20_flips(), &[("layer1.0.conv2", (0, 0))]);
    let file = cumulative("resnet20", &res, &[2, 3], &flips);
    let md = render_report(&input(vec![source("runs/cum.json", file)]))
        .unwrap()
        .markdown;
    assert!(
        md.contains("| 1 | `layer1.0.conv2` (no effect) | residual-branch | 90.00 | +0.00 |"),
        "{md}"
    );
    assert!(md.contains("1 step(s) marked *no effect*"), "{md}");
}

#[test]
fn command_lines_read_back_as_a_shell_would() {
    use layerzero_report::shell_command_line;
    assert_eq!(
        shell_command_line([
            "layerzero",
            "ablate",
            "--layers",
            "layer1.*,fc",
            "--limit=50"
        ]),
        "layerzero ablate --layers 'layer1.*,fc' --limit=50"
    );
    assert_eq!(
        shell_command_line(["x", "it's", "", "a;b", "$HOME"]),
        r#"x 'it'\''s' '' 'a;b' '$HOME'"#
    );
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"runs/\xff.json");
        assert_eq!(shell_command_line([odd]), "'runs/\u{fffd}.json'");
    }
}
