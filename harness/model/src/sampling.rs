//! Seeded sampling of the next token: transformers' `do_sample=True` logits warpers in their
//! order (`TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`,
//! `generation/logits_process.py`), then a draw from the remaining distribution.
//!
//! Each sequence has its own random stream (SplitMix64, Steele et al. 2014), seeded by the
//! caller, so a sequence's samples do not depend on which other sequences share its batch.
//! The draws are reproducible but not the ones torch's global generator would make.

/// Sampling settings of one sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Divides the logits; must be positive.
    pub temperature: f64,
    /// Keep only the `k` highest logits (ties with the k-th included); `None` keeps all.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1
    /// keeps all.
    pub top_p: f64,
    pub seed: u64,
}

/// One sequence's sampler: its settings and the state of its random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    settings: Sampling,
    state: u64,
}

impl Sampler {
    pub fn new(settings: Sampling) -> Self {
        Self {
            state: settings.seed,
            settings,
        }
    }

    /// SplitMix64's next output.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Draws a token id from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> i64 {
        let candidates = self.candidates(logits);
        let total: f64 = candidates.iter().map(|&(_, p)| p).sum();
        let mut target = self.uniform() * total;
        for &(id, p) in &candidates {
            if target < p {
                return id as i64;
            }
            target -= p;
        }
        candidates.last().map_or(0, |&(id, _)| id as i64)
    }

    /// The tokens left after the warpers with their (unnormalised) probabilities, most
    /// likely first (ties by id).
    fn candidates(&self, logits: &[f32]) -> Vec<(usize, f64)> {
        let Sampling {
            temperature,
            top_k,
            top_p,
            ..
        } = self.settings;
        let mut scored: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(id, &l)| (id, f64::from(l) / temperature))
            .filter(|(_, l)| l.is_finite())
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = top_k.filter(|&k| k > 0 && k < scored.len()) {
            let threshold = scored[k - 1].1;
            scored.retain(|&(_, l)| l >= threshold);
        }
        let max = scored.first().map_or(0.0, |&(_, l)| l);
        let mut probs: Vec<(usize, f64)> = scored
            .into_iter()
            .map(|(id, l)| (id, (l - max).exp()))
            .collect();
        if top_p < 1.0 {
            // TopPLogitsWarper: drop the least likely tokens while their cumulative
            // probability stays <= 1 - top_p, always keeping the most likely one.
            let total: f64 = probs.iter().map(|&(_, p)| p).sum();
            let mut tail = 0.0;
            let mut keep = probs.len();
            while keep > 1 {
                tail += probs[keep - 1].1 / total;
                if tail > 1.0 - top_p {
                    break;
                }
                keep -= 1;
            }
            probs.truncate(keep);
        }
        probs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f64, top_k: Option<usize>, top_p: f64) -> Sampler {
        Sampler::new(Sampling {
            temperature,
            top_k,
            top_p,
            seed: 7,
        })
    }

    fn ids(candidates: Vec<(usize, f64)>) -> Vec<usize> {
        candidates.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth_logit() {
        let logits = [1.0, 3.0, 2.0, 2.0, 0.5];
        assert_eq!(
            ids(sampler(1.0, Some(2), 1.0).candidates(&logits)),
            [1, 2, 3]
        );
        assert_eq!(
            ids(sampler(1.0, None, 1.0).candidates(&logits)),
            [1, 2, 3, 0, 4]
        );
    }

    #[test]
    fn top_p_drops_the_tail_whose_mass_is_at_most_one_minus_p() {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (logits are their logs).
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        // Tail masses from the bottom: 0.05, 0.20, 0.50.
        assert_eq!(ids(sampler(1.0, None, 0.9).candidates(&logits)), [0, 1, 2]);
        assert_eq!(ids(sampler(1.0, None, 0.75).candidates(&logits)), [0, 1]);
        assert_eq!(ids(sampler(1.0, None, 0.79).candidates(&logits)), [0, 1]);
        assert_eq!(ids(sampler(1.0, None, 0.1).candidates(&logits)), [0]);
    }

    #[test]
    fn draws_follow_the_distribution_and_repeat_with_the_seed() {
        let logits = [0.7f32.ln(), 0.2f32.ln(), 0.1f32.ln()];
        let draws: Vec<i64> = {
            let mut s = sampler(1.0, None, 1.0);
            (0..20000).map(|_| s.sample(&logits)).collect()
        };
        let share = |id| draws.iter().filter(|&&d| d == id).count() as f64 / 20000.0;
        assert!((share(0) - 0.7).abs() < 0.02, "{}", share(0));
        assert!((share(1) - 0.2).abs() < 0.02, "{}", share(1));
        assert!((share(2) - 0.1).abs() < 0.02, "{}", share(2));
        let again: Vec<i64> = {
            let mut s = sampler(1.0, None, 1.0);
            (0..20000).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(draws, again);
    }

    #[test]
    fn a_low_temperature_concentrates_on_the_argmax() {
        let logits = [1.0, 1.2, 0.9];
        let mut s = sampler(0.01, None, 1.0);
        assert!((0..1000).all(|_| s.sample(&logits) == 1));
    }
}
