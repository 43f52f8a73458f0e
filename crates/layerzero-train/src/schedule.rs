//! Learning-rate schedules, as pure functions of the optimiser step.
//!
//! Steps count optimiser updates from 0. Each schedule gives the rate used *for* step `s`.

use serde::{Deserialize, Serialize};

/// A learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// He et al. 2016: `base`, multiplied by `gamma` at each milestone step
    /// (0.1, ÷10 at 32k and 48k).
    MultiStep {
        /// Initial rate.
        base: f64,
        /// Steps at which the rate is multiplied by `gamma`, ascending.
        milestones: Vec<usize>,
        /// Factor applied at each milestone.
        gamma: f64,
    },
    /// Linear warm-up from 0 over `warmup_steps`, then cosine decay from `base` to `min_lr` at
    /// `total_steps`.
    Cosine {
        /// Peak rate.
        base: f64,
        /// Final rate.
        min_lr: f64,
        /// Steps of linear warm-up.
        warmup_steps: usize,
        /// Length of the whole schedule.
        total_steps: usize,
    },
    /// Smith's one-cycle policy with PyTorch's `OneCycleLR` formulas (cosine annealing, two
    /// phases): from `max_lr / div_factor` up to `max_lr` over the first `pct_start` of the
    /// steps, then down to `max_lr / (div_factor · final_div_factor)`.
    OneCycle {
        /// Peak rate.
        max_lr: f64,
        /// Length of the whole schedule.
        total_steps: usize,
        /// Fraction of the steps spent warming up.
        pct_start: f64,
        /// Initial rate is `max_lr / div_factor`.
        div_factor: f64,
        /// Final rate is the initial rate divided by this.
        final_div_factor: f64,
    },
}

fn cos_anneal(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * (1.0 + (std::f64::consts::PI * pct).cos())
}

impl LrSchedule {
    /// He et al.'s schedule: 0.1, ÷10 at 32k and 48k iterations.
    pub fn he_et_al() -> Self {
        LrSchedule::MultiStep {
            base: 0.1,
            milestones: vec![32_000, 48_000],
            gamma: 0.1,
        }
    }

    /// A one-cycle schedule with PyTorch's defaults for the other parameters
    /// (`pct_start` 0.3 is replaced by ours, `div_factor` 25, `final_div_factor` 10⁴).
    pub fn one_cycle(max_lr: f64, total_steps: usize, pct_start: f64) -> Self {
        LrSchedule::OneCycle {
            max_lr,
            total_steps,
            pct_start,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }

    /// The learning rate for optimiser step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        match self {
            LrSchedule::MultiStep {
                base,
                milestones,
                gamma,
            } => {
                let passed = milestones.iter().filter(|&&m| step >= m).count();
                base * gamma.powi(passed as i32)
            }
            LrSchedule::Cosine {
                base,
                min_lr,
                warmup_steps,
                total_steps,
            } => {
                if step < *warmup_steps {
                    return base * (step + 1) as f64 / *warmup_steps as f64;
                }
                let span = total_steps.saturating_sub(*warmup_steps).max(1);
                let pct = ((step - warmup_steps) as f64 / span as f64).min(1.0);
                cos_anneal(*base, *min_lr, pct)
            }
            LrSchedule::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let initial = max_lr / div_factor;
                let min = initial / final_div_factor;
                // PyTorch: phase 1 ends at step `pct_start · total − 1`, phase 2 at `total − 1`.
                let end1 = (pct_start * *total_steps as f64) - 1.0;
                let end2 = *total_steps as f64 - 1.0;
                let s = step as f64;
                if s <= end1 {
                    cos_anneal(initial, *max_lr, if end1 > 0.0 { s / end1 } else { 1.0 })
                } else {
                    let pct = ((s - end1) / (end2 - end1).max(1e-12)).min(1.0);
                    cos_anneal(*max_lr, min, pct)
                }
            }
        }
    }

    /// The peak rate: one-cycle's `max_lr`, the cosine or multi-step `base`.
    pub fn peak(&self) -> f64 {
        match self {
            LrSchedule::OneCycle { max_lr, .. } => *max_lr,
            LrSchedule::Cosine { base, .. } | LrSchedule::MultiStep { base, .. } => *base,
        }
    }

    /// The peak rate, to change it while keeping the schedule's shape.
    pub fn peak_mut(&mut self) -> &mut f64 {
        match self {
            LrSchedule::OneCycle { max_lr, .. } => max_lr,
            LrSchedule::Cosine { base, .. } | LrSchedule::MultiStep { base, .. } => base,
        }
    }

    /// Number of steps the schedule is meant to run, where it says (`None` for multi-step).
    pub fn total_steps(&self) -> Option<usize> {
        match self {
            LrSchedule::MultiStep { .. } => None,
            LrSchedule::Cosine { total_steps, .. } | LrSchedule::OneCycle { total_steps, .. } => {
                Some(*total_steps)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn multi_step_matches_he_et_al() {
        let s = LrSchedule::he_et_al();
        close(s.lr_at(0), 0.1);
        close(s.lr_at(31_999), 0.1);
        close(s.lr_at(32_000), 0.01);
        close(s.lr_at(47_999), 0.01);
        close(s.lr_at(48_000), 0.001);
        close(s.lr_at(63_999), 0.001);
    }

    #[test]
    fn cosine_warms_up_then_decays() {
        let s = LrSchedule::Cosine {
            base: 0.2,
            min_lr: 0.0,
            warmup_steps: 10,
            total_steps: 110,
        };
        close(s.lr_at(0), 0.02);
        close(s.lr_at(9), 0.2);
        close(s.lr_at(10), 0.2);
        close(s.lr_at(60), 0.1); // halfway through the decay
        close(s.lr_at(110), 0.0);
    }

    /// Values printed by `torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=100,
    /// pct_start=0.25, anneal_strategy='cos', div_factor=25, final_div_factor=1e4)` follow from
    /// its closed form, which we re-derive here independently.
    #[test]
    fn one_cycle_matches_pytorch_formulas() {
        let s = LrSchedule::one_cycle(0.4, 100, 0.25);
        close(s.lr_at(0), 0.4 / 25.0);
        // Peak at step pct·total − 1 = 24.
        close(s.lr_at(24), 0.4);
        // Halfway up (step 12): mean of the start and the peak.
        close(s.lr_at(12), (0.016 + 0.4) / 2.0);
        // Last step: initial / final_div_factor.
        close(s.lr_at(99), 0.016 / 1e4);
        // Halfway down: (24 + 99) / 2 = 61.5 → check monotone around it.
        assert!(s.lr_at(61) > s.lr_at(62));
        let mid = (0.4 + 0.016e-4) / 2.0;
        assert!((s.lr_at(61) - mid).abs() < 0.01);
    }
}
