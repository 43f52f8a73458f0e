//! results.json / CSV: round trips, atomic writing, and rejection of invalid files.

mod common;

use layerzero_ablate::csv::{to_csv, CSV_COLUMNS};
use layerzero_ablate::{
    csv_path_for, sha256_file, AblationMode, Error, ResultsFile, Shard, Verdict, WeightsRef,
};

fn schema_error(text: &str) -> (String, String, String, String) {
    match ResultsFile::from_json_str(text, "results.json") {
        Err(Error::Schema {
            origin,
            field,
            expected,
            found,
        }) => (origin, field, expected, found),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

fn json_of(r: &ResultsFile) -> serde_json::Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn json_has_the_documented_shape() {
    let full = common::unsharded(AblationMode::ZeroKernel, &[]);
    let v = json_of(&full);
    for key in [
        "schema",
        "arch",
        "weights",
        "dataset",
        "split",
        "n_images",
        "mode",
        "baseline",
        "layers",
        "elapsed_s",
        "threads",
        "verdict_rule",
        "verdict_thresholds",
        "n_ablations",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["schema"], 1);
    assert_eq!(v["mode"], "zero-kernel");
    assert!(v.get("shard").is_none() && v.get("seed").is_none());
    assert_eq!(v["weights"]["sha256"].as_str().unwrap().len(), 64);
    let layer = &v["layers"][1];
    let keys: Vec<&str> = layer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "index",
        "layer",
        "kind",
        "role",
        "changes_channels",
        "params",
        "top1",
        "top5",
        "loss",
        "delta_top1",
        "ci95",
        "mcnemar_p",
        "flips_right_to_wrong",
        "flips_wrong_to_right",
        "verdict",
    ];
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected);
    assert_eq!(layer["ci95"]["top1"].as_array().unwrap().len(), 2);
    assert_eq!(layer["ci95"]["delta_top1"].as_array().unwrap().len(), 2);
    assert_eq!(layer["verdict"], "non-trivial");
    assert_eq!(layer["delta_top1"], -0.0028);

    let sweep = common::unsharded(AblationMode::Prune, &[0.5]);
    let v = json_of(&sweep);
    assert_eq!(v["layers"][0]["level"], 0.5);
    assert!(v["layers"][0].get("step").is_none());
}

#[test]
fn writes_json_and_csv_atomically_and_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let mut full = common::unsharded(AblationMode::Prune, &[0.1, 0.9]);
    full.layers[3].layer = "odd,name \"quoted\"".into();
    let csv = full.write(&json).unwrap();
    assert_eq!(csv, csv_path_for(&json));
    assert_eq!(csv, dir.path().join("results.csv"));
    assert_eq!(ResultsFile::read(&json).unwrap(), full);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "temporary files left behind: {names:?}");

    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text, to_csv(&full));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + full.layers.len());
    assert_eq!(lines[0], CSV_COLUMNS.join(","));
    assert!(lines[0].contains("ci95_top1_lo,ci95_top1_hi,ci95_delta_top1_lo,ci95_delta_top1_hi"));
    let r = &full.layers[0];
    let expected_first = format!(
        // The last fields, selection_top1 and zeroed, are empty: no held-out selection, and
        // a hand-made record that does not say how many filters its level zeroed.
        "0,conv1,conv,stem,true,2304,0.1,,{},{},{},{},{},{},{},{},{},3,1,{},,",
        r.top1,
        r.top5,
        r.loss,
        r.delta_top1,
        r.ci95.top1[0],
        r.ci95.top1[1],
        r.ci95.delta_top1[0],
        r.ci95.delta_top1[1],
        r.mcnemar_p,
        r.verdict
    );
    assert_eq!(lines[1], expected_first);
    assert!(
        lines[4].starts_with("1,\"odd,name \"\"quoted\"\"\",conv,"),
        "{}",
        lines[4]
    );
}

#[test]
fn unknown_or_missing_schema_versions_are_rejected_clearly() {
    let full = common::unsharded(AblationMode::ZeroKernel, &[]);
    let mut v = json_of(&full);
    v["schema"] = 2.into();
    let (origin, field, expected, found) = schema_error(&v.to_string());
    assert_eq!(
        (
            origin.as_str(),
            field.as_str(),
            expected.as_str(),
            found.as_str()
        ),
        ("results.json", "schema", "1", "2")
    );
    v["schema"] = "1".into();
    assert_eq!(schema_error(&v.to_string()).3, "\"1\"");
    v.as_object_mut().unwrap().remove("schema");
    assert_eq!(schema_error(&v.to_string()).3, "no such field");
    assert_eq!(schema_error("[1, 2]").1, "(top level)");
    let msg = ResultsFile::from_json_str(r#"{"schema": 7}"#, "old/results.json")
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "old/results.json: field `schema`: expected 1, found 7");
}

#[test]
fn unknown_fields_are_ignored_but_malformed_ones_are_not() {
    let full = common::unsharded(AblationMode::ZeroKernel, &[]);
    let mut v = json_of(&full);
    v["added_in_a_later_version"] = "hello".into();
    v["layers"][0]["extra"] = 1.into();
    assert_eq!(
        ResultsFile::from_json_str(&v.to_string(), "x").unwrap(),
        full
    );

    let mut v = json_of(&full);
    v["layers"][0]["top1"] = "high".into();
    let err = ResultsFile::from_json_str(&v.to_string(), "x.json").unwrap_err();
    assert!(matches!(err, Error::Json { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("x.json: invalid results JSON"),
        "{err}"
    );
    assert!(matches!(
        ResultsFile::from_json_str("{", "x"),
        Err(Error::Json { .. })
    ));
    let missing = ResultsFile::read("/no/such/results.json").unwrap_err();
    assert!(
        missing.to_string().contains("/no/such/results.json"),
        "{missing}"
    );
}

#[test]
fn inconsistent_files_are_rejected_naming_the_field() {
    let good = common::unsharded(AblationMode::ZeroKernel, &[]);
    type Tamper = fn(&mut ResultsFile);
    let cases: Vec<(&str, Tamper)> = vec![
        ("weights.sha256", |r| r.weights.sha256 = "ABAB".into()),
        ("n_images", |r| r.n_images = 0),
        ("baseline.top1", |r| r.baseline.top1 = 1.5),
        ("layers", |r| r.n_ablations = 8),
        ("layers[2].top1", |r| r.layers[2].top1 += 0.01),
        ("layers[2].delta_top1", |r| {
            r.layers[2].flips_wrong_to_right += 1
        }),
        ("layers[2].verdict", |r| {
            r.layers[2].verdict = Verdict::Trivial
        }),
        ("layers[2].mcnemar_p", |r| r.layers[2].mcnemar_p = 1.5),
        ("layers[2].ci95.top1", |r| {
            r.layers[2].ci95.top1 = [0.9, 0.8]
        }),
        // Well-formed numbers that are not the counts' statistics.
        ("layers[2].mcnemar_p", |r| r.layers[2].mcnemar_p *= 3.0),
        ("layers[0].mcnemar_p", |r| r.layers[0].mcnemar_p = 0.5),
        ("layers[2].ci95.top1", |r| {
            r.layers[2].ci95.top1 = [0.9, 0.95]
        }),
        ("layers[2].ci95.delta_top1", |r| {
            r.layers[2].ci95.delta_top1[1] += 0.001
        }),
        ("layers[2].level", |r| r.layers[2].level = Some(0.5)),
        ("layers[2].step", |r| r.layers[2].step = Some(1)),
        ("layers[2].flips_right_to_wrong", |r| {
            r.layers[2].flips_right_to_wrong = 20_000
        }),
        ("layers[3]", |r| {
            r.layers[3].layer = r.layers[2].layer.clone()
        }),
        ("shard", |r| r.shard = Some(Shard { index: 3, count: 3 })),
        ("threads", |r| r.threads = 0),
        ("elapsed_s", |r| r.elapsed_s = -1.0),
    ];
    for (field, tamper) in cases {
        let mut bad = good.clone();
        tamper(&mut bad);
        let text = serde_json::to_string(&bad).unwrap();
        assert_eq!(schema_error(&text).1, field, "{field}");
        // Writing refuses it too, and leaves nothing behind.
        let dir = tempfile::tempdir().unwrap();
        assert!(bad.write(dir.path().join("r.json")).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    // What another tool may write: p to 3 significant digits, intervals from z = 1.96 to 3
    // decimals. Accepted.
    let mut rounded = good.clone();
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    for r in &mut rounded.layers {
        r.mcnemar_p = format!("{:.2e}", r.mcnemar_p).parse().unwrap();
        let half = |[lo, hi]: [f64; 2]| (hi - lo) / 2.0 * (1.96 / layerzero_ablate::Z95);
        let (mid_t, half_t) = ((r.ci95.top1[0] + r.ci95.top1[1]) / 2.0, half(r.ci95.top1));
        r.ci95.top1 = [round3(mid_t - half_t), round3(mid_t + half_t)];
        let (mid_d, half_d) = (
            (r.ci95.delta_top1[0] + r.ci95.delta_top1[1]) / 2.0,
            half(r.ci95.delta_top1),
        );
        r.ci95.delta_top1 = [round3(mid_d - half_d), round3(mid_d + half_d)];
    }
    ResultsFile::from_json_str(&serde_json::to_string(&rounded).unwrap(), "rounded").unwrap();

    let mut sweep = common::unsharded(AblationMode::Prune, &[0.2]);
    sweep.layers[1].level = None;
    assert_eq!(
        schema_error(&serde_json::to_string(&sweep).unwrap()).1,
        "layers[1].level"
    );

    let mut cumulative = common::unsharded(AblationMode::CumulativeZeroKernel, &[]);
    for (i, r) in cumulative.layers.iter_mut().enumerate() {
        r.step = Some(i + 1);
    }
    cumulative.validate("ok").unwrap();
    cumulative.shard = Some(Shard { index: 0, count: 1 });
    let (_, field, expected, _) = schema_error(&serde_json::to_string(&cumulative).unwrap());
    assert_eq!(field, "shard");
    assert!(expected.contains("cannot be sharded"), "{expected}");
}

#[test]
fn a_held_out_selection_goes_with_cumulative_modes_and_every_records_selection_top1() {
    let mut held = common::unsharded(AblationMode::CumulativeSkipBranch, &[]);
    held.selection_images = Some(5000);
    held.selection_baseline = Some(held.baseline);
    for (i, r) in held.layers.iter_mut().enumerate() {
        r.step = Some(i + 1);
        r.selection_top1 = Some(0.9 - 0.01 * i as f64);
    }
    held.validate("ok").unwrap();
    let tamper = |f: &dyn Fn(&mut ResultsFile)| {
        let mut t = held.clone();
        f(&mut t);
        schema_error(&serde_json::to_string(&t).unwrap())
    };
    let (_, field, expected, found) = tamper(&|t| t.layers[1].selection_top1 = None);
    assert_eq!(field, "layers[1].selection_top1");
    assert!(expected.contains("selection_images"), "{expected}");
    assert_eq!(found, "absent");
    let (_, field, _, found) = tamper(&|t| t.layers[0].selection_top1 = Some(1.5));
    assert_eq!(
        (field.as_str(), found.as_str()),
        ("layers[0].selection_top1", "1.5")
    );
    let (_, field, _, found) = tamper(&|t| t.selection_images = Some(0));
    assert_eq!((field.as_str(), found.as_str()), ("selection_images", "0"));
    let (_, field, expected, _) = tamper(&|t| {
        t.selection_images = None;
        t.selection_baseline = None;
    });
    assert_eq!(field, "layers[0].selection_top1");
    assert!(expected.contains("absent"), "{expected}");
    let (_, field, _, found) = tamper(&|t| t.selection_baseline = None);
    assert_eq!(
        (field.as_str(), found.as_str()),
        ("selection_baseline", "absent")
    );
    let (_, field, _, _) = tamper(&|t| t.selection_images = None);
    assert_eq!(field, "selection_baseline");
    let (_, field, _, _) = tamper(&|t| {
        if let Some(m) = &mut t.selection_baseline {
            m.top1 = -0.1;
        }
    });
    assert_eq!(field, "selection_baseline.top1");

    // An init file belongs to reinit only.
    let mut zeroed = common::unsharded(AblationMode::ZeroKernel, &[]);
    zeroed.init_weights = Some(zeroed.weights.clone());
    let (_, field, expected, _) = schema_error(&serde_json::to_string(&zeroed).unwrap());
    assert_eq!(field, "init_weights");
    assert!(expected.contains("reinit only"), "{expected}");
    let mut reinit = common::unsharded(AblationMode::Reinit, &[]);
    reinit.init_weights = Some(WeightsRef {
        path: "init.safetensors".into(),
        sha256: "abc".into(),
    });
    let (_, field, _, _) = schema_error(&serde_json::to_string(&reinit).unwrap());
    assert_eq!(field, "init_weights.sha256");
    // Not in a mode that chooses no path.
    let mut single = common::unsharded(AblationMode::ZeroKernel, &[]);
    single.selection_images = Some(5000);
    let (_, field, expected, _) = schema_error(&serde_json::to_string(&single).unwrap());
    assert_eq!(field, "selection_images");
    assert!(expected.contains("cumulative modes only"), "{expected}");
    // A cumulative file without the fields (every one written before them) still reads.
    let mut old = held.clone();
    old.selection_images = None;
    old.selection_baseline = None;
    old.layers.iter_mut().for_each(|r| r.selection_top1 = None);
    let text = json_of(&old).to_string();
    assert!(!text.contains("selection"), "{text}");
    assert_eq!(ResultsFile::from_json_str(&text, "old").unwrap(), old);
}

#[test]
fn canonical_order_is_step_then_network_order_then_level() {
    let mut sweep = common::unsharded(AblationMode::ZeroFilters, &[0.1, 0.3, 0.2]);
    sweep.layers.reverse();
    sweep.sort_layers();
    let keys: Vec<(usize, f64)> = sweep
        .layers
        .iter()
        .map(|r| (r.index, r.level.unwrap()))
        .collect();
    assert_eq!(&keys[..4], &[(0, 0.1), (0, 0.2), (0, 0.3), (1, 0.1)]);
}

#[test]
fn sha256_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.bin");
    std::fs::write(&path, b"abc").unwrap();
    // FIPS 180-2 test vector for "abc".
    assert_eq!(
        sha256_file(&path).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(sha256_file(dir.path().join("missing")).is_err());
}

/// The verdict follows the Δ the counts give, not a stored Δ a hair away from it: n = 100 and
/// one right→wrong flip is Δ = −0.01 exactly, at the threshold, with p = 1, so trivial. A file
/// storing Δ = −0.0100000005 (within the 1e-9 the Δ check allows) with a non-trivial verdict
/// was accepted before.
#[test]
fn the_verdict_follows_the_counts_delta() {
    use layerzero_ablate::{paired_difference_wald, wilson_interval, PairedCounts, Z95};
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/seeds/results_json/two-layers.json"
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seed).unwrap()).unwrap();
    ResultsFile::from_json_str(&v.to_string(), "seed").expect("the fuzz seed is valid");
    let counts = PairedCounts {
        n: 100,
        both_right: 49,
        right_to_wrong: 1,
        wrong_to_right: 0,
        both_wrong: 50,
    };
    let fc = &mut v["layers"][1];
    fc["flips_right_to_wrong"] = 1.into();
    fc["top1"] = 0.49.into();
    fc["delta_top1"] = (-0.0100000005).into();
    fc["ci95"]["top1"] = serde_json::json!(wilson_interval(49, 100, Z95).unwrap());
    fc["ci95"]["delta_top1"] = serde_json::json!(paired_difference_wald(&counts, Z95).unwrap());
    fc["mcnemar_p"] = 1.0.into();
    fc["verdict"] = "non-trivial".into();
    let (_, field, expected, _) = schema_error(&v.to_string());
    assert_eq!(field, "layers[1].verdict");
    assert!(expected.starts_with("trivial"), "{expected}");
    v["layers"][1]["verdict"] = "trivial".into();
    ResultsFile::from_json_str(&v.to_string(), "fixed").unwrap();
}
