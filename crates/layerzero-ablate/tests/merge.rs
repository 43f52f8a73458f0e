//! Shards merged == the unsharded run, and merge refuses inconsistent shards.

mod common;

use layerzero_ablate::{merge, merge_files, AblationMode, Error, ResultsFile, Shard};

/// Splits a complete run into its `count` shards exactly as `--shard K/N` would: job `j`
/// (position in the canonical list) goes to shard `j % N`.
fn split(full: &ResultsFile, count: usize) -> Vec<ResultsFile> {
    (0..count)
        .map(|index| {
            let shard = Shard::new(index, count).unwrap();
            let mut part = full.clone();
            part.shard = Some(shard);
            part.layers = shard.select(full.layers.iter().cloned());
            part.elapsed_s = 10.0 + index as f64;
            part.threads = 1 + index % 3;
            part
        })
        .collect()
}

fn labelled(parts: Vec<ResultsFile>) -> Vec<(String, ResultsFile)> {
    parts
        .into_iter()
        .map(|p| (format!("shard-{}.json", p.shard.unwrap().index), p))
        .collect()
}

/// Compares everything but the fields that legitimately differ (elapsed_s, threads).
fn assert_same_run(merged: &ResultsFile, full: &ResultsFile) {
    let mut m = merged.clone();
    m.elapsed_s = full.elapsed_s;
    m.threads = full.threads;
    assert_eq!(&m, full);
    assert_eq!(
        serde_json::to_string(&m).unwrap(),
        serde_json::to_string(full).unwrap()
    );
}

#[test]
fn merged_shard_files_equal_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let full = common::unsharded(AblationMode::ZeroKernel, &[]);
    let parts = split(&full, 3);
    // Written to disk and given to merge in a scrambled order.
    let mut paths = Vec::new();
    for part in &parts {
        let path = dir
            .path()
            .join(format!("part-{}.json", part.shard.unwrap().index));
        part.write_json(&path).unwrap();
        paths.push(path);
    }
    paths.reverse();
    paths.swap(0, 1);
    let merged = merge_files(&paths).unwrap();
    assert_same_run(&merged, &full);
    assert_eq!(merged.shard, None);
    assert_eq!(merged.elapsed_s, 10.0 + 11.0 + 12.0);
    assert_eq!(merged.threads, 3);

    // The merged file itself round-trips through disk unchanged.
    let out = dir.path().join("results.json");
    merged.write(&out).unwrap();
    assert_eq!(ResultsFile::read(&out).unwrap(), merged);
}

#[test]
fn merged_sweep_equals_unsharded_for_many_shard_counts() {
    let full = common::unsharded(AblationMode::Prune, &[0.1, 0.5, 0.9]);
    assert_eq!(full.n_ablations, 21);
    for count in [1, 2, 4, 5, 21, 25] {
        let mut parts = labelled(split(&full, count));
        parts.rotate_left(count / 2);
        let merged = merge(&parts).unwrap_or_else(|e| panic!("{count} shards: {e}"));
        assert_same_run(&merged, &full);
    }
}

fn merge_error(parts: &[(String, ResultsFile)]) -> (String, String) {
    match merge(parts) {
        Err(Error::Merge { origin, field, .. }) => (origin, field),
        other => panic!("expected a merge error, got {other:?}"),
    }
}

#[test]
fn missing_and_repeated_shards_are_refused() {
    let full = common::unsharded(AblationMode::ZeroKernel, &[]);
    let parts = labelled(split(&full, 3));

    let missing = vec![parts[0].clone(), parts[2].clone()];
    let err = merge(&missing).unwrap_err().to_string();
    assert!(err.contains("shard 1/3 missing"), "{err}");

    let repeated = vec![parts[0].clone(), parts[1].clone(), parts[1].clone()];
    let err = merge(&repeated).unwrap_err().to_string();
    assert!(err.contains("shard.index"), "{err}");
    assert!(err.contains("1/3 again"), "{err}");

    assert_eq!(merge_error(&[]).1, "shards");

    let complete = vec![("results.json".to_string(), full.clone())];
    assert_eq!(
        merge_error(&complete),
        ("results.json".into(), "shard".into())
    );
}

#[test]
fn disagreeing_shards_are_refused_naming_file_and_field() {
    let full = common::unsharded(AblationMode::ZeroKernel, &[]);
    let base = labelled(split(&full, 3));
    type Tamper = fn(&mut ResultsFile);
    let cases: [(&str, Tamper); 9] = [
        ("weights.sha256", |p| p.weights.sha256 = "cd".repeat(32)),
        ("arch", |p| p.arch = "resnet56".into()),
        ("dataset", |p| p.dataset = "cifar100".into()),
        ("split", |p| p.split = "train".into()),
        ("baseline.loss", |p| p.baseline.loss += 1e-3),
        ("verdict_thresholds", |p| {
            p.verdict_thresholds.min_mcnemar_p = 0.05;
            // Keep the file self-consistent so that only the disagreement is reported.
            for r in &mut p.layers {
                r.verdict = p.verdict_thresholds.verdict(r.delta_top1, r.mcnemar_p);
            }
        }),
        ("seed", |p| p.seed = Some(3)),
        ("train_seed", |p| p.train_seed = Some(1)),
        ("mode", |p| {
            p.mode = AblationMode::Reinit;
            p.init_weights = Some(p.weights.clone());
        }),
    ];
    for (field, tamper) in cases {
        let mut parts = base.clone();
        tamper(&mut parts[2].1);
        assert_eq!(
            merge_error(&parts),
            ("shard-2.json".to_string(), field.to_string()),
            "{field}"
        );
    }
    // The mode by its command-line name.
    let mut parts = base.clone();
    parts[2].1.mode = AblationMode::SkipBranch;
    let err = merge(&parts).unwrap_err().to_string();
    assert!(
        err.contains("zero-kernel") && err.contains("skip-branch"),
        "{err}"
    );
    // A different shard count is caught too.
    let mut parts = base.clone();
    parts.push(labelled(split(&full, 4)).remove(3));
    assert_eq!(merge_error(&parts).1, "shard.count");
    // Weights at another path but with the same hash are the same weights.
    let mut parts = base;
    parts[1].1.weights.path = "/scratch/elsewhere.safetensors".into();
    assert!(merge(&parts).is_ok());
}

#[test]
fn a_layer_in_two_shards_is_refused() {
    let full = common::unsharded(AblationMode::ZeroKernel, &[]);
    let mut parts = labelled(split(&full, 2));
    // Shard 1 evaluated layer 0 instead of its own layer 1 (same record count).
    parts[1].1.layers[0] = full.layers[0].clone();
    let err = merge(&parts).unwrap_err();
    assert!(matches!(err, Error::Merge { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("a second record for layer \"conv1\""),
        "{err}"
    );
}

#[test]
fn a_shard_with_the_wrong_number_of_records_is_refused() {
    let full = common::unsharded(AblationMode::ZeroKernel, &[]);
    let mut parts = labelled(split(&full, 2));
    parts[0].1.layers.pop();
    let err = merge(&parts).unwrap_err().to_string();
    assert!(err.contains("shard-0.json"), "{err}");
    assert!(err.contains("`layers`"), "{err}");
}
