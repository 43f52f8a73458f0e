//! `cargo xtask bench`: ResNet-20 training and evaluation throughput, peak memory and the
//! zero-kernel sweep, for layerzero and the PyTorch peer (`../shared/bench/pytorch_peer.py`)
//! in the same run; writes `target/bench/bench.json`. Throughput is measured in alternating
//! rounds (`--rounds`) and each side's best round is reported.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use layerzero_models::{create_model, ForwardMode, Interventions, ModelConfig, Network};
use layerzero_train::{cross_entropy, trainable_params, Sgd, SgdConfig};
use serde_json::json;

use crate::{at_least_one, BadFlag};

/// The PyTorch peer script when `--peer` is not given (relative to the working directory: the
/// repository root under `cargo xtask`). Unlike a `--peer` given, it may be absent: the bench
/// then gives absolute figures only and says why on stderr.
pub const DEFAULT_PEER: &str = "../shared/bench/pytorch_peer.py";

/// The environment variable naming the peer's Python interpreter (default: `python3`).
pub const PEER_PYTHON_ENV: &str = "LAYERZERO_PEER_PYTHON";

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Threads for both sides.
    #[arg(long, default_value_t = 2, value_parser = at_least_one)]
    pub threads: usize,
    /// Timed steps per measurement (median reported).
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    pub steps: usize,
    /// Rounds of the training and evaluation measurements. The two sides alternate (layerzero,
    /// PyTorch, layerzero, …) and each side's best round is reported, so that a burst of load
    /// from elsewhere on a shared machine slows one round, not one side.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// Images of the zero-kernel sweep.
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
    pub sweep_images: usize,
    /// The PyTorch peer script, which must exist [default: ../shared/bench/pytorch_peer.py,
    /// skipped with a note on stderr where it or an interpreter with torch is missing].
    #[arg(long, value_parser = existing_file)]
    pub peer: Option<PathBuf>,
    /// Where to write the results [default: target/bench/bench.json on the CPU,
    /// target/bench/bench-cuda.json on CUDA, so one never overwrites the other]. Checked before
    /// the bench runs: a file path (not a folder) whose folder exists or can be made.
    #[arg(long, value_parser = out_file)]
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

/// `--peer`: a file that exists.
fn existing_file(s: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path.is_file() {
        Ok(path)
    } else if path.exists() {
        Err(format!("{s}: not a file"))
    } else {
        Err(format!("{s}: no such file"))
    }
}

/// `--out`: a path a file can be written to, as far as can be told without writing: not a
/// folder, not ending in `/`, and the nearest existing folder above it a folder (not a file).
fn out_file(s: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if s.is_empty() {
        return Err("an empty path; give the file to write, e.g. bench.json".into());
    }
    if s.ends_with('/') || path.is_dir() {
        return Err(format!(
            "{s} names a folder; give the file to write, e.g. {}",
            path.join("bench.json").display()
        ));
    }
    for above in path.ancestors().skip(1) {
        if above.as_os_str().is_empty() {
            break;
        }
        if above.exists() {
            if !above.is_dir() {
                return Err(format!(
                    "{} is not a folder, so {s} cannot be made",
                    above.display()
                ));
            }
            break;
        }
    }
    Ok(path)
}

/// Makes the folder of the results file and checks that a file can be written in it, before
/// the bench spends minutes measuring.
fn prepare_out(out: &Path) -> Result<()> {
    if out.is_dir() {
        return Err(BadFlag(format!(
            "--out {}: a folder; give the file to write",
            out.display()
        ))
        .into());
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--out {}: creating {}", out.display(), dir.display()))?;
    let name = out.file_name().unwrap_or(OsStr::new("bench.json"));
    let mut probe = OsString::from(".");
    probe.push(name);
    probe.push(format!(".probe-{}", std::process::id()));
    let probe = dir.join(probe);
    std::fs::write(&probe, b"")
        .with_context(|| format!("--out {}: cannot write in {}", out.display(), dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
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

/// The median (the upper one of an even count); NaN for no values.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
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
        // As the trainer runs a step: on the CPU, on a worker of the thread pool.
        layerzero_kernels::on_worker_thread(&dev, || -> Result<()> {
            let logits = net.forward(&x, ForwardMode::Train, Interventions::none())?;
            let loss = cross_entropy(&logits, &y, 0.0)?;
            let grads = loss.backward()?;
            sgd.step(&grads, 0.05)?;
            Ok(())
        })?;
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

/// The PyTorch peer to run: its interpreter and script.
#[derive(Debug, Clone, PartialEq)]
struct Peer {
    python: OsString,
    script: PathBuf,
}

/// Whether and how the peer runs.
#[derive(Debug, PartialEq)]
enum PeerChoice {
    Run(Peer),
    /// The implicit default is not there; the reason, for stderr.
    Skip(String),
}

/// [`DEFAULT_PEER`] from the current folder (the repository root, as the README runs it), else
/// from the workspace this binary was built in, so that a run from a subfolder finds it too.
fn default_peer() -> PathBuf {
    let here = PathBuf::from(DEFAULT_PEER);
    if here.is_file() {
        return here;
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_PEER);
    if built.is_file() {
        built
    } else {
        here
    }
}

/// Chooses the peer from `--peer` (`explicit`), the default script and `LAYERZERO_PEER_PYTHON`
/// (`python_env`; empty counts as unset). The peer is asked for when either `--peer` or the
/// interpreter is named: then what is missing is an error (a [`BadFlag`] for a named file or
/// interpreter that does not exist). Only the implicit default (`python3` and
/// [`DEFAULT_PEER`]) may be skipped.
fn choose_peer(
    explicit: Option<&Path>,
    default: &Path,
    python_env: Option<OsString>,
) -> Result<PeerChoice> {
    let python_env = python_env.filter(|p| !p.is_empty());
    let asked = explicit.is_some() || python_env.is_some();
    let script = explicit.unwrap_or(default).to_path_buf();
    if !asked && !script.is_file() {
        return Ok(PeerChoice::Skip(format!(
            "the peer script {} is absent (run from the repository root, or give --peer)",
            script.display()
        )));
    }
    let python = python_env.clone().unwrap_or_else(|| "python3".into());
    let shown = python.to_string_lossy().into_owned();
    let named = |what: &str| match &python_env {
        Some(_) => format!("{PEER_PYTHON_ENV}={shown}: {what}"),
        None => format!("{shown} ({PEER_PYTHON_ENV} unset): {what}"),
    };
    let probe = Command::new(&python).args(["-c", "import torch"]).output();
    // A named interpreter or script that does not exist is a mistake in the command.
    if let Err(e) = &probe {
        if python_env.is_some() && e.kind() == std::io::ErrorKind::NotFound {
            return Err(BadFlag(named("no such interpreter")).into());
        }
    }
    if !script.is_file() {
        return Err(BadFlag(if explicit.is_some() {
            format!("--peer {}: no such file", script.display())
        } else {
            format!(
                "{PEER_PYTHON_ENV} is set but the peer script {} (the default --peer) is absent \
                 here; run from the repository root or give --peer",
                script.display()
            )
        })
        .into());
    }
    let problem = match probe {
        Ok(o) if o.status.success() => return Ok(PeerChoice::Run(Peer { python, script })),
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let last = stderr.lines().last().unwrap_or("").trim().to_string();
            named(&format!("cannot import torch ({last})"))
        }
        Err(e) => named(&format!("cannot be run ({e})")),
    };
    if asked {
        anyhow::bail!(
            "the PyTorch peer was asked for but cannot run: {problem}; set {PEER_PYTHON_ENV} \
             to an interpreter with torch"
        );
    }
    Ok(PeerChoice::Skip(format!(
        "{problem}; set {PEER_PYTHON_ENV} to an interpreter with torch"
    )))
}

/// One run of the peer, with a sweep over `sweep_images` images (0: none).
fn peer(args: &BenchArgs, who: &Peer, sweep_images: usize) -> Result<serde_json::Value> {
    let out = Command::new(&who.python)
        .arg(&who.script)
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
    // Everything that can be wrong with the options is found before the minutes of measuring.
    // (The parser refuses 0 for the counts; a caller in-process may not have used it.)
    for (flag, zero) in [
        ("--threads", args.threads == 0),
        ("--steps", args.steps == 0),
        ("--sweep-images", args.sweep_images == 0),
        ("--rounds", args.rounds == 0),
    ] {
        if zero {
            return Err(BadFlag(format!("{flag}: expected a whole number ≥ 1, found 0")).into());
        }
    }
    // The figures are labelled with this thread count: a pool of another size is an error.
    crate::set_global_threads(args.threads)?;
    let out = args.out_path();
    prepare_out(&out)?;
    let peer_choice = choose_peer(
        args.peer.as_deref(),
        &default_peer(),
        std::env::var_os(PEER_PYTHON_ENV),
    )?;
    let who = match peer_choice {
        PeerChoice::Run(p) => Some(p),
        PeerChoice::Skip(why) => {
            eprintln!("note: PyTorch peer skipped, absolute figures only: {why}");
            None
        }
    };
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
        let p = match &who {
            Some(who) => {
                let sweep = if last { args.sweep_images } else { 0 };
                Some(peer(args, who, sweep)?)
            }
            None => None,
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
        // Which implementation ran on our side (e.g. "cuDNN 9.19.0 (fp32, multi-tensor SGD, fused
        // loss)").
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
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
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

    #[test]
    fn the_median_of_no_values_is_nan_not_a_panic() {
        assert!(median(Vec::new()).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn out_refuses_a_folder_and_a_path_under_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        assert!(out_file(&d).unwrap_err().contains("names a folder"));
        assert!(out_file(&format!("{d}/new/"))
            .unwrap_err()
            .contains("names a folder"));
        assert!(out_file("").is_err());
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let under = format!("{}/sub/b.json", file.display());
        assert!(out_file(&under).unwrap_err().contains("is not a folder"));
        // Folders that do not exist yet are made; an existing file is overwritten.
        assert!(out_file(&format!("{d}/a/b/bench.json")).is_ok());
        assert!(out_file(&file.display().to_string()).is_ok());
        assert!(out_file("bench.json").is_ok());
        prepare_out(&dir.path().join("a/b/bench.json")).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        assert_eq!(
            std::fs::read_dir(dir.path().join("a/b")).unwrap().count(),
            0
        );
        let err = prepare_out(dir.path()).unwrap_err();
        assert!(err.downcast_ref::<BadFlag>().is_some(), "{err}");
    }

    #[test]
    fn only_the_implicit_peer_may_be_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.py");
        let script = dir.path().join("peer.py");
        std::fs::write(&script, b"").unwrap();
        let bad_flag = |r: Result<PeerChoice>| {
            let e = r.unwrap_err();
            assert!(e.downcast_ref::<BadFlag>().is_some(), "{e}");
            e.to_string()
        };
        // Nothing named and the default script absent: skipped, saying why.
        for env in [None, Some(OsString::new())] {
            match choose_peer(None, &absent, env).unwrap() {
                PeerChoice::Skip(why) => assert!(why.contains("absent.py"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        // A named script that does not exist, a named interpreter that does not exist.
        let e = bad_flag(choose_peer(Some(&absent), &script, Some("true".into())));
        assert!(e.contains("--peer") && e.contains("absent.py"), "{e}");
        let e = bad_flag(choose_peer(
            None,
            &script,
            Some("/nonexistent/python".into()),
        ));
        assert!(
            e.contains("LAYERZERO_PEER_PYTHON=/nonexistent/python"),
            "{e}"
        );
        // The interpreter named, the default script absent.
        let e = bad_flag(choose_peer(None, &absent, Some("true".into())));
        assert!(
            e.contains("LAYERZERO_PEER_PYTHON") && e.contains("absent.py"),
            "{e}"
        );
        // A named interpreter that cannot import torch (`false` fails as it would).
        let e = choose_peer(Some(&script), &absent, Some("false".into())).unwrap_err();
        assert!(e.to_string().contains("cannot import torch"), "{e}");
        // One that can (`true` succeeds as it would).
        assert_eq!(
            choose_peer(Some(&script), &absent, Some("true".into())).unwrap(),
            PeerChoice::Run(Peer {
                python: "true".into(),
                script: script.clone()
            })
        );
    }

    #[test]
    fn a_thread_pool_of_another_size_is_refused_before_any_work() {
        // Builds rayon's global pool (all cores) if nothing in this process did yet.
        let n = rayon::current_num_threads() + 1;
        let dir = tempfile::tempdir().unwrap();
        let args = BenchArgs {
            threads: n,
            steps: 1,
            rounds: 1,
            sweep_images: 1,
            peer: None,
            out: Some(dir.path().join("bench.json")),
            device: "cpu".into(),
            depth: 8,
        };
        let err = bench(&args).unwrap_err().to_string();
        assert!(
            err.contains(&format!("--threads {n}")) && err.contains("already runs"),
            "{err}"
        );
        assert!(!dir.path().join("bench.json").exists());
        // In-process callers bypass the parser: 0 is still refused.
        let err = bench(&BenchArgs { steps: 0, ..args }).unwrap_err();
        assert!(err.to_string().contains("--steps"), "{err}");
    }
}
