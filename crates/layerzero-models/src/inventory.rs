//! The layer inventory: every parameterised layer of a network described as data, so that the
//! ablation engine and the report select layers by role and shape, never by matching names.
//!
//! Numbering follows the PyTorch names, so that a role and its name read the same:
//! stages are 1-based (`layer1` … `layer4`), blocks 0-based (`layer2.0`), positions inside a
//! block 1-based (`conv1`, `conv2`).

use std::collections::HashMap;
use std::fmt;

/// Index of a layer in its network's inventory (`inventory()[id.index()]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerId(pub usize);

impl LayerId {
    /// Position in the inventory.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A block (residual or plain) of a staged network: `layer{stage}.{block}` in PyTorch names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId {
    /// Stage, 1-based as in `layer1`.
    pub stage: usize,
    /// Block inside the stage, 0-based as in `layer1.0`.
    pub block: usize,
}

impl BlockId {
    /// A block id from its stage (1-based) and block index (0-based).
    pub fn new(stage: usize, block: usize) -> Self {
        BlockId { stage, block }
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer{}.{}", self.stage, self.block)
    }
}

/// What computation a layer performs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LayerKind {
    /// 2-D convolution with a square kernel.
    Conv2d {
        /// Kernel height and width.
        kernel: usize,
        /// Stride in both directions.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// Fully connected layer.
    Linear,
    /// 2-D batch normalisation (PyTorch `BatchNorm2d`, affine, with running statistics).
    BatchNorm2d {
        /// Added to the variance before the square root.
        eps: f64,
        /// Weight of the new batch statistics in the running averages.
        momentum: f64,
    },
}

impl LayerKind {
    /// Whether this is a convolution.
    pub fn is_conv(&self) -> bool {
        matches!(self, LayerKind::Conv2d { .. })
    }

    /// Whether this layer has a weight matrix or kernel (convolution or linear), the layers
    /// whose kernels the ablation zeroes.
    pub fn has_kernel(&self) -> bool {
        matches!(self, LayerKind::Conv2d { .. } | LayerKind::Linear)
    }

    /// Short lowercase name: `conv`, `linear`, `batchnorm`.
    pub fn short_name(&self) -> &'static str {
        match self {
            LayerKind::Conv2d { .. } => "conv",
            LayerKind::Linear => "linear",
            LayerKind::BatchNorm2d { .. } => "batchnorm",
        }
    }
}

/// Where a layer sits in the architecture.
///
/// Batch norms take the role of the convolution they belong to: the one whose output they
/// normalise (post-activation nets) or whose input they normalise (pre-activation nets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerRole {
    /// The first convolution (and its batch norm), before any block.
    Stem,
    /// Convolution number `position` (1-based, `conv{position}`) on the residual branch of a
    /// residual block.
    ResidualBranch {
        /// The block.
        block: BlockId,
        /// 1-based position on the branch.
        position: usize,
    },
    /// Projection shortcut of a residual block (`downsample.0` / `downsample.1`, or a bare
    /// 1×1 convolution).
    Shortcut {
        /// The block.
        block: BlockId,
    },
    /// Convolution in a block without shortcut (a plain net, or a VGG conv unit).
    PlainConv {
        /// The block (for VGG: stage = pooling stage, block = conv index in that stage).
        block: BlockId,
        /// 1-based position in the block.
        position: usize,
    },
    /// A layer between the last block and the classifier (a pre-activation net's final batch
    /// norm).
    Head,
    /// The final fully connected layer.
    Classifier,
    /// Anything else (user architectures that fit none of the above).
    Other,
}

impl LayerRole {
    /// The block the layer belongs to, if any.
    pub fn block(&self) -> Option<BlockId> {
        match *self {
            LayerRole::ResidualBranch { block, .. }
            | LayerRole::Shortcut { block }
            | LayerRole::PlainConv { block, .. } => Some(block),
            _ => None,
        }
    }

    /// The 1-based position inside the block, for branch and plain convolutions.
    pub fn position(&self) -> Option<usize> {
        match *self {
            LayerRole::ResidualBranch { position, .. } | LayerRole::PlainConv { position, .. } => {
                Some(position)
            }
            _ => None,
        }
    }
}

/// One parameterised layer of a network, as data.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// Index in the inventory.
    pub id: LayerId,
    /// PyTorch module name, e.g. `layer2.0.conv1`; tensor names are `{name}.weight` etc.
    pub name: String,
    /// Convolution, linear or batch norm, with its hyper-parameters.
    pub kind: LayerKind,
    /// Place in the architecture.
    pub role: LayerRole,
    /// Input channels (input features for a linear layer; channels for a batch norm).
    pub in_channels: usize,
    /// Output channels (output features for a linear layer; channels for a batch norm).
    pub out_channels: usize,
    /// Whether the layer has a bias vector (convolutions and linear layers; batch norms always
    /// have their affine bias, reported as `false` here).
    pub bias: bool,
    /// Spatial size (height, width) of the layer's input for the architecture's nominal input
    /// size; (1, 1) for linear layers.
    pub input_hw: (usize, usize),
    /// Spatial size of the layer's output for the nominal input size.
    pub output_hw: (usize, usize),
    /// Number of trainable parameters (weights and biases; running statistics are not counted).
    pub params: usize,
    /// Multiply–accumulate operations per image for the nominal input size: for a convolution
    /// `out_channels · out_h · out_w · in_channels · k²`, for a linear layer
    /// `in · out`; zero for batch norms (biases, batch norm, activations, pooling and shortcut
    /// additions are not counted).
    pub macs: u64,
    /// Index of the segment (see [`crate::SegmentInfo`]) that computes this layer.
    pub segment: usize,
}

impl LayerInfo {
    /// Whether the layer maps to a different number of channels than it receives: the seed
    /// paper's "feature decomposition" layers (the stem, each stage's first convolution,
    /// projections, the classifier).
    pub fn changes_channels(&self) -> bool {
        self.in_channels != self.out_channels
    }

    /// Kernel size of a convolution (1 for a linear layer, `None` for a batch norm).
    pub fn kernel(&self) -> Option<usize> {
        match self.kind {
            LayerKind::Conv2d { kernel, .. } => Some(kernel),
            LayerKind::Linear => Some(1),
            LayerKind::BatchNorm2d { .. } => None,
        }
    }

    /// Stride of a convolution (1 for a linear layer, `None` for a batch norm).
    pub fn stride(&self) -> Option<usize> {
        match self.kind {
            LayerKind::Conv2d { stride, .. } => Some(stride),
            LayerKind::Linear => Some(1),
            LayerKind::BatchNorm2d { .. } => None,
        }
    }

    /// Shape of the layer's weight tensor (`[out, in, k, k]`, `[out, in]` or `[channels]`).
    pub fn weight_shape(&self) -> Vec<usize> {
        match self.kind {
            LayerKind::Conv2d { kernel, .. } => {
                vec![self.out_channels, self.in_channels, kernel, kernel]
            }
            LayerKind::Linear => vec![self.out_channels, self.in_channels],
            LayerKind::BatchNorm2d { .. } => vec![self.out_channels],
        }
    }
}

/// What a segment of the network is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// The stem (first convolution, normalisation, activation).
    Stem,
    /// A residual block; its branch may be skipped with [`crate::Intervention::SkipBranch`].
    ResidualBlock(BlockId),
    /// A block without shortcut (plain net block, VGG conv unit with its pooling).
    PlainBlock(BlockId),
    /// Everything after the last block: final normalisation, pooling, classifier.
    Head,
    /// A segment of a user architecture that fits none of the above.
    Other,
}

/// One segment of a network: the network is the composition of its segments in order, so
/// activations at a segment boundary can be cached and the rest re-run with interventions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Index in the segment list.
    pub index: usize,
    /// Human-readable name (`stem`, `layer2.0`, `features.7`, `head`).
    pub name: String,
    /// What the segment is.
    pub kind: SegmentKind,
}

/// The inventory of a network: its layers in forward order, with lookups.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    layers: Vec<LayerInfo>,
    by_name: HashMap<String, LayerId>,
}

impl Inventory {
    pub(crate) fn new(layers: Vec<LayerInfo>) -> Self {
        let by_name = layers.iter().map(|l| (l.name.clone(), l.id)).collect();
        Inventory { layers, by_name }
    }

    /// All layers in forward order.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer with that id.
    pub fn get(&self, id: LayerId) -> Option<&LayerInfo> {
        self.layers.get(id.0)
    }

    /// The layer with that PyTorch module name (`layer2.0.conv1`).
    pub fn by_name(&self, name: &str) -> Option<&LayerInfo> {
        self.by_name.get(name).and_then(|id| self.get(*id))
    }

    /// Iterates over the layers in forward order.
    pub fn iter(&self) -> std::slice::Iter<'_, LayerInfo> {
        self.layers.iter()
    }

    /// The convolutions, in forward order: the layers the seed paper zeroes one at a time.
    pub fn convs(&self) -> impl Iterator<Item = &LayerInfo> {
        self.layers.iter().filter(|l| l.kind.is_conv())
    }

    /// Total trainable parameters.
    pub fn total_params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }

    /// Total multiply–accumulates per image (convolutions and linear layers).
    pub fn total_macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }
}

impl<'a> IntoIterator for &'a Inventory {
    type Item = &'a LayerInfo;
    type IntoIter = std::slice::Iter<'a, LayerInfo>;
    fn into_iter(self) -> Self::IntoIter {
        self.layers.iter()
    }
}
