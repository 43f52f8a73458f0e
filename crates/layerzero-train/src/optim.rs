//! SGD with momentum, optional Nesterov, and decoupled-from-norm weight decay, with PyTorch's
//! update rule so that hyper-parameters carry over:
//!
//! ```text
//! g ← ∇w + λ·w            (λ = 0 for parameters excluded from decay)
//! b ← g                    on the first step, else  b ← μ·b + g
//! d ← g + μ·b  (Nesterov)  or  d ← b
//! w ← w − lr·d
//! ```

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// SGD hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Momentum μ (0.9 in He et al.).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay λ (5e-4 by default).
    pub weight_decay: f64,
    /// Skip weight decay on batch-norm parameters and biases.
    pub no_decay_on_norm_and_bias: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            no_decay_on_norm_and_bias: false,
        }
    }
}

/// A trainable parameter: its `state_dict()` name, the variable, and whether it is a batch-norm
/// parameter or a bias (for weight-decay exclusion).
#[derive(Debug, Clone)]
pub struct Param {
    /// PyTorch name, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    /// The variable updated in place.
    pub var: Var,
    /// Batch-norm weight/bias or a layer's bias.
    pub norm_or_bias: bool,
}

/// The optimiser: parameters plus momentum buffers.
#[derive(Debug)]
pub struct Sgd {
    config: SgdConfig,
    params: Vec<Param>,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// An optimiser over `params` with empty momentum buffers.
    pub fn new(params: Vec<Param>, config: SgdConfig) -> Self {
        let buffers = vec![None; params.len()];
        Sgd {
            config,
            params,
            buffers,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SgdConfig {
        &self.config
    }

    /// The parameters, in update order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// One update with learning rate `lr` from the gradients of a backward pass. A parameter
    /// without a gradient (unused in the forward) is left untouched.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let c = &self.config;
        // On a GPU (cuDNN build), parameters are updated in place by the kernels crate, all in
        // one call (`sgd_momentum_step_many`): two kernels each instead of seven candle ops and
        // their allocations, or one multi-tensor launch for all. Collected here, run below.
        let mut in_place: Vec<(Tensor, Tensor, Tensor, f64)> = Vec::new();
        for (p, buf) in self.params.iter().zip(self.buffers.iter_mut()) {
            let Some(grad) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let w = p.var.as_tensor();
            let decay = if c.no_decay_on_norm_and_bias && p.norm_or_bias {
                0.0
            } else {
                c.weight_decay
            };
            if c.momentum != 0.0
                && !c.nesterov
                && layerzero_kernels::in_place_update_handles(&[w, grad])
            {
                let b = match buf {
                    Some(b) => b,
                    None => buf.insert(w.zeros_like()?),
                };
                // Clones share storage: the kernels' in-place writes land in `w` and `buf`.
                in_place.push((w.clone(), grad.clone(), b.clone(), decay));
                continue;
            }
            // Detached: the update must not record an autograd graph, or every step's
            // momentum buffer would keep all earlier gradients alive through its history.
            let w = w.detach();
            let grad = grad.detach();
            let g = if decay != 0.0 {
                (&grad + (&w * decay)?)?
            } else {
                grad
            };
            let d = if c.momentum != 0.0 {
                let b = match buf.take() {
                    None => g.clone(),
                    Some(b) => ((b * c.momentum)? + &g)?.detach(),
                };
                let d = if c.nesterov {
                    (&g + (&b * c.momentum)?)?
                } else {
                    b.clone()
                };
                *buf = Some(b);
                d
            } else {
                g
            };
            p.var.set(&(&w - (d * lr)?)?)?;
        }
        if !in_place.is_empty() {
            let steps: Vec<_> = in_place
                .iter()
                .map(|(w, grad, buf, decay)| layerzero_kernels::SgdParamStep {
                    weight: w,
                    grad,
                    momentum_buffer: buf,
                    weight_decay: *decay,
                })
                .collect();
            layerzero_kernels::sgd_momentum_step_many(&steps, lr, c.momentum)?;
        }
        Ok(())
    }

    /// Momentum buffers by parameter name (for checkpoints). Parameters not yet updated have none.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|(p, b)| b.as_ref().map(|b| (p.name.clone(), b.clone())))
            .collect()
    }

    /// Restores momentum buffers saved by [`Sgd::state`], checking names and shapes.
    pub fn load_state(&mut self, mut state: BTreeMap<String, Tensor>) -> Result<()> {
        for (p, buf) in self.params.iter().zip(self.buffers.iter_mut()) {
            *buf = match state.remove(&p.name) {
                None => None,
                Some(t) => {
                    if t.dims() != p.var.dims() {
                        return Err(TrainError::StateMismatch(format!(
                            "momentum buffer {}: expected shape {:?}, found {:?}",
                            p.name,
                            p.var.dims(),
                            t.dims()
                        )));
                    }
                    Some(t.to_device(p.var.device())?)
                }
            };
        }
        if let Some(name) = state.keys().next() {
            return Err(TrainError::StateMismatch(format!(
                "momentum buffer {name} matches no parameter of the model"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps by hand: w=1, grad of (w²/2) is w, μ=0.9, λ=0.1, lr=0.5.
    #[test]
    fn matches_pytorch_update_rule() -> Result<()> {
        for nesterov in [false, true] {
            let var = Var::new(&[1.0f32], &Device::Cpu)?;
            let mut opt = Sgd::new(
                vec![Param {
                    name: "w".into(),
                    var: var.clone(),
                    norm_or_bias: false,
                }],
                SgdConfig {
                    momentum: 0.9,
                    nesterov,
                    weight_decay: 0.1,
                    no_decay_on_norm_and_bias: false,
                },
            );
            let (mut w, mut b) = (1.0f64, 0.0f64);
            for step in 0..2 {
                let loss = (var.as_tensor().sqr()? * 0.5)?.sum_all()?;
                let grads = loss.backward()?;
                opt.step(&grads, 0.5)?;
                let g = w + 0.1 * w;
                b = if step == 0 { g } else { 0.9 * b + g };
                let d = if nesterov { g + 0.9 * b } else { b };
                w -= 0.5 * d;
                let got = var.as_tensor().to_vec1::<f32>()?[0] as f64;
                assert!((got - w).abs() < 1e-6, "step {step}: {got} vs {w}");
            }
        }
        Ok(())
    }

    #[test]
    fn no_decay_on_norm_params_when_asked() -> Result<()> {
        let var = Var::new(&[2.0f32], &Device::Cpu)?;
        let mut opt = Sgd::new(
            vec![Param {
                name: "bn.weight".into(),
                var: var.clone(),
                norm_or_bias: true,
            }],
            SgdConfig {
                momentum: 0.0,
                nesterov: false,
                weight_decay: 0.5,
                no_decay_on_norm_and_bias: true,
            },
        );
        // Zero gradient: only decay could move the weight, and it is excluded.
        let loss = (var.as_tensor() * 0.0)?.sum_all()?;
        opt.step(&loss.backward()?, 1.0)?;
        assert_eq!(var.as_tensor().to_vec1::<f32>()?, vec![2.0]);
        Ok(())
    }
}
