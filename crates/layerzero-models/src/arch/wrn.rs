//! Wide ResNet `WRN-d-k` (Zagoruyko & Komodakis 2016) for CIFAR: pre-activation basic blocks,
//! three stages of 16k/32k/64k channels with (d − 4)/6 blocks each, 1×1 convolution shortcuts
//! (no batch norm) where the shape changes, final BN–ReLU, global pooling, linear classifier.
//! No dropout.
//!
//! PyTorch names follow the widely used `xternalz/WideResNet-pytorch` so its checkpoints load
//! unchanged: `conv1`, `block{s}.layer.{b}.{bn1,conv1,bn2,conv2,convShortcut}`, `bn1` (the
//! final batch norm), `fc`.

use candle_core::{Device, Tensor};

use crate::builder::{Conv2dSpec, NetworkBuilder, NetworkParts};
use crate::error::{ModelError, Result};
use crate::init::Init;
use crate::intervention::ForwardCtx;
use crate::inventory::{BlockId, Inventory, LayerRole, SegmentInfo, SegmentKind};
use crate::layers::{BatchNorm2d, Conv2d, Linear};
use crate::network::{ArchSpec, Network, Shortcut};
use crate::ops;
use crate::params::ParamStore;

/// A pre-activation wide basic block.
#[derive(Debug, Clone)]
pub struct WideBlock {
    /// Where the block is.
    pub id: BlockId,
    /// Batch norm before `conv1` (its activated output also feeds `conv_shortcut`).
    pub bn1: BatchNorm2d,
    /// First 3×3 convolution (carries the stride).
    pub conv1: Conv2d,
    /// Batch norm before `conv2`.
    pub bn2: BatchNorm2d,
    /// Second 3×3 convolution.
    pub conv2: Conv2d,
    /// 1×1 projection where the shape changes (`convShortcut`).
    pub conv_shortcut: Option<Conv2d>,
}

impl WideBlock {
    /// Runs the block; a skipped branch leaves the shortcut alone.
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor> {
        let skipped = ctx.interventions.is_skipped(self.id);
        match &self.conv_shortcut {
            None => {
                if skipped {
                    return Ok(x.clone());
                }
                let a = self.bn1.forward_relu(x, ctx)?;
                let y = self.bn2.forward_relu(&self.conv1.forward(&a, ctx)?, ctx)?;
                Ok((self.conv2.forward(&y, ctx)? + x)?)
            }
            Some(sc) => {
                // As in the reference code, the projection sees the activated input.
                let a = self.bn1.forward_relu(x, ctx)?;
                let s = sc.forward(&a, ctx)?;
                if skipped {
                    return Ok(s);
                }
                let y = self.bn2.forward_relu(&self.conv1.forward(&a, ctx)?, ctx)?;
                Ok((self.conv2.forward(&y, ctx)? + s)?)
            }
        }
    }
}

/// Wide ResNet for CIFAR.
#[derive(Debug)]
pub struct WideResNet {
    spec: ArchSpec,
    parts: NetworkParts,
    /// Stem convolution, 3 → 16 channels.
    pub conv1: Conv2d,
    /// Blocks: `stages[s - 1][b]` is `block{s}.layer.{b}`.
    pub stages: Vec<Vec<WideBlock>>,
    /// Final batch norm (`bn1` at top level).
    pub bn_final: BatchNorm2d,
    /// Classifier.
    pub fc: Linear,
}

impl WideResNet {
    /// Builds `WRN-depth-widen`; `depth` must be 6n + 4.
    pub fn new(
        name: &str,
        depth: usize,
        widen: usize,
        num_classes: usize,
        init: Init,
        device: &Device,
    ) -> Result<Self> {
        if depth < 10 || !(depth - 4).is_multiple_of(6) || widen == 0 {
            return Err(ModelError::InvalidConfig(format!(
                "wide ResNet needs depth 6n + 4 (n ≥ 1) and widen ≥ 1, got {depth}-{widen}"
            )));
        }
        if num_classes == 0 {
            return Err(ModelError::InvalidConfig("num_classes must be ≥ 1".into()));
        }
        let n = (depth - 4) / 6;
        let input = (3, 32, 32);
        let mut b = NetworkBuilder::new(init, device);
        let mut hw = (input.1, input.2);
        b.begin_segment("stem", SegmentKind::Stem);
        let conv1 = b.conv2d("conv1", Conv2dSpec::new(3, 16, 3, 1), LayerRole::Stem, hw)?;
        let mut cin = 16;
        let mut stages = Vec::new();
        for (si, (width, stride0)) in [(16 * widen, 1), (32 * widen, 2), (64 * widen, 2)]
            .into_iter()
            .enumerate()
        {
            let mut blocks = Vec::new();
            for bi in 0..n {
                let id = BlockId::new(si + 1, bi);
                let p = format!("block{}.layer.{bi}", si + 1);
                let stride = if bi == 0 { stride0 } else { 1 };
                let role = |position| LayerRole::ResidualBranch {
                    block: id,
                    position,
                };
                b.begin_segment(p.clone(), SegmentKind::ResidualBlock(id));
                let bn1 = b.batch_norm2d(&format!("{p}.bn1"), cin, role(1), hw)?;
                let conv1 = b.conv2d(
                    &format!("{p}.conv1"),
                    Conv2dSpec::new(cin, width, 3, stride),
                    role(1),
                    hw,
                )?;
                let out_hw = b.output_hw(conv1.id())?;
                let bn2 = b.batch_norm2d(&format!("{p}.bn2"), width, role(2), out_hw)?;
                let conv2 = b.conv2d(
                    &format!("{p}.conv2"),
                    Conv2dSpec::new(width, width, 3, 1),
                    role(2),
                    out_hw,
                )?;
                let conv_shortcut = if cin != width || stride != 1 {
                    Some(b.conv2d(
                        &format!("{p}.convShortcut"),
                        Conv2dSpec::new(cin, width, 1, stride),
                        LayerRole::Shortcut { block: id },
                        hw,
                    )?)
                } else {
                    None
                };
                blocks.push(WideBlock {
                    id,
                    bn1,
                    conv1,
                    bn2,
                    conv2,
                    conv_shortcut,
                });
                cin = width;
                hw = out_hw;
            }
            stages.push(blocks);
        }
        b.begin_segment("head", SegmentKind::Head);
        let bn_final = b.batch_norm2d("bn1", cin, LayerRole::Head, hw)?;
        let fc = b.linear("fc", cin, num_classes, true, LayerRole::Classifier)?;
        let parts = b.finish()?;
        Ok(WideResNet {
            spec: ArchSpec {
                name: name.to_string(),
                num_classes,
                shortcut: Shortcut::Projection,
                input,
            },
            parts,
            conv1,
            stages,
            bn_final,
            fc,
        })
    }
}

impl Network for WideResNet {
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
            self.conv1.forward(x, ctx)
        } else if index <= nblocks {
            match self.stages.iter().flatten().nth(index - 1) {
                Some(block) => block.forward(x, ctx),
                None => Err(ModelError::BadInput(format!("no segment {index}"))),
            }
        } else if index == nblocks + 1 {
            let y = self.bn_final.forward_relu(x, ctx)?;
            self.fc.forward(&ops::global_avg_pool(&y)?, ctx)
        } else {
            Err(ModelError::BadInput(format!(
                "no segment {index} in {}",
                self.spec.name
            )))
        }
    }
}
