//! Saving and loading weights: bit-identical round trips, PyTorch names and dtypes, metadata,
//! every mismatch reported at once, malformed files rejected without panics.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::{max_abs_diff, values};
use layerzero_models::weights::{load_safetensors_bytes, to_safetensors_bytes, META_ARCH};
use layerzero_models::{
    create_model, load_model, load_model_bytes, load_safetensors, load_state_dict,
    read_safetensors, read_safetensors_bytes, save_safetensors, ForwardMode, Interventions,
    LoadOptions, ModelConfig, ModelError, ModelRegistry, Network, WeightProblem, WeightsMetadata,
};

fn net(name: &str, seed: u64) -> Box<dyn Network> {
    create_model(name, &ModelConfig::new(10).with_seed(seed)).unwrap()
}

/// A network whose running statistics and counters are not at their initial values.
fn trained(name: &str, seed: u64) -> Box<dyn Network> {
    let n = net(name, seed);
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    n.forward(&x, ForwardMode::Train, Interventions::none())
        .unwrap();
    n
}

fn serialize(tensors: &[(&str, Tensor)], meta: Option<HashMap<String, String>>) -> Vec<u8> {
    safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), meta).unwrap()
}

fn problems(err: ModelError) -> Vec<WeightProblem> {
    match err {
        ModelError::WeightMismatch { problems, .. } => problems,
        other => panic!("expected a weight mismatch, got {other}"),
    }
}

#[test]
fn save_then_load_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let a = trained("resnet20-b", 1);
    let meta = WeightsMetadata::for_network(a.as_ref()).with_dataset("cifar10");
    save_safetensors(a.as_ref(), &path, &meta).unwrap();

    let b = net("resnet20-b", 2);
    let read_meta = load_safetensors(b.as_ref(), &path, &LoadOptions::default()).unwrap();
    assert_eq!(read_meta, meta);
    let sa = a.params().state_dict().unwrap();
    let sb = b.params().state_dict().unwrap();
    assert_eq!(sa.len(), sb.len());
    for ((na, ta), (nb, tb)) in sa.iter().zip(&sb) {
        assert_eq!(na, nb);
        assert_eq!(ta.dtype(), tb.dtype());
        match ta.dtype() {
            DType::F32 => {
                let bits = |t: &Tensor| values(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(ta), bits(tb), "{na}");
            }
            _ => assert_eq!(
                ta.to_scalar::<i64>().unwrap(),
                tb.to_scalar::<i64>().unwrap(),
                "{na}"
            ),
        }
    }
    // Deterministic files: the loaded copy serialises to the very same bytes.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(to_safetensors_bytes(b.as_ref(), &meta).unwrap(), bytes);
    // And computes the same.
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let ya = a
        .forward(&x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let yb = b
        .forward(&x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    assert_eq!(max_abs_diff(&ya, &yb), 0.0);
}

#[test]
fn files_use_pytorch_names_dtypes_and_documented_metadata() {
    let a = trained("resnet20-b", 3);
    let meta = WeightsMetadata::for_network(a.as_ref())
        .with_dataset("cifar100")
        .with_normalization("mean=0.5,0.5,0.5;std=0.25,0.25,0.25");
    let bytes = to_safetensors_bytes(a.as_ref(), &meta).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, dtype, shape) in [
        ("conv1.weight", safetensors::Dtype::F32, vec![16, 3, 3, 3]),
        ("bn1.running_mean", safetensors::Dtype::F32, vec![16]),
        (
            "layer1.0.conv2.weight",
            safetensors::Dtype::F32,
            vec![16, 16, 3, 3],
        ),
        (
            "layer2.0.downsample.0.weight",
            safetensors::Dtype::F32,
            vec![32, 16, 1, 1],
        ),
        (
            "layer2.0.downsample.1.running_var",
            safetensors::Dtype::F32,
            vec![32],
        ),
        (
            "layer3.2.bn2.num_batches_tracked",
            safetensors::Dtype::I64,
            vec![],
        ),
        ("fc.weight", safetensors::Dtype::F32, vec![10, 64]),
        ("fc.bias", safetensors::Dtype::F32, vec![10]),
    ] {
        let v = st.tensor(name).unwrap_or_else(|_| panic!("{name} written"));
        assert_eq!((v.dtype(), v.shape().to_vec()), (dtype, shape), "{name}");
    }
    let nbt = st.tensor("bn1.num_batches_tracked").unwrap();
    assert_eq!(i64::from_le_bytes(nbt.data().try_into().unwrap()), 1);
    assert_eq!(st.len(), a.params().entries().len());

    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let h = header.metadata().as_ref().unwrap();
    let get = |k: &str| h.get(k).map(String::as_str);
    assert_eq!(get("layerzero.arch"), Some("resnet20-b"));
    assert_eq!(get("layerzero.shortcut"), Some("B"));
    assert_eq!(get("layerzero.num_classes"), Some("10"));
    assert_eq!(get("layerzero.dataset"), Some("cifar100"));
    assert_eq!(
        get("layerzero.normalization"),
        Some("mean=0.5,0.5,0.5;std=0.25,0.25,0.25")
    );
}

#[test]
fn every_problem_is_listed_and_nothing_changes() {
    let target = net("resnet20", 1);
    let before = to_safetensors_bytes(target.as_ref(), &WeightsMetadata::default()).unwrap();
    let source = net("resnet20", 2);
    let mut sd: Vec<(String, Tensor)> = source.params().state_dict().unwrap();
    // Drop one, add one, reshape one, retype one, and break both shape and type of another.
    sd.retain(|(n, _)| n != "layer1.0.conv1.weight");
    sd.push((
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    ));
    for (n, t) in sd.iter_mut() {
        match n.as_str() {
            "fc.weight" => *t = Tensor::zeros((100, 64), DType::F32, &Device::Cpu).unwrap(),
            "bn1.bias" => *t = t.to_dtype(DType::F64).unwrap(),
            "layer3.0.bn1.running_var" => *t = Tensor::zeros(7, DType::F16, &Device::Cpu).unwrap(),
            "layer2.1.bn2.num_batches_tracked" => *t = t.to_dtype(DType::F32).unwrap(),
            _ => {}
        }
    }
    let named: Vec<(&str, Tensor)> = sd.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let bytes = serialize(&named, None);
    let ps = problems(
        load_safetensors_bytes(target.as_ref(), &bytes, "test", &LoadOptions::default())
            .unwrap_err(),
    );
    let expect = [
        WeightProblem::Missing {
            name: "layer1.0.conv1.weight".into(),
            expected_shape: vec![16, 16, 3, 3],
            expected_dtype: "F32".into(),
        },
        WeightProblem::Unexpected {
            name: "extra.weight".into(),
            shape: vec![3],
            dtype: "F32".into(),
        },
        WeightProblem::WrongShape {
            name: "fc.weight".into(),
            expected: vec![10, 64],
            found: vec![100, 64],
        },
        WeightProblem::WrongDtype {
            name: "bn1.bias".into(),
            expected: "F32".into(),
            found: "F64".into(),
        },
        WeightProblem::WrongShape {
            name: "layer3.0.bn1.running_var".into(),
            expected: vec![64],
            found: vec![7],
        },
        WeightProblem::WrongDtype {
            name: "layer3.0.bn1.running_var".into(),
            expected: "F32".into(),
            found: "F16".into(),
        },
        WeightProblem::WrongDtype {
            name: "layer2.1.bn2.num_batches_tracked".into(),
            expected: "I64".into(),
            found: "F32".into(),
        },
    ];
    for e in &expect {
        assert!(ps.contains(e), "missing {e} in {ps:?}");
    }
    assert_eq!(ps.len(), expect.len(), "{ps:?}");
    let after = to_safetensors_bytes(target.as_ref(), &WeightsMetadata::default()).unwrap();
    assert!(before == after, "a failed load changed the network");

    // In the network's order, whatever order the header map gives: the file's tensors as the
    // state dict lists them, then those the network lacks, then those the file lacks.
    let order: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
    let names = [
        "bn1.bias",
        "layer2.1.bn2.num_batches_tracked",
        "layer3.0.bn1.running_var",
        "layer3.0.bn1.running_var",
        "fc.weight",
        "extra.weight",
        "layer1.0.conv1.weight",
    ];
    for (line, name) in order.iter().zip(names) {
        assert!(
            line.contains(&format!("`{name}`")),
            "{line} for {name}: {order:#?}"
        );
    }

    // The in-memory path reports the same problems, in the same order.
    let ps2 = problems(load_state_dict(target.as_ref(), &sd, &LoadOptions::default()).unwrap_err());
    assert_eq!(ps2, ps);
    // The message names every problem.
    let msg = ModelError::WeightMismatch {
        origin: "x".into(),
        problems: ps,
    }
    .to_string();
    assert!(msg.starts_with("7 problem(s)"));
    assert!(msg.contains("missing tensor `layer1.0.conv1.weight`"));
    assert!(msg.contains("unexpected tensor `extra.weight`"));
}

#[test]
fn batch_counters_are_optional_on_import() {
    let a = trained("resnet20", 4);
    let sd: Vec<(String, Tensor)> = a
        .params()
        .state_dict()
        .unwrap()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
        .collect();
    let b = net("resnet20", 5);
    load_state_dict(b.as_ref(), &sd, &LoadOptions::default()).unwrap();
    let nbt = b
        .params()
        .get("bn1.num_batches_tracked")
        .unwrap()
        .value(&Device::Cpu)
        .unwrap();
    assert_eq!(nbt.to_scalar::<i64>().unwrap(), 0, "counter left as it was");
    let w = |n: &dyn Network| {
        values(
            &n.params()
                .get("bn1.running_var")
                .unwrap()
                .value(&Device::Cpu)
                .unwrap(),
        )
    };
    assert_eq!(w(a.as_ref()), w(b.as_ref()));
}

#[test]
fn architecture_metadata_is_checked() {
    let a = net("resnet20", 1);
    let bytes =
        to_safetensors_bytes(a.as_ref(), &WeightsMetadata::for_network(a.as_ref())).unwrap();
    // plain20 has exactly the same tensors; only the metadata tells them apart.
    let p = net("plain20", 1);
    let ps = problems(
        load_safetensors_bytes(p.as_ref(), &bytes, "t", &LoadOptions::default()).unwrap_err(),
    );
    assert_eq!(
        ps,
        vec![WeightProblem::ArchMismatch {
            expected: "plain20".into(),
            found: "resnet20".into()
        }]
    );
    let opts = LoadOptions {
        check_arch: false,
        ..LoadOptions::default()
    };
    load_safetensors_bytes(p.as_ref(), &bytes, "t", &opts).unwrap();
}

#[test]
fn load_model_builds_the_network_the_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg.safetensors");
    let a = create_model("vgg11-bn", &ModelConfig::new(100).with_seed(9)).unwrap();
    save_safetensors(a.as_ref(), &path, &WeightsMetadata::for_network(a.as_ref())).unwrap();
    let (b, meta) =
        load_model(path.to_str().unwrap(), &Device::Cpu, &ModelRegistry::new()).unwrap();
    assert_eq!(b.spec(), a.spec());
    assert_eq!(meta.num_classes, Some(100));
    let x = Tensor::randn(0f32, 1.0, (1, 3, 32, 32), &Device::Cpu).unwrap();
    let ya = a
        .forward(&x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let yb = b
        .forward(&x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    assert_eq!(max_abs_diff(&ya, &yb), 0.0);

    // Without metadata, or with a bad class count, the file cannot name its network.
    let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    for meta in [
        None,
        Some(HashMap::from([(
            META_ARCH.to_string(),
            "resnet20".to_string(),
        )])),
        Some(HashMap::from([
            (META_ARCH.to_string(), "resnet20".to_string()),
            ("layerzero.num_classes".to_string(), "ten".to_string()),
        ])),
    ] {
        let p = dir.path().join("bad.safetensors");
        std::fs::write(&p, serialize(&[("x", t.clone())], meta)).unwrap();
        let err = load_model(p.to_str().unwrap(), &Device::Cpu, &ModelRegistry::new()).unwrap_err();
        assert!(matches!(err, ModelError::BadMetadata { .. }), "{err}");
    }
    // A missing file is an I/O error.
    let err = load_safetensors(
        a.as_ref(),
        &dir.path().join("none"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
}

#[test]
fn malformed_files_are_errors_not_panics() {
    let a = net("resnet20", 1);
    let good = to_safetensors_bytes(a.as_ref(), &WeightsMetadata::for_network(a.as_ref())).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let load =
        |bytes: &[u8]| load_safetensors_bytes(a.as_ref(), bytes, "m", &LoadOptions::default());

    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2, 3],
        u64::MAX.to_le_bytes().to_vec(),
        [&8u64.to_le_bytes()[..], b"not json"].concat(),
        [&2u64.to_le_bytes()[..], b"[]"].concat(),
        [
            &30u64.to_le_bytes()[..],
            br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        ]
        .concat(),
    ];
    // Truncations inside the header and inside the data; an extra trailing byte.
    for cut in [
        9,
        header_len / 2,
        header_len + 7,
        header_len + 8,
        good.len() - 1,
    ] {
        cases.push(good[..cut].to_vec());
    }
    cases.push([&good[..], &[0u8]].concat());
    // Offsets that point past the data.
    let text = String::from_utf8(good[8..8 + header_len].to_vec()).unwrap();
    let bad_offsets = text.replacen("\"data_offsets\":[0,", "\"data_offsets\":[4,", 1);
    cases.push([&good[..8], bad_offsets.as_bytes(), &good[8 + header_len..]].concat());
    for (i, bytes) in cases.iter().enumerate() {
        match load(bytes) {
            Err(ModelError::MalformedFile { .. }) => {}
            other => panic!("case {i}: expected a malformed-file error, got {other:?}"),
        }
    }
    // Flipping any single header byte never panics (it may still parse, e.g. inside a name).
    for pos in (0..8 + header_len).step_by(7) {
        let mut b = good.clone();
        b[pos] ^= 0x5a;
        let _ = load(&b);
    }
    // Well-formed file whose tensor has a dtype the network cannot hold.
    let f16 = Tensor::zeros((16, 3, 3, 3), DType::F16, &Device::Cpu).unwrap();
    let ps = problems(load(&serialize(&[("conv1.weight", f16)], None)).unwrap_err());
    assert!(ps
        .iter()
        .any(|p| matches!(p, WeightProblem::WrongDtype { name, .. } if name == "conv1.weight")));
    // read_safetensors refuses what it cannot decode, with an error.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u8.safetensors");
    let u8t = Tensor::zeros(4, DType::U8, &Device::Cpu).unwrap();
    std::fs::write(&p, serialize(&[("x", u8t)], None)).unwrap();
    assert!(read_safetensors(&p).is_err());
}

#[test]
fn bit_flipped_weights_are_refused_naming_the_file() {
    let a = net("resnet8", 1);
    let meta = WeightsMetadata::for_network(a.as_ref());
    let good = to_safetensors_bytes(a.as_ref(), &meta).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let b = net("resnet8", 2);
    let before = to_safetensors_bytes(b.as_ref(), &meta).unwrap();
    // Any single flipped bit in the data section is caught by `layerzero.sha256`.
    for pos in (8 + header_len..good.len()).step_by(997) {
        let mut bad = good.clone();
        bad[pos] ^= 0x04;
        let err =
            load_safetensors_bytes(b.as_ref(), &bad, "w.safetensors", &LoadOptions::default())
                .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ModelError::MalformedFile { .. }),
            "byte {pos}: {msg}"
        );
        assert!(
            msg.contains("w.safetensors") && msg.contains("checksum"),
            "{msg}"
        );
        assert!(read_safetensors_bytes(&bad, "w.safetensors").is_err());
    }
    // Nothing was loaded.
    assert!(
        to_safetensors_bytes(b.as_ref(), &meta).unwrap() == before,
        "weights changed"
    );
    // The checksum is not carried into the metadata, so a re-save computes it afresh.
    let back = read_safetensors_bytes(&good, "w").unwrap();
    assert_eq!(back.metadata, meta);
}

/// Replays the inputs that once crashed the `weights_import` fuzz target
/// (`tests/data/fuzz-regressions/weights_import/`) and the target's seeds.
#[test]
fn fuzz_regressions_give_errors_not_panics() {
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let a = net("resnet20", 1);
    let mut seen = 0;
    for dir in [
        crate_dir.join("tests/data/fuzz-regressions/weights_import"),
        crate_dir.join("../../fuzz/seeds/weights_import"),
    ] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            let origin = e.path().display().to_string();
            let _ = load_safetensors_bytes(a.as_ref(), &bytes, &origin, &LoadOptions::default());
            let _ = read_safetensors_bytes(&bytes, &origin);
            let _ = load_model_bytes(&bytes, &origin, &Device::Cpu, &ModelRegistry::new());
            seen += 1;
        }
    }
    assert!(seen >= 3, "only {seen} inputs found");
}

#[test]
fn a_forged_class_count_is_refused_before_building_the_network() {
    let t = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let bytes = serialize(
        &[("x", t)],
        Some(HashMap::from([
            (META_ARCH.to_string(), "resnet20".to_string()),
            (
                "layerzero.num_classes".to_string(),
                "100000000000".to_string(),
            ),
        ])),
    );
    let err = load_model_bytes(
        &bytes,
        "forged.safetensors",
        &Device::Cpu,
        &ModelRegistry::new(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::BadMetadata { .. }), "{msg}");
    assert!(
        msg.contains("forged.safetensors") && msg.contains("100000000000"),
        "{msg}"
    );
}

#[test]
fn a_long_mismatch_list_shows_its_first_twenty_and_counts_the_rest() {
    // ResNet-56's state dict offered to a ResNet-20: dozens of problems.
    let big = net("resnet56", 1);
    let state: Vec<(String, Tensor)> = big.params().state_dict().unwrap();
    let err =
        load_state_dict(net("resnet20", 1).as_ref(), &state, &LoadOptions::default()).unwrap_err();
    let message = err.to_string();
    let all = problems(err);
    assert!(all.len() > 50, "{}", all.len());
    let listed = message.lines().filter(|l| l.starts_with("  - ")).count();
    assert_eq!(listed, 20, "{message}");
    let last = message.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("  … and {} more (", all.len() - 20)),
        "{last}"
    );
    assert!(last.contains("unexpected"), "{last}");
    // A short list stays whole: ResNet-20's own tensors but the first 22 (some optional).
    let small = net("resnet20", 1);
    let own = small.params().state_dict().unwrap();
    let kept: Vec<(String, Tensor)> = own[22..].to_vec();
    let err = load_state_dict(small.as_ref(), &kept, &LoadOptions::default()).unwrap_err();
    let message = err.to_string();
    let all = problems(err);
    assert!((10..=24).contains(&all.len()), "{message}");
    assert_eq!(
        message.lines().filter(|l| l.starts_with("  - ")).count(),
        all.len(),
        "{message}"
    );
    assert!(!message.contains("more ("), "{message}");
}
