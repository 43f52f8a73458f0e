//! Inventory, segments, interventions, initialisation and parameter groups.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{max_abs_diff, values};
use layerzero_models::arch::resnet::{ResNet, ResNetConfig, ShortcutPath};
use layerzero_models::{
    create_model, BlockId, ForwardCtx, ForwardMode, Init, Intervention, Interventions, LayerId,
    LayerKind, LayerRole, ModelConfig, ModelError, Network, SegmentKind, Shortcut, TensorRole,
};

fn net(name: &str) -> Box<dyn Network> {
    create_model(name, &ModelConfig::new(10).with_seed(7)).unwrap()
}

fn input(n: usize) -> Tensor {
    Tensor::randn(0f32, 1.0, (n, 3, 32, 32), &Device::Cpu).unwrap()
}

fn eval(net: &dyn Network, x: &Tensor, ivs: &Interventions) -> Tensor {
    net.forward(x, ForwardMode::Eval, ivs).unwrap()
}

#[test]
fn inventory_describes_resnet20_b() {
    let net = net("resnet20-b");
    let inv = net.inventory();
    // Every tensor name is a layer name plus a PyTorch suffix, and every layer has tensors.
    for e in net.params().entries() {
        let layer = inv.get(e.layer()).unwrap();
        assert_eq!(e.name(), format!("{}.{}", layer.name, e.role().suffix()));
    }
    for (i, l) in inv.iter().enumerate() {
        assert_eq!(l.id, LayerId(i));
        assert!(net.params().layer_entries(l.id).count() > 0);
    }
    let get = |n: &str| inv.by_name(n).unwrap_or_else(|| panic!("{n}"));
    assert_eq!(get("conv1").role, LayerRole::Stem);
    assert_eq!(get("bn1").role, LayerRole::Stem);
    let b20 = BlockId::new(2, 0);
    assert_eq!(
        get("layer2.0.conv1").role,
        LayerRole::ResidualBranch {
            block: b20,
            position: 1
        }
    );
    assert_eq!(
        get("layer2.0.bn2").role,
        LayerRole::ResidualBranch {
            block: b20,
            position: 2
        }
    );
    assert_eq!(
        get("layer2.0.downsample.0").role,
        LayerRole::Shortcut { block: b20 }
    );
    assert_eq!(get("fc").role, LayerRole::Classifier);
    assert_eq!(
        get("layer3.0.downsample.0").kind,
        LayerKind::Conv2d {
            kernel: 1,
            stride: 2,
            padding: 0
        }
    );
    assert_eq!(get("layer3.0.conv1").stride(), Some(2));
    assert_eq!(get("layer3.0.conv2").stride(), Some(1));
    assert_eq!(get("layer3.0.bn1").kernel(), None);

    // Channel-changing ("feature decomposition") layers: stem, first conv and projection of
    // stages 2 and 3, classifier.
    let changing: Vec<&str> = inv
        .iter()
        .filter(|l| l.kind.has_kernel() && l.changes_channels())
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(
        changing,
        [
            "conv1",
            "layer2.0.conv1",
            "layer2.0.downsample.0",
            "layer3.0.conv1",
            "layer3.0.downsample.0",
            "fc"
        ]
    );
    assert_eq!(inv.convs().count(), 21);

    // Segments: stem, nine blocks, head; layers know theirs.
    let segs = net.segments();
    assert_eq!(segs.len(), 11);
    assert_eq!(segs[0].kind, SegmentKind::Stem);
    assert_eq!(segs[4].kind, SegmentKind::ResidualBlock(b20));
    assert_eq!(segs[4].name, "layer2.0");
    assert_eq!(segs[10].kind, SegmentKind::Head);
    assert_eq!(get("layer2.0.downsample.1").segment, 4);
    assert_eq!(get("fc").segment, 10);
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.index, i);
    }
    assert_eq!(net.spec().shortcut, Shortcut::Projection);
}

#[test]
fn plain_nets_have_plain_roles_and_no_skippable_branch() {
    let net = net("plain20");
    let l = net.inventory().by_name("layer1.2.conv2").unwrap();
    assert_eq!(
        l.role,
        LayerRole::PlainConv {
            block: BlockId::new(1, 2),
            position: 2
        }
    );
    assert!(net
        .segments()
        .iter()
        .all(|s| !matches!(s.kind, SegmentKind::ResidualBlock(_))));
    let err = net
        .forward(
            &input(1),
            ForwardMode::Eval,
            &Interventions::single(Intervention::SkipBranch(BlockId::new(1, 1))),
        )
        .unwrap_err();
    assert!(matches!(err, ModelError::InvalidIntervention(_)), "{err}");
    // A plain net differs from the residual net with the same weights.
    let res = create_model("resnet20", &ModelConfig::new(10).with_seed(7)).unwrap();
    let x = input(2);
    assert!(
        max_abs_diff(
            &eval(res.as_ref(), &x, Interventions::none()),
            &eval(net.as_ref(), &x, Interventions::none())
        ) > 1e-4
    );
}

#[test]
fn skipping_a_branch_leaves_the_activated_shortcut() {
    let device = Device::Cpu;
    let net = ResNet::new(
        "resnet20-b",
        &ResNetConfig::cifar(20, Shortcut::Projection).unwrap(),
        10,
        Init::Seeded(11),
        &device,
    )
    .unwrap();
    let x = input(2);
    let ctx = ForwardCtx::eval();
    // Identity block layer1.1 (segment 2): the input is already ≥ 0, so the block returns it.
    let seg_in = net
        .forward_range(0, 2, &x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let skip = Interventions::single(Intervention::SkipBranch(BlockId::new(1, 1)));
    let out = net
        .forward_range(2, 3, &seg_in, ForwardMode::Eval, &skip)
        .unwrap();
    assert_eq!(max_abs_diff(&out, &seg_in), 0.0);
    // Projection block layer2.0 (segment 4): relu(bn(conv1x1(x))).
    let seg_in = net
        .forward_range(0, 4, &x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let block = net.block(BlockId::new(2, 0)).unwrap();
    let ShortcutPath::Projection { conv, bn } = &block.shortcut else {
        panic!("layer2.0 of resnet20-b has a projection");
    };
    // The network runs conv + batch norm as one unit (folded in eval mode); so does the
    // expectation, so the comparison can be exact.
    let want = layerzero_models::layers::conv_bn(conv, bn, &seg_in, &ctx, None, true).unwrap();
    let skip = Interventions::single(Intervention::SkipBranch(BlockId::new(2, 0)));
    let got = net
        .forward_range(4, 5, &seg_in, ForwardMode::Eval, &skip)
        .unwrap();
    assert_eq!(max_abs_diff(&got, &want), 0.0);
    assert_eq!(net.first_affected_segment(&skip), Some(4));
    // Skipping changes the logits.
    let full = net
        .forward(&x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let skipped = net.forward(&x, ForwardMode::Eval, &skip).unwrap();
    assert!(max_abs_diff(&full, &skipped) > 1e-5);
}

#[test]
fn wide_resnet_skip_of_identity_block_is_identity() {
    let net = net("wrn16-4");
    let b = BlockId::new(2, 1);
    let seg = net
        .segments()
        .iter()
        .find(|s| s.kind == SegmentKind::ResidualBlock(b))
        .unwrap()
        .index;
    let x = Tensor::randn(0f32, 1.0, (1, 128, 16, 16), &Device::Cpu).unwrap();
    let y = net
        .forward_range(
            seg,
            seg + 1,
            &x,
            ForwardMode::Eval,
            &Interventions::single(Intervention::SkipBranch(b)),
        )
        .unwrap();
    assert_eq!(max_abs_diff(&x, &y), 0.0);
}

#[test]
fn replacing_weights_is_consistent_with_zeroing_and_with_no_change() {
    let net = net("vgg11-bn");
    let x = input(2);
    let plain = eval(net.as_ref(), &x, Interventions::none());
    let conv = net.inventory().by_name("features.4").unwrap().clone();
    assert!(conv.bias, "VGG convs have biases");
    let stored = net.params().get("features.4.weight").unwrap();
    let w = stored.value(&Device::Cpu).unwrap();

    let same = Interventions::single(Intervention::ReplaceWeights {
        layer: conv.id,
        weight: w.clone(),
        bias: None,
    });
    assert_eq!(max_abs_diff(&eval(net.as_ref(), &x, &same), &plain), 0.0);

    let zero_w = Interventions::single(Intervention::ReplaceWeights {
        layer: conv.id,
        weight: w.zeros_like().unwrap(),
        bias: None,
    });
    let zero_k = Interventions::single(Intervention::ZeroKernel(conv.id));
    let a = eval(net.as_ref(), &x, &zero_w);
    let b = eval(net.as_ref(), &x, &zero_k);
    assert!(max_abs_diff(&a, &b) < 1e-6);
    assert!(max_abs_diff(&a, &plain) > 1e-6);

    // Replacing the bias too changes the result again.
    let new_bias = Tensor::ones(conv.out_channels, DType::F32, &Device::Cpu).unwrap();
    let with_bias = Interventions::single(Intervention::ReplaceWeights {
        layer: conv.id,
        weight: w.zeros_like().unwrap(),
        bias: Some(new_bias),
    });
    assert!(max_abs_diff(&eval(net.as_ref(), &x, &with_bias), &a) > 1e-6);
}

#[test]
fn zeroing_the_classifier_leaves_its_bias() {
    let net = net("resnet20");
    let fc = net.inventory().by_name("fc").unwrap().id;
    let out = eval(
        net.as_ref(),
        &input(3),
        &Interventions::single(Intervention::ZeroKernel(fc)),
    );
    let bias = values(
        &net.params()
            .get("fc.bias")
            .unwrap()
            .value(&Device::Cpu)
            .unwrap(),
    );
    for row in values(&out).chunks(10) {
        assert_eq!(row, bias.as_slice());
    }
}

#[test]
fn bad_interventions_and_inputs_are_errors() {
    let net = net("resnet20");
    let x = input(1);
    let bn = net.inventory().by_name("layer1.0.bn1").unwrap().id;
    let conv = net.inventory().by_name("layer1.0.conv1").unwrap().id;
    let cases = vec![
        Intervention::ZeroKernel(bn),
        Intervention::ZeroKernel(LayerId(10_000)),
        Intervention::ReplaceWeights {
            layer: conv,
            weight: Tensor::zeros((16, 16, 1, 1), DType::F32, &Device::Cpu).unwrap(),
            bias: None,
        },
        Intervention::ReplaceWeights {
            layer: conv,
            weight: Tensor::zeros((16, 16, 3, 3), DType::F32, &Device::Cpu).unwrap(),
            bias: Some(Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap()),
        },
        Intervention::SkipBranch(BlockId::new(4, 0)),
    ];
    for i in cases {
        let desc = format!("{i:?}");
        let err = net
            .forward(&x, ForwardMode::Eval, &Interventions::single(i))
            .unwrap_err();
        assert!(
            matches!(err, ModelError::InvalidIntervention(_)),
            "{desc}: {err}"
        );
    }
    // A replacement of the right shape but another dtype is refused up front, naming the layer
    // and both dtypes (it used to fail inside the convolution, naming neither).
    let fc = net.inventory().by_name("fc").unwrap().id;
    let f64_cases = [
        (
            Intervention::ReplaceWeights {
                layer: conv,
                weight: Tensor::zeros((16, 16, 3, 3), DType::F64, &Device::Cpu).unwrap(),
                bias: None,
            },
            "replacement weight for `layer1.0.conv1` is F64, expected F32",
        ),
        (
            Intervention::ReplaceWeights {
                layer: fc,
                weight: Tensor::zeros((10, 64), DType::F32, &Device::Cpu).unwrap(),
                bias: Some(Tensor::zeros(10, DType::F64, &Device::Cpu).unwrap()),
            },
            "replacement bias for `fc` is F64, expected F32",
        ),
    ];
    for (i, want) in f64_cases {
        for mode in [ForwardMode::Eval, ForwardMode::Train] {
            let err = net
                .forward(&x, mode, &Interventions::single(i.clone()))
                .unwrap_err();
            assert!(
                matches!(&err, ModelError::InvalidIntervention(m) if m.contains(want)),
                "{mode:?}: {err}"
            );
        }
    }
    for bad in [
        Tensor::zeros((3, 32, 32), DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((1, 1, 32, 32), DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((0, 3, 32, 32), DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((1, 3, 0, 32), DType::F32, &Device::Cpu).unwrap(),
    ] {
        assert!(matches!(
            net.forward(&bad, ForwardMode::Eval, Interventions::none()),
            Err(ModelError::BadInput(_))
        ));
    }
    assert!(net
        .forward_range(3, 2, &x, ForwardMode::Eval, Interventions::none())
        .is_err());
    assert!(net
        .forward_from(12, &x, ForwardMode::Eval, Interventions::none())
        .is_err());
}

#[test]
fn later_intervention_on_a_layer_replaces_the_earlier() {
    let mut ivs = Interventions::new();
    assert!(ivs.insert(Intervention::ZeroKernel(LayerId(3))).is_none());
    let old = ivs.insert(Intervention::ZeroKernel(LayerId(3)));
    assert!(matches!(old, Some(Intervention::ZeroKernel(LayerId(3)))));
    assert_eq!(ivs.layers().count(), 1);
    let ivs: Interventions = [
        Intervention::ZeroKernel(LayerId(1)),
        Intervention::SkipBranch(BlockId::new(1, 0)),
    ]
    .into_iter()
    .collect();
    assert!(ivs.is_skipped(BlockId::new(1, 0)));
    assert!(!ivs.is_empty());
}

#[test]
fn same_seed_same_weights_and_rerandomize_restores_epoch_zero() {
    let a = create_model("resnet20-b", &ModelConfig::new(10).with_seed(5)).unwrap();
    let b = create_model("resnet20-b", &ModelConfig::new(10).with_seed(5)).unwrap();
    let c = create_model("resnet20-b", &ModelConfig::new(10).with_seed(6)).unwrap();
    let sa = a.params().state_dict().unwrap();
    let sb = b.params().state_dict().unwrap();
    let sc = c.params().state_dict().unwrap();
    let mut differs = 0;
    for (((n, ta), (_, tb)), (_, tc)) in sa.iter().zip(&sb).zip(&sc) {
        if ta.dtype() != DType::F32 {
            continue;
        }
        assert_eq!(values(ta), values(tb), "{n} differs for the same seed");
        if values(ta) != values(tc) {
            differs += 1;
        }
    }
    // All convs and the linear layer differ with another seed (batch norms start identical).
    assert_eq!(
        differs,
        a.inventory().iter().filter(|l| l.kind.has_kernel()).count() + 1
    );

    // Change one layer, then restore it with the construction seed.
    let id = a.inventory().by_name("layer2.0.conv2").unwrap().id;
    let entry = a.params().get("layer2.0.conv2.weight").unwrap();
    let epoch0 = values(&entry.value(&Device::Cpu).unwrap());
    entry
        .set(&Tensor::zeros((32, 32, 3, 3), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    a.rerandomize(id, 5).unwrap();
    assert_eq!(values(&entry.value(&Device::Cpu).unwrap()), epoch0);
    // Another seed gives other values for that layer only.
    a.rerandomize(id, 77).unwrap();
    assert_ne!(values(&entry.value(&Device::Cpu).unwrap()), epoch0);
    let other = a.params().get("layer2.0.conv1.weight").unwrap();
    assert_eq!(
        values(&other.value(&Device::Cpu).unwrap()),
        values(
            &sa.iter()
                .find(|(n, _)| n == "layer2.0.conv1.weight")
                .unwrap()
                .1
        )
    );
}

#[test]
fn initial_values_follow_the_documented_distributions() {
    let net = net("resnet20");
    let conv = net.inventory().by_name("layer3.1.conv1").unwrap().id;
    let vals = net.initial_values(conv, 1).unwrap();
    assert_eq!(vals.len(), 1);
    let w = values(&vals[0].1);
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let std = (w
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let want = (2.0f64 / (64.0 * 9.0)).sqrt(); // Kaiming normal, fan_out, ReLU gain.
    assert!((std - want).abs() < 0.02 * want, "std {std} vs {want}");
    assert!(mean.abs() < 0.02 * want);

    let fc = net.inventory().by_name("fc").unwrap().id;
    let bound = 1.0 / 64f32.sqrt();
    for (name, t) in net.initial_values(fc, 1).unwrap() {
        let v = values(&t);
        assert!(v.iter().all(|x| x.abs() <= bound), "{name}");
        assert!(v.iter().any(|x| x.abs() > 0.5 * bound), "{name}");
    }
    let bn = net.inventory().by_name("bn1").unwrap().id;
    let bn_vals = net.initial_values(bn, 1).unwrap();
    let names: Vec<&str> = bn_vals.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "bn1.num_batches_tracked"
        ]
    );
}

#[test]
fn parameter_groups_separate_decayed_weights() {
    let net = net("vgg11-bn");
    let p = net.params();
    let decayed = p.decayed_vars();
    let undecayed = p.undecayed_vars();
    assert_eq!(decayed.len(), 8 + 1); // eight conv kernels, one linear weight
    assert_eq!(undecayed.len(), 8 + 8 * 2 + 1); // conv biases, BN γ and β, linear bias
    assert_eq!(p.trainable_vars().len(), decayed.len() + undecayed.len());
    let count = |vs: &[candle_core::Var]| vs.iter().map(|v| v.elem_count()).sum::<usize>();
    assert_eq!(count(&decayed) + count(&undecayed), net.num_params());
    assert!(p
        .entries()
        .iter()
        .filter(|e| e.role() == TensorRole::RunningVar)
        .all(|e| !e.role().is_trainable()));
}

#[test]
fn one_network_serves_concurrent_ablations() {
    let net = net("resnet20");
    let x = input(2);
    let convs: Vec<LayerId> = net.inventory().convs().map(|l| l.id).take(4).collect();
    let serial: Vec<Tensor> = convs
        .iter()
        .map(|&id| {
            eval(
                net.as_ref(),
                &x,
                &Interventions::single(Intervention::ZeroKernel(id)),
            )
        })
        .collect();
    let parallel: Vec<Tensor> = std::thread::scope(|s| {
        let handles: Vec<_> = convs
            .iter()
            .map(|&id| {
                let (net, x) = (&net, &x);
                s.spawn(move || {
                    eval(
                        net.as_ref(),
                        x,
                        &Interventions::single(Intervention::ZeroKernel(id)),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in serial.iter().zip(&parallel) {
        assert_eq!(max_abs_diff(a, b), 0.0);
    }
}

/// Eval mode skips the work a zero kernel makes pointless (the zeroed convolution itself, and a
/// block's conv1 when its conv2 is zeroed); the output must be exactly what convolving with an
/// explicit zero kernel gives.
#[test]
fn zero_kernel_shortcuts_equal_an_explicit_zero_kernel() {
    let x = input(3);
    for name in ["resnet20-b", "plain20"] {
        let net = net(name);
        let convs: Vec<_> = net
            .inventory()
            .layers()
            .iter()
            .filter(|l| matches!(l.kind, LayerKind::Conv2d { .. }))
            .cloned()
            .collect();
        assert!(convs.len() >= 19, "{name}: {} convs", convs.len());
        for layer in convs {
            let w = net
                .params()
                .get(&format!("{}.weight", layer.name))
                .unwrap()
                .value(&Device::Cpu)
                .unwrap();
            let fast = eval(
                net.as_ref(),
                &x,
                &Interventions::single(Intervention::ZeroKernel(layer.id)),
            );
            let explicit = eval(
                net.as_ref(),
                &x,
                &Interventions::single(Intervention::ReplaceWeights {
                    layer: layer.id,
                    weight: w.zeros_like().unwrap(),
                    bias: None,
                }),
            );
            assert_eq!(
                max_abs_diff(&fast, &explicit),
                0.0,
                "{name} {}: zero-kernel shortcut differs from an explicit zero kernel",
                layer.name
            );
        }
    }
}

/// A zeroed stem makes every image's activations identical; eval then runs the rest of the
/// network on one image and broadcasts. The result must match the full batch computed with the
/// stem's weights really set to zero (no intervention, so no shortcut).
#[test]
fn a_batch_made_identical_by_an_ablation_matches_the_full_batch() {
    let x = input(4);
    for name in ["resnet20", "plain20", "vgg11-bn"] {
        let net = net(name);
        let stem = net.inventory().layers()[0].clone();
        let shortcut = eval(
            net.as_ref(),
            &x,
            &Interventions::single(Intervention::ZeroKernel(stem.id)),
        );
        let var = net
            .params()
            .get(&format!("{}.weight", stem.name))
            .unwrap()
            .var()
            .unwrap()
            .clone();
        let stored = var.as_tensor().copy().unwrap();
        var.set(&stored.zeros_like().unwrap()).unwrap();
        let full = eval(net.as_ref(), &x, Interventions::none());
        var.set(&stored).unwrap();
        assert_eq!(shortcut.dims(), full.dims());
        let d = max_abs_diff(&shortcut, &full);
        assert!(
            d < 1e-5,
            "{name}: zeroed stem, one-image path differs by {d}"
        );
        // Every image gets the same logits, and the network is back to normal afterwards.
        let rows = values(&shortcut);
        assert!(rows.chunks(10).all(|r| r == &rows[..10]));
        assert!(max_abs_diff(&eval(net.as_ref(), &x, Interventions::none()), &full) > 1e-3);
    }
}
