//! An architecture defined outside the crate goes through the same trait, inventory,
//! interventions, weights and registry as the built-in ones. `docs/architecture.md` shows
//! this code as the way to add an architecture; keep the two in step.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use layerzero_models::layers::{conv_bn, global_avg_pool, relu, BatchNorm2d, Conv2d, Linear};
use layerzero_models::weights::to_safetensors_bytes;
use layerzero_models::{
    load_model, save_safetensors, ArchSpec, BlockId, Conv2dSpec, ForwardCtx, ForwardMode,
    Intervention, Interventions, Inventory, LayerRole, ModelConfig, ModelRegistry, Network,
    NetworkBuilder, NetworkParts, ParamStore, Result, SegmentInfo, SegmentKind, Shortcut,
    WeightsMetadata,
};

/// A tiny residual net: stem, one residual block, classifier.
#[derive(Debug)]
struct TinyNet {
    spec: ArchSpec,
    parts: NetworkParts,
    stem: Conv2d,
    stem_bn: BatchNorm2d,
    block: BlockId,
    conv_a: Conv2d,
    bn_a: BatchNorm2d,
    conv_b: Conv2d,
    bn_b: BatchNorm2d,
    head: Linear,
}

impl TinyNet {
    fn new(config: &ModelConfig) -> Result<Self> {
        let mut b = NetworkBuilder::new(config.init, &config.device);
        let hw = (32, 32);
        b.begin_segment("stem", SegmentKind::Stem);
        let stem = b.conv2d(
            "stem.conv",
            Conv2dSpec::new(3, 8, 3, 2),
            LayerRole::Stem,
            hw,
        )?;
        let hw = b.output_hw(stem.id())?;
        let stem_bn = b.batch_norm2d("stem.bn", 8, LayerRole::Stem, hw)?;

        let block = BlockId::new(1, 0);
        let role = |position| LayerRole::ResidualBranch { block, position };
        b.begin_segment("body.0", SegmentKind::ResidualBlock(block));
        let conv_a = b.conv2d("body.0.a", Conv2dSpec::new(8, 8, 3, 1), role(1), hw)?;
        let bn_a = b.batch_norm2d("body.0.a_bn", 8, role(1), hw)?;
        let conv_b = b.conv2d("body.0.b", Conv2dSpec::new(8, 8, 3, 1), role(2), hw)?;
        let bn_b = b.batch_norm2d("body.0.b_bn", 8, role(2), hw)?;

        b.begin_segment("head", SegmentKind::Head);
        let head = b.linear("head", 8, config.num_classes, true, LayerRole::Classifier)?;
        Ok(TinyNet {
            spec: ArchSpec {
                name: "tinynet".into(),
                num_classes: config.num_classes,
                shortcut: Shortcut::Pad,
                input: (3, 32, 32),
            },
            parts: b.finish()?,
            stem,
            stem_bn,
            block,
            conv_a,
            bn_a,
            conv_b,
            bn_b,
            head,
        })
    }
}

impl Network for TinyNet {
    fn spec(&self) -> &ArchSpec {
        &self.spec
    }
    fn inventory(&self) -> &Inventory {
        &self.parts.inventory
    }
    fn params(&self) -> &ParamStore {
        &self.parts.params
    }
    fn segments(&self) -> &[SegmentInfo] {
        &self.parts.segments
    }
    fn forward_segment(&self, index: usize, x: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor> {
        match index {
            // conv_bn: in eval mode one fused kernel (the batch norm folded into the conv).
            0 => conv_bn(&self.stem, &self.stem_bn, x, ctx, None, true),
            1 => {
                if ctx.interventions.is_skipped(self.block) {
                    return relu(x);
                }
                let y = conv_bn(&self.conv_a, &self.bn_a, x, ctx, None, true)?;
                conv_bn(&self.conv_b, &self.bn_b, &y, ctx, Some(x), true)
            }
            2 => self.head.forward(&global_avg_pool(x)?, ctx),
            _ => Err(layerzero_models::ModelError::BadInput(format!(
                "no segment {index}"
            ))),
        }
    }
}

fn registry() -> ModelRegistry {
    let mut r = ModelRegistry::new();
    r.register(
        "tinynet",
        "two-conv residual toy",
        Arc::new(|c: &ModelConfig| Ok(Box::new(TinyNet::new(c)?) as Box<dyn Network>)),
    )
    .unwrap();
    r
}

#[test]
fn user_architecture_gets_inventory_interventions_and_weights() {
    let reg = registry();
    let net = reg
        .create("tinynet", &ModelConfig::new(5).with_seed(3))
        .unwrap();

    // Inventory as data.
    let inv = net.inventory();
    assert_eq!(inv.len(), 7);
    let a = inv.by_name("body.0.a").unwrap();
    assert_eq!(a.segment, 1);
    assert_eq!((a.input_hw, a.macs), ((16, 16), 8 * 8 * 9 * 16 * 16));
    assert_eq!(
        net.num_params(),
        3 * 8 * 9 + 16 + 2 * (8 * 8 * 9 + 16) + 8 * 5 + 5
    );

    // Interventions, from the cache too.
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let plain = net
        .forward(&x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let zero = Interventions::single(Intervention::ZeroKernel(a.id));
    let zeroed = net.forward(&x, ForwardMode::Eval, &zero).unwrap();
    let cached = net
        .forward_range(0, 1, &x, ForwardMode::Eval, Interventions::none())
        .unwrap();
    let from_cache = net
        .forward_from(1, &cached, ForwardMode::Eval, &zero)
        .unwrap();
    let diff = |p: &Tensor, q: &Tensor| {
        (p - q)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(diff(&plain, &zeroed) > 1e-6);
    assert_eq!(diff(&zeroed, &from_cache), 0.0);
    let skipped = net
        .forward(
            &x,
            ForwardMode::Eval,
            &Interventions::single(Intervention::SkipBranch(BlockId::new(1, 0))),
        )
        .unwrap();
    assert!(diff(&plain, &skipped) > 1e-6);

    // Training mode: gradients for every trainable variable.
    let y = net
        .forward(&x, ForwardMode::Train, Interventions::none())
        .unwrap();
    let grads = y.sqr().unwrap().mean_all().unwrap().backward().unwrap();
    assert!(net
        .params()
        .trainable_vars()
        .iter()
        .all(|v| grads.get(v.as_tensor()).is_some()));

    // Weights round trip through a file and the registry.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    let meta = WeightsMetadata::for_network(net.as_ref());
    save_safetensors(net.as_ref(), &path, &meta).unwrap();
    let (back, _) = load_model(path.to_str().unwrap(), &Device::Cpu, &reg).unwrap();
    assert_eq!(
        to_safetensors_bytes(back.as_ref(), &meta).unwrap(),
        std::fs::read(&path).unwrap()
    );
    // The summary list includes it.
    let s = reg.summaries(5).unwrap();
    assert!(s
        .iter()
        .any(|s| s.name == "tinynet" && s.params == net.num_params()));
    // Built-in names cannot be taken over.
    let mut r = ModelRegistry::new();
    let ctor: layerzero_models::ModelConstructor =
        Arc::new(|c: &ModelConfig| Ok(Box::new(TinyNet::new(c)?) as Box<dyn Network>));
    assert!(r.register("resnet20", "", ctor.clone()).is_err());
    // Registered under another name than its ArchSpec's: its files would record a name the
    // registry does not know, so building it is refused, naming both.
    r.register("tiny", "", ctor).unwrap();
    let err = r
        .create("tiny", &ModelConfig::new(5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`tiny`") && err.contains("`tinynet`"), "{err}");
}
