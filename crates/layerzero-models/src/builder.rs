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
