//! `cargo xtask reproduce --profile smoke` end to end on the real archive named by
//! `LAYERZERO_CIFAR10_ARCHIVE`: every output exists and parses, and a second run skips every
//! stage. Skipped, with the reason printed, when the variable is unset.

use std::path::PathBuf;

use xtask::reproduce::{reproduce, ReproduceArgs};
use xtask::FetchArgs;

#[test]
fn smoke_pipeline_runs_and_a_rerun_skips_every_stage() {
    let archive = match std::env::var_os("LAYERZERO_CIFAR10_ARCHIVE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            eprintln!("skipped: set LAYERZERO_CIFAR10_ARCHIVE to a CIFAR-10 binary .tar.gz");
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("run");
    let args = ReproduceArgs {
        fetch: FetchArgs {
            data_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cifar10"),
            archive: Some(archive),
        },
        profile: "smoke".into(),
        // The smallest CIFAR ResNet keeps CI short; the stages are the same for resnet20.
        arch: "resnet8".into(),
        seeds: 1,
        out: Some(out.clone()),
        device: "cpu".into(),
        threads: None,
    };
    reproduce(&args).unwrap();

    for stage in [
        "train-resnet8-s0",
        "train-plain8-s0",
        "ablate-resnet8-s0-zero-kernel",
        "ablate-resnet8-s0-skip-branch",
        "ablate-resnet8-s0-cumulative-skip-branch",
        "ablate-plain8-s0-zero-kernel",
    ] {
        let manifest = out.join("stages").join(format!("{stage}.json"));
        let text = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let _: serde_json::Value = serde_json::from_str(&text).unwrap();
    }
    for results in [
        "ablate-resnet8-s0-zero-kernel.json",
        "ablate-resnet8-s0-skip-branch.json",
        "ablate-plain8-s0-zero-kernel.json",
    ] {
        let r = layerzero_ablate::ResultsFile::read(out.join(results)).unwrap();
        // The smoke profile's test subset, as in its training.
        assert_eq!(r.n_images, 1000);
        assert_eq!(r.selection_images, None);
        // The weights' training seed, in its own field (rerandomize's draw is `seed`).
        assert_eq!((r.train_seed, r.seed), (Some(0), None));
        assert!(!r.layers.is_empty());
    }
    // The greedy path is chosen on the first 500 of those images and measured on the others.
    let cum = layerzero_ablate::ResultsFile::read(
        out.join("ablate-resnet8-s0-cumulative-skip-branch.json"),
    )
    .unwrap();
    assert_eq!((cum.selection_images, cum.n_images), (Some(500), 500));
    assert_eq!(cum.layers.len(), 3);
    assert!(cum.layers.iter().all(|r| r.selection_top1.is_some()));
    let summary = layerzero_report::read_summary(out.join("report").join("summary.json")).unwrap();
    assert_eq!(summary.claims.len(), 3);
    let md = std::fs::read_to_string(out.join("report").join("report.md")).unwrap();
    assert!(md.contains("resnet8") && md.contains("plain8"));
    assert!(out
        .join("report/figures/delta_top1_zero-kernel.svg")
        .exists());
    assert!(out.join("train-resnet8-s0/weights.safetensors").exists());

    // A re-run finds every stage done: no stage writes its manifest again, nothing is retrained.
    let stamps = |dir: PathBuf| -> Vec<(String, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().to_string(),
                    e.metadata().unwrap().modified().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = stamps(out.join("stages"));
    let weights_before = stamps(out.join("train-resnet8-s0"));
    reproduce(&args).unwrap();
    assert_eq!(before, stamps(out.join("stages")));
    assert_eq!(weights_before, stamps(out.join("train-resnet8-s0")));

    // A study made before reproduce held the cumulative path out: its cumulative file (as the
    // engine then wrote it: no selection fields) and a manifest that matches it. A re-run
    // makes that stage again, held out, and leaves the others alone.
    let stage = "ablate-resnet8-s0-cumulative-skip-branch";
    let path = out.join(format!("{stage}.json"));
    let mut old = cum.clone();
    old.selection_images = None;
    old.selection_baseline = None;
    old.layers.iter_mut().for_each(|r| r.selection_top1 = None);
    old.write(&path).unwrap();
    let manifest_path = out.join("stages").join(format!("{stage}.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    for (file, sha) in manifest["outputs"].as_object_mut().unwrap() {
        *sha = layerzero_ablate::sha256_file(out.join(file))
            .unwrap()
            .into();
    }
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let before = stamps(out.join("stages"));
    reproduce(&args).unwrap();
    let redone = layerzero_ablate::ResultsFile::read(&path).unwrap();
    assert_eq!(redone.selection_images, Some(500));
    let after = stamps(out.join("stages"));
    let changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, _)| b.0.as_str())
        .collect();
    assert_eq!(changed, [format!("{stage}.json")]);
}
