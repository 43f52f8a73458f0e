//! The seed paper's claims, each checked against the `zero-kernel` results by an explicit
//! rule (see [`CLAIM_RULES`]).

use std::fmt;

use layerzero_ablate::{AblationMode, LayerRecord, Verdict};
use serde::{Deserialize, Serialize};

use crate::summary::{Family, NetworkSummary};

/// The outcome of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClaimOutcome {
    /// The rule is satisfied (in every tested network and seed).
    Holds,
    /// The rule is violated (in every tested network and seed).
    DoesNotHold,
    /// Satisfied in some tested (network, seed) pairs and violated in others.
    Mixed,
    /// No data the rule needs.
    NotTested,
}

impl ClaimOutcome {
    /// `"holds"`, `"does not hold"`, `"mixed"`, `"not tested"`.
    pub const fn name(self) -> &'static str {
        match self {
            ClaimOutcome::Holds => "holds",
            ClaimOutcome::DoesNotHold => "does not hold",
            ClaimOutcome::Mixed => "mixed",
            ClaimOutcome::NotTested => "not tested",
        }
    }

    /// Combines per-(network, seed) outcomes: `not tested` ones are ignored; then `holds`
    /// if all hold, `does not hold` if none does, `mixed` otherwise, and `not tested` if
    /// nothing was tested.
    pub fn combine(outcomes: impl IntoIterator<Item = ClaimOutcome>) -> ClaimOutcome {
        let (mut holds, mut fails) = (0usize, 0usize);
        for o in outcomes {
            match o {
                ClaimOutcome::Holds => holds += 1,
                ClaimOutcome::DoesNotHold => fails += 1,
                ClaimOutcome::Mixed => {
                    holds += 1;
                    fails += 1;
                }
                ClaimOutcome::NotTested => {}
            }
        }
        match (holds, fails) {
            (0, 0) => ClaimOutcome::NotTested,
            (_, 0) => ClaimOutcome::Holds,
            (0, _) => ClaimOutcome::DoesNotHold,
            _ => ClaimOutcome::Mixed,
        }
    }
}

impl fmt::Display for ClaimOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The paper's claims and the rules that decide them, as stated in the report:
/// `(id, claim, rule)`.
pub const CLAIM_RULES: [(u32, &str, &str); 3] = [
    (
        1,
        "In the ResNet most residual-branch convolutions are trivial.",
        "For each network with shortcuts and each seed, take the zero-kernel records of the \
         convolutions with role `residual-branch` that keep their channel count \
         (changes_channels = false). The claim holds when more than half of them (k/n > 50 %) \
         are `trivial` under the file's verdict rule. The non-trivial ones are listed as \
         exceptions.",
    ),
    (
        2,
        "The channel-changing (\"feature decomposition\") layers are non-trivial.",
        "For each network with shortcuts and each seed, take the zero-kernel records of the \
         convolutions that change the channel count (changes_channels = true) with role \
         `residual-branch` (each stage's first convolution, e.g. `layer2.0.conv1`) or \
         `shortcut` (projection shortcuts). The claim holds when every one of them is \
         `non-trivial`. The stem convolution (image channels to features) and the classifier \
         are excluded: zeroing either cuts the network off from its input or its output, so \
         their non-triviality says nothing about feature decomposition; their numbers are in \
         the layer tables.",
    ),
    (
        3,
        "In the no-shortcut (plain) network every layer is non-trivial.",
        "For each network without shortcuts (records with role `plain` and none with role \
         `residual-branch` or `shortcut`) and each seed, take the zero-kernel records of every \
         `conv` and `linear` layer, stem and classifier included. The claim holds when every \
         one of them is `non-trivial`. The trivial ones are listed as exceptions.",
    ),
];

/// How several (network, seed) evaluations combine, as stated in the report.
pub const COMBINATION_RULE: &str = "Each claim is evaluated separately for every (network, seed) \
     with zero-kernel results. Overall it `holds` if it holds in all of them, `does not hold` \
     if it holds in none, and is `mixed` (holds in k of N) otherwise; it is `not tested` when \
     no (network, seed) has a layer the rule considers.";

/// One claim checked against the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// 1, 2 or 3.
    pub id: u32,
    /// The paper's claim in words.
    pub statement: String,
    /// The rule that decides it.
    pub rule: String,
    /// The overall outcome.
    pub outcome: ClaimOutcome,
    /// Number of (network, seed) evaluations in which it holds.
    pub holds_in: usize,
    /// Number of (network, seed) evaluations that tested it.
    pub tested_in: usize,
    /// The outcome per network (combined over its seeds).
    pub by_network: Vec<NetworkClaim>,
    /// Every (network, seed) evaluation, with its deciding numbers.
    pub evaluations: Vec<ClaimEvaluation>,
    /// Why the claim is not tested (empty otherwise).
    pub note: String,
}

/// A claim's outcome for one network, over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkClaim {
    /// Architecture.
    pub arch: String,
    /// Combined over seeds.
    pub outcome: ClaimOutcome,
    /// Seeds in which it holds.
    pub holds_in: usize,
    /// Seeds that tested it.
    pub tested_in: usize,
}

/// A claim evaluated on one (network, seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimEvaluation {
    /// Architecture.
    pub arch: String,
    /// The zero-kernel file's seed.
    pub seed: Option<u64>,
    /// The zero-kernel file.
    pub source: String,
    /// Outcome on this file.
    pub outcome: ClaimOutcome,
    /// Number of layers the rule considers (n).
    pub considered: usize,
    /// Number of them with the verdict the claim expects (k): `trivial` for claim 1,
    /// `non-trivial` for claims 2 and 3.
    pub as_claimed: usize,
    /// The considered layers in network order.
    pub layers: Vec<ClaimLayer>,
    /// The verdict rule's largest |Δtop-1| still called trivial (a fraction), the bound of
    /// [`ClaimLayer::within_threshold`]. `None` in a `summary.json` written before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_delta_top1: Option<f64>,
    /// The images the zero-kernel file evaluated (0 in a `summary.json` written before this
    /// field).
    #[serde(default)]
    pub n_images: u64,
}

impl ClaimEvaluation {
    /// The considered layers whose verdict is not the one the claim expects.
    pub fn exceptions(&self) -> impl Iterator<Item = &ClaimLayer> {
        self.layers.iter().filter(|l| !l.as_claimed)
    }
}

/// One layer's deciding numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimLayer {
    /// Network order.
    pub index: usize,
    /// Name.
    pub layer: String,
    /// Role.
    pub role: String,
    /// Δtop-1, a fraction.
    pub delta_top1: f64,
    /// 95 % interval of Δtop-1, fractions.
    pub ci95_delta_top1: [f64; 2],
    /// Exact McNemar p.
    pub mcnemar_p: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the verdict is the one the claim expects.
    pub as_claimed: bool,
    /// Whether the whole 95 % Tango score interval of Δtop-1
    /// ([`layerzero_ablate::paired_difference_tango`]) lies strictly within ± the verdict
    /// rule's `max_abs_delta_top1`: the layer is shown to move top-1 by less than the
    /// threshold (two one-sided tests at 2.5 % each), which a `trivial` verdict alone does not
    /// say. Not the record's Wald interval: that one is `[0, 0]` when no image flips, on 40
    /// images as on 10,000. (Summaries written on 2026-11-27 before the change to Tango's
    /// interval used Agresti and Min's adjusted interval here, which errs more often than
    /// 2.5 % near the threshold on a few hundred images.) `None` in a `summary.json` written
    /// before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_threshold: Option<bool>,
}

fn considers(claim: u32, r: &LayerRecord) -> bool {
    match claim {
        1 => r.kind == "conv" && r.role == "residual-branch" && !r.changes_channels,
        2 => {
            r.kind == "conv"
                && r.changes_channels
                && (r.role == "residual-branch" || r.role == "shortcut")
        }
        _ => r.kind == "conv" || r.kind == "linear",
    }
}

/// [`ClaimLayer::within_threshold`] of a record over `n` images (`None` when `n` is unknown:
/// a `summary.json` written before records carried it).
fn within(r: &LayerRecord, n: u64, threshold: f64) -> Option<bool> {
    let [lo, hi] =
        layerzero_ablate::paired_difference_tango(&r.paired_counts(n), layerzero_ablate::Z95)
            .ok()?;
    Some(-threshold < lo && hi < threshold)
}

fn expected_verdict(claim: u32) -> Verdict {
    if claim == 1 {
        Verdict::Trivial
    } else {
        Verdict::NonTrivial
    }
}

/// Checks the three claims against the networks' `zero-kernel` results.
pub fn evaluate_claims(networks: &[NetworkSummary]) -> Vec<Claim> {
    CLAIM_RULES
        .iter()
        .map(|&(id, statement, rule)| {
            let family = if id == 3 {
                Family::Plain
            } else {
                Family::Residual
            };
            let mut evaluations = Vec::new();
            let mut by_network = Vec::new();
            for net in networks.iter().filter(|n| n.family == family) {
                let Some(mode) = net.mode(AblationMode::ZeroKernel) else {
                    continue;
                };
                let mut net_evals = Vec::new();
                for (seed, source) in mode.seeds.iter().zip(&mode.sources) {
                    let layers: Vec<ClaimLayer> = mode
                        .layers
                        .iter()
                        .flat_map(|l| &l.per_seed)
                        .filter(|s| s.source == *source)
                        .filter(|s| considers(id, &s.record))
                        .map(|s| (&s.record, s.n_images))
                        .map(|(r, n)| ClaimLayer {
                            index: r.index,
                            layer: r.layer.clone(),
                            role: r.role.clone(),
                            delta_top1: r.delta_top1,
                            ci95_delta_top1: r.ci95.delta_top1,
                            mcnemar_p: r.mcnemar_p,
                            verdict: r.verdict,
                            as_claimed: r.verdict == expected_verdict(id),
                            within_threshold: within(
                                r,
                                n,
                                mode.verdict_thresholds.max_abs_delta_top1,
                            ),
                        })
                        .collect();
                    let n_images = mode
                        .layers
                        .iter()
                        .flat_map(|l| &l.per_seed)
                        .find(|s| s.source == *source)
                        .map_or(0, |s| s.n_images);
                    let considered = layers.len();
                    let as_claimed = layers.iter().filter(|l| l.as_claimed).count();
                    let outcome = match (id, considered) {
                        (_, 0) => ClaimOutcome::NotTested,
                        (1, n) if 2 * as_claimed > n => ClaimOutcome::Holds,
                        (1, _) => ClaimOutcome::DoesNotHold,
                        (_, n) if as_claimed == n => ClaimOutcome::Holds,
                        _ => ClaimOutcome::DoesNotHold,
                    };
                    net_evals.push(ClaimEvaluation {
                        arch: net.arch.clone(),
                        seed: *seed,
                        source: source.clone(),
                        outcome,
                        considered,
                        as_claimed,
                        layers,
                        max_abs_delta_top1: Some(mode.verdict_thresholds.max_abs_delta_top1),
                        n_images,
                    });
                }
                by_network.push(NetworkClaim {
                    arch: net.arch.clone(),
                    outcome: ClaimOutcome::combine(net_evals.iter().map(|e| e.outcome)),
                    holds_in: count(&net_evals, ClaimOutcome::Holds),
                    tested_in: net_evals.len() - count(&net_evals, ClaimOutcome::NotTested),
                });
                evaluations.extend(net_evals);
            }
            let outcome = ClaimOutcome::combine(evaluations.iter().map(|e| e.outcome));
            let note = if outcome != ClaimOutcome::NotTested {
                String::new()
            } else if evaluations.is_empty() {
                match family {
                    Family::Plain => "no zero-kernel results for a network without shortcuts \
                                      (records with role `plain`)"
                        .to_string(),
                    _ => "no zero-kernel results for a network with shortcuts (records with \
                          role `residual-branch` or `shortcut`)"
                        .to_string(),
                }
            } else {
                "the zero-kernel results have no layer that the rule considers".to_string()
            };
            Claim {
                id,
                statement: statement.to_string(),
                rule: rule.to_string(),
                outcome,
                holds_in: count(&evaluations, ClaimOutcome::Holds),
                tested_in: evaluations.len() - count(&evaluations, ClaimOutcome::NotTested),
                by_network,
                evaluations,
                note,
            }
        })
        .collect()
}

fn count(evals: &[ClaimEvaluation], outcome: ClaimOutcome) -> usize {
    evals.iter().filter(|e| e.outcome == outcome).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combination() {
        use ClaimOutcome::*;
        assert_eq!(ClaimOutcome::combine([]), NotTested);
        assert_eq!(ClaimOutcome::combine([NotTested, Holds]), Holds);
        assert_eq!(ClaimOutcome::combine([Holds, DoesNotHold]), Mixed);
        assert_eq!(ClaimOutcome::combine([DoesNotHold, NotTested]), DoesNotHold);
        assert_eq!(ClaimOutcome::combine([Holds, Mixed]), Mixed);
        assert_eq!(
            serde_json::to_string(&DoesNotHold).unwrap(),
            "\"does-not-hold\""
        );
        assert_eq!(DoesNotHold.to_string(), "does not hold");
    }

    #[test]
    fn no_flipped_image_is_shown_within_the_threshold_only_on_enough_images() {
        let record = |n: usize, b: usize, c: usize| {
            let base: Vec<bool> = (0..n).map(|i| i < n / 2).collect();
            let mut ablated = base.clone();
            ablated[..b].iter_mut().for_each(|v| *v = false);
            ablated[n / 2..n / 2 + c].iter_mut().for_each(|v| *v = true);
            let eval = |top1: Vec<bool>| {
                layerzero_ablate::Evaluation::new(top1, vec![true; n], vec![0.5; n]).unwrap()
            };
            let info = layerzero_ablate::LayerInfo {
                index: 0,
                name: "conv".into(),
                kind: "conv".into(),
                role: "residual-branch".into(),
                changes_channels: false,
                params: 9,
            };
            let rule = layerzero_ablate::VerdictRule::default();
            let m = layerzero_ablate::measure(&eval(base), &eval(ablated), &rule).unwrap();
            LayerRecord::new(&info, &m)
        };
        // No image flips: the record's Wald interval is [0, 0] on any number of images.
        let few = record(40, 0, 0);
        assert_eq!(few.ci95.delta_top1, [0.0, 0.0]);
        assert_eq!(within(&few, 40, 0.01), Some(false));
        assert_eq!(within(&record(10_000, 0, 0), 10_000, 0.01), Some(true));
        // 30 against 20 of 10,000 (Δ -0.1 pt) is within 1 pt; 500 against 420 (-0.8 pt, the
        // interval about ±0.6) is not.
        assert_eq!(within(&record(10_000, 30, 20), 10_000, 0.01), Some(true));
        assert_eq!(within(&record(10_000, 500, 420), 10_000, 0.01), Some(false));
        // Unknown image count (an old summary.json): no answer.
        assert_eq!(within(&few, 0, 0.01), None);
    }
}
