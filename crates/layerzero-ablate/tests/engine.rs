//! The ablation engine on small random networks and synthetic images, and on the PyTorch
//! golden fixtures (`$LAYERZERO_FIXTURES`).

use std::path::PathBuf;

use candle_core::{DType, Tensor};
use layerzero_ablate::engine::{
    candidates, job_logits, plan, prefix_cache_bytes_per_image, Target, BLOCK_KIND, BLOCK_ROLE,
};
use layerzero_ablate::{
    evaluate_baseline, merge_files, run, AblationMode, EngineConfig, Error, Evaluation, Evaluator,
    PrefixCache, ResultsFile, RunContext, Shard, WeightsRef,
};
use layerzero_data::{CifarSet, Dataset, Split};
use layerzero_models::{
    create_model, load_safetensors, read_safetensors, save_safetensors, ForwardMode, Init,
    Intervention, Interventions, LoadOptions, ModelConfig, Network, TensorRole, WeightsMetadata,
};

/// SplitMix64, for synthetic images and random batch-norm statistics.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// `n` CIFAR-10-shaped images with random labels: each image a random colour with a random
/// gradient and noise, so that globally pooled features differ between images.
fn synthetic_set(n: usize, seed: u64) -> CifarSet {
    let mut rng = Rng(seed);
    let mut pixels = Vec::with_capacity(n * 3072);
    for _ in 0..n {
        for _channel in 0..3 {
            let level = rng.uniform(0.0, 255.0);
            let (gx, gy) = (rng.uniform(-4.0, 4.0), rng.uniform(-4.0, 4.0));
            for y in 0..32 {
                for x in 0..32 {
                    let v = level + gx * (x as f32 - 16.0) + gy * (y as f32 - 16.0);
                    let v = v + rng.uniform(-20.0, 20.0);
                    pixels.push(v.clamp(0.0, 255.0) as u8);
                }
            }
        }
    }
    let labels: Vec<u8> = (0..n).map(|_| (rng.next_u64() % 10) as u8).collect();
    let names = (0..10).map(|i| format!("class{i}")).collect();
    CifarSet::from_parts(Dataset::Cifar10, Split::Test, pixels, labels, names).unwrap()
}

/// A randomly initialised network with random batch-norm affine parameters and running
/// statistics (as the PyTorch fixtures), so that ablations change predictions.
fn random_net(arch: &str, seed: u64) -> Box<dyn Network> {
    let net = create_model(arch, &ModelConfig::new(10).with_seed(seed)).unwrap();
    let mut rng = Rng(seed ^ 0xb1);
    for entry in net.params().entries() {
        let (lo, hi) = match entry.role() {
            TensorRole::BnWeight | TensorRole::RunningVar => (0.5, 1.5),
            TensorRole::BnBias | TensorRole::RunningMean => (-0.3, 0.3),
            _ => continue,
        };
        let n: usize = entry.shape().iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.uniform(lo, hi)).collect();
        let t = Tensor::from_vec(v, entry.shape(), &candle_core::Device::Cpu).unwrap();
        entry.set(&t).unwrap();
    }
    // Random features share a large common part, which makes every image the same class;
    // centre the logits on a calibration set so that predictions vary between images.
    let calibration = images(&synthetic_set(64, seed ^ 0xca1));
    let logits = net
        .forward(&calibration, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let bias = net.params().get("fc.bias").unwrap();
    let centred =
        (bias.value(&candle_core::Device::Cpu).unwrap() - logits.mean(0).unwrap()).unwrap();
    bias.set(&centred).unwrap();
    net
}

fn weights_ref() -> WeightsRef {
    WeightsRef {
        path: "memory/random.safetensors".into(),
        sha256: "0".repeat(64),
    }
}

fn context<'a>(net: &'a dyn Network, test: &'a CifarSet, threads: usize) -> RunContext<'a> {
    RunContext {
        net,
        test,
        weights: weights_ref(),
        dataset: "cifar10".into(),
        split: "test".into(),
        threads,
    }
}

fn config(mode: AblationMode, chunk: usize) -> EngineConfig {
    let mut cfg = EngineConfig::new(mode);
    cfg.chunk_images = chunk;
    cfg
}

/// Every tensor of the network, as raw bits.
fn snapshot(net: &dyn Network) -> Vec<(String, Vec<u64>)> {
    net.params()
        .state_dict()
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let bits = match t.dtype() {
                DType::I64 => vec![t.to_scalar::<i64>().unwrap() as u64],
                _ => t
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(|v| u64::from(v.to_bits()))
                    .collect(),
            };
            (name, bits)
        })
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The predicted class of every image.
fn predictions(logits: &Tensor) -> Vec<u32> {
    logits.argmax(1).unwrap().to_vec1::<u32>().unwrap()
}

/// Images and labels of a set as the engine sees them.
fn images(set: &CifarSet) -> Tensor {
    let batcher = layerzero_data::Batcher::new(
        set,
        layerzero_data::BatchConfig::eval(set.dataset(), set.len()),
        candle_core::Device::Cpu,
    )
    .unwrap();
    batcher.epoch(0).next().unwrap().unwrap().images
}

/// Saves `net` at `path` as `layerzero train` would (metadata from the network).
fn save(net: &dyn Network, path: &std::path::Path) {
    save_safetensors(net, path, &WeightsMetadata::for_network(net)).unwrap();
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn pytorch_fixtures_zeroed_logits_through_the_engine() {
    let dir = match std::env::var_os("LAYERZERO_FIXTURES") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            eprintln!(
                "pytorch fixtures: skipped: set LAYERZERO_FIXTURES=<dir with \
                 resnet20_*_random.safetensors> (e.g. ../shared/fixtures) to run it"
            );
            return;
        }
    };
    for (file, arch) in [
        ("resnet20_pad_random.safetensors", "resnet20"),
        ("resnet20_projection_random.safetensors", "resnet20-b"),
    ] {
        let path = dir.join(file);
        let content = read_safetensors(&path).unwrap();
        let fixture = |name: &str| content.tensors.get(name).unwrap().clone();
        let input = fixture("fixture.input");
        // Another seed first, so that the test fails if loading changed nothing.
        let net = create_model(arch, &ModelConfig::new(10).with_init(Init::Seeded(99))).unwrap();
        load_safetensors(net.as_ref(), &path, &LoadOptions::ignoring("fixture.")).unwrap();

        let cache = PrefixCache::build(net.as_ref(), &input, Interventions::none()).unwrap();
        let d = max_abs_diff(cache.logits(), &fixture("fixture.logits"));
        assert!(d < 1e-4, "{arch}: baseline logits differ by {d}");

        let mut cfg = EngineConfig::new(AblationMode::ZeroKernel);
        cfg.layers = Some("layer2.0.conv1,layer1.1.conv2".into());
        let plan = plan(net.as_ref(), &cfg).unwrap();
        let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
        // Network order, whatever the order of the patterns.
        assert_eq!(names, ["layer1.1.conv2", "layer2.0.conv1"]);
        for job in &plan.jobs {
            let want = fixture(&format!("fixture.logits_zeroed.{}", job.name));
            let got = job_logits(net.as_ref(), job, &input).unwrap();
            let d = max_abs_diff(&got, &want);
            assert!(
                d < 1e-4,
                "{arch} with {} zeroed: logits differ by {d}",
                job.name
            );
            // The ablation is visible (README: by more than 2e-3).
            assert!(
                max_abs_diff(&got, cache.logits()) > 1e-3,
                "{arch} {}",
                job.name
            );
            // And the same from the shared cache of the plain run.
            let again = cache
                .run(net.as_ref(), &job.interventions().unwrap())
                .unwrap();
            assert!(max_abs_diff(&again, &want) < 1e-4, "{arch} {}", job.name);
        }
    }
}

#[test]
fn every_mode_touches_only_its_layer_and_restores_the_baseline() {
    let net = random_net("resnet8-b", 3);
    let set = synthetic_set(24, 11);
    let dir = temp_dir();
    // Epoch-0 weights for reinit: another initialisation of the same architecture.
    let init_path = dir.path().join("init.safetensors");
    let init_net = create_model("resnet8-b", &ModelConfig::new(10).with_seed(77)).unwrap();
    save(init_net.as_ref(), &init_path);

    let before = snapshot(net.as_ref());
    let baseline = evaluate_baseline(net.as_ref(), &set, 16, 2).unwrap();
    let predicted = predictions(
        &net.forward(&images(&set), ForwardMode::Eval, Interventions::none())
            .unwrap(),
    );
    let mut classes = predicted.clone();
    classes.sort_unstable();
    classes.dedup();
    assert!(
        classes.len() >= 3,
        "degenerate network: predicts only {classes:?}"
    );

    for mode in AblationMode::ALL {
        let mut cfg = config(mode, 16);
        cfg.levels = vec![0.5];
        cfg.seed = 5;
        cfg.init_weights = Some(init_path.clone());
        cfg.max_cumulative_steps = Some(2);

        // Each job's interventions name its own layer or block, and nothing else.
        let plan = plan(net.as_ref(), &cfg).unwrap();
        for job in &plan.jobs {
            let ivs = job.interventions().unwrap();
            let layers: Vec<_> = ivs.layers().map(|(id, _)| id).collect();
            let blocks: Vec<_> = ivs.skipped_blocks().collect();
            match plan.candidates[job.candidate].target {
                Target::Layer(id) => assert!(layers == [id] && blocks.is_empty(), "{mode}"),
                Target::Block(b) => assert!(layers.is_empty() && blocks == [b], "{mode}"),
            }
        }

        let results = run(&context(net.as_ref(), &set, 2), &cfg, None).unwrap();
        results.validate("test").unwrap();
        assert_eq!(results.mode, mode);
        assert_eq!(results.baseline, baseline.metrics(), "{mode}");
        let expected_records = match mode {
            m if m.is_cumulative() => 2,
            m if m.is_swept() => plan.selected.len(),
            _ => plan.selected.len(),
        };
        assert_eq!(results.layers.len(), expected_records, "{mode}");
        assert_eq!(results.n_ablations, expected_records, "{mode}");
        // Some ablation changes some prediction (so the comparisons below mean something).
        assert!(
            results
                .layers
                .iter()
                .any(|r| r.flips_right_to_wrong + r.flips_wrong_to_right > 0),
            "{mode}: no ablation changed anything"
        );

        // The network is bit-identical and evaluates exactly as before.
        assert!(
            snapshot(net.as_ref()) == before,
            "{mode} changed the weights"
        );
        let after = evaluate_baseline(net.as_ref(), &set, 16, 2).unwrap();
        assert_eq!(after, baseline, "{mode}: baseline not restored");
    }
    let again = predictions(
        &net.forward(&images(&set), ForwardMode::Eval, Interventions::none())
            .unwrap(),
    );
    assert_eq!(again, predicted);
}

#[test]
fn shards_merged_equal_the_unsharded_run() {
    let net = random_net("resnet8-b", 4);
    let set = synthetic_set(24, 12);
    let dir = temp_dir();
    for (mode, levels, layers) in [
        (AblationMode::ZeroKernel, vec![], None),
        (
            AblationMode::Prune,
            vec![0.3, 0.9],
            Some("layer2.*".to_string()),
        ),
    ] {
        let mut cfg = config(mode, 16);
        cfg.levels = levels;
        cfg.layers = layers;
        let whole = run(&context(net.as_ref(), &set, 2), &cfg, None).unwrap();
        let mut paths = Vec::new();
        for k in 0..3 {
            cfg.shard = Some(Shard::new(k, 3).unwrap());
            // Same thread count as the whole run: thread invariance is tested separately.
            let part = run(&context(net.as_ref(), &set, 2), &cfg, None).unwrap();
            assert_eq!(part.shard, cfg.shard);
            assert_eq!(part.n_ablations, whole.n_ablations);
            let path = dir.path().join(format!("{mode}-part-{k}.json"));
            part.write_json(&path).unwrap();
            paths.push(path);
        }
        let mut merged = merge_files(&paths).unwrap();
        merged.elapsed_s = whole.elapsed_s;
        merged.threads = whole.threads;
        assert_eq!(merged, whole, "{mode}");
    }
}

#[test]
fn cached_prefix_results_equal_full_forward_results() {
    let net = random_net("resnet8", 5);
    let set = synthetic_set(16, 13);
    let x = images(&set);
    for mode in [
        AblationMode::ZeroKernel,
        AblationMode::SkipBranch,
        AblationMode::Prune,
    ] {
        let mut cfg = config(mode, 16);
        cfg.levels = vec![0.5];
        if mode == AblationMode::Prune {
            cfg.layers = Some("layer2.*,fc".into());
        }
        let plan = plan(net.as_ref(), &cfg).unwrap();
        let jobs: Vec<_> = plan.jobs.iter().collect();
        let evaluator = Evaluator::new(net.as_ref(), &set, 16, 1).unwrap();
        let (base, evals) = evaluator
            .evaluate(Interventions::none(), &jobs, &mut |_| {})
            .unwrap();
        let full_base =
            layerzero_train::evaluate(net.as_ref(), &set, 16, Interventions::none()).unwrap();
        assert_eq!(base.top1(), full_base.top1.as_slice());
        for (job, eval) in jobs.iter().zip(&evals) {
            let ivs = job.interventions().unwrap();
            let full = layerzero_train::evaluate(net.as_ref(), &set, 16, &ivs).unwrap();
            assert_eq!(eval.top1(), full.top1.as_slice(), "{mode} {}", job.label());
            assert_eq!(eval.top5(), full.top5.as_slice(), "{mode} {}", job.label());
            for (a, b) in eval.loss().iter().zip(&full.loss) {
                assert!((a - b).abs() < 1e-5, "{mode} {}: {a} vs {b}", job.label());
            }
            let cached = job_logits(net.as_ref(), job, &x).unwrap();
            let direct = net.forward(&x, ForwardMode::Eval, &ivs).unwrap();
            assert!(
                max_abs_diff(&cached, &direct) < 1e-5,
                "{mode} {}",
                job.label()
            );
        }
    }
}

/// Share of (job, image) pairs with the same top-1 outcome, and the largest loss difference.
fn agreement(a: &[Evaluation], b: &[Evaluation]) -> (f64, f64) {
    let (mut same, mut total, mut worst) = (0usize, 0usize, 0f64);
    for (x, y) in a.iter().zip(b) {
        for i in 0..x.len() {
            total += 1;
            same += usize::from(x.top1()[i] == y.top1()[i]);
            worst = worst.max((x.loss()[i] - y.loss()[i]).abs());
        }
    }
    (same as f64 / total as f64, worst)
}

#[test]
fn results_do_not_depend_on_chunk_size_or_thread_count() {
    let net = random_net("resnet8", 6);
    let set = synthetic_set(128, 14);
    let mut cfg = config(AblationMode::ZeroKernel, 7);
    // One layer of each segment: the stem, each block, the head.
    cfg.layers = Some("conv1,layer1.0.conv2,layer2.0.conv1,layer3.0.conv2,fc".into());
    let plan = plan(net.as_ref(), &cfg).unwrap();
    let jobs: Vec<_> = plan.jobs.iter().collect();
    let eval = |chunk, threads| {
        let ev = Evaluator::new(net.as_ref(), &set, chunk, threads).unwrap();
        let mut chunks_seen = 0;
        let (base, mut evals) = ev
            .evaluate(Interventions::none(), &jobs, &mut |k| {
                assert_eq!(k, jobs.len());
                chunks_seen += 1;
            })
            .unwrap();
        assert_eq!(chunks_seen, set.len().div_ceil(chunk));
        evals.push(base);
        evals
    };
    let small = eval(7, 1);
    let large = eval(64, 1);
    let parallel = eval(64, 2);
    let (base, ablated) = small.split_last().unwrap();
    assert!(
        ablated.iter().any(|e| e.top1() != base.top1()),
        "no ablation changed a prediction: the comparison would be vacuous"
    );
    let (same, worst) = agreement(&small, &large);
    assert!(same >= 0.999, "chunk 7 vs 64: {same}");
    assert!(worst < 1e-4, "chunk 7 vs 64: loss differs by {worst}");
    let (same, worst) = agreement(&large, &parallel);
    assert!(same >= 0.999, "1 vs 2 threads: {same}");
    assert!(worst < 1e-4, "1 vs 2 threads: loss differs by {worst}");

    // The whole run agrees too, and reports progress up to its total.
    let calls = std::cell::RefCell::new(Vec::new());
    let progress = |done: usize, total: usize| calls.borrow_mut().push((done, total));
    let a = run(&context(net.as_ref(), &set, 1), &cfg, Some(&progress)).unwrap();
    let calls = calls.into_inner();
    let total = plan.jobs.len() * set.len().div_ceil(7);
    assert_eq!(calls.len(), set.len().div_ceil(7));
    assert_eq!(calls.last(), Some(&(total, total)));
    let mut cfg64 = cfg.clone();
    cfg64.chunk_images = 64;
    let b = run(&context(net.as_ref(), &set, 2), &cfg64, None).unwrap();
    for (x, y) in a.layers.iter().zip(&b.layers) {
        assert_eq!(x.layer, y.layer);
        assert!((x.top1 - y.top1).abs() <= 1.0 / 128.0, "{}", x.layer);
    }
}

#[test]
fn reinit_with_the_current_weights_changes_nothing() {
    let net = random_net("resnet8-b", 7);
    let set = synthetic_set(32, 15);
    let dir = temp_dir();
    let path = dir.path().join("same.safetensors");
    save(net.as_ref(), &path);
    let mut cfg = config(AblationMode::Reinit, 32);
    cfg.init_weights = Some(path);
    let results = run(&context(net.as_ref(), &set, 2), &cfg, None).unwrap();
    assert_eq!(results.layers.len(), 10); // conv1, 6 branch convs, 2 projections, fc
    for r in &results.layers {
        assert_eq!(r.delta_top1, 0.0, "{}", r.layer);
        assert_eq!((r.flips_right_to_wrong, r.flips_wrong_to_right), (0, 0));
        assert_eq!(r.top5, results.baseline.top5, "{}", r.layer);
        assert!((r.loss - results.baseline.loss).abs() < 1e-9, "{}", r.layer);
    }
    // The very case `without_effect` is there to point out: an ablation that applies nothing.
    assert_eq!(results.without_effect().count(), results.layers.len());
    // Whereas other epoch-0 weights do change something.
    let other = create_model("resnet8-b", &ModelConfig::new(10).with_seed(1)).unwrap();
    let other_path = dir.path().join("other.safetensors");
    save(other.as_ref(), &other_path);
    cfg.init_weights = Some(other_path);
    let results = run(&context(net.as_ref(), &set, 2), &cfg, None).unwrap();
    assert!(results
        .layers
        .iter()
        .any(|r| r.loss != results.baseline.loss));
    // Zeroing any kernel of a network with random weights changes its loss.
    let zeroed = run(
        &context(net.as_ref(), &set, 2),
        &config(AblationMode::ZeroKernel, 32),
        None,
    )
    .unwrap();
    assert_eq!(zeroed.layers.len(), 10);
    assert_eq!(
        zeroed
            .without_effect()
            .map(|r| r.layer.as_str())
            .collect::<Vec<_>>(),
        Vec::<&str>::new()
    );
}

/// `rerandomize --seed S` on a network initialised with seed S (both default to 0) draws
/// fresh values, not the network's epoch-0 ones: before, it gave `reinit`'s results to the
/// last digit.
#[test]
fn rerandomize_with_the_training_seed_is_not_reinit() {
    let set = synthetic_set(32, 16);
    let dir = temp_dir();
    // A network "trained" from seed 3: its epoch-0 weights are those seed 3 builds.
    let init = create_model("resnet8", &ModelConfig::new(10).with_seed(3)).unwrap();
    let init_path = dir.path().join("init.safetensors");
    save(init.as_ref(), &init_path);
    let trained = random_net("resnet8", 21);
    let mut reinit = config(AblationMode::Reinit, 32);
    reinit.init_weights = Some(init_path.clone());
    let reinit = run(&context(trained.as_ref(), &set, 1), &reinit, None).unwrap();
    // The results name the file the layers were restored from.
    assert_eq!(
        reinit.init_weights,
        Some(WeightsRef::of_file(&init_path).unwrap())
    );
    let mut fresh = config(AblationMode::Rerandomize, 32);
    fresh.seed = 3;
    let fresh = run(&context(trained.as_ref(), &set, 1), &fresh, None).unwrap();
    assert_eq!((fresh.seed, fresh.init_weights.as_ref()), (Some(3), None));
    let differ = reinit
        .layers
        .iter()
        .zip(&fresh.layers)
        .filter(|(a, b)| a.loss != b.loss)
        .count();
    assert_eq!(differ, reinit.layers.len(), "{:?}", fresh.layers);
    // The stream is the seed's own: the same seed draws the same values again.
    let again = run(
        &context(trained.as_ref(), &set, 1),
        &{
            let mut c = config(AblationMode::Rerandomize, 32);
            c.seed = 3;
            c
        },
        None,
    )
    .unwrap();
    assert_eq!(again.layers, fresh.layers);
    assert_ne!(layerzero_ablate::engine::rerandomize_stream(3), 3);
}

#[test]
fn reinit_names_a_missing_file_or_tensor() {
    let net = random_net("resnet8-b", 8);
    let set = synthetic_set(8, 16);
    let dir = temp_dir();
    let mut cfg = config(AblationMode::Reinit, 8);
    let err = run(&context(net.as_ref(), &set, 1), &cfg, None).unwrap_err();
    assert!(err.to_string().contains("init_weights"), "{err}");

    let missing = dir.path().join("no-such-init.safetensors");
    cfg.init_weights = Some(missing);
    let err = run(&context(net.as_ref(), &set, 1), &cfg, None).unwrap_err();
    assert!(matches!(err, Error::Model { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no-such-init.safetensors"),
        "{err}"
    );

    // Another architecture's epoch-0 file is refused by its metadata, before any tensor ...
    let a = create_model("resnet8", &ModelConfig::new(10)).unwrap();
    let path = dir.path().join("option-a.safetensors");
    save(a.as_ref(), &path);
    cfg.init_weights = Some(path.clone());
    match run(&context(net.as_ref(), &set, 1), &cfg, None).unwrap_err() {
        Error::InvalidArgument {
            what,
            expected,
            found,
        } => {
            assert!(
                what.ends_with("option-a.safetensors (layerzero.arch)"),
                "{what}"
            );
            assert_eq!(
                expected,
                "the epoch-0 weights of a resnet8-b, the evaluated network"
            );
            assert_eq!(found, "resnet8");
        }
        other => panic!("expected an invalid-argument error, got {other}"),
    }
    // ... even where every tensor would fit: plain-8 has ResNet-8 (option A)'s names and
    // shapes, and restoring from it passed silently before.
    let plain = create_model("plain8", &ModelConfig::new(10)).unwrap();
    let plain_path = dir.path().join("plain8-init.safetensors");
    save(plain.as_ref(), &plain_path);
    let mut plain_cfg = config(AblationMode::Reinit, 8);
    plain_cfg.init_weights = Some(plain_path);
    let resnet8 = random_net("resnet8", 8);
    match run(&context(resnet8.as_ref(), &set, 1), &plain_cfg, None).unwrap_err() {
        Error::InvalidArgument { found, .. } => assert_eq!(found, "plain8"),
        other => panic!("expected an invalid-argument error, got {other}"),
    }
    // A file without metadata (PyTorch's) is checked tensor by tensor: option-A weights have
    // no projection shortcut.
    save_safetensors(a.as_ref(), &path, &WeightsMetadata::default()).unwrap();
    let err = run(&context(net.as_ref(), &set, 1), &cfg, None).unwrap_err();
    match &err {
        Error::WeightsFile { tensor, found, .. } => {
            assert_eq!(tensor, "layer2.0.downsample.0.weight");
            assert_eq!(found, "no such tensor");
        }
        other => panic!("expected a weights-file error, got {other}"),
    }
    assert!(err.to_string().contains("option-a.safetensors"), "{err}");
}

#[test]
fn skip_branch_on_a_plain_net_is_a_clear_error() {
    let net = random_net("plain8", 9);
    let set = synthetic_set(8, 17);
    for mode in [AblationMode::SkipBranch, AblationMode::CumulativeSkipBranch] {
        let err = run(&context(net.as_ref(), &set, 1), &config(mode, 8), None).unwrap_err();
        assert!(matches!(err, Error::NoCandidates { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(mode.name()) && msg.contains("plain8"), "{msg}");
        assert!(msg.contains("residual block"), "{msg}");
    }
    // Zero-kernel works on it, with `plain` roles.
    let results = run(
        &context(net.as_ref(), &set, 1),
        &config(AblationMode::ZeroKernel, 8),
        None,
    )
    .unwrap();
    let roles: Vec<&str> = results.layers.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(roles[0], "stem");
    assert!(
        roles[1..roles.len() - 1].iter().all(|&r| r == "plain"),
        "{roles:?}"
    );
    assert_eq!(roles.last(), Some(&"classifier"));
}

#[test]
fn records_describe_layers_and_blocks() {
    let net = create_model("resnet8-b", &ModelConfig::new(10)).unwrap();
    let layers = candidates(net.as_ref(), AblationMode::ZeroKernel).unwrap();
    let described: Vec<(&str, &str, &str, bool)> = layers
        .iter()
        .map(|c| {
            let i = &c.info;
            (
                i.name.as_str(),
                i.kind.as_str(),
                i.role.as_str(),
                i.changes_channels,
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("conv1", "conv", "stem", true),
            ("layer1.0.conv1", "conv", "residual-branch", false),
            ("layer1.0.conv2", "conv", "residual-branch", false),
            ("layer2.0.conv1", "conv", "residual-branch", true),
            ("layer2.0.conv2", "conv", "residual-branch", false),
            ("layer2.0.downsample.0", "conv", "shortcut", true),
            ("layer3.0.conv1", "conv", "residual-branch", true),
            ("layer3.0.conv2", "conv", "residual-branch", false),
            ("layer3.0.downsample.0", "conv", "shortcut", true),
            ("fc", "linear", "classifier", true),
        ]
    );
    // Index = inventory (network) order, parameters from the inventory.
    for c in &layers {
        let info = net.inventory().by_name(&c.info.name).unwrap();
        assert_eq!(c.info.index, info.id.index());
        assert_eq!(c.info.params, info.params as u64);
    }

    let blocks = candidates(net.as_ref(), AblationMode::SkipBranch).unwrap();
    let names: Vec<&str> = blocks.iter().map(|c| c.info.name.as_str()).collect();
    assert_eq!(names, ["layer1.0", "layer2.0", "layer3.0"]);
    for c in &blocks {
        assert_eq!(
            (c.info.kind.as_str(), c.info.role.as_str()),
            (BLOCK_KIND, BLOCK_ROLE)
        );
        let in_block: Vec<_> = net
            .inventory()
            .iter()
            .filter(|l| l.name.starts_with(&format!("{}.", c.info.name)))
            .collect();
        assert_eq!(
            c.info.params,
            in_block.iter().map(|l| l.params as u64).sum::<u64>()
        );
        assert_eq!(c.info.index, in_block[0].id.index());
        assert_eq!(c.info.changes_channels, c.info.name != "layer1.0");
    }
    // 16·16·9·2 + 4·16 (two convs, two batch norms) for the identity block.
    assert_eq!(blocks[0].info.params, 16 * 16 * 9 * 2 + 4 * 16);
}

#[test]
fn selection_by_patterns_and_its_errors() {
    let net = random_net("resnet8", 10);
    let set = synthetic_set(8, 18);
    let mut cfg = config(AblationMode::ZeroKernel, 8);
    cfg.layers = Some("layer2.*, fc".into());
    let results = run(&context(net.as_ref(), &set, 1), &cfg, None).unwrap();
    let names: Vec<&str> = results.layers.iter().map(|r| r.layer.as_str()).collect();
    assert_eq!(names, ["layer2.0.conv1", "layer2.0.conv2", "fc"]);
    assert_eq!(results.n_ablations, 3);

    cfg.layers = Some("layer9.*".into());
    let err = run(&context(net.as_ref(), &set, 1), &cfg, None).unwrap_err();
    assert!(
        matches!(err, Error::PatternMatchesNothing { .. }),
        "{err:?}"
    );
    // Block modes select by block name.
    let mut cfg = config(AblationMode::SkipBranch, 8);
    cfg.layers = Some("layer3.*".into());
    let results = run(&context(net.as_ref(), &set, 1), &cfg, None).unwrap();
    let names: Vec<&str> = results.layers.iter().map(|r| r.layer.as_str()).collect();
    assert_eq!(names, ["layer3.0"]);
}

#[test]
fn bad_settings_are_errors() {
    let net = random_net("resnet8", 10);
    let set = synthetic_set(8, 18);
    let ctx = context(net.as_ref(), &set, 1);
    let mut cfg = config(AblationMode::ZeroKernel, 0);
    assert!(run(&ctx, &cfg, None)
        .unwrap_err()
        .to_string()
        .contains("chunk_images"));
    cfg.chunk_images = 4;
    let zero_threads = context(net.as_ref(), &set, 0);
    assert!(run(&zero_threads, &cfg, None)
        .unwrap_err()
        .to_string()
        .contains("threads"));
    let mut cum = config(AblationMode::CumulativeZeroKernel, 4);
    cum.shard = Some(Shard::new(0, 2).unwrap());
    assert!(run(&ctx, &cum, None)
        .unwrap_err()
        .to_string()
        .contains("--shard"));
    cum.shard = None;
    cum.max_cumulative_steps = Some(0);
    assert!(run(&ctx, &cum, None).is_err());
    for levels in [vec![], vec![0.5, 0.5], vec![0.9, 0.1], vec![1.5]] {
        let mut swept = config(AblationMode::ZeroFilters, 4);
        swept.levels = levels.clone();
        let err = run(&ctx, &swept, None).unwrap_err();
        assert!(err.to_string().contains("--levels"), "{levels:?}: {err}");
    }
    let empty = synthetic_set(0, 1);
    assert!(run(&context(net.as_ref(), &empty, 1), &cfg, None).is_err());
}

#[test]
fn cumulative_steps_agree_with_single_ablations_and_full_forwards() {
    let net = random_net("resnet8", 12);
    let set = synthetic_set(32, 19);
    let single = run(
        &context(net.as_ref(), &set, 2),
        &config(AblationMode::ZeroKernel, 25),
        None,
    )
    .unwrap();
    let mut cfg = config(AblationMode::CumulativeZeroKernel, 25);
    cfg.max_cumulative_steps = Some(3);
    let calls = std::cell::Cell::new((0, 0));
    let progress = |done, total| calls.set((done, total));
    let cum = run(&context(net.as_ref(), &set, 2), &cfg, Some(&progress)).unwrap();
    assert_eq!(cum.layers.len(), 3);
    assert_eq!(cum.n_ablations, 3);
    let m = single.layers.len();
    let total = 2 * (m + (m - 1) + (m - 2));
    assert_eq!(calls.get(), (total, total));
    assert_eq!(cum.baseline, single.baseline);
    let steps: Vec<usize> = cum.layers.iter().map(|r| r.step.unwrap()).collect();
    assert_eq!(steps, [1, 2, 3]);

    // Step 1 is the least harmful single ablation (highest top-1, first in network order).
    let best = single
        .layers
        .iter()
        .fold(None::<&layerzero_ablate::LayerRecord>, |b, r| match b {
            Some(b) if b.top1 >= r.top1 => Some(b),
            _ => Some(r),
        })
        .unwrap();
    let mut first = cum.layers[0].clone();
    first.step = None;
    assert_eq!(&first, best);

    // Each step equals a full forward with every removed layer zeroed together.
    let mut ivs = Interventions::new();
    for r in &cum.layers {
        let id = net.inventory().by_name(&r.layer).unwrap().id;
        ivs.insert(Intervention::ZeroKernel(id));
        let full = layerzero_train::evaluate(net.as_ref(), &set, 25, &ivs).unwrap();
        let correct = full.top1.iter().filter(|&&c| c).count();
        assert_eq!(r.top1, correct as f64 / 32.0, "step {:?}", r.step);
        let loss = full.loss.iter().sum::<f64>() / 32.0;
        assert!((r.loss - loss).abs() < 1e-6, "step {:?}", r.step);
    }
    let names: std::collections::HashSet<&str> =
        cum.layers.iter().map(|r| r.layer.as_str()).collect();
    assert_eq!(names.len(), 3, "a layer removed twice");

    // Skip-branch form: at most every block, and reads back as valid JSON.
    let mut cfg = config(AblationMode::CumulativeSkipBranch, 25);
    cfg.max_cumulative_steps = None;
    let cum = run(&context(net.as_ref(), &set, 1), &cfg, None).unwrap();
    assert_eq!(cum.layers.len(), 3);
    let text = cum.to_json_string().unwrap();
    assert_eq!(
        ResultsFile::from_json_str(&text, "cumulative").unwrap(),
        cum
    );
}

#[test]
fn held_out_selection_chooses_on_the_first_images_and_measures_on_the_rest() {
    let net = random_net("resnet8", 12);
    let set = synthetic_set(48, 19);
    let (choose, held) = (set.subset(0..20), set.subset(20..48));
    let mut cfg = config(AblationMode::CumulativeZeroKernel, 25);
    cfg.max_cumulative_steps = Some(3);
    // The path alone, chosen on the first 20 images as a plain cumulative run on them.
    let on_choice = run(&context(net.as_ref(), &choose, 2), &cfg, None).unwrap();
    assert_eq!(on_choice.selection_images, None);
    assert!(on_choice.layers.iter().all(|r| r.selection_top1.is_none()));

    cfg.selection_images = Some(20);
    let calls = std::cell::Cell::new((0, 0));
    let progress = |done, total| calls.set((done, total));
    let cum = run(&context(net.as_ref(), &set, 2), &cfg, Some(&progress)).unwrap();
    assert_eq!((cum.n_images, cum.selection_images), (28, Some(20)));
    // Choosing: one chunk of 20 per candidate and step; measuring: two chunks (25 + 3) a step.
    let m = plan(net.as_ref(), &config(AblationMode::ZeroKernel, 25))
        .unwrap()
        .jobs
        .len();
    let total = (m + (m - 1) + (m - 2)) + 2 * 3;
    assert_eq!(calls.get(), (total, total));
    let path: Vec<&str> = cum.layers.iter().map(|r| r.layer.as_str()).collect();
    let chosen: Vec<&str> = on_choice.layers.iter().map(|r| r.layer.as_str()).collect();
    assert_eq!(path, chosen, "the path is chosen on the first 20 images");
    for (r, c) in cum.layers.iter().zip(&on_choice.layers) {
        assert_eq!(r.selection_top1, Some(c.top1), "step {:?}", r.step);
    }
    assert_eq!(cum.selection_baseline, Some(on_choice.baseline));

    // Everything recorded is measured on the other 28: the baseline, and each step as a full
    // forward with every layer of the steps so far zeroed together.
    assert_eq!(
        cum.baseline,
        evaluate_baseline(net.as_ref(), &held, 7, 1)
            .unwrap()
            .metrics()
    );
    let base = layerzero_train::evaluate(net.as_ref(), &held, 28, Interventions::none()).unwrap();
    let mut ivs = Interventions::new();
    for r in &cum.layers {
        ivs.insert(Intervention::ZeroKernel(
            net.inventory().by_name(&r.layer).unwrap().id,
        ));
        let full = layerzero_train::evaluate(net.as_ref(), &held, 28, &ivs).unwrap();
        let correct = full.top1.iter().filter(|&&c| c).count();
        assert_eq!(r.top1, correct as f64 / 28.0, "step {:?}", r.step);
        let loss = full.loss.iter().sum::<f64>() / 28.0;
        assert!((r.loss - loss).abs() < 1e-6, "step {:?}", r.step);
        let r2w = (0..28).filter(|&i| base.top1[i] && !full.top1[i]).count();
        let w2r = (0..28).filter(|&i| !base.top1[i] && full.top1[i]).count();
        assert_eq!(
            (r.flips_right_to_wrong, r.flips_wrong_to_right),
            (r2w as u64, w2r as u64),
            "step {:?}",
            r.step
        );
    }
    let text = cum.to_json_string().unwrap();
    assert!(text.contains("\"selection_images\": 20"), "{text}");
    assert_eq!(ResultsFile::from_json_str(&text, "held-out").unwrap(), cum);
    let csv = layerzero_ablate::csv::to_csv(&cum);
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(header[header.len() - 2..], ["selection_top1", "zeroed"]);
    assert_eq!(
        row[row.len() - 2].parse::<f64>().unwrap(),
        cum.layers[0].selection_top1.unwrap()
    );
    assert_eq!(row.last(), Some(&""));

    // Refused: a selection in a mode that chooses nothing, none at all, or no image left.
    let mut single = config(AblationMode::ZeroKernel, 25);
    single.selection_images = Some(20);
    let err = run(&context(net.as_ref(), &set, 1), &single, None).unwrap_err();
    assert!(err.to_string().contains("selection_images"), "{err}");
    for k in [0, 48, 100] {
        cfg.selection_images = Some(k);
        let err = run(&context(net.as_ref(), &set, 1), &cfg, None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("selection_images"), "{k}: {text}");
        if k > 0 {
            assert!(text.contains("48 evaluation images"), "{k}: {text}");
        }
    }
}

#[test]
fn prefix_cache_memory_follows_the_documented_formula() {
    let resnet20 = create_model("resnet20", &ModelConfig::new(10).with_init(Init::Zeros)).unwrap();
    assert_eq!(
        prefix_cache_bytes_per_image(resnet20.as_ref()).unwrap(),
        421_888
    );

    let net = random_net("resnet8", 13);
    let set = synthetic_set(5, 20);
    let per_image = prefix_cache_bytes_per_image(net.as_ref()).unwrap();
    // resnet8: images + layer1.0 + layer2.0 inputs (16·32·32 each) + layer3.0 (32·16·16)
    // + head (64·8·8).
    assert_eq!(per_image, 4 * (3072 + 2 * 16384 + 8192 + 4096));
    let cache = PrefixCache::build(net.as_ref(), &images(&set), Interventions::none()).unwrap();
    assert_eq!(cache.bytes(), 5 * per_image);
    // Keeping only the segments jobs start at holds less.
    let partial =
        PrefixCache::build_keeping(net.as_ref(), &images(&set), Interventions::none(), &[2])
            .unwrap();
    assert_eq!(partial.bytes(), 5 * 4 * 16384);
    assert!(partial.input(1).is_none());
    let err = partial
        .run(
            net.as_ref(),
            &Interventions::single(Intervention::ZeroKernel(
                net.inventory().by_name("conv1").unwrap().id,
            )),
        )
        .unwrap_err();
    assert!(err.to_string().contains("segment 0"), "{err}");
}

/// A network's in-memory reference names the file it would be saved as: the same SHA-256.
#[test]
fn weights_ref_of_a_network_matches_its_saved_file() {
    let net = random_net("resnet8", 4);
    let dir = temp_dir();
    let path = dir.path().join("w.safetensors");
    save(net.as_ref(), &path);
    let of_file = WeightsRef::of_file(&path).unwrap();
    let in_memory = WeightsRef::of_network(net.as_ref(), "just trained").unwrap();
    assert_eq!(in_memory.sha256, of_file.sha256);
    assert_eq!(in_memory.path, "just trained");
    assert_eq!(of_file.path, path.display().to_string());
    // Another network, another hash.
    let other = WeightsRef::of_network(random_net("resnet8", 5).as_ref(), "x").unwrap();
    assert_ne!(other.sha256, in_memory.sha256);
    assert!(WeightsRef::of_file(dir.path().join("missing")).is_err());
}

#[test]
fn sweep_records_say_how_many_filters_or_weights_each_level_zeroed() {
    let net = random_net("resnet8", 6);
    let set = synthetic_set(16, 21);
    let inventory = net.inventory();
    for (mode, count_of) in [
        (AblationMode::ZeroFilters, "filters"),
        (AblationMode::Prune, "weights"),
    ] {
        let mut cfg = config(mode, 16);
        // 1/32 of a 16-filter conv or a 10-output fc rounds down to no filter.
        cfg.levels = vec![1.0 / 32.0, 0.5];
        let results = run(&context(net.as_ref(), &set, 2), &cfg, None).unwrap();
        results.validate("test").unwrap();
        // The CSV's last column says the same.
        let csv = layerzero_ablate::csv::to_csv(&results);
        for (line, r) in csv.lines().skip(1).zip(&results.layers) {
            assert_eq!(
                line.rsplit(',').next(),
                Some(r.zeroed.unwrap().to_string().as_str())
            );
        }
        let mut none_zeroed = 0;
        for r in &results.layers {
            let weight = inventory.by_name(&r.layer).unwrap().weight_shape();
            let count = match count_of {
                "filters" => weight[0],
                _ => weight.iter().product(),
            };
            let level = r.level.unwrap();
            let expected = (level * count as f64 + 1e-9).floor() as u64;
            assert_eq!(r.zeroed, Some(expected), "{mode} {} at {level}", r.layer);
            if expected == 0 {
                none_zeroed += 1;
                // Nothing zeroed: the unchanged network, to the image.
                assert_eq!(r.flips_right_to_wrong + r.flips_wrong_to_right, 0);
                assert_eq!(r.top1, results.baseline.top1);
            }
        }
        if mode == AblationMode::ZeroFilters {
            // The 16-filter convs and the fc at 1/32; the 32- and 64-filter convs lose 1 or 2.
            assert!(
                none_zeroed > 0 && none_zeroed < results.layers.len() / 2,
                "{mode}: {none_zeroed}"
            );
        } else {
            assert_eq!(none_zeroed, 0, "{mode}");
        }
    }
    // Other modes carry no count; a count without a level is refused.
    let mut zk = run(
        &context(net.as_ref(), &set, 2),
        &config(AblationMode::ZeroKernel, 16),
        None,
    )
    .unwrap();
    assert!(zk.layers.iter().all(|r| r.zeroed.is_none()));
    zk.layers[0].zeroed = Some(1);
    let err = zk.validate("zk.json").unwrap_err().to_string();
    assert!(err.contains("zeroed"), "{err}");
}
