//! `cargo xtask bench`: ResNet-20 training and evaluation throughput, peak memory and the
//! zero-kernel sweep, for layerzero and the PyTorch peer (`../shared/bench/pytorch_peer.py`)
//! in the same run; writes `target/bench/bench.json`. Throughput is measured in alternating
//! rounds (`--rounds`) and each side's best round is reported.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use layerzero_models::{create_model, ForwardMode, Interventions, ModelConfig, Network};
use layerzero_train::{cross_entropy, trainable_params, Sgd, SgdConfig};
use serde_json::json;

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Threads for both sides.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed steps per measurement (median reported).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Rounds of the training and evaluation measurements. The two sides alternate (layerzero,
    /// PyTorch, layerzero, …) and each side's best round is reported, so that a burst of load
    /// from elsewhere on a shared machine slows one round, not one side.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// Images of the zero-kernel sweep.
    #[arg(long, default_value_t = 10_000)]
    pub sweep_images: usize,
    /// The PyTorch peer script.
    #[arg(long, default_value = "../shared/bench/pytorch_peer.py")]
    pub peer: PathBuf,
    /// Where to write the results [default: target/bench/bench.json on the CPU,
    /// target/bench/bench-cuda.json on CUDA, so one never overwrites the other].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Device of both sides: `cpu`, or `cuda` (xtask built with `--features cuda`; the peer runs
    /// with `--device cuda`). On CUDA there is no memory ratio: candle has no peak counter for
    /// GPU memory, so only PyTorch's figure is shown, and only throughput ratios are given.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub device: String,
    /// ResNet depth of both sides (option A shortcuts, as He et al.'s CIFAR nets): 20 by
    /// default; 56 and 110 gauge the `paper` profile's cost on a GPU.
    #[arg(long, default_value_t = 20, value_parser = parse_depth)]
    pub depth: usize,
}

impl BenchArgs {
    fn out_path(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            if self.device == "cuda" {
                "target/bench/bench-cuda.json".into()
            } else {
                "target/bench/bench.json".into()
            }
        })
    }
}

/// A CIFAR ResNet depth: 6n + 2 with n ≥ 1 (20, 32, 44, 56, 110, …).
fn parse_depth(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(d) if d >= 8 && (d - 2) % 6 == 0 => Ok(d),
        _ => Err(format!(
            "expected a CIFAR ResNet depth 6n + 2 (20, 32, 44, 56, 110), found {s:?}"
        )),
    }
}

/// Multiply-accumulates of one forward pass of a CIFAR ResNet-`depth` (option A): the 3→16
/// stem, two strided 3×3 convolutions that double the channels, 6n − 2 3×3 convolutions that
/// keep them (each 2,359,296 MACs: 16·16·9·32² = 32·32·9·16² = 64·64·9·8²), and the classifier.
fn resnet_macs(depth: usize) -> f64 {
    let n = (depth - 2) / 6;
    (442_368 + 2 * 1_179_648 + (6 * n - 2) * 2_359_296 + 640) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn peak_rss_mb() -> Option<f64> {
    // VmHWM: the peak resident set of this process.
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// One training measurement: the median step's throughput, and where that step's time went.
struct TrainTiming {
    images_per_s: f64,
    /// Median time from the step's start until the host has queued all of its work.
    host_ms: f64,
    /// Median time then spent waiting for the device to finish it (0 on the CPU, which runs
    /// each op as it is queued). Small against `host_ms`: the host's op dispatch bounds the
    /// step and fewer ops would pay; large: the device's kernels do (or the launch queue
    /// filled and made the host wait, which also ends with a long drain).
    wait_ms: f64,
}

fn train_images_per_s(net: &dyn Network, steps: usize) -> Result<TrainTiming> {
    let dev = net.params().device().clone();
    let params = trainable_params(net);
    let mut sgd = Sgd::new(params, SgdConfig::default());
    let x = Tensor::randn(0f32, 1.0, (128, 3, 32, 32), &dev)?;
    let y = Tensor::arange(0u32, 128, &dev)?.affine(1.0, 0.0)?;
    let y = (y.to_dtype(DType::F32)? / 13.0)?
        .floor()?
        .to_dtype(DType::U32)?;
    let (mut times, mut host, mut wait) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..steps + 2 {
        let t = Instant::now();
        let logits = net.forward(&x, ForwardMode::Train, Interventions::none())?;
        let loss = cross_entropy(&logits, &y, 0.0)?;
        let grads = loss.backward()?;
        sgd.step(&grads, 0.05)?;
        let queued = t.elapsed().as_secs_f64();
        // CUDA runs asynchronously: wait for the step before reading the clock.
        dev.synchronize()?;
        let total = t.elapsed().as_secs_f64();
        if i >= 2 {
            times.push(total);
            host.push(queued * 1e3);
            wait.push((total - queued) * 1e3);
        }
    }
    Ok(TrainTiming {
        images_per_s: 128.0 / median(times),
        host_ms: median(host),
        wait_ms: median(wait),
    })
}

fn eval_images_per_s(net: &dyn Network, steps: usize) -> Result<f64> {
    let dev = net.params().device().clone();
    let x = Tensor::randn(0f32, 1.0, (500, 3, 32, 32), &dev)?;
    let mut times = Vec::new();
    for i in 0..steps + 2 {
        let t = Instant::now();
        let _ = net
            .forward(&x, ForwardMode::Eval, Interventions::none())?
            .argmax(1)?;
        dev.synchronize()?;
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(500.0 / median(times))
}

fn sweep_seconds(net: &dyn Network, images: usize) -> Result<f64> {
    use layerzero_ablate::engine::{run, EngineConfig, RunContext};
    use layerzero_ablate::{AblationMode, WeightsRef};
    use layerzero_data::{CifarSet, Dataset, Split};
    // Random images: the sweep's cost does not depend on what the pixels are.
    let pixels: Vec<u8> = (0..images * 3072)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let labels: Vec<u8> = (0..images).map(|i| (i % 10) as u8).collect();
    let names = (0..10).map(|i| format!("c{i}")).collect();
    let set = CifarSet::from_parts(Dataset::Cifar10, Split::Test, pixels, labels, names)?;
    let ctx = RunContext {
        net,
        test: &set,
        weights: WeightsRef {
            path: "random".into(),
            sha256: "0".repeat(64),
        },
        dataset: "cifar10".into(),
        split: "test".into(),
        threads: rayon::current_num_threads(),
    };
    let t = Instant::now();
    run(&ctx, &EngineConfig::new(AblationMode::ZeroKernel), None)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Whether the peer can run: an interpreter that imports torch, and the script.
fn peer_available(args: &BenchArgs) -> bool {
    let python = std::env::var("LAYERZERO_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch || !args.peer.exists() {
        println!(
            "PyTorch peer missing ({python} cannot import torch, or {} is absent): absolute figures only; \
             set LAYERZERO_PEER_PYTHON to an interpreter with torch",
            args.peer.display()
        );
        return false;
    }
    true
}

/// One run of the peer, with a sweep over `sweep_images` images (0: none).
fn peer(args: &BenchArgs, sweep_images: usize) -> Result<serde_json::Value> {
    let python = std::env::var("LAYERZERO_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(&args.peer)
        .args(["--depth", &args.depth.to_string()])
        .args(["--shortcut", "pad", "--train-batch", "128"])
        .args(["--eval-batch", "500", "--steps", &args.steps.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--sweep-images", &sweep_images.to_string()])
        .args(["--device", &args.device])
        .output()
        .context("running the PyTorch peer")?;
    if !out.status.success() {
        anyhow::bail!(
            "the PyTorch peer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).context("parsing the peer's JSON")
}

fn field(v: &serde_json::Value, k: &str) -> f64 {
    v.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN)
}

pub fn bench(args: &BenchArgs) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .ok();
    let device = match args.device.as_str() {
        "cuda" => layerzero_kernels::open_cuda(0)
            .context("--device cuda: opening CUDA device 0 (build xtask with --features cuda)")?,
        _ => Device::Cpu,
    };
    // The CPU's GEMM peak is the yardstick of the CPU kernels only. Measured again after every
    // round and the best kept, like the throughputs: one measurement (under a second) during a
    // burst of load from elsewhere once read 124 GFLOP/s where the same build read 212.
    let measure_peak = || {
        if device.is_cpu() {
            layerzero_kernels::measure_gemm_peak_gflops(args.threads)
        } else {
            f64::NAN
        }
    };
    let mut peaks = vec![measure_peak()];
    let net = create_model(
        &format!("resnet{}", args.depth),
        &ModelConfig::new(10)
            .with_seed(0)
            .with_device(device.clone()),
    )?;
    let with_peer = peer_available(args);
    // Alternating rounds; the peer's last round also runs its sweep.
    let mut rounds = Vec::new();
    let mut rss_train = None;
    let mut peer_runs: Vec<serde_json::Value> = Vec::new();
    for r in 0..args.rounds {
        let timing = train_images_per_s(net.as_ref(), args.steps)?;
        let train = timing.images_per_s;
        rss_train = rss_train.or_else(peak_rss_mb);
        let eval = eval_images_per_s(net.as_ref(), args.steps)?;
        let last = r + 1 == args.rounds;
        let p = if with_peer {
            let sweep = if last { args.sweep_images } else { 0 };
            Some(peer(args, sweep)?)
        } else {
            None
        };
        let (pt, pe) = p.as_ref().map_or((f64::NAN, f64::NAN), |p| {
            (
                field(p, "train_images_per_s"),
                field(p, "eval_images_per_s"),
            )
        });
        println!(
            "round {}: train {train:.1} vs {pt:.1} img/s (ours: {:.2} ms queuing a step, {:.2} ms \
             waiting for it), eval {eval:.1} vs {pe:.1} img/s",
            r + 1,
            timing.host_ms,
            timing.wait_ms,
        );
        rounds.push(json!({
            "layerzero_train_images_per_s": train,
            "layerzero_train_host_ms_per_step": timing.host_ms,
            "layerzero_train_wait_ms_per_step": timing.wait_ms,
            "pytorch_train_images_per_s": p.as_ref().map(|_| pt),
            "layerzero_eval_images_per_s": eval,
            "pytorch_eval_images_per_s": p.as_ref().map(|_| pe),
        }));
        peer_runs.extend(p);
        peaks.push(measure_peak());
    }
    let gemm_peak = peaks.iter().copied().fold(f64::NAN, f64::max);
    // The last run's sweep with the first run's memory figures (every run is a new process,
    // and the first one's training is the one measured on our side too).
    let mut theirs = peer_runs.last().cloned();
    if let (Some(o), Some(first)) = (
        theirs.as_mut().and_then(|t| t.as_object_mut()),
        peer_runs.first(),
    ) {
        for k in ["peak_rss_mb_after_train", "peak_rss_mb"] {
            o.insert(k.into(), first[k].clone());
        }
    }
    let best = |k: &str| {
        rounds
            .iter()
            .map(|r| field(r, k))
            .filter(|v| !v.is_nan())
            .fold(f64::NAN, f64::max)
    };
    let (train, eval) = (
        best("layerzero_train_images_per_s"),
        best("layerzero_eval_images_per_s"),
    );
    if let Some(o) = theirs.as_mut().and_then(|t| t.as_object_mut()) {
        for k in ["train_images_per_s", "eval_images_per_s"] {
            o.insert(k.into(), json!(best(&format!("pytorch_{k}"))));
        }
    }
    // Where the best training round's median step spent its time (see `TrainTiming`).
    let best_train_round = rounds
        .iter()
        .find(|r| field(r, "layerzero_train_images_per_s") == train);
    let split = |k: &str| best_train_round.map_or(f64::NAN, |r| field(r, k));
    let sweep = sweep_seconds(net.as_ref(), args.sweep_images)?;
    let rss = peak_rss_mb();
    // Forward FLOPs (ResNet-20: 40.55 M MACs per image = 81.1 MFLOP); training ≈ 3× that.
    let flop_fwd = 2.0 * resnet_macs(args.depth);
    let ours = json!({
        "train_images_per_s": train,
        "train_host_ms_per_step": split("layerzero_train_host_ms_per_step"),
        "train_wait_ms_per_step": split("layerzero_train_wait_ms_per_step"),
        "eval_images_per_s": eval,
        "sweep_seconds": sweep,
        "peak_rss_mb_after_train": rss_train,
        "peak_rss_mb": rss,
        "train_fraction_of_gemm_peak": train * 3.0 * flop_fwd / 1e9 / gemm_peak,
        "eval_fraction_of_gemm_peak": eval * flop_fwd / 1e9 / gemm_peak,
    });
    let ratios = theirs.as_ref().map(|p| {
        let f = |k: &str| field(p, k);
        json!({
            "train": train / f("train_images_per_s"),
            "eval": eval / f("eval_images_per_s"),
            "memory": if device.is_cpu() {
                f("peak_rss_mb_after_train") / rss_train.unwrap_or(f64::NAN)
            } else {
                f64::NAN
            },
            "sweep": f("sweep_seconds") / sweep,
        })
    });
    let report = json!({
        "device": args.device,
        "threads": args.threads,
        "depth": args.depth,
        // Which implementation ran on our side (e.g. "cuDNN 9.19.0 (fp32)").
        "kernels": layerzero_kernels::describe_path(&device),
        "gemm_peak_gflops": gemm_peak,
        // Every measurement of the peak (before the first round and after each); the best is
        // the one above.
        "gemm_peak_measurements": peaks,
        // Throughputs above are each side's best round; every round is here.
        "rounds": rounds,
        "layerzero": ours,
        "pytorch": theirs,
        "ratios": ratios,
    });
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "", "layerzero", "pytorch", "ratio"
    );
    let p = |k: &str| {
        theirs
            .as_ref()
            .and_then(|t| t.get(k))
            .and_then(|v| v.as_f64())
    };
    let row = |name: &str, ours: f64, theirs: Option<f64>, ratio: Option<f64>| {
        println!(
            "{name:<28} {ours:>12.1} {:>12} {:>8}",
            theirs.map_or("-".into(), |t| format!("{t:.1}")),
            ratio.map_or("-".into(), |r| format!("{r:.2}×"))
        );
    };
    row(
        "train images/s (b=128)",
        train,
        p("train_images_per_s"),
        p("train_images_per_s").map(|t| train / t),
    );
    row(
        "eval images/s (b=500)",
        eval,
        p("eval_images_per_s"),
        p("eval_images_per_s").map(|t| eval / t),
    );
    row(
        "zero-kernel sweep (s)",
        sweep,
        p("sweep_seconds"),
        p("sweep_seconds").map(|t| t / sweep),
    );
    let rss_t = rss_train.unwrap_or(f64::NAN);
    row(
        "peak RSS after train (MB)",
        rss_t,
        p("peak_rss_mb_after_train"),
        p("peak_rss_mb_after_train")
            .filter(|_| device.is_cpu())
            .map(|t| t / rss_t),
    );
    if device.is_cpu() {
        println!(
            "GEMM peak {gemm_peak:.1} GFLOP/s on {} threads",
            args.threads
        );
    }
    let out = args.out_path();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    layerzero_ablate::write_atomic(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_parsing_and_macs() {
        assert_eq!(parse_depth("56"), Ok(56));
        assert!(parse_depth("51").unwrap_err().contains("6n + 2"));
        assert!(parse_depth("2").is_err());
        // The ResNet-20 figure the bench quoted before it took --depth (40.55 M MACs).
        assert_eq!(resnet_macs(20), 40_551_040.0);
        // ResNet-56: 36 more 3×3 convolutions that keep the width (n = 9 instead of 3).
        assert_eq!(resnet_macs(56), 40_551_040.0 + 36.0 * 2_359_296.0);
    }
}
