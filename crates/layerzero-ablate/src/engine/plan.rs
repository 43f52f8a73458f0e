//! What a run ablates: the candidates of a mode (layers or residual blocks), their selection,
//! and one [`Job`] per ablation in canonical order.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use layerzero_models::{
    read_safetensors_bytes, BlockId, Intervention, Interventions, LayerId, LayerKind, LayerRole,
    Network, SegmentKind,
};

use super::{model_ctx, EngineConfig};
use crate::error::{Error, Result};
use crate::mode::AblationMode;
use crate::schema::{LayerInfo, WeightsRef};
use crate::select::select_layers;
use crate::sparsity::{count_at, filters_to_zero, weights_to_prune, zero_filters, zero_weights};
use sha2::{Digest, Sha256};

/// `kind` of the records of block modes (`skip-branch`, `cumulative-skip-branch`).
pub const BLOCK_KIND: &str = "block";

/// `role` of the records of block modes (`skip-branch`, `cumulative-skip-branch`).
pub const BLOCK_ROLE: &str = "residual-block";

/// The `role` string of a layer in `results.json`: `stem`, `residual-branch`, `shortcut`,
/// `plain`, `head`, `classifier` or `other`. The report groups and colours layers by these
/// exact strings; block records use [`BLOCK_ROLE`] instead.
pub fn role_name(role: &LayerRole) -> &'static str {
    match role {
        LayerRole::Stem => "stem",
        LayerRole::ResidualBranch { .. } => "residual-branch",
        LayerRole::Shortcut { .. } => "shortcut",
        LayerRole::PlainConv { .. } => "plain",
        LayerRole::Head => "head",
        LayerRole::Classifier => "classifier",
        LayerRole::Other => "other",
    }
}

/// The `kind` string of a layer in `results.json`: `conv` or `linear` (`batchnorm` layers are
/// never ablated); block records use [`BLOCK_KIND`] instead.
pub fn kind_name(kind: &LayerKind) -> &'static str {
    kind.short_name()
}

/// What one candidate of a mode is: a layer with a kernel, or a residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A convolution or linear layer (`zero-kernel`, `reinit`, `rerandomize`, `zero-filters`,
    /// `prune`, `cumulative-zero-kernel`).
    Layer(LayerId),
    /// A residual block (`skip-branch`, `cumulative-skip-branch`).
    Block(BlockId),
}

/// One thing a mode can ablate, with its description for the records.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The layer or block.
    pub target: Target,
    /// Index, name, kind, role, whether it changes channels and its parameters, as written to
    /// each record.
    pub info: LayerInfo,
    /// The first segment of the network the ablation changes: evaluations start from the
    /// cached input of this segment.
    pub segment: usize,
}

/// The candidates of `mode` in `net`, in network order.
///
/// * Layer modes: every convolution and linear layer of the inventory (stem, branch
///   convolutions, shortcut projections, classifier). `index` is the layer's inventory index,
///   `kind` [`kind_name`], `role` [`role_name`], `params` the layer's weights and bias.
/// * Block modes: every segment of kind [`SegmentKind::ResidualBlock`]. `layer` is the
///   segment's name (e.g. `layer2.0`), `kind` `block`, `role` `residual-block`, `params` the
///   parameters of all layers of the block (branch, batch norms and projection shortcut),
///   `changes_channels` whether the block's first kernel layer takes another channel count
///   than its last kernel layer produces, and `index` the inventory index of the block's first
///   layer (the number of layers before the block), so that blocks and layers sort alike.
///
/// Errors with [`Error::NoCandidates`] when the network has none (e.g. `skip-branch` on a
/// plain net).
pub fn candidates(net: &dyn Network, mode: AblationMode) -> Result<Vec<Candidate>> {
    let arch = &net.spec().name;
    let inventory = net.inventory();
    if mode.targets_blocks() {
        let mut out = Vec::new();
        for seg in net.segments() {
            let SegmentKind::ResidualBlock(block) = seg.kind else {
                continue;
            };
            let layers: Vec<_> = inventory
                .iter()
                .filter(|l| l.segment == seg.index)
                .collect();
            let kernels: Vec<_> = layers.iter().filter(|l| l.kind.has_kernel()).collect();
            let changes_channels = match (kernels.first(), kernels.last()) {
                (Some(first), Some(last)) => first.in_channels != last.out_channels,
                _ => false,
            };
            out.push(Candidate {
                target: Target::Block(block),
                info: LayerInfo {
                    index: inventory.iter().filter(|l| l.segment < seg.index).count(),
                    name: seg.name.clone(),
                    kind: BLOCK_KIND.into(),
                    role: BLOCK_ROLE.into(),
                    changes_channels,
                    params: layers.iter().map(|l| l.params as u64).sum(),
                },
                segment: seg.index,
            });
        }
        if out.is_empty() {
            let names: Vec<&str> = net.segments().iter().map(|s| s.name.as_str()).collect();
            return Err(Error::NoCandidates {
                mode,
                arch: arch.clone(),
                expected: "at least one residual block whose branch can be skipped".into(),
                found: format!(
                    "no residual block among its {} segments ({})",
                    names.len(),
                    names.join(", ")
                ),
            });
        }
        return Ok(out);
    }
    let out: Vec<Candidate> = inventory
        .iter()
        .filter(|l| l.kind.has_kernel())
        .map(|l| Candidate {
            target: Target::Layer(l.id),
            info: LayerInfo {
                index: l.id.index(),
                name: l.name.clone(),
                kind: kind_name(&l.kind).into(),
                role: role_name(&l.role).into(),
                changes_channels: l.changes_channels(),
                params: l.params as u64,
            },
            segment: l.segment,
        })
        .collect();
    if out.is_empty() {
        return Err(Error::NoCandidates {
            mode,
            arch: arch.clone(),
            expected: "at least one convolution or linear layer".into(),
            found: format!("none among its {} layers", inventory.len()),
        });
    }
    Ok(out)
}

/// A layer's stored weight, kept once and shared by the jobs of every sweep level.
struct StoredWeight {
    values: Vec<f32>,
    shape: Vec<usize>,
    device: Device,
}

impl fmt::Debug for StoredWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredWeight")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// How a job changes the network (materialised into [`Interventions`] only while it runs,
/// so that a sweep holds one copy of each layer's weight, not one per level).
#[derive(Debug, Clone)]
enum Action {
    Zero(LayerId),
    Skip(BlockId),
    Replace {
        layer: LayerId,
        weight: Tensor,
        bias: Option<Tensor>,
    },
    ZeroFilters {
        layer: LayerId,
        weight: Arc<StoredWeight>,
        level: f64,
    },
    Prune {
        layer: LayerId,
        weight: Arc<StoredWeight>,
        level: f64,
    },
}

/// One ablation: a candidate, its sweep level if any, and the intervention.
#[derive(Debug, Clone)]
pub struct Job {
    /// Index into [`Plan::candidates`].
    pub candidate: usize,
    /// The candidate's name (for messages).
    pub name: String,
    /// First segment the intervention changes (the candidate's).
    pub segment: usize,
    /// Sparsity level of `zero-filters` / `prune`; `None` for the other modes.
    pub level: Option<f64>,
    action: Action,
}

impl Job {
    /// The interventions of this job alone, built on demand: `ZeroKernel` (`zero-kernel`),
    /// `SkipBranch` (`skip-branch`), or `ReplaceWeights` with the layer's epoch-0 values
    /// (`reinit`), fresh initial values (`rerandomize`), or its stored weight with the chosen
    /// filters ([`filters_to_zero`]) or weights ([`weights_to_prune`]) zeroed
    /// (`zero-filters`, `prune`; the bias is kept). Every intervention names this job's layer
    /// or block only.
    pub fn interventions(&self) -> Result<Interventions> {
        let single = match &self.action {
            Action::Zero(layer) => Intervention::ZeroKernel(*layer),
            Action::Skip(block) => Intervention::SkipBranch(*block),
            Action::Replace {
                layer,
                weight,
                bias,
            } => Intervention::ReplaceWeights {
                layer: *layer,
                weight: weight.clone(),
                bias: bias.clone(),
            },
            Action::ZeroFilters {
                layer,
                weight,
                level,
            } => {
                let mut values = weight.values.clone();
                let filters = filters_to_zero(&values, &weight.shape, *level)?;
                zero_filters(&mut values, &weight.shape, &filters)?;
                self.replacement(*layer, values, weight)?
            }
            Action::Prune {
                layer,
                weight,
                level,
            } => {
                let mut values = weight.values.clone();
                let indices = weights_to_prune(&values, *level)?;
                zero_weights(&mut values, &indices)?;
                self.replacement(*layer, values, weight)?
            }
        };
        Ok(Interventions::single(single))
    }

    fn replacement(
        &self,
        layer: LayerId,
        values: Vec<f32>,
        stored: &StoredWeight,
    ) -> Result<Intervention> {
        let weight = Tensor::from_vec(values, stored.shape.clone(), &stored.device)
            .map_err(|e| model_ctx(format!("building the weight of {}", self.label()), e))?;
        Ok(Intervention::ReplaceWeights {
            layer,
            weight,
            bias: None,
        })
    }

    /// `zero-filters` / `prune`: how many output filters / weights this job's level zeroes
    /// (`floor(level · count)`, as [`filters_to_zero`] and [`weights_to_prune`] choose them);
    /// `None` for the other modes.
    pub fn zeroed(&self) -> Option<u64> {
        let (count, level) = match &self.action {
            Action::ZeroFilters { weight, level, .. } => (weight.shape.first().copied()?, level),
            Action::Prune { weight, level, .. } => (weight.values.len(), level),
            _ => return None,
        };
        count_at(*level, count).ok().map(|k| k as u64)
    }

    /// `layer2.0.conv1`, or `layer2.0.conv1 at level 0.5` for sweeps.
    pub fn label(&self) -> String {
        match self.level {
            Some(level) => format!("{} at level {level}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Everything a run will evaluate, before sharding.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every candidate of the mode in network order (selected or not).
    pub candidates: Vec<Candidate>,
    /// Indices into `candidates` of the layers selected by `--layers`, in network order.
    pub selected: Vec<usize>,
    /// One job per ablation in canonical order (each selected candidate in network order,
    /// sweep levels ascending within a candidate): the numbering [`crate::Shard`] uses. For
    /// cumulative modes, one single-layer job per selected candidate (the step intervention).
    pub jobs: Vec<Job>,
    /// `reinit`: the init file the jobs were read from, hashed from the very bytes read.
    pub init_weights: Option<WeightsRef>,
}

/// Lists the candidates of `cfg.mode`, selects them by `cfg.layers`, and builds every job.
///
/// Reads what the jobs need: `reinit` the selected layers' weights (and biases) from
/// `cfg.init_weights` by PyTorch name (refusing a file whose `layerzero.arch` names another
/// network); `rerandomize` [`Network::initial_values`] with [`rerandomize_stream`]`(cfg.seed)`;
/// the sweeps each selected layer's stored weight. Errors name the missing file,
/// the missing or misshapen tensor, or the pattern that matched nothing.
pub fn plan(net: &dyn Network, cfg: &EngineConfig) -> Result<Plan> {
    cfg.validate()?;
    let candidates = candidates(net, cfg.mode)?;
    let names: Vec<&str> = candidates.iter().map(|c| c.info.name.as_str()).collect();
    let selected = select_layers(&names, cfg.layers.as_deref())?;
    let mut init_ref = None;
    let init = match cfg.mode {
        AblationMode::Reinit => {
            let path = cfg.init_weights.as_deref().ok_or_else(|| {
                Error::invalid(
                    "init_weights",
                    "the epoch-0 weights file (init.safetensors) for mode reinit",
                    "none given",
                )
            })?;
            let what = || format!("reading init weights {}", path.display());
            let bytes = std::fs::read(path).map_err(|source| {
                let path = path.display().to_string();
                model_ctx(what(), layerzero_models::ModelError::Io { path, source })
            })?;
            let content = read_safetensors_bytes(&bytes, &path.display().to_string())
                .map_err(|e| model_ctx(what(), e))?;
            init_ref = Some(WeightsRef {
                path: path.display().to_string(),
                sha256: hex::encode(Sha256::digest(&bytes)),
            });
            // Another network's epoch-0 file can have the same layer names and shapes (a
            // ResNet-56's for a ResNet-20, a plain twin's): refuse what says so.
            let arch = &net.spec().name;
            if let Some(found) = content.metadata.arch.as_ref().filter(|a| *a != arch) {
                return Err(Error::invalid(
                    format!("init weights {} (layerzero.arch)", path.display()),
                    format!("the epoch-0 weights of a {arch}, the evaluated network"),
                    found,
                ));
            }
            Some((path, content.tensors))
        }
        _ => None,
    };
    let device = net.params().device().clone();
    let mut jobs = Vec::new();
    for &c in &selected {
        let cand = &candidates[c];
        let job = |level, action| Job {
            candidate: c,
            name: cand.info.name.clone(),
            segment: cand.segment,
            level,
            action,
        };
        let layer = match cand.target {
            Target::Block(block) => {
                jobs.push(job(None, Action::Skip(block)));
                continue;
            }
            Target::Layer(layer) => layer,
        };
        let info = net.inventory().get(layer).ok_or_else(|| {
            Error::invalid(
                "candidate layer",
                "a layer of the network's inventory",
                format!("{layer} ({})", cand.info.name),
            )
        })?;
        match cfg.mode.step_mode() {
            AblationMode::ZeroKernel | AblationMode::SkipBranch => {
                jobs.push(job(None, Action::Zero(layer)));
            }
            AblationMode::Reinit => {
                let (path, tensors) = init.as_ref().ok_or_else(|| {
                    Error::invalid("init_weights", "a file for mode reinit", "none")
                })?;
                let weight_name = format!("{}.weight", info.name);
                let weight = file_tensor(path, tensors, &weight_name, &info.weight_shape())?;
                let bias = if info.bias {
                    let bias_name = format!("{}.bias", info.name);
                    Some(file_tensor(
                        path,
                        tensors,
                        &bias_name,
                        &[info.out_channels],
                    )?)
                } else {
                    None
                };
                let to_dev = |t: Tensor| {
                    t.to_device(&device)
                        .map_err(|e| model_ctx(format!("moving init weights of {}", info.name), e))
                };
                let action = Action::Replace {
                    layer,
                    weight: to_dev(weight)?,
                    bias: bias.map(to_dev).transpose()?,
                };
                jobs.push(job(None, action));
            }
            AblationMode::Rerandomize => {
                let values = net
                    .initial_values(layer, rerandomize_stream(cfg.seed))
                    .map_err(|e| {
                        model_ctx(format!("drawing initial values of {}", info.name), e)
                    })?;
                let find = |suffix: &str| {
                    let name = format!("{}.{suffix}", info.name);
                    values
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, t)| t.clone())
                };
                let weight = find("weight").ok_or_else(|| {
                    Error::invalid(
                        format!("initial values of {}", info.name),
                        format!("a tensor `{}.weight`", info.name),
                        "none",
                    )
                })?;
                let bias = if info.bias { find("bias") } else { None };
                jobs.push(job(
                    None,
                    Action::Replace {
                        layer,
                        weight,
                        bias,
                    },
                ));
            }
            AblationMode::ZeroFilters | AblationMode::Prune => {
                let stored = Arc::new(stored_weight(net, &info.name, &device)?);
                for &level in &cfg.levels {
                    let weight = Arc::clone(&stored);
                    let action = if cfg.mode == AblationMode::ZeroFilters {
                        Action::ZeroFilters {
                            layer,
                            weight,
                            level,
                        }
                    } else {
                        Action::Prune {
                            layer,
                            weight,
                            level,
                        }
                    };
                    jobs.push(job(Some(level), action));
                }
            }
            // `step_mode` never returns a cumulative mode.
            AblationMode::CumulativeZeroKernel | AblationMode::CumulativeSkipBranch => {
                return Err(Error::invalid(
                    "step mode",
                    "a single-ablation mode",
                    cfg.mode.step_mode(),
                ))
            }
        }
    }
    Ok(Plan {
        candidates,
        selected,
        jobs,
        init_weights: init_ref,
    })
}

/// A layer's stored weight as a flat vector, checked finite.
fn stored_weight(net: &dyn Network, layer: &str, device: &Device) -> Result<StoredWeight> {
    let name = format!("{layer}.weight");
    let entry = net.params().get(&name).ok_or_else(|| {
        Error::invalid(
            "layer weight",
            format!("a tensor `{name}` in the network"),
            "none",
        )
    })?;
    let ctx = || format!("reading the weight `{name}`");
    let values = entry
        .value(device)
        .and_then(|t| Ok(t.flatten_all()?.to_vec1::<f32>()?))
        .map_err(|e| model_ctx(ctx(), e))?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            format!("{name}[{i}] (flat index)"),
            "a finite weight",
            values[i],
        ));
    }
    Ok(StoredWeight {
        values,
        shape: entry.shape().to_vec(),
        device: device.clone(),
    })
}

/// A tensor of a weights file, checked to be F32 of the expected shape.
fn file_tensor(
    path: &Path,
    tensors: &std::collections::BTreeMap<String, Tensor>,
    name: &str,
    shape: &[usize],
) -> Result<Tensor> {
    let expected = format!("an F32 tensor of shape {shape:?}");
    let err = |found: String| Error::WeightsFile {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        expected: expected.clone(),
        found,
    };
    let t = tensors
        .get(name)
        .ok_or_else(|| err("no such tensor".into()))?;
    if t.dtype() != DType::F32 || t.dims() != shape {
        return Err(err(format!(
            "a {} tensor of shape {:?}",
            t.dtype().as_str().to_ascii_uppercase(),
            t.dims()
        )));
    }
    Ok(t.clone())
}

/// The initialisation stream `rerandomize --seed S` draws from: a mix of `S`, not `S` itself.
/// [`Network::initial_values`] with the seed a network was built with gives its epoch-0
/// values, so drawing with `S` itself would make `rerandomize --seed 0` on a network trained
/// with seed 0 (the default of both) exactly `reinit`, not fresh values.
pub fn rerandomize_stream(seed: u64) -> u64 {
    // SplitMix64's output function over the seed and a constant ("rerandom" in ASCII): a
    // bijection, so distinct seeds still draw distinct values.
    layerzero_data::rng::mix(seed ^ 0x7265_7261_6e64_6f6d)
}
