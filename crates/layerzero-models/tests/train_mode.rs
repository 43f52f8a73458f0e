//! Training-mode forward and backward against PyTorch: ResNet-20 (option A) with the fixture
//! weights, one `net.train()` forward on `fixture.input`, cross-entropy against targets
//! [0, 1, 2, 3], backward. Expected numbers were printed by PyTorch 2.x from the same file.

// The expected values are PyTorch's printout copied verbatim; rounding them to f32 precision by
// hand would only add a chance of typos.
#![allow(clippy::excessive_precision)]

mod common;

use candle_core::{Device, Tensor};
use common::{fixtures_dir, max_abs_diff, values};
use layerzero_models::{
    create_model, load_safetensors, read_safetensors, ForwardMode, Interventions, LoadOptions,
    ModelConfig,
};

#[rustfmt::skip]
const TRAIN_LOGITS: [f32; 40] = [
    -0.020897046, 0.31914699, 1.1391435, 0.6828258, -0.063218966, -2.3717675, -0.65741795, -0.31351304, 0.66227853, -0.76858723,
    -0.14630605, 0.21550879, 1.1838975, 0.71373117, -0.10765867, -2.468558, -0.65626055, -0.28420752, 0.55636472, -0.86505032,
    -0.12591921, 0.20114198, 1.4480846, 0.85616076, 0.048488513, -2.6483324, -0.91888797, -0.29406655, 0.6653204, -0.56229103,
    -0.18213592, 0.081013113, 1.3098996, 0.68775737, -0.15021978, -2.4775839, -0.68043053, -0.32622111, 0.60485756, -0.66054344,
];
const LOSS: f32 = 1.933_811_2;

/// (layer, sum of running_mean, sum of running_var, first three running_mean, first three
/// running_var) after the one training step.
#[allow(clippy::type_complexity)]
const STATS: [(&str, f32, f32, [f32; 3], [f32; 3]); 3] = [
    (
        "bn1",
        0.179_077_91,
        18.315_828,
        [-0.132_534_76, 0.144_482_52, -0.234_739_99],
        [1.346_004_7, 1.501_542_7, 1.617_418_8],
    ),
    (
        "layer2.0.bn1",
        1.182_998_4,
        34.651_688,
        [0.050_806_671, -0.058_436_245, -0.230_643_02],
        [1.700_003_4, 1.136_569_9, 1.319_114_3],
    ),
    (
        "layer3.2.bn2",
        -1.624_663_5,
        68.055_557,
        [0.050_988_428, 0.232_445_15, -0.077_472_761],
        [1.019_444_5, 0.754_123_63, 1.030_559_1],
    ),
];

/// (parameter, sum of gradient, sum of |gradient|).
const GRADS: [(&str, f32, f32); 6] = [
    ("conv1.weight", -2.002_898_5, 29.737_646),
    ("layer2.0.conv1.weight", 0.055_977_583, 81.032_47),
    ("layer3.2.bn2.weight", 0.000_617_210_75, 0.369_112_22),
    ("layer1.0.bn1.bias", -0.009_528_271_9, 0.356_393_37),
    ("fc.weight", 5.692_243_6e-6, 69.264_053),
    ("fc.bias", 7.078_051_6e-8, 0.820_086_42),
];

#[test]
fn train_step_matches_pytorch() {
    let Some(dir) = fixtures_dir("train mode") else {
        return;
    };
    let path = dir.join("resnet20_pad_random.safetensors");
    let input = read_safetensors(&path).unwrap().tensors["fixture.input"].clone();
    let net = create_model("resnet20", &ModelConfig::new(10)).unwrap();
    load_safetensors(net.as_ref(), &path, &LoadOptions::ignoring("fixture.")).unwrap();

    let logits = net
        .forward(&input, ForwardMode::Train, Interventions::none())
        .unwrap();
    let want = Tensor::from_slice(&TRAIN_LOGITS, (4, 10), &Device::Cpu).unwrap();
    let d = max_abs_diff(&logits, &want);
    assert!(d < 1e-4, "train-mode logits differ by {d}");

    // Cross-entropy: mean over the batch of logsumexp(logits) − logit of the target.
    let targets = Tensor::new(&[0u32, 1, 2, 3], &Device::Cpu).unwrap();
    let picked = logits
        .gather(&targets.unsqueeze(1).unwrap(), 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let loss = (logits.log_sum_exp(1).unwrap() - picked)
        .unwrap()
        .mean_all()
        .unwrap();
    let loss_v = loss.to_scalar::<f32>().unwrap();
    assert!((loss_v - LOSS).abs() < 1e-4, "loss {loss_v} vs {LOSS}");

    let dev = Device::Cpu;
    for (layer, rm_sum, rv_sum, rm3, rv3) in STATS {
        let get = |suffix: &str| {
            net.params()
                .get(&format!("{layer}.{suffix}"))
                .unwrap()
                .value(&dev)
                .unwrap()
        };
        let rm = values(&get("running_mean"));
        let rv = values(&get("running_var"));
        let close = |a: f32, b: f32| (a - b).abs() < 1e-4 * (1.0 + b.abs());
        assert!(close(rm.iter().sum(), rm_sum), "{layer} running_mean sum");
        assert!(close(rv.iter().sum(), rv_sum), "{layer} running_var sum");
        for i in 0..3 {
            assert!(close(rm[i], rm3[i]), "{layer} running_mean[{i}]");
            assert!(close(rv[i], rv3[i]), "{layer} running_var[{i}]");
        }
        let nbt = get("num_batches_tracked").to_scalar::<i64>().unwrap();
        assert_eq!(nbt, 1235, "{layer} num_batches_tracked");
    }

    let grads = loss.backward().unwrap();
    for (name, sum, abs_sum) in GRADS {
        let var = net.params().get(name).unwrap().var().unwrap().clone();
        let g = values(grads.get(var.as_tensor()).expect("gradient exists"));
        let s: f32 = g.iter().sum();
        let a: f32 = g.iter().map(|v| v.abs()).sum();
        assert!(
            (a - abs_sum).abs() < 1e-3 * abs_sum,
            "{name}: |grad| sum {a} vs {abs_sum}"
        );
        // Sums can cancel to almost nothing; compare them on the scale of the magnitudes.
        assert!(
            (s - sum).abs() < 1e-4 * abs_sum,
            "{name}: grad sum {s} vs {sum}"
        );
    }
    // Every trainable variable got a gradient.
    for v in net.params().trainable_vars() {
        assert!(grads.get(v.as_tensor()).is_some());
    }
}

#[test]
fn eval_forward_changes_nothing_and_train_forward_counts_batches() {
    let net = create_model("resnet20", &ModelConfig::new(10).with_seed(3)).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let before = net.params().state_dict().unwrap();
    net.forward(&x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let after = net.params().state_dict().unwrap();
    for ((n, a), (_, b)) in before.iter().zip(&after) {
        let a = a.to_dtype(candle_core::DType::F64).unwrap();
        let b = b.to_dtype(candle_core::DType::F64).unwrap();
        let d = (a - b).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(
            d.to_scalar::<f64>().unwrap(),
            0.0,
            "{n} changed in eval mode"
        );
    }
    net.forward(&x, ForwardMode::Train, Interventions::none())
        .unwrap();
    net.forward(&x, ForwardMode::Train, Interventions::none())
        .unwrap();
    let nbt = net
        .params()
        .get("layer1.0.bn1.num_batches_tracked")
        .unwrap()
        .value(&Device::Cpu)
        .unwrap();
    assert_eq!(nbt.to_scalar::<i64>().unwrap(), 2);
    // Running mean moved away from its initial zeros.
    let rm = values(
        &net.params()
            .get("bn1.running_mean")
            .unwrap()
            .value(&Device::Cpu)
            .unwrap(),
    );
    assert!(rm.iter().any(|v| v.abs() > 1e-4));
}

#[test]
fn train_mode_needs_more_than_one_value_per_channel() {
    // One 1×1 image gives every batch norm a single value per channel: PyTorch refuses that,
    // and so do we (with an error, not a panic).
    let net = create_model("resnet20", &ModelConfig::new(10)).unwrap();
    let x = Tensor::zeros((1, 3, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(net
        .forward(&x, ForwardMode::Train, Interventions::none())
        .is_err());
}

/// The state dict as bits, to compare two networks exactly.
fn state_bits(net: &dyn layerzero_models::Network) -> Vec<(String, Vec<u64>)> {
    net.params()
        .state_dict()
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            let bits = match t.dtype() {
                candle_core::DType::I64 => vec![t.to_scalar::<i64>().unwrap() as u64],
                _ => values(&t).iter().map(|v| v.to_bits() as u64).collect(),
            };
            (n, bits)
        })
        .collect()
}

#[test]
fn deferred_running_stats_applied_in_order_equal_sequential_forwards() {
    let seq = create_model("resnet20", &ModelConfig::new(10).with_seed(5)).unwrap();
    let par = create_model("resnet20", &ModelConfig::new(10).with_seed(5)).unwrap();
    let a = Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &Device::Cpu).unwrap();
    let b = (Tensor::randn(0f32, 1.0, (4, 3, 32, 32), &Device::Cpu).unwrap() + 0.5).unwrap();
    let before = state_bits(par.as_ref());

    // Reference: two training forwards one after the other.
    let ya = seq
        .forward(&a, ForwardMode::Train, Interventions::none())
        .unwrap();
    let yb = seq
        .forward(&b, ForwardMode::Train, Interventions::none())
        .unwrap();

    // The same two forwards on two threads at once, each deferring its updates.
    let (ra, rb) = std::thread::scope(|s| {
        let net = par.as_ref();
        let ha = s.spawn(|| {
            layerzero_models::defer_running_stats(|| {
                net.forward(&a, ForwardMode::Train, Interventions::none())
            })
        });
        let hb = s.spawn(|| {
            layerzero_models::defer_running_stats(|| {
                net.forward(&b, ForwardMode::Train, Interventions::none())
            })
        });
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let ((pa, da), (pb, db)) = (ra, rb);
    // resnet20 has 19 batch norms; nothing changed before the updates are applied.
    assert_eq!((da.len(), db.len()), (19, 19));
    assert_eq!(state_bits(par.as_ref()), before);
    da.apply().unwrap();
    db.apply().unwrap();
    assert_eq!(state_bits(par.as_ref()), state_bits(seq.as_ref()));
    // The forwards themselves are unchanged by the deferral.
    for (x, y) in [(ya, pa.unwrap()), (yb, pb.unwrap())] {
        assert_eq!(values(&x), values(&y));
    }

    // Outside the closure, updates apply at once again; eval forwards record nothing.
    let (_, none) = layerzero_models::defer_running_stats(|| {
        par.forward(&a, ForwardMode::Eval, Interventions::none())
    });
    assert!(none.is_empty());
    par.forward(&a, ForwardMode::Train, Interventions::none())
        .unwrap();
    seq.forward(&a, ForwardMode::Train, Interventions::none())
        .unwrap();
    assert_eq!(state_bits(par.as_ref()), state_bits(seq.as_ref()));
}
