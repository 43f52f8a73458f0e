//! Building a network: layers are created through a [`NetworkBuilder`], which initialises their
//! tensors, registers them under their PyTorch names and records them in the inventory. Built-in
//! and user architectures use the same builder, so both get inventories, interventions,
//! checkpoints and re-randomisation for free.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};

use crate::error::{ModelError, Result};
use crate::init::{layer_tensors, Init};
use crate::inventory::{
    Inventory, LayerId, LayerInfo, LayerKind, LayerRole, SegmentInfo, SegmentKind,
};
use crate::layers::{BatchNorm2d, Conv2d, Linear};
use crate::ops::conv_out;
use crate::params::{ParamStore, Slot, TensorRole};

/// Batch-norm epsilon, as PyTorch's default.
pub const BN_EPS: f64 = 1e-5;
/// Batch-norm momentum (weight of the new batch statistics), as PyTorch's default.
pub const BN_MOMENTUM: f64 = 0.1;

/// Hyper-parameters of a square-kernel convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Whether the convolution has a bias.
    pub bias: bool,
}

impl Conv2dSpec {
    /// A bias-free convolution with "same" padding (`kernel / 2`).
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize, stride: usize) -> Self {
        Conv2dSpec {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
            bias: false,
        }
    }

    /// The same convolution with a bias.
    pub fn with_bias(mut self) -> Self {
        self.bias = true;
        self
    }
}

/// What [`NetworkBuilder::finish`] returns: the pieces a [`crate::Network`] implementation
/// stores and hands out through the trait.
#[derive(Debug, Clone)]
pub struct NetworkParts {
    /// The layers as data.
    pub inventory: Inventory,
    /// The named tensors.
    pub params: ParamStore,
    /// The segments in forward order.
    pub segments: Vec<SegmentInfo>,
}

/// Creates layers, initialises and registers their tensors, and records the inventory.
///
/// Call [`NetworkBuilder::begin_segment`] before the layers of each segment, in forward order.
#[derive(Debug)]
pub struct NetworkBuilder {
    init: Init,
    device: Device,
    layers: Vec<LayerInfo>,
    params: ParamStore,
    segments: Vec<SegmentInfo>,
}

impl NetworkBuilder {
    /// A builder whose layers are initialised as `init` says, on `device`.
    pub fn new(init: Init, device: &Device) -> Self {
        NetworkBuilder {
            init,
            device: device.clone(),
            layers: Vec::new(),
            params: ParamStore::new(device.clone()),
            segments: Vec::new(),
        }
    }

    /// Starts a new segment; the layers created next belong to it. Returns its index.
    pub fn begin_segment(&mut self, name: impl Into<String>, kind: SegmentKind) -> usize {
        let index = self.segments.len();
        self.segments.push(SegmentInfo {
            index,
            name: name.into(),
            kind,
        });
        index
    }

    fn current_segment(&self, layer: &str) -> Result<usize> {
        self.segments.len().checked_sub(1).ok_or_else(|| {
            ModelError::InvalidConfig(format!(
                "layer `{layer}` created before any segment was begun"
            ))
        })
    }

    /// Records the layer, initialises its tensors and registers them; returns its id and vars.
    fn register(&mut self, info: LayerInfo) -> Result<Vec<(TensorRole, Slot)>> {
        check_layer_name(&info.name)?;
        let segment = &self.segments[info.segment];
        let segment_block = match segment.kind {
            SegmentKind::ResidualBlock(b) | SegmentKind::PlainBlock(b) => Some(b),
            _ => None,
        };
        if let (Some(role_block), Some(segment_block)) = (info.role.block(), segment_block) {
            // Skip-branch and the block tables go by the segment's block, the layer tables by
            // the role's: they must agree or an ablation would name the wrong block.
            if role_block != segment_block {
                return Err(ModelError::InvalidConfig(format!(
                    "layer `{}` has role {:?} in segment `{}` of block {segment_block}: \
                     expected the role's block to be {segment_block}, found {role_block}",
                    info.name, info.role, segment.name
                )));
            }
        }
        if self.layers.iter().any(|l| l.name == info.name) {
            return Err(ModelError::InvalidConfig(format!(
                "layer name `{}` used twice",
                info.name
            )));
        }
        let tensors = layer_tensors(&info, self.init, &self.device)?;
        let mut slots = Vec::with_capacity(tensors.len());
        for (role, t) in tensors {
            let slot = to_slot(role, &t)?;
            self.params.insert(
                format!("{}.{}", info.name, role.suffix()),
                info.id,
                role,
                slot.clone(),
                t.dims().to_vec(),
            )?;
            slots.push((role, slot));
        }
        self.layers.push(info);
        Ok(slots)
    }

    /// Creates a convolution named `name` (PyTorch module path) whose input has spatial size
    /// `input_hw` at the architecture's nominal input size (used for the MAC count).
    pub fn conv2d(
        &mut self,
        name: &str,
        spec: Conv2dSpec,
        role: LayerRole,
        input_hw: (usize, usize),
    ) -> Result<Conv2d> {
        let segment = self.current_segment(name)?;
        if spec.kernel == 0 || spec.stride == 0 || spec.in_channels == 0 || spec.out_channels == 0 {
            return Err(ModelError::InvalidConfig(format!(
                "convolution `{name}` has a zero size: {spec:?}"
            )));
        }
        let out = |s| {
            conv_out(s, spec.kernel, spec.stride, spec.padding).ok_or_else(|| {
                ModelError::InvalidConfig(format!(
                    "convolution `{name}`: kernel {} does not fit input {input_hw:?}",
                    spec.kernel
                ))
            })
        };
        let output_hw = (out(input_hw.0)?, out(input_hw.1)?);
        let k2 = spec.kernel * spec.kernel;
        let weights = spec.out_channels * spec.in_channels * k2;
        let info = LayerInfo {
            id: LayerId(self.layers.len()),
            name: name.to_string(),
            kind: LayerKind::Conv2d {
                kernel: spec.kernel,
                stride: spec.stride,
                padding: spec.padding,
            },
            role,
            in_channels: spec.in_channels,
            out_channels: spec.out_channels,
            bias: spec.bias,
            input_hw,
            output_hw,
            params: weights + if spec.bias { spec.out_channels } else { 0 },
            macs: (weights as u64) * (output_hw.0 * output_hw.1) as u64,
            segment,
        };
        let id = info.id;
        let slots = self.register(info)?;
        Ok(Conv2d {
            id,
            name: name.into(),
            weight: var_of(&slots, TensorRole::Weight)?,
            bias: var_of(&slots, TensorRole::Bias).ok(),
            kernel: spec.kernel,
            stride: spec.stride,
            padding: spec.padding,
        })
    }

    /// Creates a batch norm over `channels` channels of spatial size `hw`.
    pub fn batch_norm2d(
        &mut self,
        name: &str,
        channels: usize,
        role: LayerRole,
        hw: (usize, usize),
    ) -> Result<BatchNorm2d> {
        let segment = self.current_segment(name)?;
        let info = LayerInfo {
            id: LayerId(self.layers.len()),
            name: name.to_string(),
            kind: LayerKind::BatchNorm2d {
                eps: BN_EPS,
                momentum: BN_MOMENTUM,
            },
            role,
            in_channels: channels,
            out_channels: channels,
            bias: false,
            input_hw: hw,
            output_hw: hw,
            params: 2 * channels,
            macs: 0,
            segment,
        };
        let id = info.id;
        let slots = self.register(info)?;
        let counter = slots
            .iter()
            .find_map(|(r, s)| match (r, s) {
                (TensorRole::NumBatchesTracked, Slot::Counter(c)) => Some(c.clone()),
                _ => None,
            })
            .ok_or_else(|| ModelError::InvalidConfig("batch norm without counter".into()))?;
        Ok(BatchNorm2d {
            id,
            name: name.into(),
            weight: var_of(&slots, TensorRole::BnWeight)?,
            bias: var_of(&slots, TensorRole::BnBias)?,
            running_mean: var_of(&slots, TensorRole::RunningMean)?,
            running_var: var_of(&slots, TensorRole::RunningVar)?,
            num_batches_tracked: counter,
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
        })
    }

    /// Creates a fully connected layer `in_features → out_features`.
    pub fn linear(
        &mut self,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        role: LayerRole,
    ) -> Result<Linear> {
        let segment = self.current_segment(name)?;
        if in_features == 0 || out_features == 0 {
            return Err(ModelError::InvalidConfig(format!(
                "linear layer `{name}` has a zero size"
            )));
        }
        let weights = in_features * out_features;
        let info = LayerInfo {
            id: LayerId(self.layers.len()),
            name: name.to_string(),
            kind: LayerKind::Linear,
            role,
            in_channels: in_features,
            out_channels: out_features,
            bias,
            input_hw: (1, 1),
            output_hw: (1, 1),
            params: weights + if bias { out_features } else { 0 },
            macs: weights as u64,
            segment,
        };
        let id = info.id;
        let slots = self.register(info)?;
        Ok(Linear {
            id,
            name: name.into(),
            weight: var_of(&slots, TensorRole::Weight)?,
            bias: var_of(&slots, TensorRole::Bias).ok(),
        })
    }

    /// The layer recorded under `id`, e.g. to read a convolution's output size.
    pub fn info(&self, id: LayerId) -> Option<&LayerInfo> {
        self.layers.get(id.0)
    }

    /// Spatial output size of a layer created earlier (at the nominal input size).
    pub fn output_hw(&self, id: LayerId) -> Result<(usize, usize)> {
        self.info(id)
            .map(|l| l.output_hw)
            .ok_or_else(|| ModelError::InvalidConfig(format!("no layer {id} yet")))
    }

    /// Ends building.
    pub fn finish(self) -> Result<NetworkParts> {
        if self.segments.is_empty() {
            return Err(ModelError::InvalidConfig("network has no segments".into()));
        }
        Ok(NetworkParts {
            inventory: Inventory::new(self.layers),
            params: self.params,
            segments: self.segments,
        })
    }
}

/// A layer's name is its PyTorch module path (`layer1.0.conv1`), restricted by layerzero to
/// dot-separated parts of ASCII letters, digits and `_` (PyTorch itself forbids only dots
/// inside a part and empty names): the names go into CSV files and are matched by `--layers`
/// patterns, where those characters are safe. The tensor names add `.weight`, `.bias`, …, so
/// a name must not end in one of those itself (`conv1.weight` would store
/// `conv1.weight.weight`, which no PyTorch state dict has).
fn check_layer_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(ModelError::InvalidConfig(format!(
            "layer name `{name}`: expected dot-separated parts of ASCII letters, digits and \
             `_`, as in the PyTorch module path `layer1.0.conv1`, found {why}"
        )))
    };
    if name.is_empty() {
        return bad("an empty name");
    }
    for part in name.split('.') {
        if part.is_empty() {
            return bad("an empty part");
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return bad(&format!("the character `{c}`"));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let suffixes = [
        TensorRole::Weight,
        TensorRole::Bias,
        TensorRole::RunningMean,
        TensorRole::RunningVar,
        TensorRole::NumBatchesTracked,
    ]
    .map(TensorRole::suffix);
    if suffixes.contains(&last) {
        return bad(&format!(
            "a tensor's name: the layer's tensors are named `{name}.weight` and so on"
        ));
    }
    Ok(())
}

fn to_slot(role: TensorRole, t: &Tensor) -> Result<Slot> {
    Ok(match role {
        TensorRole::NumBatchesTracked => Slot::Counter(Arc::new(AtomicI64::new(t.to_scalar()?))),
        _ => Slot::Var(Var::from_tensor(t)?),
    })
}

fn var_of(slots: &[(TensorRole, Slot)], role: TensorRole) -> Result<Var> {
    slots
        .iter()
        .find_map(|(r, s)| match s {
            Slot::Var(v) if *r == role => Some(v.clone()),
            _ => None,
        })
        .ok_or_else(|| ModelError::InvalidConfig(format!("layer has no {role:?} tensor")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::BlockId;

    fn builder() -> NetworkBuilder {
        let mut b = NetworkBuilder::new(Init::Seeded(1), &Device::Cpu);
        b.begin_segment("layer1.0", SegmentKind::ResidualBlock(BlockId::new(1, 0)));
        b
    }

    fn conv(b: &mut NetworkBuilder, name: &str, role: LayerRole) -> Result<Conv2d> {
        b.conv2d(name, Conv2dSpec::new(4, 4, 3, 1), role, (8, 8))
    }

    #[test]
    fn layer_names_must_be_pytorch_module_paths() {
        let role = LayerRole::ResidualBranch {
            block: BlockId::new(1, 0),
            position: 1,
        };
        for (name, found) in [
            ("", "an empty name"),
            ("layer1..conv1", "an empty part"),
            (".conv1", "an empty part"),
            ("layer1/conv1", "the character `/`"),
            ("layer1.0.conv 1", "the character ` `"),
            ("layer1.0.conv1.weight", "a tensor's name"),
            ("bn.running_var", "a tensor's name"),
        ] {
            let err = conv(&mut builder(), name, role).unwrap_err().to_string();
            assert!(
                err.contains(&format!("layer name `{name}`")) && err.contains(found),
                "{name}: {err}"
            );
        }
        for name in ["layer1.0.conv1", "features.0", "stem_conv", "Block_2.a"] {
            conv(&mut builder(), name, role).unwrap();
        }
    }

    #[test]
    fn a_role_of_another_block_than_its_segment_is_refused() {
        let other = LayerRole::ResidualBranch {
            block: BlockId::new(2, 1),
            position: 1,
        };
        let err = conv(&mut builder(), "layer1.0.conv1", other)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`layer1.0.conv1`") && err.contains("expected the role's block"),
            "{err}"
        );
        // Outside a block's segment any role goes (a user's `Other` segments).
        let mut b = NetworkBuilder::new(Init::Seeded(1), &Device::Cpu);
        b.begin_segment("mixed", SegmentKind::Other);
        conv(&mut b, "mixed.conv", other).unwrap();
    }
}
