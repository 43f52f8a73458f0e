//! The [`Network`] trait: what the training loop, the ablation engine and the report need from
//! any architecture, built-in or user-defined.

use std::fmt;

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::init::{layer_tensors, Init};
use crate::intervention::{ForwardCtx, ForwardMode, Interventions, WeightOverride};
use crate::inventory::{Inventory, LayerId, SegmentInfo, SegmentKind};
use crate::params::ParamStore;

/// Shortcut style of a residual network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shortcut {
    /// He et al.'s option A: identity, or stride-2 subsampling with zero-padded channels when
    /// the shape changes; no parameters.
    Pad,
    /// Option B: identity, or a 1×1 convolution (with batch norm in post-activation nets) when
    /// the shape changes.
    Projection,
    /// No shortcut at all (plain nets, VGG).
    None,
}

impl Shortcut {
    /// Name used in metadata: `A`, `B` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Shortcut::Pad => "A",
            Shortcut::Projection => "B",
            Shortcut::None => "none",
        }
    }

    /// Parses [`Shortcut::as_str`]'s output (also `pad`, `projection`, case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "a" | "pad" => Some(Shortcut::Pad),
            "b" | "projection" => Some(Shortcut::Projection),
            "none" => Some(Shortcut::None),
            _ => None,
        }
    }
}

impl fmt::Display for Shortcut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a network is, independently of its weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchSpec {
    /// Registry name (`resnet20`, `resnet20-b`, `plain56`, `vgg16-bn`, `wrn28-10`, …); user
    /// architectures choose their own.
    pub name: String,
    /// Number of output classes.
    pub num_classes: usize,
    /// Shortcut style.
    pub shortcut: Shortcut,
    /// Input (channels, height, width) the inventory's spatial sizes and MACs refer to.
    pub input: (usize, usize, usize),
}

/// A network the study can train, ablate and save.
///
/// A network is an ordered list of *segments* (stem, blocks, head). [`Network::forward`] runs
/// them all; [`Network::forward_from`] starts at a later one, so the ablation engine can cache
/// the input of the segment holding the ablated layer and re-run only the rest.
///
/// Implement the five required methods (store the [`crate::NetworkParts`] a
/// [`crate::NetworkBuilder`] returned); every other method has a default.
pub trait Network: Send + Sync + fmt::Debug {
    /// What the network is.
    fn spec(&self) -> &ArchSpec;

    /// Its layers as data.
    fn inventory(&self) -> &Inventory;

    /// Its named tensors.
    fn params(&self) -> &ParamStore;

    /// Its segments in forward order.
    fn segments(&self) -> &[SegmentInfo];

    /// Runs segment `index` on `x` (the output of segment `index − 1`, or the image batch for
    /// segment 0). Layers apply `ctx.interventions` themselves.
    fn forward_segment(&self, index: usize, x: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor>;

    /// Runs the whole network on an image batch `(N, C, H, W)`; returns logits `(N, classes)`.
    fn forward(
        &self,
        x: &Tensor,
        mode: ForwardMode,
        interventions: &Interventions,
    ) -> Result<Tensor> {
        let (c, _, _) = self.spec().input;
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != c || dims[0] == 0 {
            return Err(ModelError::BadInput(format!(
                "expected an image batch (N, {c}, H, W) with N > 0, got {dims:?}"
            )));
        }
        self.forward_range(0, self.segments().len(), x, mode, interventions)
    }

    /// Runs segments `start..` on `x`, the output of segment `start − 1` (as returned by
    /// [`Network::forward_range`]`(0, start, …)`).
    fn forward_from(
        &self,
        start: usize,
        x: &Tensor,
        mode: ForwardMode,
        interventions: &Interventions,
    ) -> Result<Tensor> {
        self.forward_range(start, self.segments().len(), x, mode, interventions)
    }

    /// Runs segments `start..end` on `x`.
    fn forward_range(
        &self,
        start: usize,
        end: usize,
        x: &Tensor,
        mode: ForwardMode,
        interventions: &Interventions,
    ) -> Result<Tensor> {
        let n = self.segments().len();
        if start > end || end > n {
            return Err(ModelError::BadInput(format!(
                "segment range {start}..{end} outside 0..{n}"
            )));
        }
        self.check_interventions(interventions)?;
        let ctx = ForwardCtx::new(mode, interventions);
        let mut x = match mode {
            // Nothing upstream can need gradients in eval mode; detaching keeps the graph empty.
            ForwardMode::Eval => x.detach(),
            ForwardMode::Train => x.clone(),
        };
        // An ablation can make every image's activations identical (a zeroed stem leaves each
        // image a constant per channel): from there on, one image stands for the batch. Only
        // checked in eval mode with interventions, so plain and training forwards are untouched.
        let watch = mode == ForwardMode::Eval && !interventions.is_empty();
        for i in start..end {
            if watch && i + 1 < end && crate::ops::images_identical(&x)? {
                let batch = x.dim(0)?;
                let mut one = x.narrow(0, 0, 1)?;
                for j in i..end {
                    one = self.forward_segment(j, &one, &ctx)?;
                }
                let mut dims = one.dims().to_vec();
                dims[0] = batch;
                return Ok(one.broadcast_as(dims)?.contiguous()?);
            }
            x = self.forward_segment(i, &x, &ctx)?;
        }
        Ok(x)
    }

    /// Checks that every intervention names a layer or block of this network and fits it: a
    /// replacement's shape, dtype (f32) and device.
    fn check_interventions(&self, interventions: &Interventions) -> Result<()> {
        for (id, o) in interventions.layers() {
            let info = self.inventory().get(id).ok_or_else(|| {
                ModelError::InvalidIntervention(format!("no layer {id} in {}", self.spec().name))
            })?;
            if !info.kind.has_kernel() {
                return Err(ModelError::InvalidIntervention(format!(
                    "`{}` is a {}, not a convolution or linear layer",
                    info.name,
                    info.kind.short_name()
                )));
            }
            if let WeightOverride::Replace { weight, bias } = o {
                // Checked here so that the error names the layer: a wrong dtype or device
                // otherwise fails deep inside a kernel, in candle's words.
                check_replacement("weight", &info.name, weight, self.params().device())?;
                if let Some(b) = bias {
                    check_replacement("bias", &info.name, b, self.params().device())?;
                }
                let expect = info.weight_shape();
                if weight.dims() != expect.as_slice() {
                    return Err(ModelError::InvalidIntervention(format!(
                        "replacement weight for `{}` has shape {:?}, expected {expect:?}",
                        info.name,
                        weight.dims()
                    )));
                }
                if let Some(b) = bias {
                    if !info.bias || b.dims() != [info.out_channels] {
                        return Err(ModelError::InvalidIntervention(format!(
                            "replacement bias for `{}` has shape {:?}, but the layer has {}",
                            info.name,
                            b.dims(),
                            if info.bias {
                                format!("a bias of shape [{}]", info.out_channels)
                            } else {
                                "no bias".to_string()
                            }
                        )));
                    }
                }
            }
        }
        for block in interventions.skipped_blocks() {
            let residual = self
                .segments()
                .iter()
                .any(|s| s.kind == SegmentKind::ResidualBlock(block));
            if !residual {
                return Err(ModelError::InvalidIntervention(format!(
                    "{} has no residual block {block} whose branch could be skipped",
                    self.spec().name
                )));
            }
        }
        Ok(())
    }

    /// The first segment an intervention set changes (`None` if it changes nothing): segments
    /// before it compute the same activations with or without the interventions.
    fn first_affected_segment(&self, interventions: &Interventions) -> Option<usize> {
        let layers = interventions
            .layers()
            .filter_map(|(id, _)| self.inventory().get(id).map(|l| l.segment));
        let blocks = interventions.skipped_blocks().filter_map(|b| {
            self.segments()
                .iter()
                .find(|s| s.kind == SegmentKind::ResidualBlock(b))
                .map(|s| s.index)
        });
        layers.chain(blocks).min()
    }

    /// Fresh values from the initial distribution for one layer's tensors (see [`crate::init`]
    /// for the distributions), as `(name, tensor)`, without changing the network. With the seed
    /// the network was built with, these are the layer's epoch-0 values.
    fn initial_values(&self, layer: LayerId, seed: u64) -> Result<Vec<(String, Tensor)>> {
        let info = self
            .inventory()
            .get(layer)
            .ok_or_else(|| ModelError::BadInput(format!("no layer {layer}")))?;
        let tensors = layer_tensors(info, Init::Seeded(seed), self.params().device())?;
        Ok(tensors
            .into_iter()
            .map(|(role, t)| (format!("{}.{}", info.name, role.suffix()), t))
            .collect())
    }

    /// Overwrites one layer's tensors in place with [`Network::initial_values`] (batch norms are
    /// reset to weight 1, bias 0, running mean 0, variance 1, counter 0).
    fn rerandomize(&self, layer: LayerId, seed: u64) -> Result<()> {
        let values = self.initial_values(layer, seed)?;
        for (name, t) in &values {
            let entry = self.params().get(name).ok_or_else(|| {
                ModelError::InvalidConfig(format!("layer tensor `{name}` is not registered"))
            })?;
            entry.set(t)?;
        }
        Ok(())
    }

    /// Number of trainable parameters.
    fn num_params(&self) -> usize {
        self.params().trainable_count()
    }
}

/// A replacement weight or bias must be f32 and on the network's device.
fn check_replacement(what: &str, layer: &str, t: &Tensor, device: &Device) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(ModelError::InvalidIntervention(format!(
            "replacement {what} for `{layer}` is {:?}, expected F32",
            t.dtype()
        )));
    }
    if !t.device().same_device(device) {
        let (on, expected) = (t.device().location(), device.location());
        // Two handles of one GPU (e.g. two `open_cuda(0)` calls) have the same location but
        // separate streams: create the tensor on the network's own device.
        let hint = if on == expected {
            " (another handle of the same GPU: create it on the network's device, \
             `net.params().device()`)"
        } else {
            ""
        };
        return Err(ModelError::InvalidIntervention(format!(
            "replacement {what} for `{layer}` is on {on:?}, expected the network's device \
             {expected:?}{hint}"
        )));
    }
    Ok(())
}
