//! Parameter counts and MACs against published or PyTorch-printed values.

use layerzero_models::{create_model, list_models, Init, LayerKind, ModelConfig};

fn params(name: &str, classes: usize) -> usize {
    create_model(name, &ModelConfig::new(classes).with_init(Init::Zeros))
        .unwrap()
        .num_params()
}

#[test]
fn cifar_resnet_counts_match_he_et_al_table_6() {
    // Option A has no shortcut parameters: He et al. 2016, table 6 (0.27 M … 1.7 M).
    for (name, want) in [
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet44", 658_586),
        ("resnet56", 853_018),
        ("resnet110", 1_727_962),
    ] {
        assert_eq!(params(name, 10), want, "{name}");
    }
}

#[test]
fn plain_and_option_b_counts() {
    // A plain net has exactly the option-A net's parameters.
    assert_eq!(params("plain20", 10), 269_722);
    assert_eq!(params("plain110", 10), 1_727_962);
    // Option B adds two 1×1 projections with batch norm: 16·32 + 2·32 and 32·64 + 2·64.
    assert_eq!(
        params("resnet20-b", 10),
        269_722 + 16 * 32 + 64 + 32 * 64 + 128
    );
    // CIFAR-100 only widens the classifier: 64·90 + 90 more.
    assert_eq!(params("resnet20", 100), 269_722 + 64 * 90 + 90);
}

#[test]
fn larger_net_counts_match_pytorch() {
    // Printed by PyTorch for kuangliu/pytorch-cifar's VGG and ResNet18 and for
    // xternalz/WideResNet-pytorch (sum of numel of parameters).
    for (name, classes, want) in [
        ("vgg11-bn", 10, 9_231_114),
        ("vgg13-bn", 10, 9_416_010),
        ("vgg16-bn", 10, 14_728_266),
        ("vgg19-bn", 10, 20_040_522),
        ("vgg16-bn", 100, 14_774_436),
        ("resnet18", 10, 11_173_962),
        ("resnet18", 100, 11_220_132),
        ("wrn16-4", 10, 2_748_890),
        ("wrn28-10", 10, 36_479_194),
        ("wrn28-10", 100, 36_536_884),
    ] {
        assert_eq!(params(name, classes), want, "{name} ({classes} classes)");
    }
}

#[test]
fn resnet20_macs_by_hand() {
    let net = create_model("resnet20", &ModelConfig::new(10).with_init(Init::Zeros)).unwrap();
    let inv = net.inventory();
    // 3×3 convs: stem 16·3·9·32², stage 1: 6 × 16·16·9·32², stages 2 and 3: first conv
    // (in = out / 2) and five full ones at 16² and 8²; classifier 64·10.
    let full = 16 * 16 * 9 * 32 * 32;
    let want: u64 = 16 * 3 * 9 * 1024 + 6 * full + 2 * (full / 2 + 5 * full) + 640;
    assert_eq!(inv.total_macs(), want);
    assert_eq!(inv.total_macs(), 40_551_040);
    let c = inv.by_name("layer2.0.conv1").unwrap();
    assert_eq!(c.macs, 32 * 16 * 9 * 16 * 16);
    assert_eq!((c.input_hw, c.output_hw), ((32, 32), (16, 16)));
    // Inventory and parameter store agree on the count.
    assert_eq!(inv.total_params(), net.num_params());
}

#[test]
fn list_models_covers_the_issue_names() {
    let list = list_models(10).unwrap();
    for name in [
        "resnet20",
        "resnet110",
        "resnet20-b",
        "plain20",
        "plain56",
        "vgg11-bn",
        "vgg16-bn",
        "vgg19-bn",
        "resnet18",
        "wrn16-4",
        "wrn28-10",
    ] {
        let s = list
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} listed"));
        assert!(s.params > 0 && s.macs > 0 && !s.description.is_empty());
    }
    let r20 = list.iter().find(|s| s.name == "resnet20").unwrap();
    assert_eq!(
        (r20.params, r20.macs, r20.weight_layers),
        (269_722, 40_551_040, 20)
    );
    let r56 = list.iter().find(|s| s.name == "plain56").unwrap();
    assert_eq!(r56.weight_layers, 56);
}

#[test]
fn weight_layer_counts_match_the_names() {
    // "resnetD" and "plainD" have D weight layers (convs + classifier, projections excluded).
    for (name, depth) in [("resnet32", 32), ("plain44", 44), ("resnet56-b", 56)] {
        let net = create_model(name, &ModelConfig::new(10).with_init(Init::Zeros)).unwrap();
        let n = net
            .inventory()
            .iter()
            .filter(|l| {
                l.kind.has_kernel()
                    && !matches!(l.role, layerzero_models::LayerRole::Shortcut { .. })
            })
            .count();
        assert_eq!(n, depth, "{name}");
    }
    let vgg = create_model("vgg16-bn", &ModelConfig::new(10).with_init(Init::Zeros)).unwrap();
    let convs = vgg
        .inventory()
        .iter()
        .filter(|l| matches!(l.kind, LayerKind::Conv2d { .. }))
        .count();
    assert_eq!(convs, 13);
}
