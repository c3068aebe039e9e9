//! Baseline statistics of one per-minute series and the threshold derived from them.
//!
//! Why this model (AWS publishes none): the mean is what AWS reports as `baseline.average`;
//! the spread is robust (scaled median absolute deviation) so last week's spike does not hide
//! the next one, floored at `sqrt(mean)` because counts of independent calls are at least
//! Poisson-noisy; the quantile term makes any level reached regularly in the window (a nightly
//! job) ordinary; `m * mean` keeps busy APIs from firing on moderate swings.

use super::config::InsightsConfig;

/// What the baseline says about one series (calls or errors) of one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Baseline {
    /// Calls (or errors) in the window.
    pub total: u64,
    /// Mean count per minute over the window (zero minutes included).
    pub average: f64,
    /// Minutes in the window.
    pub minutes: i64,
    /// A minute is unusual when its count exceeds this (and reaches `min_count`).
    pub threshold: f64,
}

impl Baseline {
    /// Statistics of `nonzero` counts in a window of `minutes` minutes; minutes not listed
    /// had no calls.
    pub fn compute(nonzero: &mut [u32], minutes: i64, cfg: &InsightsConfig) -> Self {
        let n = minutes.max(1) as usize;
        let zeros = n.saturating_sub(nonzero.len());
        nonzero.sort_unstable();
        // The i-th smallest of the window, zeros first.
        let nth = |i: usize| -> f64 {
            if i < zeros {
                0.0
            } else {
                f64::from(nonzero[(i - zeros).min(nonzero.len() - 1)])
            }
        };
        let total: u64 = nonzero.iter().map(|&c| u64::from(c)).sum();
        let average = total as f64 / n as f64;
        let median = if nonzero.is_empty() { 0.0 } else { nth(n / 2) };
        let mut dev: Vec<f64> = (0..zeros).map(|_| median).collect();
        dev.extend(nonzero.iter().map(|&c| (f64::from(c) - median).abs()));
        dev.sort_unstable_by(f64::total_cmp);
        let mad = dev.get(n / 2).copied().unwrap_or(0.0);
        let spread = (1.4826 * mad).max(average.sqrt());
        let q_index = ((n as f64 - 1.0) * cfg.baseline_quantile).round() as usize;
        let quantile = if nonzero.is_empty() {
            0.0
        } else {
            nth(q_index.min(n - 1))
        };
        let threshold = (average + cfg.spread_factor * spread)
            .max(cfg.mean_factor * average)
            .max(quantile);
        Self {
            total,
            average,
            minutes,
            threshold,
        }
    }

    /// Whether a minute with `count` calls departs from this baseline.
    pub fn unusual(&self, count: u32, cfg: &InsightsConfig) -> bool {
        count >= cfg.min_count && f64::from(count) > self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::Baseline;
    use crate::insights::InsightsConfig;

    #[test]
    fn zeros_count_and_spikes_stand_out() {
        let cfg = InsightsConfig::default();
        // A week with one call an hour: mean 1/60, median and MAD 0, sqrt floor 0.129, so
        // mean + 6 * spread = 0.79, and the 99.9% quantile (1) is the threshold.
        let mut counts = vec![1u32; 168];
        let b = Baseline::compute(&mut counts, 10_080, &cfg);
        assert!((b.average - 168.0 / 10_080.0).abs() < 1e-12);
        assert_eq!(b.threshold, 1.0, "{b:?}");
        assert!(!b.unusual(2, &cfg), "below min_count");
        assert!(b.unusual(3, &cfg));
        // A steady 10 a minute: the sqrt floor (3.16) * 6 + 10 = 28.97 beats 2 * mean.
        let mut steady = vec![10u32; 10_080];
        let b = Baseline::compute(&mut steady, 10_080, &cfg);
        assert!(
            (b.threshold - (10.0 + 6.0 * 10f64.sqrt())).abs() < 1e-9,
            "{b:?}"
        );
        assert!(!b.unusual(28, &cfg) && b.unusual(29, &cfg));
        // A nightly job at 50/min for 30 minutes a day: the quantile makes 50 ordinary.
        let mut nightly: Vec<u32> = vec![50; 210];
        let b = Baseline::compute(&mut nightly, 10_080, &cfg);
        assert!(!b.unusual(50, &cfg) && b.unusual(51, &cfg), "{b:?}");
    }
}
