//! Time of one SGD-with-momentum step over a CIFAR ResNet's parameters on a CUDA device: the
//! per-parameter cuDNN calls ([`layerzero_kernels::sgd_momentum_step`], two per parameter)
//! against the multi-tensor kernel ([`layerzero_kernels::sgd_momentum_step_multi`], one launch
//! per 64 parameters), and the largest difference between the two paths' weights.
//!
//! ```text
//! cargo run --release -p layerzero-kernels --features cudnn --example sgdbench -- \
//!     [--depth 56] [--reps 200]
//! ```
//!
//! Each figure is the median over `--reps` timed steps, each step ended by a device
//! synchronisation, so it is the step's wall time as the trainer's CPU thread sees it.

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use layerzero_kernels::{sgd_momentum_step, sgd_momentum_step_multi, SgdParamStep};

/// The parameter shapes of He et al.'s CIFAR ResNet of this depth (6n + 2, option A
/// shortcuts): stem conv and batch norm, two convs and two batch norms a block, the classifier.
fn resnet_shapes(depth: usize) -> Vec<Vec<usize>> {
    let n = (depth - 2) / 6;
    let mut shapes = vec![vec![16, 3, 3, 3], vec![16], vec![16]];
    let mut cin = 16;
    for width in [16, 32, 64] {
        for _ in 0..n {
            for conv_in in [cin, width] {
                shapes.extend([vec![width, conv_in, 3, 3], vec![width], vec![width]]);
            }
            cin = width;
        }
    }
    shapes.extend([vec![10, 64], vec![10]]);
    shapes
}

fn as_steps(v: &[(Tensor, Tensor, Tensor)], decay: f64) -> Vec<SgdParamStep<'_>> {
    v.iter()
        .map(|(w, g, b)| SgdParamStep {
            weight: w,
            grad: g,
            momentum_buffer: b,
            weight_decay: decay,
        })
        .collect()
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e3
}

fn main() -> Result<()> {
    let mut depth = 56;
    let mut reps = 200;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), value) {
            ("--depth", Some(v)) if v >= 8 && (v - 2) % 6 == 0 => depth = v,
            ("--reps", Some(v)) if v > 0 => reps = v,
            _ => {
                eprintln!("usage: sgdbench [--depth 6n+2] [--reps N>0]");
                std::process::exit(2);
            }
        }
    }
    let dev = layerzero_kernels::open_cuda(0)?;
    let shapes = resnet_shapes(depth);
    let elems: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    println!(
        "ResNet-{depth}: {} parameters, {elems} elements; {}",
        shapes.len(),
        layerzero_kernels::describe_path(&dev)
    );
    // Each path gets weights and buffers of its own (both update in place), the same gradients.
    let fresh = |scale: f64| -> Result<Vec<Tensor>> {
        shapes
            .iter()
            .map(|s| Tensor::randn(0f32, 1.0, s.as_slice(), &Device::Cpu)?.to_device(&dev)? * scale)
            .collect()
    };
    let w0 = fresh(0.1)?;
    let copy = |ts: &[Tensor]| -> Result<Vec<Tensor>> { ts.iter().map(|t| t.copy()).collect() };
    let (w_each, w_multi) = (copy(&w0)?, copy(&w0)?);
    let zeros = || -> Result<Vec<Tensor>> { w0.iter().map(|t| t.zeros_like()).collect() };
    let (b_each, b_multi) = (zeros()?, zeros()?);
    let grads = fresh(0.01)?;
    let (lr, momentum, decay) = (0.1, 0.9, 5e-4);
    let steps = |w: &[Tensor], b: &[Tensor]| -> Vec<(Tensor, Tensor, Tensor)> {
        (0..w.len())
            .map(|i| (w[i].clone(), grads[i].clone(), b[i].clone()))
            .collect()
    };
    let (each, multi) = (steps(&w_each, &b_each), steps(&w_multi, &b_multi));
    let (each_steps, multi_steps) = (as_steps(&each, decay), as_steps(&multi, decay));
    let run_each = || -> Result<()> {
        for s in &each_steps {
            sgd_momentum_step(s.weight, s.grad, s.momentum_buffer, lr, momentum, decay)?;
        }
        Ok(())
    };
    let run_multi = || sgd_momentum_step_multi(&multi_steps, lr, momentum);
    // Warm-up (the multi-tensor kernel is compiled here), then alternate the two paths so that
    // a change in the machine's load hits both.
    for _ in 0..5 {
        run_each()?;
        run_multi()?;
    }
    dev.synchronize()?;
    let (mut t_each, mut t_multi) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        run_each()?;
        dev.synchronize()?;
        t_each.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        run_multi()?;
        dev.synchronize()?;
        t_multi.push(t.elapsed().as_secs_f64());
    }
    let mut max_diff = 0f32;
    for (a, b) in w_each.iter().zip(&w_multi) {
        let d = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        max_diff = max_diff.max(d);
    }
    let (e, m) = (median_ms(t_each), median_ms(t_multi));
    println!(
        "per-parameter cuDNN calls: {e:.3} ms/step; multi-tensor kernel: {m:.3} ms/step \
         ({:.2}x); largest weight difference after {} steps: {max_diff:e}",
        e / m,
        reps + 5
    );
    Ok(())
}
