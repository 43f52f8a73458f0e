//! The ablation engine: applies each mode's interventions to a trained network, evaluates the
//! test set, and writes the measurements into a [`ResultsFile`].
//!
//! [`run`] lists the mode's candidates ([`candidates`]: every convolution and linear layer, or
//! every residual block), selects them by `layers` patterns, builds one [`Job`] per ablation
//! ([`plan`](fn@plan)), keeps the jobs of its shard, evaluates the baseline and every job on the
//! same images, and records each job with [`measure`] against the baseline. Interventions are
//! passed to the forward ([`layerzero_models::Interventions`]), never written into the weights:
//! the network is bit-identical after a run.
//!
//! # The prefix cache
//!
//! An ablation in segment `s` (the stem, a block, the head) does not change the activations
//! before it. The test set is therefore processed in chunks of `chunk_images` images, in
//! order; for each chunk the engine
//!
//! 1. runs the chunk through the network once, segment by segment, in eval mode, keeping the
//!    input of every segment that some job starts at ([`PrefixCache`]), and scores the
//!    baseline logits;
//! 2. runs every job, in parallel on a pool of `threads` threads, from the cached input of
//!    its first affected segment only ([`PrefixCache::run`]), and scores the logits with
//!    [`layerzero_train::score_logits`];
//! 3. appends the per-image results (top-1, top-5, cross-entropy) of every job and drops the
//!    cache.
//!
//! **Memory.** The cache of one chunk holds at most
//!
//! ```text
//! chunk_images × Σ_{s = 0}^{S-1} numel(input of segment s for one image) × 4 bytes
//! ```
//!
//! ([`prefix_cache_bytes_per_image`]; only the segments some job starts at are kept). For
//! ResNet-20 that is 105 472 floats = 421 888 bytes per image, so **≈ 422 MB (402 MiB) at the
//! default chunk of 1000 images**. On top of it each of the `threads` workers holds the
//! transient activations of one forward of a chunk from its start segment (a few tensors of
//! the size of the largest activation, 16·32·32 floats per image for ResNet-20, i.e. 65.5 MB
//! at chunk 1000, plus the convolution kernels' scratch), and every job keeps its per-image
//! results (10 bytes per image). Measured with candle 0.11's CPU kernels on ResNet-20 at chunk
//! 1000 with all 11 segments cached: peak resident memory 0.85 GB with 1 thread and 1.06 GB
//! with 2 threads (0.42 GB of it the cache). Peak memory thus scales with
//! `chunk_images × (cache per image + threads × one forward's working set per image)`, not
//! with the size of the test set; lower `chunk_images` to lower it. Results do not depend on
//! the chunk size or the thread count beyond floating-point noise (batch composition can
//! change a kernel's summation order).
//!
//! # Cumulative modes
//!
//! `cumulative-zero-kernel` and `cumulative-skip-branch` run [`greedy_cumulative`] (Veit et
//! al.'s multiple deletion) with an evaluator that stacks the removed layers' interventions.
//! Step `k` evaluates every remaining candidate `r` together with the `k − 1` removed ones in
//! one batched pass: per chunk, the cache is built *under the removed interventions*, and each
//! `r` restarts at its own segment (what precedes `r` is the same with or without it). That is
//! `m + (m − 1) + …` partial evaluations for `m` candidates, O(m²), bounded by
//! `max_cumulative_steps`. Records carry `step`; `n_ablations` is the number of steps.
//!
//! Chosen and scored on the same images, each step is the best of the remaining candidates
//! *on those images*, so the curve flatters itself. With `selection_images: Some(k)` the path
//! is chosen on the first `k` evaluation images only; the baseline and each step's set of
//! layers are then evaluated on the images after them (one pass per step: the earlier steps
//! as the base, the new layer as the job), and the records hold those held-out measurements,
//! each with the `selection_top1` that chose it. The file's `n_images` counts the held-out
//! images and `selection_images` the others.

mod cache;
mod plan;

use std::path::PathBuf;
use std::time::Instant;

use layerzero_data::{BatchConfig, Batcher, CifarSet, DataError};
use layerzero_models::{Interventions, ModelError, Network};
use layerzero_train::{score_logits, PerImage};
use rayon::prelude::*;

pub use cache::{job_logits, prefix_cache_bytes_per_image, PrefixCache};
pub use plan::{
    candidates, kind_name, plan, rerandomize_stream, role_name, Candidate, Job, Plan, Target,
    BLOCK_KIND, BLOCK_ROLE,
};

use crate::cumulative::{greedy_cumulative, GreedyOptions};
use crate::error::{Error, Result};
use crate::mode::AblationMode;
use crate::schema::{LayerRecord, ResultsFile, WeightsRef, SCHEMA_VERSION};
use crate::shard::Shard;
use crate::sparsity::default_levels;
use crate::stats::{measure, Evaluation, VerdictRule};

/// Default number of test images per chunk of the prefix cache.
pub const DEFAULT_CHUNK_IMAGES: usize = 1000;

/// What to ablate and how (everything of `layerzero ablate` except the network and data).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// The intervention.
    pub mode: AblationMode,
    /// Comma-separated glob patterns over the candidates' names (`--layers`); `None` selects
    /// every candidate. See [`crate::select`].
    pub layers: Option<String>,
    /// Evaluate only this shard's jobs (`--shard K/N`); not with cumulative modes.
    pub shard: Option<Shard>,
    /// The verdict rule.
    pub rule: VerdictRule,
    /// Test images per chunk of the prefix cache (at least 1); see the module docs for memory.
    pub chunk_images: usize,
    /// Sparsity levels of `zero-filters` / `prune`: fractions in `[0, 1]`, strictly
    /// ascending, at least one. Ignored by the other modes.
    pub levels: Vec<f64>,
    /// Seed of `rerandomize` (recorded in the results); ignored by the other modes. The fresh
    /// values come from the stream [`rerandomize_stream`]`(seed)`, never from the stream a
    /// network built with `seed` was initialised from.
    pub seed: u64,
    /// The epoch-0 weights file (`init.safetensors`, PyTorch names) for `reinit`.
    pub init_weights: Option<PathBuf>,
    /// Most steps of the cumulative modes (at least 1); `None`: until every selected
    /// candidate is removed.
    pub max_cumulative_steps: Option<usize>,
    /// Cumulative modes: choose the greedy path on the first this many evaluation images and
    /// measure it on the rest (at least 1, fewer than the set). `None`: choose and measure on
    /// the same images, which flatters the path (see the module docs).
    pub selection_images: Option<usize>,
}

impl EngineConfig {
    /// The defaults for `mode`: every candidate, no shard, the default verdict rule, chunks of
    /// [`DEFAULT_CHUNK_IMAGES`], levels 0.1 … 0.9, seed 0, no init file, no step limit, no
    /// held-out selection.
    pub fn new(mode: AblationMode) -> Self {
        EngineConfig {
            mode,
            layers: None,
            shard: None,
            rule: VerdictRule::default(),
            chunk_images: DEFAULT_CHUNK_IMAGES,
            levels: default_levels(),
            seed: 0,
            init_weights: None,
            max_cumulative_steps: None,
            selection_images: None,
        }
    }

    /// Checks the settings that do not need the network.
    pub fn validate(&self) -> Result<()> {
        self.rule.validate()?;
        if self.chunk_images == 0 {
            return Err(Error::invalid("chunk_images", "at least 1", 0));
        }
        if let Some(shard) = self.shard {
            shard.validate()?;
            if self.mode.is_cumulative() {
                return Err(Error::invalid(
                    "--shard",
                    format!(
                        "no shard for mode {}: each step depends on the previous ones",
                        self.mode
                    ),
                    shard,
                ));
            }
        }
        if self.max_cumulative_steps == Some(0) {
            return Err(Error::invalid("max_cumulative_steps", "at least 1", 0));
        }
        match self.selection_images {
            Some(0) => return Err(Error::invalid("selection_images", "at least 1", 0)),
            Some(k) if !self.mode.is_cumulative() => {
                return Err(Error::invalid(
                    "selection_images",
                    format!(
                        "none for mode {}: only the cumulative modes choose a path",
                        self.mode
                    ),
                    k,
                ))
            }
            _ => {}
        }
        if self.mode.is_swept() {
            let expected = "at least one fraction in [0, 1], strictly ascending";
            if self.levels.is_empty() {
                return Err(Error::invalid("--levels", expected, "none"));
            }
            for (i, &l) in self.levels.iter().enumerate() {
                let ascending = i == 0 || self.levels[i - 1] < l;
                if !(l.is_finite() && (0.0..=1.0).contains(&l) && ascending) {
                    return Err(Error::invalid(
                        "--levels",
                        expected,
                        format!("{:?}", self.levels),
                    ));
                }
            }
        }
        if self.mode == AblationMode::Reinit && self.init_weights.is_none() {
            return Err(Error::invalid(
                "init_weights",
                "the epoch-0 weights file (init.safetensors) for mode reinit",
                "none given",
            ));
        }
        Ok(())
    }
}

/// The network and data an ablation run works on, and how the results describe them.
#[derive(Debug, Clone)]
pub struct RunContext<'a> {
    /// The trained network (its weights are only read).
    pub net: &'a dyn Network,
    /// The evaluation images, in order.
    pub test: &'a CifarSet,
    /// The evaluated weights file and its SHA-256 ([`crate::sha256_file`]).
    pub weights: WeightsRef,
    /// Data set name for the results, e.g. `cifar10`.
    pub dataset: String,
    /// Split name for the results, e.g. `test`.
    pub split: String,
    /// Worker threads (at least 1): jobs of a chunk run in parallel on a pool this size.
    pub threads: usize,
}

/// Runs an ablation study and returns its (validated) results; a partial file with its
/// `shard` when `cfg.shard` is set.
///
/// `progress(done, total)` is called on the calling thread after each chunk, counting job
/// evaluations on one chunk (jobs × chunks; for cumulative modes the sum over steps of the
/// remaining candidates × chunks of the selection images, plus steps × chunks of the held-out
/// images with `selection_images`), `done` reaching `total` at the end.
pub fn run(
    ctx: &RunContext<'_>,
    cfg: &EngineConfig,
    progress: Option<&dyn Fn(usize, usize)>,
) -> Result<ResultsFile> {
    let started = Instant::now();
    cfg.validate()?;
    let plan = plan::plan(ctx.net, cfg)?;
    // With a held-out selection the path is chosen on `choose_set` and measured on
    // `measure_set`; otherwise both are the whole set.
    let split = match cfg.selection_images {
        Some(k) if cfg.mode.is_cumulative() => {
            if k >= ctx.test.len() {
                return Err(Error::invalid(
                    "selection_images",
                    format!(
                        "fewer than the {} evaluation images, so that some are left to \
                         measure on",
                        ctx.test.len()
                    ),
                    k,
                ));
            }
            Some((ctx.test.subset(0..k), ctx.test.subset(k..ctx.test.len())))
        }
        _ => None,
    };
    let (choose_set, measure_set) = match &split {
        Some((c, m)) => (c, m),
        None => (ctx.test, ctx.test),
    };
    let evaluator = Evaluator::new(ctx.net, choose_set, cfg.chunk_images, ctx.threads)?;
    let chunks = evaluator.chunks();
    let mut done = 0usize;
    let mut selection_baseline = None;
    let (baseline, layers, n_ablations) = if cfg.mode.is_cumulative() {
        let m = plan.jobs.len();
        let steps = cfg.max_cumulative_steps.unwrap_or(m).min(m);
        let measuring = match &split {
            Some((_, held)) => Some(Evaluator::new(
                ctx.net,
                held,
                cfg.chunk_images,
                ctx.threads,
            )?),
            None => None,
        };
        let total = chunks * (0..steps).map(|k| m - k).sum::<usize>()
            + measuring.as_ref().map_or(0, |e| e.chunks() * steps);
        let mut report = |k: usize| {
            done += k;
            if let Some(p) = progress {
                p(done, total);
            }
        };
        let run = run_cumulative(
            &evaluator,
            measuring.as_ref(),
            &plan,
            cfg,
            steps,
            &mut report,
        )?;
        selection_baseline = run.selection_baseline.map(|e| e.metrics());
        let n = run.records.len();
        (run.baseline, run.records, n)
    } else {
        let mine: Vec<&Job> = match cfg.shard {
            Some(shard) => shard.select(plan.jobs.iter()),
            None => plan.jobs.iter().collect(),
        };
        let total = chunks * mine.len();
        let mut report = |k: usize| {
            done += k;
            if let Some(p) = progress {
                p(done, total);
            }
        };
        let (baseline, evals) = evaluator.evaluate(Interventions::none(), &mine, &mut report)?;
        let mut layers = Vec::with_capacity(mine.len());
        for (job, eval) in mine.iter().zip(&evals) {
            let info = &plan.candidates[job.candidate].info;
            let mut record = LayerRecord::new(info, &measure(&baseline, eval, &cfg.rule)?);
            record.level = job.level;
            record.zeroed = job.zeroed();
            layers.push(record);
        }
        (baseline, layers, plan.jobs.len())
    };
    let mut results = ResultsFile {
        schema: SCHEMA_VERSION,
        arch: ctx.net.spec().name.clone(),
        weights: ctx.weights.clone(),
        init_weights: plan.init_weights.clone(),
        dataset: ctx.dataset.clone(),
        split: ctx.split.clone(),
        n_images: measure_set.len() as u64,
        selection_images: split.as_ref().map(|(c, _)| c.len() as u64),
        selection_baseline,
        mode: cfg.mode,
        seed: (cfg.mode == AblationMode::Rerandomize).then_some(cfg.seed),
        // The engine does not know it; the caller that does sets it.
        train_seed: None,
        baseline: baseline.metrics(),
        verdict_rule: cfg.rule.describe(),
        verdict_thresholds: cfg.rule,
        n_ablations,
        shard: cfg.shard,
        layers,
        elapsed_s: started.elapsed().as_secs_f64(),
        // The engine does not know it; the caller that does sets it.
        command: None,
        threads: ctx.threads,
    };
    results.sort_layers();
    results.validate("ablation results")?;
    Ok(results)
}

/// What [`run_cumulative`] measured.
struct CumulativeRun {
    /// The baseline the records are measured against.
    baseline: Evaluation,
    /// One record per step.
    records: Vec<LayerRecord>,
    /// With a held-out selection: the baseline on the images the path was chosen on.
    selection_baseline: Option<Evaluation>,
}

/// The greedy multiple deletion.
///
/// The path is chosen on `evaluator`'s images. With `measuring` (a held-out selection) the
/// baseline and each step's set of layers are then evaluated again on its images, and the
/// records hold those measurements, each with the top-1 that chose it.
fn run_cumulative(
    evaluator: &Evaluator<'_>,
    measuring: Option<&Evaluator<'_>>,
    plan: &Plan,
    cfg: &EngineConfig,
    steps: usize,
    report: &mut dyn FnMut(usize),
) -> Result<CumulativeRun> {
    // Positions into `plan.jobs` (one single-ablation job per selected candidate).
    let positions: Vec<usize> = (0..plan.jobs.len()).collect();
    let mut baseline: Option<Evaluation> = None;
    // The evaluations of the current step: the removed positions and, per remaining
    // candidate position, its evaluation together with them.
    let mut step_removed: Option<Vec<usize>> = None;
    let mut step_evals: Vec<Option<Evaluation>> = vec![None; plan.jobs.len()];
    // The evaluation after each completed step (the chosen candidate's).
    let mut chosen: Vec<Evaluation> = Vec::new();

    let mut evaluate = |set: &[usize]| -> Result<f64> {
        let Some((&last, removed)) = set.split_last() else {
            return Err(Error::invalid(
                "cumulative set",
                "at least one layer",
                "none",
            ));
        };
        if step_removed.as_deref() != Some(removed) {
            // A new step: the previous step chose `removed.last()`; keep its evaluation.
            if let Some(&prev) = removed.last() {
                let eval = step_evals.get_mut(prev).and_then(Option::take);
                chosen.push(eval.ok_or_else(|| {
                    Error::invalid(
                        "cumulative step",
                        "the evaluation of the previous step's choice",
                        format!("none for {}", plan.jobs[prev].name),
                    )
                })?);
            }
            let mut base = Interventions::new();
            for &r in removed {
                base = cache::combine(&base, &plan.jobs[r].interventions()?);
            }
            let remaining: Vec<usize> = positions
                .iter()
                .copied()
                .filter(|p| !removed.contains(p))
                .collect();
            let jobs: Vec<&Job> = remaining.iter().map(|&p| &plan.jobs[p]).collect();
            let (base_eval, evals) = evaluator.evaluate(&base, &jobs, report)?;
            if removed.is_empty() {
                baseline = Some(base_eval);
            }
            step_evals.iter_mut().for_each(|e| *e = None);
            for (p, e) in remaining.into_iter().zip(evals) {
                step_evals[p] = Some(e);
            }
            step_removed = Some(removed.to_vec());
        }
        step_evals
            .get(last)
            .and_then(Option::as_ref)
            .map(|e| e.metrics().top1)
            .ok_or_else(|| {
                Error::invalid(
                    "cumulative candidate",
                    "a candidate not yet removed",
                    plan.jobs.get(last).map_or("?", |j| j.name.as_str()),
                )
            })
    };
    let options = GreedyOptions {
        max_steps: Some(steps),
        stop_below: None,
    };
    let greedy = greedy_cumulative(&positions, &options, &mut evaluate)?;
    if let Some(last) = greedy.last() {
        if let Some(eval) = step_evals.get_mut(last.removed).and_then(Option::take) {
            chosen.push(eval);
        }
    }
    let baseline = baseline
        .ok_or_else(|| Error::invalid("cumulative run", "at least one step", "no evaluation"))?;
    if chosen.len() != greedy.len() {
        return Err(Error::invalid(
            "cumulative run",
            format!("one evaluation per step ({})", greedy.len()),
            chosen.len(),
        ));
    }
    let mut records = Vec::with_capacity(greedy.len());
    let Some(held) = measuring else {
        for (step, eval) in greedy.iter().zip(&chosen) {
            let info = &plan.candidates[plan.jobs[step.removed].candidate].info;
            let m = measure(&baseline, eval, &cfg.rule)?;
            records.push(LayerRecord::new(info, &m).with_step(step.step));
        }
        return Ok(CumulativeRun {
            baseline,
            records,
            selection_baseline: None,
        });
    };
    // Step k on the held-out images: the first k − 1 removed as the base, the k-th as the one
    // job on top (so each pass also gives the previous step's set, the baseline at step 1).
    let mut held_baseline = None;
    let mut base = Interventions::new();
    for step in &greedy {
        let job = &plan.jobs[step.removed];
        let (before, evals) = held.evaluate(&base, &[job], report)?;
        let held_baseline: &Evaluation = held_baseline.get_or_insert(before);
        let eval = evals.into_iter().next().ok_or_else(|| {
            Error::invalid(
                "held-out step",
                "one evaluation",
                format!("none for {}", job.name),
            )
        })?;
        let info = &plan.candidates[job.candidate].info;
        let m = measure(held_baseline, &eval, &cfg.rule)?;
        records.push(
            LayerRecord::new(info, &m)
                .with_step(step.step)
                .with_selection_top1(step.accuracy),
        );
        base = cache::combine(&base, &job.interventions()?);
    }
    let held_baseline = held_baseline
        .ok_or_else(|| Error::invalid("cumulative run", "at least one step", "no evaluation"))?;
    Ok(CumulativeRun {
        baseline: held_baseline,
        records,
        selection_baseline: Some(baseline),
    })
}

/// Evaluates the baseline (no intervention) on every image of `test`, chunk by chunk, exactly
/// as [`run`] does (to check a network after a run, e.g. that the run left it unchanged).
pub fn evaluate_baseline(
    net: &dyn Network,
    test: &CifarSet,
    chunk_images: usize,
    threads: usize,
) -> Result<Evaluation> {
    let evaluator = Evaluator::new(net, test, chunk_images, threads)?;
    let (baseline, _) = evaluator.evaluate(Interventions::none(), &[], &mut |_| {})?;
    Ok(baseline)
}

/// Evaluates jobs on a test set through the prefix cache, chunk by chunk, on its own thread
/// pool.
#[derive(Debug)]
pub struct Evaluator<'a> {
    net: &'a dyn Network,
    test: &'a CifarSet,
    chunk_images: usize,
    pool: rayon::ThreadPool,
}

impl<'a> Evaluator<'a> {
    /// An evaluator of `net` on `test` with chunks of `chunk_images` images and `threads`
    /// worker threads. Errors on an empty set or a zero count.
    pub fn new(
        net: &'a dyn Network,
        test: &'a CifarSet,
        chunk_images: usize,
        threads: usize,
    ) -> Result<Self> {
        if chunk_images == 0 {
            return Err(Error::invalid("chunk_images", "at least 1", 0));
        }
        if threads == 0 {
            return Err(Error::invalid("threads", "at least 1", 0));
        }
        if test.is_empty() {
            return Err(Error::invalid(
                "evaluation set",
                "at least one image",
                "0 images",
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::invalid("threads", format!("a pool of {threads} threads"), e))?;
        Ok(Evaluator {
            net,
            test,
            chunk_images,
            pool,
        })
    }

    /// Number of chunks the set is cut into.
    pub fn chunks(&self) -> usize {
        self.test.len().div_ceil(self.chunk_images)
    }

    /// Evaluates `base` alone and every job on top of `base`, on every image; returns the
    /// base evaluation and one evaluation per job, in order. `report(k)` is called after each
    /// chunk with the number of jobs evaluated on it.
    pub fn evaluate(
        &self,
        base: &Interventions,
        jobs: &[&Job],
        report: &mut dyn FnMut(usize),
    ) -> Result<(Evaluation, Vec<Evaluation>)> {
        let net = self.net;
        let mut keep: Vec<usize> = jobs.iter().map(|j| j.segment).collect();
        keep.sort_unstable();
        keep.dedup();
        let batcher = Batcher::new(
            self.test,
            BatchConfig::eval(self.test.dataset(), self.chunk_images),
            net.params().device().clone(),
        )
        .map_err(|e| data_ctx("batching the evaluation set".into(), e))?;
        let mut base_acc = Accumulator::default();
        let mut accs: Vec<Accumulator> = jobs.iter().map(|_| Accumulator::default()).collect();
        let mut first = 0usize;
        for batch in batcher.epoch(0) {
            let batch = batch.map_err(|e| data_ctx("reading the evaluation set".into(), e))?;
            let labels: Vec<u32> = batch
                .labels
                .to_vec1()
                .map_err(|e| model_ctx("reading labels".into(), e))?;
            let range = format!("images {first}..{}", first + labels.len());
            let images = &batch.images;
            let (base_scores, job_scores) = self.pool.install(|| -> Result<_> {
                let cache = PrefixCache::build_keeping(net, images, base, &keep)?;
                let base_scores = score(cache.logits(), &labels, || range.clone())?;
                let job_scores = jobs
                    .par_iter()
                    .map(|job| {
                        let what = || format!("{} on {range}", job.label());
                        let logits =
                            cache.run(net, &job.interventions()?).map_err(|e| match e {
                                Error::Model { context, source } => Error::Model {
                                    context: format!("{}: {context}", what()),
                                    source,
                                },
                                other => other,
                            })?;
                        score(&logits, &labels, what)
                    })
                    .collect::<Result<Vec<PerImage>>>()?;
                Ok((base_scores, job_scores))
            })?;
            base_acc.push(base_scores);
            for (acc, s) in accs.iter_mut().zip(job_scores) {
                acc.push(s);
            }
            first += labels.len();
            report(jobs.len());
        }
        let base_eval = base_acc.finish("the baseline")?;
        let evals = accs
            .into_iter()
            .zip(jobs)
            .map(|(acc, job)| acc.finish(&job.label()))
            .collect::<Result<Vec<_>>>()?;
        Ok((base_eval, evals))
    }
}

fn score(
    logits: &candle_core::Tensor,
    labels: &[u32],
    what: impl Fn() -> String,
) -> Result<PerImage> {
    score_logits(logits, labels).map_err(|source| Error::Train {
        context: format!("scoring {}", what()),
        source: Box::new(source),
    })
}

/// Per-image results of one evaluation, chunk after chunk.
#[derive(Debug, Default)]
struct Accumulator {
    top1: Vec<bool>,
    top5: Vec<bool>,
    loss: Vec<f64>,
}

impl Accumulator {
    fn push(&mut self, p: PerImage) {
        self.top1.extend(p.top1);
        self.top5.extend(p.top5);
        self.loss.extend(p.loss);
    }

    fn finish(self, what: &str) -> Result<Evaluation> {
        if let Some(i) = self.loss.iter().position(|l| !l.is_finite()) {
            return Err(Error::invalid(
                format!("cross-entropy of image {i} with {what}"),
                "a finite number (are the logits finite?)",
                self.loss[i],
            ));
        }
        Evaluation::new(self.top1, self.top5, self.loss)
    }
}

pub(crate) fn model_ctx(context: String, source: impl Into<ModelError>) -> Error {
    Error::Model {
        context,
        source: Box::new(source.into()),
    }
}

fn data_ctx(context: String, source: DataError) -> Error {
    Error::Data {
        context,
        source: Box::new(source),
    }
}
