//! End-to-end ResNet-20 (option A) throughput built from this crate's ops, the way a model
//! crate would use them: training step (forward, backward, SGD with momentum and weight decay)
//! at batch 128, evaluation with batch norm folded into the convolutions at batch 500.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p layerzero-kernels --example resnet20 -- \
//!     [--steps 10] [--train-batch 128] [--eval-batch 500] [--eval-chunk N] [--reference] \
//!     [--json out.json]
//! ```
//! `--reference` also times candle's own ops (slow: seconds per step).

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var, D};
use layerzero_kernels::{fast, reference, BatchNormTrainOutput};

type ConvFn = fn(&Tensor, &Tensor, usize, usize) -> Result<Tensor>;
type BnFn = fn(&Tensor, &Tensor, &Tensor, f64, bool) -> Result<BatchNormTrainOutput>;
type BnAddFn = fn(&Tensor, &Tensor, &Tensor, &Tensor, f64) -> Result<BatchNormTrainOutput>;
type BiasActFn =
    fn(&Tensor, &Tensor, &Tensor, usize, usize, Option<&Tensor>, bool) -> Result<Tensor>;

struct Ops {
    conv: ConvFn,
    bn: BnFn,
    bn_add_relu: BnAddFn,
    bias_act: BiasActFn,
    shortcut: fn(&Tensor, usize, usize) -> Result<Tensor>,
}

/// One conv + BN unit: weight, gamma, beta, running mean / var.
struct Unit {
    w: Var,
    g: Var,
    b: Var,
    mean: Tensor,
    var: Tensor,
}

struct Net {
    units: Vec<Unit>,
    fc_w: Var,
    fc_b: Var,
}

fn net(dev: &Device) -> Result<Net> {
    let mut units = Vec::new();
    let unit = |cout: usize, cin: usize| -> Result<Unit> {
        let std = (2.0 / (cin * 9) as f64).sqrt();
        Ok(Unit {
            w: Var::from_tensor(&Tensor::randn(0f32, std as f32, (cout, cin, 3, 3), dev)?)?,
            g: Var::from_tensor(&Tensor::ones(cout, candle_core::DType::F32, dev)?)?,
            b: Var::from_tensor(&Tensor::zeros(cout, candle_core::DType::F32, dev)?)?,
            mean: Tensor::zeros(cout, candle_core::DType::F32, dev)?,
            var: Tensor::ones(cout, candle_core::DType::F32, dev)?,
        })
    };
    units.push(unit(16, 3)?);
    let mut cin = 16;
    for cout in [16, 32, 64] {
        for _ in 0..3 {
            units.push(unit(cout, cin)?);
            units.push(unit(cout, cout)?);
            cin = cout;
        }
    }
    Ok(Net {
        units,
        fc_w: Var::from_tensor(&Tensor::randn(0f32, 0.1, (10, 64), dev)?)?,
        fc_b: Var::from_tensor(&Tensor::zeros(10, candle_core::DType::F32, dev)?)?,
    })
}

fn shortcut(ops: &Ops, x: &Tensor, cout: usize) -> Result<Tensor> {
    let c = x.dim(1)?;
    (ops.shortcut)(x, 2, (cout - c) / 2)
}

/// Training forward; updates running statistics; returns the logits.
fn forward_train(ops: &Ops, net: &mut Net, x: &Tensor) -> Result<Tensor> {
    let eps = 1e-5;
    let momentum = 0.1;
    let mut stats = Vec::new();
    let u = &net.units;
    let o = (ops.bn)(
        &(ops.conv)(x, u[0].w.as_tensor(), 1, 1)?,
        u[0].g.as_tensor(),
        u[0].b.as_tensor(),
        eps,
        true,
    )?;
    stats.push((o.mean, o.var));
    let mut h = o.y;
    let mut i = 1;
    let mut cin = 16;
    for cout in [16, 32, 64] {
        for b in 0..3 {
            let stride = if b == 0 && cout != cin { 2 } else { 1 };
            let o1 = (ops.bn)(
                &(ops.conv)(&h, u[i].w.as_tensor(), stride, 1)?,
                u[i].g.as_tensor(),
                u[i].b.as_tensor(),
                eps,
                true,
            )?;
            let y = (ops.conv)(&o1.y, u[i + 1].w.as_tensor(), 1, 1)?;
            let sc = if stride == 2 {
                shortcut(ops, &h, cout)?
            } else {
                h.clone()
            };
            let o2 =
                (ops.bn_add_relu)(&y, u[i + 1].g.as_tensor(), u[i + 1].b.as_tensor(), &sc, eps)?;
            stats.push((o1.mean, o1.var));
            stats.push((o2.mean, o2.var));
            h = o2.y;
            i += 2;
            cin = cout;
        }
    }
    for (unit, (m, v)) in net.units.iter_mut().zip(stats) {
        unit.mean = ((&unit.mean * (1.0 - momentum))? + (m * momentum)?)?;
        unit.var = ((&unit.var * (1.0 - momentum))? + (v * momentum)?)?;
    }
    h.mean((2, 3))?
        .matmul(&net.fc_w.as_tensor().t()?)?
        .broadcast_add(net.fc_b.as_tensor())
}

fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted
        .broadcast_sub(&lse)?
        .gather(&labels.unsqueeze(1)?, 1)?
        .mean_all()?
        .neg()
}

fn train_step(
    ops: &Ops,
    net: &mut Net,
    moms: &mut [Tensor],
    x: &Tensor,
    y: &Tensor,
) -> Result<f32> {
    let loss = cross_entropy(&forward_train(ops, net, x)?, y)?;
    let grads = loss.backward()?;
    let mut vars: Vec<&Var> = Vec::new();
    for u in &net.units {
        vars.extend([&u.w, &u.g, &u.b]);
    }
    vars.extend([&net.fc_w, &net.fc_b]);
    for (v, m) in vars.into_iter().zip(moms.iter_mut()) {
        let Some(g) = grads.get(v.as_tensor()) else {
            continue;
        };
        let g = (g + (v.as_tensor() * 5e-4)?)?;
        *m = ((&*m * 0.9)? + g)?;
        v.set(&(v.as_tensor() - (&*m * 0.05)?)?)?;
    }
    loss.to_scalar::<f32>()
}

/// Evaluation with batch norm folded into each convolution.
fn eval(ops: &Ops, net: &Net, x: &Tensor) -> Result<Tensor> {
    let fold = |u: &Unit| {
        layerzero_kernels::fold_batch_norm(
            u.w.as_tensor(),
            u.g.as_tensor(),
            u.b.as_tensor(),
            &u.mean,
            &u.var,
            1e-5,
        )
    };
    let folded: Vec<(Tensor, Tensor)> = net.units.iter().map(fold).collect::<Result<_>>()?;
    let mut h = (ops.bias_act)(x, &folded[0].0, &folded[0].1, 1, 1, None, true)?;
    let mut i = 1;
    let mut cin = 16;
    for cout in [16, 32, 64] {
        for b in 0..3 {
            let stride = if b == 0 && cout != cin { 2 } else { 1 };
            let y = (ops.bias_act)(&h, &folded[i].0, &folded[i].1, stride, 1, None, true)?;
            let sc = if stride == 2 {
                shortcut(ops, &h, cout)?
            } else {
                h.clone()
            };
            h = (ops.bias_act)(
                &y,
                &folded[i + 1].0,
                &folded[i + 1].1,
                1,
                1,
                Some(&sc),
                true,
            )?;
            i += 2;
            cin = cout;
        }
    }
    h.mean((2, 3))?
        .matmul(&net.fc_w.as_tensor().t()?)?
        .broadcast_add(net.fc_b.as_tensor())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            l.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Minor page faults of this process so far (fresh memory being touched).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 2..];
            after.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[allow(clippy::too_many_arguments)]
fn bench(
    name: &str,
    ops: &Ops,
    steps: usize,
    tb: usize,
    eb: usize,
    chunk: usize,
) -> Result<serde_json::Value> {
    let dev = Device::Cpu;
    let mut net = net(&dev)?;
    let mut moms: Vec<Tensor> = Vec::new();
    for u in &net.units {
        for v in [&u.w, &u.g, &u.b] {
            moms.push(v.as_tensor().zeros_like()?);
        }
    }
    moms.push(net.fc_w.as_tensor().zeros_like()?);
    moms.push(net.fc_b.as_tensor().zeros_like()?);
    let x = Tensor::randn(0f32, 1.0, (tb, 3, 32, 32), &dev)?;
    let labels: Vec<u32> = (0..tb as u32).map(|i| i % 10).collect();
    let y = Tensor::from_vec(labels, tb, &dev)?;
    let mut times = Vec::new();
    let mut loss = 0.0;
    let mut faults = 0;
    for s in 0..steps + 2 {
        let f0 = minor_faults();
        let t = Instant::now();
        // On a worker of the pool, as layerzero-train runs a step on the CPU.
        loss = layerzero_kernels::on_worker_thread(&dev, || {
            train_step(ops, &mut net, &mut moms, &x, &y)
        })?;
        if s >= 2 {
            times.push(t.elapsed().as_secs_f64());
            faults += minor_faults() - f0;
        }
    }
    let faults = faults / steps.max(1) as u64;
    let train = tb as f64 / median(times);
    let xe = Tensor::randn(0f32, 1.0, (eb, 3, 32, 32), &dev)?;
    let mut times = Vec::new();
    for s in 0..steps.div_ceil(2) + 1 {
        let t = Instant::now();
        // Optionally in chunks: smaller activations stay in cache and in reused heap memory.
        let mut start = 0;
        while start < eb {
            let len = chunk.min(eb - start);
            let _ = eval(ops, &net, &xe.narrow(0, start, len)?)?;
            start += len;
        }
        if s >= 1 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let evals = eb as f64 / median(times);
    let rss = peak_rss_mb();
    println!("{name:<10} train {train:8.1} img/s (batch {tb}, last loss {loss:.3}, {faults} page faults/step)   eval {evals:8.1} img/s (batch {eb})   peak RSS so far {rss:.0} MB");
    Ok(serde_json::json!({
        "backend": name, "train_images_per_s": train, "eval_images_per_s": evals,
        "train_batch": tb, "eval_batch": eb, "peak_rss_mb_so_far": rss,
    }))
}

fn main() -> Result<()> {
    let mut steps = 10;
    let (mut tb, mut eb) = (128, 500);
    let mut with_ref = false;
    let mut json = None;
    let mut chunk = usize::MAX;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--steps" => steps = it.next().and_then(|v| v.parse().ok()).unwrap_or(steps),
            "--train-batch" => tb = it.next().and_then(|v| v.parse().ok()).unwrap_or(tb),
            "--eval-batch" => eb = it.next().and_then(|v| v.parse().ok()).unwrap_or(eb),
            "--reference" => with_ref = true,
            "--json" => json = it.next(),
            "--eval-chunk" => chunk = it.next().and_then(|v| v.parse().ok()).unwrap_or(chunk),
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    let threads = rayon::current_num_threads();
    let peak = layerzero_kernels::measure_gemm_peak_gflops(threads);
    println!("threads {threads}, fp32 GEMM peak {peak:.1} GFLOP/s");
    // ResNet-20 forward: 40.6 M multiply-adds per 32×32 image; training ≈ 3× forward.
    let fwd_gflop = 2.0 * 40.6e6 / 1e9;
    let fast_ops = Ops {
        conv: fast::conv2d,
        bn: fast::batch_norm_train,
        bn_add_relu: fast::batch_norm_add_relu_train,
        bias_act: fast::conv2d_bias_act,
        shortcut: fast::shortcut_pad,
    };
    let mut results = vec![bench("fast", &fast_ops, steps, tb, eb, chunk)?];
    let r = &results[0];
    if let (Some(t), Some(e)) = (
        r["train_images_per_s"].as_f64(),
        r["eval_images_per_s"].as_f64(),
    ) {
        println!(
            "fast: training {:.1} GFLOP/s ({:.0}% of GEMM peak), eval {:.1} GFLOP/s ({:.0}%)",
            t * 3.0 * fwd_gflop,
            100.0 * t * 3.0 * fwd_gflop / peak,
            e * fwd_gflop,
            100.0 * e * fwd_gflop / peak
        );
    }
    if with_ref {
        let ref_ops = Ops {
            conv: reference::conv2d,
            bn: reference::batch_norm_train,
            bn_add_relu: reference::batch_norm_add_relu_train,
            bias_act: reference::conv2d_bias_act,
            shortcut: reference::shortcut_pad,
        };
        results.push(bench("reference", &ref_ops, steps.min(3), tb, eb, chunk)?);
    }
    if let Some(path) = json {
        let doc =
            serde_json::json!({"threads": threads, "gemm_peak_gflops": peak, "results": results});
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        )
        .map_err(candle_core::Error::wrap)?;
    }
    Ok(())
}
