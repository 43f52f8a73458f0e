//! The named tensors of a network (PyTorch's `state_dict()` entries), shared with its layers.
//!
//! Layers hold clones of the same [`Var`]s (a `Var` is a shared handle), so writing a value
//! through the store (loading a checkpoint, an optimiser step, re-randomising a layer) is seen
//! by the next forward without rebuilding anything.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{ModelError, Result};
use crate::inventory::LayerId;

/// What a named tensor is, so that optimisers and checkpoints need no name matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TensorRole {
    /// Convolution kernel or linear weight matrix (`.weight`): trainable, usually weight-decayed.
    Weight,
    /// Convolution or linear bias (`.bias`): trainable, usually not weight-decayed.
    Bias,
    /// Batch-norm scale γ (`.weight`): trainable, usually not weight-decayed.
    BnWeight,
    /// Batch-norm shift β (`.bias`): trainable, usually not weight-decayed.
    BnBias,
    /// Batch-norm running mean (`.running_mean`): a buffer, updated by training-mode forwards.
    RunningMean,
    /// Batch-norm running variance (`.running_var`): a buffer, updated by training-mode forwards.
    RunningVar,
    /// Batch-norm update counter (`.num_batches_tracked`, int64 scalar): a buffer.
    NumBatchesTracked,
}

impl TensorRole {
    /// Whether an optimiser should update it.
    pub fn is_trainable(self) -> bool {
        matches!(
            self,
            TensorRole::Weight | TensorRole::Bias | TensorRole::BnWeight | TensorRole::BnBias
        )
    }

    /// Whether weight decay conventionally applies (kernels and weight matrices only; biases
    /// and batch-norm affine parameters are excluded, as in most CIFAR training recipes).
    pub fn is_decayed(self) -> bool {
        matches!(self, TensorRole::Weight)
    }

    /// Suffix of the PyTorch tensor name (`weight`, `running_mean`, …).
    pub fn suffix(self) -> &'static str {
        match self {
            TensorRole::Weight | TensorRole::BnWeight => "weight",
            TensorRole::Bias | TensorRole::BnBias => "bias",
            TensorRole::RunningMean => "running_mean",
            TensorRole::RunningVar => "running_var",
            TensorRole::NumBatchesTracked => "num_batches_tracked",
        }
    }

    /// Element type on disk and in memory: `I64` for the batch counter, `F32` for everything else.
    pub fn dtype(self) -> DType {
        match self {
            TensorRole::NumBatchesTracked => DType::I64,
            _ => DType::F32,
        }
    }
}

/// Storage of one named tensor.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    /// A float tensor that can be written in place.
    Var(Var),
    /// The batch counter: an integer kept outside candle so that incrementing it is cheap.
    Counter(Arc<AtomicI64>),
}

/// One named tensor of a network.
#[derive(Debug, Clone)]
pub struct ParamEntry {
    name: String,
    layer: LayerId,
    role: TensorRole,
    shape: Vec<usize>,
    slot: Slot,
}

impl ParamEntry {
    /// Full PyTorch name, e.g. `layer1.0.bn1.running_var`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layer it belongs to.
    pub fn layer(&self) -> LayerId {
        self.layer
    }

    /// What it is.
    pub fn role(&self) -> TensorRole {
        self.role
    }

    /// Its shape (`[]` for the batch counter).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The variable behind a float tensor (`None` for the batch counter). Writing it with
    /// [`Var::set`] changes the network in place.
    pub fn var(&self) -> Option<&Var> {
        match &self.slot {
            Slot::Var(v) => Some(v),
            Slot::Counter(_) => None,
        }
    }

    /// A snapshot of the current value, detached from the graph and not sharing storage with
    /// the network (so later training steps do not change it).
    pub fn value(&self, device: &Device) -> Result<Tensor> {
        match &self.slot {
            Slot::Var(v) => Ok(v.as_detached_tensor().copy()?),
            Slot::Counter(c) => Ok(Tensor::new(c.load(Ordering::Relaxed), device)?),
        }
    }

    /// Overwrites the value. The tensor must have this entry's shape and dtype.
    pub fn set(&self, value: &Tensor) -> Result<()> {
        if value.dims() != self.shape.as_slice() || value.dtype() != self.role.dtype() {
            return Err(ModelError::BadInput(format!(
                "cannot set `{}` ({:?} {:?}) from a {:?} {:?} tensor",
                self.name,
                self.role.dtype(),
                self.shape,
                value.dtype(),
                value.dims()
            )));
        }
        match &self.slot {
            Slot::Var(v) => {
                let value = value.to_device(v.device())?;
                v.set(&value)?;
            }
            Slot::Counter(c) => c.store(value.to_scalar::<i64>()?, Ordering::Relaxed),
        }
        Ok(())
    }
}

/// All named tensors of a network, in registration (forward) order.
#[derive(Debug, Clone)]
pub struct ParamStore {
    entries: Vec<ParamEntry>,
    index: HashMap<String, usize>,
    device: Device,
}

impl ParamStore {
    pub(crate) fn new(device: Device) -> Self {
        ParamStore {
            entries: Vec::new(),
            index: HashMap::new(),
            device,
        }
    }

    pub(crate) fn insert(
        &mut self,
        name: String,
        layer: LayerId,
        role: TensorRole,
        slot: Slot,
        shape: Vec<usize>,
    ) -> Result<()> {
        if self.index.contains_key(&name) {
            return Err(ModelError::InvalidConfig(format!(
                "tensor name `{name}` registered twice"
            )));
        }
        self.index.insert(name.clone(), self.entries.len());
        self.entries.push(ParamEntry {
            name,
            layer,
            role,
            shape,
            slot,
        });
        Ok(())
    }

    /// Device the tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// All entries, in forward order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// The entry with that full name (`fc.weight`).
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.index.get(name).and_then(|&i| self.entries.get(i))
    }

    /// Entries belonging to one layer.
    pub fn layer_entries(&self, layer: LayerId) -> impl Iterator<Item = &ParamEntry> {
        self.entries.iter().filter(move |e| e.layer == layer)
    }

    /// Trainable variables (kernels, weights, biases, batch-norm γ and β), for an optimiser.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.filtered_vars(|r| r.is_trainable())
    }

    /// Trainable variables that weight decay conventionally applies to (kernels and weights).
    pub fn decayed_vars(&self) -> Vec<Var> {
        self.filtered_vars(|r| r.is_trainable() && r.is_decayed())
    }

    /// Trainable variables conventionally excluded from weight decay (biases, batch-norm γ, β).
    pub fn undecayed_vars(&self) -> Vec<Var> {
        self.filtered_vars(|r| r.is_trainable() && !r.is_decayed())
    }

    fn filtered_vars(&self, keep: impl Fn(TensorRole) -> bool) -> Vec<Var> {
        self.entries
            .iter()
            .filter(|e| keep(e.role))
            .filter_map(|e| e.var().cloned())
            .collect()
    }

    /// Number of trainable scalars.
    pub fn trainable_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.role.is_trainable())
            .map(|e| e.shape.iter().product::<usize>())
            .sum()
    }

    /// Snapshot of every named tensor, as PyTorch's `state_dict()`: float tensors as F32, the
    /// batch counters as I64 scalars. The tensors are copies, unaffected by later training.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        self.entries
            .iter()
            .map(|e| Ok((e.name.clone(), e.value(&self.device)?)))
            .collect()
    }
}
