//! Golden outputs from PyTorch (`$LAYERZERO_FIXTURES`, see its README): ResNet-20 with option-A
//! and option-B shortcuts, plain and with one kernel zeroed, must match within 1e-4.

mod common;

use candle_core::Tensor;
use common::{fixtures_dir, max_abs_diff};
use layerzero_models::{
    create_model, load_safetensors, read_safetensors, ForwardMode, Init, Intervention,
    Interventions, LoadOptions, ModelConfig, ModelError, WeightProblem,
};

const TOL: f32 = 1e-4;
const ZEROED: [&str; 2] = ["layer2.0.conv1", "layer1.1.conv2"];

fn check_fixture(file: &str, arch: &str) {
    let Some(dir) = fixtures_dir(&format!("golden {arch}")) else {
        return;
    };
    let path = dir.join(file);
    let content = read_safetensors(&path).expect("fixture file reads");
    let tensor = |name: &str| -> Tensor {
        content
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has {name}"))
            .clone()
    };
    let input = tensor("fixture.input");

    // Weights from another seed first, so the test fails if loading changes nothing.
    let net = create_model(arch, &ModelConfig::new(10).with_init(Init::Seeded(99))).unwrap();
    load_safetensors(net.as_ref(), &path, &LoadOptions::ignoring("fixture.")).unwrap();

    let logits = net
        .forward(&input, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let d = max_abs_diff(&logits, &tensor("fixture.logits"));
    assert!(d < TOL, "{arch}: logits differ by {d}");

    for layer in ZEROED {
        let info = net.inventory().by_name(layer).expect("layer exists");
        let ivs = Interventions::single(Intervention::ZeroKernel(info.id));
        let want = tensor(&format!("fixture.logits_zeroed.{layer}"));

        let out = net.forward(&input, ForwardMode::Eval, &ivs).unwrap();
        let d = max_abs_diff(&out, &want);
        assert!(d < TOL, "{arch} with {layer} zeroed: logits differ by {d}");
        // The ablated output really differs from the plain one (README: by more than 2e-3).
        assert!(max_abs_diff(&out, &logits) > 1e-3);

        // Same through the cached input of the layer's segment.
        let start = net
            .first_affected_segment(&ivs)
            .expect("one segment affected");
        assert_eq!(start, info.segment);
        let cached = net
            .forward_range(0, start, &input, ForwardMode::Eval, Interventions::none())
            .unwrap();
        let out2 = net
            .forward_from(start, &cached, ForwardMode::Eval, &ivs)
            .unwrap();
        let d = max_abs_diff(&out2, &want);
        assert!(
            d < TOL,
            "{arch} {layer} from segment {start}: differ by {d}"
        );
    }

    // Interventions do not persist: a plain forward afterwards gives the plain logits again.
    let again = net
        .forward(&input, ForwardMode::Eval, Interventions::none())
        .unwrap();
    assert_eq!(max_abs_diff(&again, &logits), 0.0);
}

#[test]
fn resnet20_option_a_matches_pytorch() {
    check_fixture("resnet20_pad_random.safetensors", "resnet20");
}

#[test]
fn resnet20_option_b_matches_pytorch() {
    check_fixture("resnet20_projection_random.safetensors", "resnet20-b");
}

#[test]
fn fixture_loaded_into_the_wrong_shortcut_lists_every_problem() {
    let Some(dir) = fixtures_dir("wrong shortcut") else {
        return;
    };
    // Option-B weights into an option-A net: four projection tensors per block are unexpected
    // (2 blocks × (conv weight + 5 BN tensors)), and the fixture.* tensors too when not ignored.
    let net = create_model("resnet20", &ModelConfig::new(10)).unwrap();
    let before = net.params().state_dict().unwrap();
    let err = load_safetensors(
        net.as_ref(),
        &dir.join("resnet20_projection_random.safetensors"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    let ModelError::WeightMismatch { problems, .. } = &err else {
        panic!("expected a weight mismatch, got {err}");
    };
    let unexpected: Vec<&str> = problems
        .iter()
        .filter_map(|p| match p {
            WeightProblem::Unexpected { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(unexpected.len(), 12 + 4, "{err}");
    assert!(unexpected.contains(&"layer3.0.downsample.1.running_var"));
    assert!(unexpected.contains(&"fixture.logits_zeroed.layer1.1.conv2"));
    assert_eq!(problems.len(), unexpected.len(), "{err}");
    // A failed load changes nothing.
    let after = net.params().state_dict().unwrap();
    for ((n, a), (_, b)) in before.iter().zip(&after) {
        assert_eq!(max_abs_diff_any(a, b), 0.0, "{n} changed");
    }
}

fn max_abs_diff_any(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(candle_core::DType::F32).unwrap();
    let b = b.to_dtype(candle_core::DType::F32).unwrap();
    max_abs_diff(&a, &b)
}

#[test]
fn fixture_batch_counters_are_imported() {
    let Some(dir) = fixtures_dir("batch counters") else {
        return;
    };
    let net = create_model("resnet20", &ModelConfig::new(10)).unwrap();
    load_safetensors(
        net.as_ref(),
        &dir.join("resnet20_pad_random.safetensors"),
        &LoadOptions::ignoring("fixture."),
    )
    .unwrap();
    let nbt = net
        .params()
        .get("layer3.2.bn2.num_batches_tracked")
        .unwrap()
        .value(&candle_core::Device::Cpu)
        .unwrap();
    assert_eq!(nbt.to_scalar::<i64>().unwrap(), 1234);
}
