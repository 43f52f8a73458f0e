//! The greedy multiple-deletion experiment (Veit et al. 2016): ablate the least harmful
//! remaining layer, one more at a time, and record the accuracy curve.
//!
//! [`greedy_cumulative`] is generic over the evaluator: a closure that, given the layers to
//! ablate *together*, returns the resulting accuracy (or any score where higher is better).
//! The real evaluator (apply `zero-kernel` or `skip-branch` to all of them, run the test set)
//! lives with the models; tests use synthetic ones.
//!
//! **Algorithm.** Start with nothing removed. At each step, evaluate `removed ++ [r]` for
//! every remaining candidate `r` (in candidate order), keep the `r` with the highest score,
//! breaking ties by candidate order, and record it. Stop when no candidate remains, after
//! `max_steps` steps, or after the first step whose score is below `stop_below`. This costs
//! `m + (m−1) + …` evaluations for `m` candidates.

use crate::error::Error;

/// When [`greedy_cumulative`] stops early.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GreedyOptions {
    /// Stop after this many steps (`None`: until every candidate is removed).
    pub max_steps: Option<usize>,
    /// Stop after the first step whose best score is below this (e.g. chance accuracy).
    pub stop_below: Option<f64>,
}

/// One step of the greedy curve.
#[derive(Debug, Clone, PartialEq)]
pub struct GreedyStep<L> {
    /// 1-based step number: this many layers are ablated after it.
    pub step: usize,
    /// The layer removed at this step.
    pub removed: L,
    /// The score with all layers of steps `1..=step` ablated.
    pub accuracy: f64,
    /// How many evaluations this step made (the number of remaining candidates).
    pub evaluations: usize,
}

/// Runs the greedy multiple-deletion driver over `candidates` (see the module docs).
///
/// `evaluate` receives the layers to ablate together, those removed so far in removal order
/// followed by the one being tried, and returns a score where higher is better. Its errors
/// are passed through; a non-finite score is an error ([`Error::InvalidArgument`], converted
/// with `E: From<Error>`), and so is `stop_below` being NaN.
pub fn greedy_cumulative<L, E, F>(
    candidates: &[L],
    options: &GreedyOptions,
    mut evaluate: F,
) -> Result<Vec<GreedyStep<L>>, E>
where
    L: Clone,
    E: From<Error>,
    F: FnMut(&[L]) -> Result<f64, E>,
{
    if options.stop_below.is_some_and(f64::is_nan) {
        return Err(Error::invalid("stop_below", "a number", "NaN").into());
    }
    let max_steps = options
        .max_steps
        .unwrap_or(candidates.len())
        .min(candidates.len());
    let mut remaining: Vec<usize> = (0..candidates.len()).collect();
    let mut removed: Vec<L> = Vec::with_capacity(max_steps + 1);
    let mut steps = Vec::with_capacity(max_steps);
    for step in 1..=max_steps {
        let mut best: Option<(usize, f64)> = None; // (position in `remaining`, score)
        for (pos, &cand) in remaining.iter().enumerate() {
            removed.push(candidates[cand].clone());
            let score = evaluate(&removed);
            removed.pop();
            let score = score?;
            if !score.is_finite() {
                return Err(Error::invalid(
                    format!("score from evaluate at step {step}"),
                    "a finite number",
                    score,
                )
                .into());
            }
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((pos, score));
            }
        }
        let Some((pos, score)) = best else { break };
        let chosen = remaining.remove(pos);
        removed.push(candidates[chosen].clone());
        steps.push(GreedyStep {
            step,
            removed: candidates[chosen].clone(),
            accuracy: score,
            evaluations: remaining.len() + 1,
        });
        if options.stop_below.is_some_and(|limit| score < limit) {
            break;
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Additive toy model: each layer costs some accuracy when removed.
    fn additive(costs: &'static [f64]) -> impl FnMut(&[usize]) -> Result<f64, Error> {
        move |layers: &[usize]| Ok(0.9 - layers.iter().map(|&l| costs[l]).sum::<f64>())
    }

    #[test]
    fn removes_least_harmful_first() {
        let costs: &'static [f64] = &[0.30, 0.01, 0.10, 0.0];
        let steps =
            greedy_cumulative(&[0, 1, 2, 3], &GreedyOptions::default(), additive(costs)).unwrap();
        let order: Vec<usize> = steps.iter().map(|s| s.removed).collect();
        assert_eq!(order, vec![3, 1, 2, 0]);
        let acc: Vec<f64> = steps.iter().map(|s| s.accuracy).collect();
        let expected = [0.9, 0.89, 0.79, 0.49];
        for (a, e) in acc.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{acc:?}");
        }
        assert_eq!(
            steps.iter().map(|s| s.evaluations).collect::<Vec<_>>(),
            vec![4, 3, 2, 1]
        );
        assert_eq!(
            steps.iter().map(|s| s.step).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn passes_removed_layers_in_removal_order_and_breaks_ties_by_candidate_order() {
        let mut calls: Vec<Vec<&str>> = Vec::new();
        let steps = greedy_cumulative(
            &["a", "b", "c"],
            &GreedyOptions {
                max_steps: Some(2),
                stop_below: None,
            },
            |layers: &[&str]| -> Result<f64, Error> {
                calls.push(layers.to_vec());
                Ok(0.5) // every candidate ties
            },
        )
        .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].removed, "a");
        assert_eq!(steps[1].removed, "b");
        assert_eq!(
            calls,
            vec![
                vec!["a"],
                vec!["b"],
                vec!["c"],
                vec!["a", "b"],
                vec!["a", "c"]
            ]
        );
    }

    #[test]
    fn interaction_is_respected() {
        // Removing 0 alone is harmless, but 0 together with 1 is catastrophic.
        let eval = |layers: &[usize]| -> Result<f64, Error> {
            let has = |l| layers.contains(&l);
            Ok(if has(0) && has(1) {
                0.1
            } else {
                0.9 - 0.05 * layers.iter().filter(|&&l| l != 0).count() as f64
            })
        };
        let steps = greedy_cumulative(&[0, 1, 2], &GreedyOptions::default(), eval).unwrap();
        let order: Vec<usize> = steps.iter().map(|s| s.removed).collect();
        assert_eq!(order, vec![0, 2, 1]);
    }

    #[test]
    fn stops_below_threshold_after_recording_that_step() {
        let costs: &'static [f64] = &[0.5, 0.2, 0.3];
        let options = GreedyOptions {
            max_steps: None,
            stop_below: Some(0.5),
        };
        let steps = greedy_cumulative(&[0, 1, 2], &options, additive(costs)).unwrap();
        assert_eq!(steps.len(), 2);
        assert!((steps[1].accuracy - 0.4).abs() < 1e-12);
    }

    #[test]
    fn errors_pass_through_and_nan_is_rejected() {
        let err = greedy_cumulative(&[0, 1], &GreedyOptions::default(), |_: &[i32]| {
            Err::<f64, Error>(Error::invalid("evaluate", "success", "failure"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("failure"));
        let err = greedy_cumulative(&[0, 1], &GreedyOptions::default(), |_: &[i32]| {
            Ok::<f64, Error>(f64::NAN)
        })
        .unwrap_err();
        assert!(err.to_string().contains("step 1"), "{err}");
        let empty: Vec<GreedyStep<u8>> =
            greedy_cumulative(&[], &GreedyOptions::default(), |_: &[u8]| {
                Ok::<f64, Error>(1.0)
            })
            .unwrap();
        assert!(empty.is_empty());
    }
}
