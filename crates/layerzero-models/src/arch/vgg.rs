//! VGG with batch norm for CIFAR (the common form of kuangliu/pytorch-cifar): 3×3 conv (with
//! bias) – batch norm – ReLU units, 2×2 max-pooling between stages, one linear classifier on
//! the 512 features left after five poolings of a 32×32 image.
//!
//! PyTorch names follow that `nn.Sequential`: `features.{i}` is the convolution and
//! `features.{i+1}` its batch norm (the ReLU at `i+2` and each max-pool take an index too),
//! `classifier` the linear layer.

use candle_core::{Device, Tensor};

use crate::builder::{Conv2dSpec, NetworkBuilder, NetworkParts};
use crate::error::{ModelError, Result};
use crate::init::Init;
use crate::intervention::ForwardCtx;
use crate::inventory::{BlockId, Inventory, LayerRole, SegmentInfo, SegmentKind};
use crate::layers::{conv_bn, max_pool2d, BatchNorm2d, Conv2d, Linear};
use crate::network::{ArchSpec, Network, Shortcut};
use crate::params::ParamStore;

/// One entry of a VGG configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VggItem {
    /// A conv–BN–ReLU unit with that many output channels.
    Conv(usize),
    /// 2×2 max-pooling, stride 2.
    Pool,
}

/// The configuration of `vgg{depth}` (11, 13, 16 or 19 weight layers), as in the VGG paper's
/// configurations A, B, D and E: numbers are conv output channels, `M` a max-pool.
pub fn vgg_config(depth: usize) -> Result<Vec<VggItem>> {
    let cfg = match depth {
        11 => "64 M 128 M 256 256 M 512 512 M 512 512 M",
        13 => "64 64 M 128 128 M 256 256 M 512 512 M 512 512 M",
        16 => "64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M",
        19 => "64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M",
        _ => {
            return Err(ModelError::InvalidConfig(format!(
                "VGG depth must be 11, 13, 16 or 19, got {depth}"
            )))
        }
    };
    cfg.split_whitespace()
        .map(|t| match t {
            "M" => Ok(VggItem::Pool),
            n => n
                .parse()
                .map(VggItem::Conv)
                .map_err(|e| ModelError::InvalidConfig(format!("VGG config item `{n}`: {e}"))),
        })
        .collect()
}

/// A conv–BN–ReLU unit, optionally followed by max-pooling.
#[derive(Debug, Clone)]
pub struct VggUnit {
    /// Where the unit is (stage = pooling stage, 1-based; block = conv index in it, 0-based).
    pub id: BlockId,
    /// The 3×3 convolution.
    pub conv: Conv2d,
    /// Its batch norm.
    pub bn: BatchNorm2d,
    /// Whether a 2×2 max-pool follows.
    pub pool_after: bool,
}

/// VGG-BN for CIFAR.
#[derive(Debug)]
pub struct Vgg {
    spec: ArchSpec,
    parts: NetworkParts,
    /// The conv units in order (each is one segment).
    pub units: Vec<VggUnit>,
    /// The classifier.
    pub classifier: Linear,
}

impl Vgg {
    /// Builds a VGG-BN from a configuration; `name` becomes [`ArchSpec::name`].
    pub fn new(
        name: &str,
        config: &[VggItem],
        num_classes: usize,
        init: Init,
        device: &Device,
    ) -> Result<Self> {
        if num_classes == 0 {
            return Err(ModelError::InvalidConfig("num_classes must be ≥ 1".into()));
        }
        let input = (3, 32, 32);
        let mut b = NetworkBuilder::new(init, device);
        let mut hw = (input.1, input.2);
        let mut cin = input.0;
        let mut units: Vec<VggUnit> = Vec::new();
        let (mut stage, mut in_stage, mut seq_index) = (1, 0, 0);
        for item in config {
            match *item {
                VggItem::Conv(cout) => {
                    let id = BlockId::new(stage, in_stage);
                    let role = LayerRole::PlainConv {
                        block: id,
                        position: 1,
                    };
                    b.begin_segment(format!("features.{seq_index}"), SegmentKind::PlainBlock(id));
                    let conv = b.conv2d(
                        &format!("features.{seq_index}"),
                        Conv2dSpec::new(cin, cout, 3, 1).with_bias(),
                        role,
                        hw,
                    )?;
                    let bn =
                        b.batch_norm2d(&format!("features.{}", seq_index + 1), cout, role, hw)?;
                    units.push(VggUnit {
                        id,
                        conv,
                        bn,
                        pool_after: false,
                    });
                    cin = cout;
                    in_stage += 1;
                    seq_index += 3;
                }
                VggItem::Pool => {
                    let last = units.last_mut().ok_or_else(|| {
                        ModelError::InvalidConfig("VGG config starts with a pooling".into())
                    })?;
                    if last.pool_after || hw.0 < 2 || hw.1 < 2 {
                        return Err(ModelError::InvalidConfig(format!(
                            "VGG config pools twice in a row or below 2×2 at {hw:?}"
                        )));
                    }
                    last.pool_after = true;
                    hw = (hw.0 / 2, hw.1 / 2);
                    stage += 1;
                    in_stage = 0;
                    seq_index += 1;
                }
            }
        }
        b.begin_segment("head", SegmentKind::Head);
        let features = cin * hw.0 * hw.1;
        let classifier = b.linear(
            "classifier",
            features,
            num_classes,
            true,
            LayerRole::Classifier,
        )?;
        let parts = b.finish()?;
        Ok(Vgg {
            spec: ArchSpec {
                name: name.to_string(),
                num_classes,
                shortcut: Shortcut::None,
                input,
            },
            parts,
            units,
            classifier,
        })
    }
}

impl Network for Vgg {
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
        if let Some(unit) = self.units.get(index) {
            let y = conv_bn(&unit.conv, &unit.bn, x, ctx, None, true)?;
            if unit.pool_after {
                max_pool2d(&y, 2)
            } else {
                Ok(y)
            }
        } else if index == self.units.len() {
            // kuangliu's trailing AvgPool2d(1, 1) is the identity; flatten what is left.
            self.classifier.forward(&x.flatten_from(1)?, ctx)
        } else {
            Err(ModelError::BadInput(format!(
                "no segment {index} in {}",
                self.spec.name
            )))
        }
    }
}
