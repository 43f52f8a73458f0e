//! Post-activation ResNets with basic blocks (He et al. 2016): the CIFAR ResNets (`resnet20` …
//! `resnet110`, option A or B), the same nets without shortcuts (`plain20` …), and the common
//! CIFAR ResNet-18 (3×3 stem, four stages of 64…512 channels, option B).
//!
//! PyTorch names (torchvision's): `conv1`, `bn1`, `layer{s}.{b}.{conv1,bn1,conv2,bn2}`,
//! `layer{s}.{b}.downsample.{0,1}` (projection conv and its batch norm), `fc`.

use candle_core::{DType, Device, Tensor};

use crate::builder::{Conv2dSpec, NetworkBuilder, NetworkParts};
use crate::error::{ModelError, Result};
use crate::init::Init;
use crate::intervention::{ForwardCtx, ForwardMode, WeightOverride};
use crate::inventory::{BlockId, Inventory, LayerRole, SegmentInfo, SegmentKind};
use crate::layers::{conv_bn, relu, shortcut_pad, BatchNorm2d, Conv2d, Linear};
use crate::network::{ArchSpec, Network, Shortcut};
use crate::ops;
use crate::params::ParamStore;

/// Shape of a basic-block ResNet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Channels of the stem convolution.
    pub stem_width: usize,
    /// Channels of each stage (`layer1`, `layer2`, …).
    pub stage_widths: Vec<usize>,
    /// Blocks in each stage.
    pub blocks: Vec<usize>,
    /// Stride of each stage's first block.
    pub strides: Vec<usize>,
    /// Shortcut style; [`Shortcut::None`] gives a plain net.
    pub shortcut: Shortcut,
}

impl ResNetConfig {
    /// CIFAR ResNet of depth `6n + 2`: three stages of 16/32/64 channels, `n` blocks each.
    pub fn cifar(depth: usize, shortcut: Shortcut) -> Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(ModelError::InvalidConfig(format!(
                "CIFAR ResNet depth must be 6n + 2 with n ≥ 1, got {depth}"
            )));
        }
        let n = (depth - 2) / 6;
        Ok(ResNetConfig {
            stem_width: 16,
            stage_widths: vec![16, 32, 64],
            blocks: vec![n; 3],
            strides: vec![1, 2, 2],
            shortcut,
        })
    }

    /// ResNet-18 in its common CIFAR form (3×3 stem, no max-pool, 2 blocks in each of four
    /// stages of 64/128/256/512 channels, projection shortcuts).
    pub fn resnet18() -> Self {
        ResNetConfig {
            stem_width: 64,
            stage_widths: vec![64, 128, 256, 512],
            blocks: vec![2; 4],
            strides: vec![1, 2, 2, 2],
            shortcut: Shortcut::Projection,
        }
    }
}

/// How a block's input reaches its output.
#[derive(Debug, Clone)]
pub enum ShortcutPath {
    /// Input added unchanged.
    Identity,
    /// Option A: subsample by `stride`, add `pad` zero channels on each side.
    Pad {
        /// Spatial subsampling.
        stride: usize,
        /// Zero channels added before and after.
        pad: usize,
    },
    /// Option B: `downsample.0` (1×1 conv) and `downsample.1` (batch norm).
    Projection {
        /// The 1×1 convolution.
        conv: Conv2d,
        /// Its batch norm.
        bn: BatchNorm2d,
    },
    /// No shortcut (plain net).
    None,
}

/// A post-activation basic block: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    /// Where the block is.
    pub id: BlockId,
    /// First 3×3 convolution (carries the block's stride).
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm2d,
    /// Second 3×3 convolution.
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm2d,
    /// The shortcut.
    pub shortcut: ShortcutPath,
}

impl BasicBlock {
    /// Runs the block; a skipped branch leaves `relu(shortcut(x))`.
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor> {
        let shortcut = |x: &Tensor| -> Result<Option<Tensor>> {
            Ok(match &self.shortcut {
                ShortcutPath::Identity => Some(x.clone()),
                ShortcutPath::Pad { stride, pad } => Some(shortcut_pad(x, *stride, *pad)?),
                ShortcutPath::Projection { conv, bn } => {
                    Some(conv_bn(conv, bn, x, ctx, None, false)?)
                }
                ShortcutPath::None => None,
            })
        };
        if ctx.interventions.is_skipped(self.id) {
            return match shortcut(x)? {
                Some(s) => relu(&s),
                None => Err(ModelError::InvalidIntervention(format!(
                    "block {} has no shortcut; its branch cannot be skipped",
                    self.id
                ))),
            };
        }
        let zeroed = |conv: &Conv2d| {
            ctx.mode == ForwardMode::Eval
                && matches!(
                    ctx.interventions.weight_override(conv.id()),
                    Some(WeightOverride::Zero)
                )
        };
        let conv2_zeroed = zeroed(&self.conv2);
        if zeroed(&self.conv1) && !conv2_zeroed && x.dim(0)? > 1 {
            // With conv1's kernel zero, every image enters conv2 as the same constant-per-channel
            // image, so conv2's output is the same for every image: compute it on one image and
            // broadcast it. Same numbers as the full batch (the fused kernel also adds the bias
            // before the residual), at the cost of one image instead of N.
            let one = x.narrow(0, 0, 1)?;
            let y1 = conv_bn(&self.conv1, &self.bn1, &one, ctx, None, true)?;
            let z = conv_bn(&self.conv2, &self.bn2, &y1, ctx, None, false)?;
            let (_, c, h, w) = z.dims4()?;
            let z = z.broadcast_as((x.dim(0)?, c, h, w))?;
            let out = match shortcut(x)? {
                Some(s) => z.add(&s)?,
                None => z.contiguous()?,
            };
            return relu(&out);
        }
        let y = if conv2_zeroed {
            // With conv2's kernel zero the branch's output no longer depends on conv1's, and in
            // eval mode conv1 has no side effects: skip it. conv2's zero-kernel path reads only
            // its input's shape, so a zero-copy broadcast of one zero stands in for it.
            let (h, w) = self.conv1.output_hw(x)?;
            let c = self.conv1.weight.dim(0)?;
            Tensor::zeros(1, DType::F32, x.device())?
                .reshape((1, 1, 1, 1))?
                .broadcast_as((x.dim(0)?, c, h, w))?
        } else {
            conv_bn(&self.conv1, &self.bn1, x, ctx, None, true)?
        };
        let s = shortcut(x)?;
        conv_bn(&self.conv2, &self.bn2, &y, ctx, s.as_ref(), true)
    }
}

/// A basic-block ResNet or its plain counterpart.
#[derive(Debug)]
pub struct ResNet {
    spec: ArchSpec,
    parts: NetworkParts,
    /// Stem convolution (3×3, stride 1).
    pub conv1: Conv2d,
    /// Stem batch norm.
    pub bn1: BatchNorm2d,
    /// Blocks: `stages[s - 1][b]` is `layer{s}.{b}`.
    pub stages: Vec<Vec<BasicBlock>>,
    /// Classifier after global average pooling.
    pub fc: Linear,
}

impl ResNet {
    /// Builds the network. `name` becomes [`ArchSpec::name`].
    pub fn new(
        name: &str,
        config: &ResNetConfig,
        num_classes: usize,
        init: Init,
        device: &Device,
    ) -> Result<Self> {
        let stages_n = config.stage_widths.len();
        if stages_n == 0 || config.blocks.len() != stages_n || config.strides.len() != stages_n {
            return Err(ModelError::InvalidConfig(format!(
                "stage widths, blocks and strides must have the same non-zero length: {config:?}"
            )));
        }
        if num_classes == 0 {
            return Err(ModelError::InvalidConfig("num_classes must be ≥ 1".into()));
        }
        let input = (3, 32, 32);
        let mut b = NetworkBuilder::new(init, device);
        let mut hw = (input.1, input.2);

        b.begin_segment("stem", SegmentKind::Stem);
        let conv1 = b.conv2d(
            "conv1",
            Conv2dSpec::new(input.0, config.stem_width, 3, 1),
            LayerRole::Stem,
            hw,
        )?;
        let bn1 = b.batch_norm2d("bn1", config.stem_width, LayerRole::Stem, hw)?;

        let mut cin = config.stem_width;
        let mut stages = Vec::with_capacity(stages_n);
        for (si, ((&cout, &nblocks), &stride0)) in config
            .stage_widths
            .iter()
            .zip(&config.blocks)
            .zip(&config.strides)
            .enumerate()
        {
            let mut blocks = Vec::with_capacity(nblocks);
            for bi in 0..nblocks {
                let id = BlockId::new(si + 1, bi);
                let stride = if bi == 0 { stride0 } else { 1 };
                let (block, out_hw) =
                    build_block(&mut b, id, cin, cout, stride, config.shortcut, hw)?;
                blocks.push(block);
                hw = out_hw;
                cin = cout;
            }
            stages.push(blocks);
        }

        b.begin_segment("head", SegmentKind::Head);
        let fc = b.linear("fc", cin, num_classes, true, LayerRole::Classifier)?;
        let parts = b.finish()?;
        Ok(ResNet {
            spec: ArchSpec {
                name: name.to_string(),
                num_classes,
                shortcut: config.shortcut,
                input,
            },
            parts,
            conv1,
            bn1,
            stages,
            fc,
        })
    }

    /// The block `layer{stage}.{block}`.
    pub fn block(&self, id: BlockId) -> Option<&BasicBlock> {
        self.stages.get(id.stage.checked_sub(1)?)?.get(id.block)
    }

    fn blocks(&self) -> impl Iterator<Item = &BasicBlock> {
        self.stages.iter().flatten()
    }
}

fn build_block(
    b: &mut NetworkBuilder,
    id: BlockId,
    cin: usize,
    cout: usize,
    stride: usize,
    shortcut: Shortcut,
    hw: (usize, usize),
) -> Result<(BasicBlock, (usize, usize))> {
    let p = format!("layer{}.{}", id.stage, id.block);
    let residual = shortcut != Shortcut::None;
    b.begin_segment(
        p.clone(),
        if residual {
            SegmentKind::ResidualBlock(id)
        } else {
            SegmentKind::PlainBlock(id)
        },
    );
    let role = |position| {
        if residual {
            LayerRole::ResidualBranch {
                block: id,
                position,
            }
        } else {
            LayerRole::PlainConv {
                block: id,
                position,
            }
        }
    };
    let conv1 = b.conv2d(
        &format!("{p}.conv1"),
        Conv2dSpec::new(cin, cout, 3, stride),
        role(1),
        hw,
    )?;
    let out_hw = b.output_hw(conv1.id())?;
    let bn1 = b.batch_norm2d(&format!("{p}.bn1"), cout, role(1), out_hw)?;
    let conv2 = b.conv2d(
        &format!("{p}.conv2"),
        Conv2dSpec::new(cout, cout, 3, 1),
        role(2),
        out_hw,
    )?;
    let bn2 = b.batch_norm2d(&format!("{p}.bn2"), cout, role(2), out_hw)?;
    let reshapes = stride != 1 || cin != cout;
    let shortcut = match shortcut {
        Shortcut::None => ShortcutPath::None,
        _ if !reshapes => ShortcutPath::Identity,
        Shortcut::Pad => {
            if cout < cin || !(cout - cin).is_multiple_of(2) {
                return Err(ModelError::InvalidConfig(format!(
                    "option-A shortcut of {p} cannot pad {cin} to {cout} channels symmetrically"
                )));
            }
            ShortcutPath::Pad {
                stride,
                pad: (cout - cin) / 2,
            }
        }
        Shortcut::Projection => {
            let sc = LayerRole::Shortcut { block: id };
            let conv = b.conv2d(
                &format!("{p}.downsample.0"),
                Conv2dSpec::new(cin, cout, 1, stride),
                sc,
                hw,
            )?;
            let bn = b.batch_norm2d(&format!("{p}.downsample.1"), cout, sc, out_hw)?;
            ShortcutPath::Projection { conv, bn }
        }
    };
    Ok((
        BasicBlock {
            id,
            conv1,
            bn1,
            conv2,
            bn2,
            shortcut,
        },
        out_hw,
    ))
}

impl Network for ResNet {
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
        let nblocks: usize = self.stages.iter().map(Vec::len).sum();
        if index == 0 {
            conv_bn(&self.conv1, &self.bn1, x, ctx, None, true)
        } else if index <= nblocks {
            match self.blocks().nth(index - 1) {
                Some(block) => block.forward(x, ctx),
                None => Err(ModelError::BadInput(format!("no segment {index}"))),
            }
        } else if index == nblocks + 1 {
            self.fc.forward(&ops::global_avg_pool(x)?, ctx)
        } else {
            Err(ModelError::BadInput(format!(
                "no segment {index} in {}",
                self.spec.name
            )))
        }
    }
}
