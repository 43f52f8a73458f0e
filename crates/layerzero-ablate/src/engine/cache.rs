//! The prefix cache: the input of every segment of the network for one chunk of images,
//! computed once, from which each ablation re-runs only the segments it changes.

use candle_core::{DType, Tensor};
use layerzero_models::{
    ForwardMode, Intervention, Interventions, ModelError, Network, WeightOverride,
};

use super::{model_ctx, plan::Job};
use crate::error::{Error, Result};

/// Segment inputs of one chunk of images under a *base* set of interventions (none for single
/// ablations; the layers removed so far in the cumulative modes), and the base logits.
///
/// Segment `s`'s input is the output of segments `0..s` (the images for `s = 0`). An extra
/// intervention whose first affected segment is `s` leaves segments `0..s` unchanged, so
/// `base ∪ extra` evaluated from the cached input of `s` equals the full forward
/// ([`PrefixCache::run`]).
#[derive(Debug, Clone)]
pub struct PrefixCache {
    inputs: Vec<Option<Tensor>>,
    logits: Tensor,
    base: Interventions,
}

impl PrefixCache {
    /// Runs `images` `(N, C, H, W)` through `net` in eval mode under `base`, one segment at a
    /// time, keeping the input of every segment.
    pub fn build(net: &dyn Network, images: &Tensor, base: &Interventions) -> Result<Self> {
        let all: Vec<usize> = (0..net.segments().len()).collect();
        Self::build_keeping(net, images, base, &all)
    }

    /// As [`PrefixCache::build`], keeping only the inputs of the segments in `keep` (the
    /// others are freed as soon as the next segment has run); indices past the last segment
    /// are ignored.
    pub fn build_keeping(
        net: &dyn Network,
        images: &Tensor,
        base: &Interventions,
        keep: &[usize],
    ) -> Result<Self> {
        let (c, _, _) = net.spec().input;
        let dims = images.dims();
        if dims.len() != 4 || dims[1] != c || dims[0] == 0 {
            return Err(Error::invalid(
                "image batch",
                format!("a tensor (N, {c}, H, W) with N > 0"),
                format!("{dims:?}"),
            ));
        }
        let n = net.segments().len();
        let mut inputs: Vec<Option<Tensor>> = vec![None; n];
        let mut x = images.clone();
        for (s, slot) in inputs.iter_mut().enumerate() {
            if keep.contains(&s) {
                *slot = Some(x.clone());
            }
            x = net
                .forward_range(s, s + 1, &x, ForwardMode::Eval, base)
                .map_err(|e| model_ctx(format!("computing the input of segment {}", s + 1), e))?;
        }
        Ok(PrefixCache {
            inputs,
            logits: x,
            base: base.clone(),
        })
    }

    /// The logits under the base interventions alone (the baseline when the base is empty).
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// The cached input of segment `s`, if kept.
    pub fn input(&self, s: usize) -> Option<&Tensor> {
        self.inputs.get(s).and_then(Option::as_ref)
    }

    /// Logits with `extra` applied on top of the base: the forward restarts at the first
    /// segment `extra` affects, from its cached input. An empty `extra` gives the base logits.
    ///
    /// Errors when `extra` does not fit the network, or the segment it starts at was not kept.
    pub fn run(&self, net: &dyn Network, extra: &Interventions) -> Result<Tensor> {
        net.check_interventions(extra)
            .map_err(|e| model_ctx("checking the interventions".to_string(), e))?;
        let Some(start) = net.first_affected_segment(extra) else {
            return Ok(self.logits.clone());
        };
        let x = self.input(start).ok_or_else(|| {
            Error::invalid(
                "prefix cache",
                format!("the input of segment {start} (where the intervention starts) kept"),
                "not kept",
            )
        })?;
        let combined = combine(&self.base, extra);
        net.forward_from(start, x, ForwardMode::Eval, &combined)
            .map_err(|e| model_ctx(format!("running segments {start}.. with the ablation"), e))
    }

    /// Bytes held by the kept segment inputs (the images included when segment 0 is kept).
    pub fn bytes(&self) -> u64 {
        self.inputs
            .iter()
            .flatten()
            .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
            .sum()
    }
}

/// `base` with every intervention of `extra` added (`extra` wins on the same layer).
pub(crate) fn combine(base: &Interventions, extra: &Interventions) -> Interventions {
    if base.is_empty() {
        return extra.clone();
    }
    let mut all = base.clone();
    for (layer, o) in extra.layers() {
        all.insert(match o {
            WeightOverride::Zero => Intervention::ZeroKernel(layer),
            WeightOverride::Replace { weight, bias } => Intervention::ReplaceWeights {
                layer,
                weight: weight.clone(),
                bias: bias.clone(),
            },
        });
    }
    for block in extra.skipped_blocks() {
        all.insert(Intervention::SkipBranch(block));
    }
    all
}

/// Bytes per image of a full [`PrefixCache`] of `net`: the sum over its segments of the
/// number of elements of the segment's input for one image, times 4 (F32). Measured by
/// running one zero image of the network's nominal input size through it.
///
/// ResNet-20: 3·32·32 (images) + 4 · 16·32·32 (`layer1.*`, `layer2.0`) + 3 · 32·16·16
/// (`layer2.1`, `layer2.2`, `layer3.0`) + 3 · 64·8·8 (`layer3.1`, `layer3.2`, head)
/// = 105 472 floats = 421 888 bytes.
pub fn prefix_cache_bytes_per_image(net: &dyn Network) -> Result<u64> {
    let (c, h, w) = net.spec().input;
    let ctx = |e: ModelError| model_ctx(format!("probing {} with one image", net.spec().name), e);
    let mut x = Tensor::zeros((1, c, h, w), DType::F32, net.params().device())
        .map_err(|e| ctx(e.into()))?;
    let mut bytes = 0u64;
    for s in 0..net.segments().len() {
        bytes += (x.elem_count() * x.dtype().size_in_bytes()) as u64;
        x = net
            .forward_range(s, s + 1, &x, ForwardMode::Eval, Interventions::none())
            .map_err(ctx)?;
    }
    Ok(bytes)
}

/// The logits of one job on `images`, through the engine's path: a [`PrefixCache`] of the
/// images (keeping the job's segment) and [`PrefixCache::run`] with the job's interventions.
pub fn job_logits(net: &dyn Network, job: &Job, images: &Tensor) -> Result<Tensor> {
    let cache = PrefixCache::build_keeping(net, images, Interventions::none(), &[job.segment])?;
    cache.run(net, &job.interventions()?)
}
