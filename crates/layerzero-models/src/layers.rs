//! Layers as small structs (in the style of candle-nn), each knowing its [`LayerId`] so that it
//! applies the interventions meant for it. Architectures, built-in or user-defined, compose
//! these and keep every layer as a named field; nothing is hidden in closures.

use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use candle_core::{DType, Tensor, Var};

use crate::error::{ModelError, Result};
use crate::intervention::{ForwardCtx, ForwardMode, WeightOverride};
use crate::inventory::LayerId;
use crate::ops;

/// The tensor to compute with: in eval mode a detached view (no autograd graph is recorded, so
/// intermediate activations are freed as soon as they are used), in train mode the variable.
fn use_var(v: &Var, mode: ForwardMode) -> Tensor {
    match mode {
        ForwardMode::Eval => v.as_detached_tensor(),
        ForwardMode::Train => v.as_tensor().clone(),
    }
}

/// Checks what every layer needs of its input, naming the layer (`name`) when it is not so: F32,
/// rank `rank`, and `expected` entries along dimension 1 (channels, or a linear layer's
/// features). Caught here, the mistake (usually a user architecture's channel counts that do
/// not chain) is named; caught by candle, it is a broadcast error naming no layer.
fn check_input(name: &str, x: &Tensor, rank: usize, expected: usize, what: &str) -> Result<()> {
    let bad = |found: String| {
        Err(ModelError::BadInput(format!(
            "layer `{name}`: expected {found}, found {:?} {:?}",
            x.dtype(),
            x.dims()
        )))
    };
    if x.dtype() != DType::F32 {
        return bad(format!("an F32 input, rank {rank}, {expected} {what}"));
    }
    if x.rank() != rank || x.dim(1)? != expected {
        return bad(format!(
            "an input of rank {rank} with {expected} {what} (dimension 1)"
        ));
    }
    Ok(())
}

/// 2-D convolution with a square kernel (PyTorch `Conv2d`, groups 1, dilation 1).
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub(crate) id: LayerId,
    /// The PyTorch module path, for error messages.
    pub(crate) name: Arc<str>,
    pub(crate) weight: Var,
    pub(crate) bias: Option<Var>,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) padding: usize,
}

impl Conv2d {
    /// The layer's id in the inventory.
    pub fn id(&self) -> LayerId {
        self.id
    }

    /// The layer's name (its PyTorch module path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel variable, `[out, in, k, k]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// Output height and width for input `x`, or a `BadInput` error. Checked here rather than
    /// left to the kernels, whose size arithmetic can underflow on inputs smaller than the kernel.
    /// The input is checked first ([`check_input`]): every forward path calls this.
    pub(crate) fn output_hw(&self, x: &Tensor) -> Result<(usize, usize)> {
        check_input(&self.name, x, 4, self.weight.dim(1)?, "channels")?;
        let (_, _, h, w) = x.dims4()?;
        let out = |s| {
            ops::conv_out(s, self.kernel, self.stride, self.padding).ok_or_else(|| {
                ModelError::BadInput(format!(
                    "layer `{}`: input {:?} too small for a {}x{} kernel with padding {}",
                    self.name,
                    x.dims(),
                    self.kernel,
                    self.kernel,
                    self.padding
                ))
            })
        };
        Ok((out(h)?, out(w)?))
    }

    /// Applies the convolution, honouring a [`WeightOverride`] for this layer.
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor> {
        // First: it checks the input and names the layer when it is wrong.
        let out_hw = self.output_hw(x)?;
        let n = x.dims4()?.0;
        let stored_bias = self.bias.as_ref().map(|b| use_var(b, ctx.mode));
        let (y, bias) = match ctx.interventions.weight_override(self.id) {
            None => (
                ops::conv2d(
                    x,
                    &use_var(&self.weight, ctx.mode),
                    self.stride,
                    self.padding,
                )?,
                stored_bias,
            ),
            Some(WeightOverride::Zero) => {
                // A zero kernel gives a zero output: build it instead of convolving.
                let shape = [n, self.weight.dim(0)?, out_hw.0, out_hw.1];
                (ops::zeros_like_shape(x, &shape)?, stored_bias)
            }
            Some(WeightOverride::Replace { weight, bias }) => (
                ops::conv2d(x, weight, self.stride, self.padding)?,
                bias.clone().or(stored_bias),
            ),
        };
        match bias {
            Some(b) => ops::add_channel_bias(&y, &b),
            None => Ok(y),
        }
    }
}

/// Fully connected layer (PyTorch `Linear`) on `(N, in)` inputs.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) id: LayerId,
    /// The PyTorch module path, for error messages.
    pub(crate) name: Arc<str>,
    pub(crate) weight: Var,
    pub(crate) bias: Option<Var>,
}

impl Linear {
    /// The layer's id in the inventory.
    pub fn id(&self) -> LayerId {
        self.id
    }

    /// The layer's name (its PyTorch module path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weight variable, `[out, in]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// Applies the layer, honouring a [`WeightOverride`] for this layer.
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor> {
        check_input(&self.name, x, 2, self.weight.dim(1)?, "features")?;
        let stored_bias = self.bias.as_ref().map(|b| use_var(b, ctx.mode));
        match ctx.interventions.weight_override(self.id) {
            None => ops::linear(x, &use_var(&self.weight, ctx.mode), stored_bias.as_ref()),
            Some(WeightOverride::Zero) => {
                let n = x.dim(0)?;
                let y = ops::zeros_like_shape(x, &[n, self.weight.dim(0)?])?;
                match stored_bias {
                    Some(b) => Ok(y.broadcast_add(&b)?),
                    None => Ok(y),
                }
            }
            Some(WeightOverride::Replace { weight, bias }) => {
                ops::linear(x, weight, bias.as_ref().or(stored_bias.as_ref()))
            }
        }
    }
}

/// 2-D batch normalisation (PyTorch `BatchNorm2d`: affine, running statistics, eps 1e-5,
/// momentum 0.1).
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    pub(crate) id: LayerId,
    /// The PyTorch module path, for error messages.
    pub(crate) name: Arc<str>,
    pub(crate) weight: Var,
    pub(crate) bias: Var,
    pub(crate) running_mean: Var,
    pub(crate) running_var: Var,
    pub(crate) num_batches_tracked: Arc<AtomicI64>,
    pub(crate) eps: f64,
    pub(crate) momentum: f64,
}

impl BatchNorm2d {
    /// The layer's id in the inventory.
    pub fn id(&self) -> LayerId {
        self.id
    }

    /// The layer's name (its PyTorch module path).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        check_input(&self.name, x, 4, self.weight.dim(0)?, "channels")
    }

    /// Batch norm without activation.
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor> {
        self.apply(x, ctx, false)
    }

    /// Batch norm followed by ReLU (one call, so a fused kernel can do both).
    pub fn forward_relu(&self, x: &Tensor, ctx: &ForwardCtx<'_>) -> Result<Tensor> {
        self.apply(x, ctx, true)
    }

    pub(crate) fn apply(&self, x: &Tensor, ctx: &ForwardCtx<'_>, relu: bool) -> Result<Tensor> {
        self.check_input(x)?;
        match ctx.mode {
            ForwardMode::Eval => ops::batch_norm_eval(
                x,
                &self.running_mean.as_detached_tensor(),
                &self.running_var.as_detached_tensor(),
                &self.weight.as_detached_tensor(),
                &self.bias.as_detached_tensor(),
                self.eps,
                relu,
            ),
            ForwardMode::Train => {
                if let Some(y) = self.train_in_place(x, None, relu)? {
                    return Ok(y);
                }
                let (y, stats) =
                    ops::batch_norm_train(x, &self.weight, &self.bias, self.eps, relu)?;
                self.record_running_stats(stats)?;
                Ok(y)
            }
        }
    }

    /// Training mode only: `relu(bn(x) + residual)` as one fused op, updating the running
    /// statistics like [`BatchNorm2d::forward`].
    pub(crate) fn train_add_relu(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        if let Some(y) = self.train_in_place(x, Some(residual), true)? {
            return Ok(y);
        }
        let (y, stats) =
            ops::batch_norm_add_relu_train(x, &self.weight, &self.bias, residual, self.eps)?;
        self.record_running_stats(stats)?;
        Ok(y)
    }

    /// On a GPU (cuDNN build): batch norm whose kernel also updates the running statistics in
    /// place, a dozen fewer kernels per call than returning the batch statistics and averaging
    /// them here. `None` where the kernels have no such path.
    fn train_in_place(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> Result<Option<Tensor>> {
        if DEFERRED_RUNNING_STATS.with(|d| d.borrow().is_some()) {
            // Deferred updates need the batch statistics themselves.
            return Ok(None);
        }
        let y = ops::batch_norm_train_in_place(
            x,
            &self.weight,
            &self.bias,
            residual,
            self.eps,
            relu,
            self.running_mean.as_tensor(),
            self.running_var.as_tensor(),
            self.momentum,
        )?;
        if y.is_some() {
            self.num_batches_tracked.fetch_add(1, Ordering::Relaxed);
        }
        Ok(y)
    }

    /// Updates the running statistics now, or, inside [`defer_running_stats`] on this
    /// thread, records the update for later.
    fn record_running_stats(&self, stats: ops::BatchStats) -> Result<()> {
        let stats = DEFERRED_RUNNING_STATS.with(|d| match d.borrow_mut().as_mut() {
            Some(log) => {
                log.push((self.clone(), stats));
                None
            }
            None => Some(stats),
        });
        match stats {
            Some(stats) => self.update_running_stats(stats),
            None => Ok(()),
        }
    }

    fn update_running_stats(&self, stats: ops::BatchStats) -> Result<()> {
        // PyTorch: running = (1 − momentum) · running + momentum · batch statistic, with the
        // unbiased batch variance.
        let m = self.momentum;
        let mean = ((self.running_mean.as_detached_tensor() * (1.0 - m))? + (stats.mean * m)?)?;
        let var =
            ((self.running_var.as_detached_tensor() * (1.0 - m))? + (stats.var_unbiased * m)?)?;
        self.running_mean.set(&mean)?;
        self.running_var.set(&var)?;
        self.num_batches_tracked.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Number of training-mode forwards this layer has seen (PyTorch `num_batches_tracked`).
    pub fn num_batches_tracked(&self) -> i64 {
        self.num_batches_tracked.load(Ordering::Relaxed)
    }
}

thread_local! {
    /// The log of [`defer_running_stats`] running on this thread, if any.
    static DEFERRED_RUNNING_STATS: RefCell<Option<Vec<(BatchNorm2d, ops::BatchStats)>>> =
        const { RefCell::new(None) };
}

/// Runs `f` (typically a training-mode forward) with the running-statistic updates of every
/// batch-norm layer it trains on this thread recorded instead of applied, and returns them with
/// `f`'s result.
///
/// This is what lets several training-mode forwards of one network run at the same time (the
/// trainer's ghost batches, one per thread): each records its own updates, and the caller
/// applies them in a fixed order with [`DeferredRunningStats::apply`], so the running
/// statistics come out as if the forwards had run one after another, whatever the threads did.
/// The record is per thread, so only the forwards `f` runs on the calling thread are covered.
/// Eval-mode forwards record nothing.
pub fn defer_running_stats<R>(f: impl FnOnce() -> R) -> (R, DeferredRunningStats) {
    type Log = Option<Vec<(BatchNorm2d, ops::BatchStats)>>;
    /// Puts the enclosing log back, also when `f` panics.
    struct Restore(Option<Log>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                DEFERRED_RUNNING_STATS.with(|d| *d.borrow_mut() = outer);
            }
        }
    }
    let mut restore = Restore(Some(
        DEFERRED_RUNNING_STATS.with(|d| d.borrow_mut().replace(Vec::new())),
    ));
    let result = f();
    let outer = restore.0.take().unwrap_or_default();
    let updates = DEFERRED_RUNNING_STATS.with(|d| std::mem::replace(&mut *d.borrow_mut(), outer));
    (
        result,
        DeferredRunningStats {
            updates: updates.unwrap_or_default(),
        },
    )
}

/// Running-statistic updates recorded by [`defer_running_stats`], in the order the layers ran.
#[must_use = "the running statistics change only when the updates are applied"]
#[derive(Debug, Default)]
pub struct DeferredRunningStats {
    updates: Vec<(BatchNorm2d, ops::BatchStats)>,
}

impl DeferredRunningStats {
    /// Number of recorded updates (one per batch-norm layer per training-mode forward).
    pub fn len(&self) -> usize {
        self.updates.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    /// Applies the updates in the order they were recorded, exactly as the forward would have
    /// (PyTorch's momentum rule, `num_batches_tracked` counted).
    pub fn apply(self) -> Result<()> {
        for (bn, stats) in self.updates {
            bn.update_running_stats(stats)?;
        }
        Ok(())
    }
}

/// `bn(conv(x))`, plus `residual` if given, then ReLU if `relu`: the conv–BN unit of the CIFAR
/// nets, honouring interventions on the convolution.
///
/// In eval mode the batch norm is folded into the convolution (`w·γ/σ`, `β − μ·γ/σ`) and the
/// unit runs as one fused kernel (bias, residual add and ReLU applied before the store), which
/// is where evaluation and ablation sweeps spend their time. In train mode the convolution runs
/// as [`Conv2d::forward`], then batch norm as [`BatchNorm2d::forward`], except at the end of a
/// residual block (`residual` given and `relu`), where batch norm, the add and the ReLU run as
/// one fused op with one backward pass.
pub fn conv_bn(
    conv: &Conv2d,
    bn: &BatchNorm2d,
    x: &Tensor,
    ctx: &ForwardCtx<'_>,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    if ctx.mode == ForwardMode::Train {
        let y = conv.forward(x, ctx)?;
        return match residual {
            Some(r) if relu => bn.train_add_relu(&y, r),
            Some(r) => {
                let y = (bn.forward(&y, ctx)? + r)?;
                if relu {
                    ops::relu(&y)
                } else {
                    Ok(y)
                }
            }
            None => bn.apply(&y, ctx, relu),
        };
    }
    let (ho, wo) = conv.output_hw(x)?;
    let (produced, normalised) = (conv.weight.dim(0)?, bn.weight.dim(0)?);
    if produced != normalised {
        return Err(ModelError::BadInput(format!(
            "layer `{}` normalises {normalised} channels, but `{}` before it gives {produced}",
            bn.name, conv.name
        )));
    }
    let stored_bias = conv.bias.as_ref().map(|b| b.as_detached_tensor());
    let (weight, bias, zero_kernel) = match ctx.interventions.weight_override(conv.id) {
        None => (conv.weight.as_detached_tensor(), stored_bias, false),
        // Folded only for its bias, which does not depend on the kernel.
        Some(WeightOverride::Zero) => (conv.weight.as_detached_tensor(), stored_bias, true),
        Some(WeightOverride::Replace { weight, bias }) => {
            (weight.clone(), bias.clone().or(stored_bias), false)
        }
    };
    let (w, mut b) = layerzero_kernels::fold_batch_norm(
        &weight,
        &bn.weight.as_detached_tensor(),
        &bn.bias.as_detached_tensor(),
        &bn.running_mean.as_detached_tensor(),
        &bn.running_var.as_detached_tensor(),
        bn.eps,
    )?;
    if let Some(conv_bias) = bias {
        // bn(conv(x) + c) = fold(conv)(x) + c·γ/σ.
        let scale = bn
            .weight
            .as_detached_tensor()
            .div(&(bn.running_var.as_detached_tensor() + bn.eps)?.sqrt()?)?;
        b = (b + conv_bias.mul(&scale)?)?;
    }
    if zero_kernel {
        // A zero kernel makes the conv output its bias alone, so batch norm gives one value per
        // channel: skip the convolution (the zero-kernel sweep's ablated layer costs nothing).
        // Same numbers as convolving with zeros: the sums are exact zeros plus the bias.
        let cout = b.dim(0)?;
        let y = b
            .reshape((1, cout, 1, 1))?
            .broadcast_as((x.dim(0)?, cout, ho, wo))?;
        let y = match residual {
            Some(r) => y.add(r)?,
            None => y.contiguous()?,
        };
        return if relu { ops::relu(&y) } else { Ok(y) };
    }
    Ok(layerzero_kernels::conv2d_bias_act(
        x,
        &w,
        &b,
        conv.stride,
        conv.padding,
        residual,
        relu,
    )?)
}

/// ReLU.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    ops::relu(x)
}

/// Global average pooling `(N, C, H, W) → (N, C)`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    ops::global_avg_pool(x)
}

/// Max pooling with a square window and equal stride.
pub fn max_pool2d(x: &Tensor, kernel: usize) -> Result<Tensor> {
    ops::max_pool2d(x, kernel)
}

/// He et al.'s option-A shortcut: keep every `stride`-th pixel and add `pad` zero channels on
/// each side (`F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))`).
pub fn shortcut_pad(x: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    ops::shortcut_pad(x, stride, pad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{Conv2dSpec, NetworkBuilder};
    use crate::init::Init;
    use crate::intervention::Interventions;
    use crate::inventory::{LayerRole, SegmentKind};
    use candle_core::Device;

    /// A user architecture whose channel counts do not chain, or an input of the wrong type:
    /// the error names the layer and says what it expected and found, in both modes and on the
    /// fused eval path. Before, candle's broadcast error named no layer.
    #[test]
    fn input_mistakes_name_the_layer() {
        let mut b = NetworkBuilder::new(Init::Seeded(1), &Device::Cpu);
        b.begin_segment("stem", SegmentKind::Other);
        let conv = b
            .conv2d(
                "stem.conv",
                Conv2dSpec::new(3, 8, 3, 1),
                LayerRole::Other,
                (8, 8),
            )
            .unwrap();
        let bn = b
            .batch_norm2d("stem.bn", 16, LayerRole::Other, (8, 8))
            .unwrap();
        let fc = b.linear("head.fc", 8, 10, true, LayerRole::Other).unwrap();
        let x = Tensor::ones((2, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let none = Interventions::none();
        // The error of `result` names `layer` and contains every one of `texts`.
        let names = |result: Result<Tensor>, layer: &str, texts: &[&str]| {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(&format!("layer `{layer}`")), "{err}");
            for t in texts {
                assert!(err.contains(t), "{t} missing: {err}");
            }
        };
        let flat = Tensor::ones((2, 16), DType::F32, &Device::Cpu).unwrap();
        for mode in [ForwardMode::Eval, ForwardMode::Train] {
            let ctx = ForwardCtx::new(mode, none);
            let y = conv.forward(&x, &ctx).unwrap();
            names(
                bn.forward(&y, &ctx),
                "stem.bn",
                &["16 channels", "[2, 8, 8, 8]"],
            );
            names(conv_bn(&conv, &bn, &x, &ctx, None, true), "stem.bn", &[]);
            let f64_input = x.to_dtype(DType::F64).unwrap();
            names(conv.forward(&f64_input, &ctx), "stem.conv", &["F32", "F64"]);
            let two_channels = x.narrow(1, 0, 2).unwrap();
            names(
                conv.forward(&two_channels, &ctx),
                "stem.conv",
                &["3 channels"],
            );
            names(
                conv.forward(&x.get(0).unwrap(), &ctx),
                "stem.conv",
                &["rank 4"],
            );
            names(bn.forward(&flat, &ctx), "stem.bn", &["rank 4"]);
            names(fc.forward(&flat, &ctx), "head.fc", &["8 features"]);
        }
    }
}
