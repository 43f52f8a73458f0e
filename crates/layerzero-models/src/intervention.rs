//! Interventions: changes applied to one forward pass without touching the stored weights.
//!
//! The ablation engine evaluates the same network many times, each time with one change (a
//! kernel replaced by zeros, a residual branch skipped, a layer's weights replaced). Passing the
//! change to the forward, rather than editing weights, means nothing is copied or reloaded and
//! concurrent evaluations with different changes can share one network.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::Tensor;

use crate::inventory::{BlockId, LayerId};

/// Which batch-norm behaviour a forward uses. The two are kept apart on purpose: eval mode
/// never changes the network, train mode always updates the running statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// Batch norm uses running statistics; nothing is written; no autograd graph is recorded
    /// through the weights.
    Eval,
    /// Batch norm uses batch statistics and updates `running_mean`, `running_var` (PyTorch
    /// semantics: momentum 0.1, unbiased variance) and `num_batches_tracked`; gradients flow to
    /// every trainable variable.
    Train,
}

/// One change to a forward pass.
#[derive(Debug, Clone)]
pub enum Intervention {
    /// Replace a convolution's or linear layer's kernel by zeros. Its bias (if any) and the
    /// batch norm after it are kept, as in the seed paper (and PyTorch's `weight.zero_()`).
    ZeroKernel(LayerId),
    /// Use other values for a convolution's or linear layer's weight (and bias, if given; the
    /// stored bias otherwise). Shapes must match the layer's.
    ReplaceWeights {
        /// The layer.
        layer: LayerId,
        /// Replacement weight, same shape as the stored one.
        weight: Tensor,
        /// Replacement bias; `None` keeps the stored bias.
        bias: Option<Tensor>,
    },
    /// Skip a residual block's branch: the block outputs its (activated) shortcut alone, e.g.
    /// `relu(x)` for an identity shortcut in a post-activation ResNet.
    SkipBranch(BlockId),
}

/// How a layer's weight is changed for one forward pass.
#[derive(Debug, Clone)]
pub enum WeightOverride {
    /// The kernel is zero.
    Zero,
    /// The kernel (and optionally the bias) are replaced.
    Replace {
        /// Replacement weight.
        weight: Tensor,
        /// Replacement bias, or `None` to keep the stored one.
        bias: Option<Tensor>,
    },
}

/// A set of interventions for one forward pass, keyed by layer and block.
#[derive(Debug, Clone, Default)]
pub struct Interventions {
    layers: BTreeMap<LayerId, WeightOverride>,
    skipped: BTreeSet<BlockId>,
}

/// The empty set, for plain forwards.
static NONE: Interventions = Interventions {
    layers: BTreeMap::new(),
    skipped: BTreeSet::new(),
};

impl Interventions {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reference to a shared empty set, for plain forwards.
    pub fn none() -> &'static Interventions {
        &NONE
    }

    /// A set holding one intervention.
    pub fn single(i: Intervention) -> Self {
        let mut s = Self::new();
        s.insert(i);
        s
    }

    /// Adds an intervention. A later intervention on the same layer replaces the earlier one;
    /// the replaced one is returned.
    pub fn insert(&mut self, i: Intervention) -> Option<Intervention> {
        match i {
            Intervention::ZeroKernel(id) => self
                .layers
                .insert(id, WeightOverride::Zero)
                .map(|old| Self::to_intervention(id, old)),
            Intervention::ReplaceWeights {
                layer,
                weight,
                bias,
            } => self
                .layers
                .insert(layer, WeightOverride::Replace { weight, bias })
                .map(|old| Self::to_intervention(layer, old)),
            Intervention::SkipBranch(b) => {
                if self.skipped.insert(b) {
                    None
                } else {
                    Some(Intervention::SkipBranch(b))
                }
            }
        }
    }

    /// Builder form of [`Interventions::insert`].
    pub fn with(mut self, i: Intervention) -> Self {
        self.insert(i);
        self
    }

    fn to_intervention(layer: LayerId, o: WeightOverride) -> Intervention {
        match o {
            WeightOverride::Zero => Intervention::ZeroKernel(layer),
            WeightOverride::Replace { weight, bias } => Intervention::ReplaceWeights {
                layer,
                weight,
                bias,
            },
        }
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty() && self.skipped.is_empty()
    }

    /// The change for one layer, if any. Layers call this in their forward.
    pub fn weight_override(&self, layer: LayerId) -> Option<&WeightOverride> {
        self.layers.get(&layer)
    }

    /// Whether a block's residual branch is skipped. Blocks call this in their forward.
    pub fn is_skipped(&self, block: BlockId) -> bool {
        self.skipped.contains(&block)
    }

    /// Layers with a weight change, in id order.
    pub fn layers(&self) -> impl Iterator<Item = (LayerId, &WeightOverride)> {
        self.layers.iter().map(|(k, v)| (*k, v))
    }

    /// Blocks whose branch is skipped.
    pub fn skipped_blocks(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.skipped.iter().copied()
    }
}

impl FromIterator<Intervention> for Interventions {
    fn from_iter<T: IntoIterator<Item = Intervention>>(iter: T) -> Self {
        let mut s = Interventions::new();
        for i in iter {
            s.insert(i);
        }
        s
    }
}

/// Everything a layer needs to know about the current forward pass besides its input.
#[derive(Debug, Clone, Copy)]
pub struct ForwardCtx<'a> {
    /// Train or eval batch norm.
    pub mode: ForwardMode,
    /// Changes for this pass.
    pub interventions: &'a Interventions,
}

impl<'a> ForwardCtx<'a> {
    /// A context from its parts.
    pub fn new(mode: ForwardMode, interventions: &'a Interventions) -> Self {
        ForwardCtx {
            mode,
            interventions,
        }
    }

    /// Eval mode without interventions.
    pub fn eval() -> ForwardCtx<'static> {
        ForwardCtx::new(ForwardMode::Eval, Interventions::none())
    }

    /// Train mode without interventions.
    pub fn train() -> ForwardCtx<'static> {
        ForwardCtx::new(ForwardMode::Train, Interventions::none())
    }
}
