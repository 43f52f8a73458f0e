//! The interventions an ablation study can apply ([`AblationMode`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One kind of intervention, applied to one selected layer (or block) at a time.
///
/// The CLI name (`--mode NAME`), [`Display`](fmt::Display), [`FromStr`] and the serde form in
/// `results.json` are all the same kebab-case string, e.g. `zero-kernel`.
///
/// | CLI name | what happens to the selected layer | source |
/// | --- | --- | --- |
/// | `zero-kernel` | the conv (or linear) weight is replaced by zeros; batch norm and biases stay as trained. Applies to every conv including the stem, shortcut projections, and the classifier. | "Is Each Layer Non-trivial in CNN?" (the seed paper) |
/// | `skip-branch` | a residual block's branch is removed: the block outputs its shortcut (followed by the block's final ReLU, as in the post-activation block). Applies to every residual block. | Veit, Wilber, Belongie 2016, "Residual networks behave like ensembles of relatively shallow networks" |
/// | `reinit` | the layer's parameters go back to their epoch-0 values, from the training run's initial checkpoint. | Zhang, Bengio, Singer 2019, "Are all layers created equal?" |
/// | `rerandomize` | the layer's parameters get fresh values from the init distribution, drawn with a given seed. | Zhang, Bengio, Singer 2019 |
/// | `zero-filters` | a fraction of the layer's output filters, those with the smallest L1 norm, are zeroed; swept over levels. See [`crate::sparsity::filters_to_zero`]. | Distiller-style filter sensitivity analysis |
/// | `prune` | a fraction of the layer's individual weights, those with the smallest magnitude, are zeroed; swept over levels. See [`crate::sparsity::weights_to_prune`]. | Distiller-style element-wise sensitivity analysis |
/// | `cumulative-zero-kernel` | greedily zero the kernel of the least harmful remaining layer, one more at a time, recording the accuracy curve. See [`crate::cumulative`]. | Veit et al. 2016, multiple-deletion experiment |
/// | `cumulative-skip-branch` | the same greedy multiple deletion with `skip-branch` as the per-step intervention. | Veit et al. 2016 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AblationMode {
    /// Replace the conv/linear weight by zeros (`zero-kernel`).
    ZeroKernel,
    /// Remove a residual block's branch, keeping the shortcut (`skip-branch`).
    SkipBranch,
    /// Restore the layer's epoch-0 parameters (`reinit`).
    Reinit,
    /// Draw fresh parameters from the init distribution with a seed (`rerandomize`).
    Rerandomize,
    /// Zero the fraction of output filters with the smallest L1 norm (`zero-filters`).
    ZeroFilters,
    /// Zero the fraction of weights with the smallest magnitude (`prune`).
    Prune,
    /// Greedy multiple deletion with `zero-kernel` steps (`cumulative-zero-kernel`).
    CumulativeZeroKernel,
    /// Greedy multiple deletion with `skip-branch` steps (`cumulative-skip-branch`).
    CumulativeSkipBranch,
}

impl AblationMode {
    /// Every mode, in documentation order.
    pub const ALL: [AblationMode; 8] = [
        AblationMode::ZeroKernel,
        AblationMode::SkipBranch,
        AblationMode::Reinit,
        AblationMode::Rerandomize,
        AblationMode::ZeroFilters,
        AblationMode::Prune,
        AblationMode::CumulativeZeroKernel,
        AblationMode::CumulativeSkipBranch,
    ];

    /// The CLI / JSON name, e.g. `"zero-kernel"`.
    pub const fn name(self) -> &'static str {
        match self {
            AblationMode::ZeroKernel => "zero-kernel",
            AblationMode::SkipBranch => "skip-branch",
            AblationMode::Reinit => "reinit",
            AblationMode::Rerandomize => "rerandomize",
            AblationMode::ZeroFilters => "zero-filters",
            AblationMode::Prune => "prune",
            AblationMode::CumulativeZeroKernel => "cumulative-zero-kernel",
            AblationMode::CumulativeSkipBranch => "cumulative-skip-branch",
        }
    }

    /// A one-line description of the intervention, suitable for `--help`.
    pub const fn description(self) -> &'static str {
        match self {
            AblationMode::ZeroKernel => {
                "replace the conv/linear weight by zeros; batch norm and biases stay as trained"
            }
            AblationMode::SkipBranch => {
                "remove a residual block's branch so the block passes its shortcut (then its final ReLU)"
            }
            AblationMode::Reinit => {
                "restore the layer's parameters to their epoch-0 values from the initial checkpoint"
            }
            AblationMode::Rerandomize => {
                "draw fresh parameters for the layer from the init distribution with a given seed (a stream apart from training's initialisation)"
            }
            AblationMode::ZeroFilters => {
                "zero a fraction of output filters (smallest L1 norm first), swept over levels"
            }
            AblationMode::Prune => {
                "zero a fraction of weights (smallest magnitude first), swept over levels"
            }
            AblationMode::CumulativeZeroKernel => {
                "greedily zero the least harmful remaining layer, one more at a time"
            }
            AblationMode::CumulativeSkipBranch => {
                "greedily skip the least harmful remaining block, one more at a time"
            }
        }
    }

    /// Whether the mode is evaluated at several sparsity levels (`zero-filters`, `prune`);
    /// its layer records then carry `"level"`.
    pub const fn is_swept(self) -> bool {
        matches!(self, AblationMode::ZeroFilters | AblationMode::Prune)
    }

    /// Whether the mode is the greedy multiple-deletion experiment; its layer records then
    /// carry `"step"`, and it cannot be sharded (each step depends on the previous ones).
    pub const fn is_cumulative(self) -> bool {
        matches!(
            self,
            AblationMode::CumulativeZeroKernel | AblationMode::CumulativeSkipBranch
        )
    }

    /// The single-layer intervention applied at each step: itself for non-cumulative modes,
    /// `zero-kernel` / `skip-branch` for the cumulative ones.
    pub const fn step_mode(self) -> AblationMode {
        match self {
            AblationMode::CumulativeZeroKernel => AblationMode::ZeroKernel,
            AblationMode::CumulativeSkipBranch => AblationMode::SkipBranch,
            other => other,
        }
    }

    /// Whether the intervention targets residual blocks (`skip-branch` and its cumulative
    /// form) rather than individual conv/linear layers.
    pub const fn targets_blocks(self) -> bool {
        matches!(
            self,
            AblationMode::SkipBranch | AblationMode::CumulativeSkipBranch
        )
    }
}

impl fmt::Display for AblationMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AblationMode {
    type Err = Error;

    /// Parses a CLI name; surrounding whitespace is ignored, case is not.
    fn from_str(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        AblationMode::ALL
            .into_iter()
            .find(|mode| mode.name() == trimmed)
            .ok_or_else(|| {
                let names: Vec<&str> = AblationMode::ALL.iter().map(|m| m.name()).collect();
                Error::invalid(
                    "--mode",
                    format!("one of {}", names.join(", ")),
                    format!("{s:?}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_display_fromstr_and_serde() {
        for mode in AblationMode::ALL {
            assert_eq!(mode.to_string(), mode.name());
            assert_eq!(mode.name().parse::<AblationMode>().unwrap(), mode);
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{}\"", mode.name()));
            assert_eq!(serde_json::from_str::<AblationMode>(&json).unwrap(), mode);
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "zero_kernel".parse::<AblationMode>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"zero_kernel\""), "{msg}");
        assert!(msg.contains("zero-kernel, skip-branch"), "{msg}");
        assert!("ZERO-KERNEL".parse::<AblationMode>().is_err());
    }

    #[test]
    fn classification() {
        let swept: Vec<_> = AblationMode::ALL
            .into_iter()
            .filter(|m| m.is_swept())
            .collect();
        assert_eq!(swept, [AblationMode::ZeroFilters, AblationMode::Prune]);
        assert_eq!(
            AblationMode::CumulativeSkipBranch.step_mode(),
            AblationMode::SkipBranch
        );
        assert_eq!(AblationMode::Prune.step_mode(), AblationMode::Prune);
        assert!(AblationMode::CumulativeZeroKernel.is_cumulative());
        assert!(!AblationMode::ZeroKernel.is_cumulative());
        assert!(AblationMode::SkipBranch.targets_blocks());
        assert!(!AblationMode::Reinit.targets_blocks());
    }
}
