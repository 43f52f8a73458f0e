//! Per-op timings of the fast kernels against candle's reference ops, on ResNet-20's shapes,
//! plus the machine's fp32 GEMM peak.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p layerzero-kernels --example opbench -- \
//!     [--reps 10] [--batch 128] [--json out.json] [--no-reference]
//! ```
//!
//! Prints a table (median milliseconds, GFLOP/s, % of GEMM peak) and optionally writes JSON.

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use layerzero_kernels::{fast, reference};

struct Args {
    reps: usize,
    batch: usize,
    json: Option<String>,
    reference: bool,
    filter: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        reps: 10,
        batch: 128,
        json: None,
        reference: true,
        filter: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--reps" => a.reps = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.reps),
            "--batch" => a.batch = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.batch),
            "--json" => a.json = it.next(),
            "--no-reference" => a.reference = false,
            "--filter" => a.filter = it.next(),
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    a
}

/// CPU time of all this process's threads in nanoseconds (Linux `schedstat`), if available.
/// On a shared machine wall time depends on the other load; CPU time much less so.
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 2..];
            after.split_whitespace().nth(7)?.parse().ok()
        })
        .unwrap_or(0)
}

fn cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let path = e.ok()?.path().join("schedstat");
        let s = std::fs::read_to_string(path).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Timing of one op: median and minimum wall milliseconds, median CPU milliseconds.
#[derive(Clone, Copy)]
struct Timing {
    median: f64,
    min: f64,
    cpu: f64,
    faults: u64,
}

/// Times `reps` runs after two warm-ups. CPU time is the total over all runs divided by
/// `reps`: the kernel's accounting may be tick-based (4 ms here), too coarse per run.
fn time_ms(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    f()?;
    f()?;
    let reps = reps.max(1);
    let mut v = Vec::with_capacity(reps);
    let f0 = minor_faults();
    let c0 = cpu_ns();
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let cpu = match (c0, cpu_ns()) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e6 / reps as f64,
        _ => f64::NAN,
    };
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(Timing {
        median: v[v.len() / 2],
        min: v[0],
        cpu,
        faults: (minor_faults() - f0) / reps as u64,
    })
}

type EvalFn =
    dyn Fn(&Tensor, &Tensor, &Tensor, usize, usize, Option<&Tensor>, bool) -> Result<Tensor>;

struct Row {
    name: String,
    op: &'static str,
    gflop: f64,
    fast: Timing,
    reference: Option<Timing>,
}

fn main() -> Result<()> {
    let args = parse_args();
    let threads = rayon::current_num_threads();
    let peak = layerzero_kernels::measure_gemm_peak_gflops(threads);
    let c0 = cpu_ns();
    let t = Instant::now();
    let one = layerzero_kernels::gemm_gflops(1, 1024, 1024, 1024, 10);
    let per_core = match (c0, cpu_ns()) {
        // 11 GEMMs of 2·1024³ flops ran in that CPU time (plus buffer setup).
        (Some(a), Some(b)) => 11.0 * 2.0 * 1024f64.powi(3) / ((b - a) as f64 / 1e9) / 1e9,
        _ => f64::NAN,
    };
    let _ = t;
    println!(
        "threads: {threads}   fp32 GEMM peak (1024³, gemm crate): {peak:.1} GFLOP/s wall; \
         1 thread: {one:.1} GFLOP/s wall, ~{per_core:.1} GFLOP/s per CPU-second"
    );
    let dev = Device::Cpu;
    let n = args.batch;
    // (label, cin, hw, cout, k, stride, pad)
    let shapes: [(&str, usize, usize, usize, usize, usize, usize); 6] = [
        ("conv1 3→16 32² s1", 3, 32, 16, 3, 1, 1),
        ("16→16 32² s1", 16, 32, 16, 3, 1, 1),
        ("16→32 32² s2", 16, 32, 32, 3, 2, 1),
        ("32→32 16² s1", 32, 16, 32, 3, 1, 1),
        ("32→64 16² s2", 32, 16, 64, 3, 2, 1),
        ("64→64 8² s1", 64, 8, 64, 3, 1, 1),
    ];
    let mut rows: Vec<Row> = Vec::new();
    for &(label, cin, hw, cout, k, s, p) in &shapes {
        if let Some(f) = &args.filter {
            if !label.contains(f.as_str()) {
                continue;
            }
        }
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, cin, hw, hw), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (cout, cin, k, k), &dev)?)?;
        let ho = (hw + 2 * p - k) / s + 1;
        let macs = (n * cout * ho * ho * cin * k * k) as f64;
        let name = format!("{n}×{cin}×{hw}² {k}×{k} {cin}→{cout} s{s}");
        let _ = label;
        let (xt, wt) = (x.as_tensor(), w.as_tensor());

        let fwd = |f: &dyn Fn(&Tensor, &Tensor, usize, usize) -> Result<Tensor>| {
            time_ms(args.reps, || f(xt, wt, s, p).map(|_| ()))
        };
        let fb = |f: &dyn Fn(&Tensor, &Tensor, usize, usize) -> Result<Tensor>| {
            time_ms(args.reps, || {
                let y = f(xt, wt, s, p)?;
                y.backward().map(|_| ())
            })
        };
        rows.push(Row {
            name: name.clone(),
            op: "conv fwd",
            gflop: 2.0 * macs / 1e9,
            fast: fwd(&fast::conv2d)?,
            reference: if args.reference {
                Some(fwd(&reference::conv2d)?)
            } else {
                None
            },
        });
        rows.push(Row {
            name: name.clone(),
            op: "conv fwd+bwd",
            gflop: 6.0 * macs / 1e9,
            fast: fb(&fast::conv2d)?,
            reference: if args.reference {
                Some(fb(&reference::conv2d)?)
            } else {
                None
            },
        });
        // The two gradient kernels alone (no autograd bookkeeping), fast path only.
        let dy = Tensor::randn(0f32, 1.0, (n, cout, ho, ho), &dev)?;
        rows.push(Row {
            name: name.clone(),
            op: "conv dx only",
            gflop: 2.0 * macs / 1e9,
            fast: time_ms(args.reps, || {
                fast::conv2d_input_grad(&dy, wt, xt.dims(), s, p).map(|_| ())
            })?,
            reference: None,
        });
        rows.push(Row {
            name: name.clone(),
            op: "conv dw only",
            gflop: 2.0 * macs / 1e9,
            fast: time_ms(args.reps, || {
                fast::conv2d_weight_grad(xt, &dy, wt.dims(), s, p).map(|_| ())
            })?,
            reference: None,
        });
        let b = Tensor::randn(0f32, 0.1, cout, &dev)?;
        let ev = |f: &EvalFn| time_ms(args.reps, || f(xt, wt, &b, s, p, None, true).map(|_| ()));
        rows.push(Row {
            name: name.clone(),
            op: "eval conv+bias+relu",
            gflop: 2.0 * macs / 1e9,
            fast: ev(&fast::conv2d_bias_act)?,
            reference: if args.reference {
                Some(ev(&reference::conv2d_bias_act)?)
            } else {
                None
            },
        });
        // Batch norm (+ReLU) on this conv's output shape.
        let y = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, cout, ho, ho), &dev)?)?;
        let g = Var::from_tensor(&Tensor::ones(cout, candle_core::DType::F32, &dev)?)?;
        let be = Var::from_tensor(&Tensor::zeros(cout, candle_core::DType::F32, &dev)?)?;
        type BnFn = dyn Fn(
            &Tensor,
            &Tensor,
            &Tensor,
            f64,
            bool,
        ) -> Result<layerzero_kernels::BatchNormTrainOutput>;
        let bn = |f: &BnFn| {
            time_ms(args.reps, || {
                let o = f(y.as_tensor(), g.as_tensor(), be.as_tensor(), 1e-5, true)?;
                o.y.backward().map(|_| ())
            })
        };
        let bn_fwd = |f: &BnFn| {
            time_ms(args.reps, || {
                f(y.as_tensor(), g.as_tensor(), be.as_tensor(), 1e-5, true).map(|_| ())
            })
        };
        rows.push(Row {
            name: format!("{n}×{cout}×{ho}²"),
            op: "BN+ReLU fwd",
            gflop: 0.0,
            fast: bn_fwd(&fast::batch_norm_train)?,
            reference: if args.reference {
                Some(bn_fwd(&reference::batch_norm_train)?)
            } else {
                None
            },
        });
        rows.push(Row {
            name: format!("{n}×{cout}×{ho}²"),
            op: "BN+ReLU fwd+bwd",
            gflop: 0.0,
            fast: bn(&fast::batch_norm_train)?,
            reference: if args.reference {
                Some(bn(&reference::batch_norm_train)?)
            } else {
                None
            },
        });
    }
    println!(
        "{:<30} {:<20} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>7} {:>10} {:>8}",
        "shape",
        "op",
        "fast ms",
        "min ms",
        "cpu ms",
        "GFLOP/s",
        "%peak",
        "GF/cpu-s",
        "faults",
        "candle ms",
        "speedup"
    );
    let mut json_rows = Vec::new();
    for r in &rows {
        let gf = if r.gflop > 0.0 {
            r.gflop / (r.fast.median / 1e3)
        } else {
            0.0
        };
        let gf_cpu = if r.gflop > 0.0 {
            r.gflop / (r.fast.cpu / 1e3)
        } else {
            0.0
        };
        let (rs, sp) = match r.reference {
            Some(rf) => (
                format!("{:.2}", rf.median),
                format!("{:.1}×", rf.median / r.fast.median),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<30} {:<20} {:>9.3} {:>9.3} {:>9.3} {:>8.1} {:>6.1}% {:>9.1} {:>7} {:>10} {:>8}",
            r.name,
            r.op,
            r.fast.median,
            r.fast.min,
            r.fast.cpu,
            gf,
            100.0 * gf / peak,
            gf_cpu,
            r.fast.faults,
            rs,
            sp
        );
        json_rows.push(serde_json::json!({
            "shape": r.name, "op": r.op, "gflop": r.gflop,
            "fast_median_ms": r.fast.median, "fast_min_ms": r.fast.min, "fast_cpu_ms": r.fast.cpu,
            "fast_gflops": gf, "fast_fraction_of_peak": gf / peak,
            "candle_median_ms": r.reference.map(|v| v.median),
            "candle_min_ms": r.reference.map(|v| v.min),
        }));
    }
    if let Some(path) = args.json {
        let doc = serde_json::json!({
            "threads": threads, "gemm_peak_gflops": peak, "batch": n, "rows": json_rows,
        });
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        )
        .map_err(candle_core::Error::wrap)?;
        println!("wrote {path}");
    }
    Ok(())
}
