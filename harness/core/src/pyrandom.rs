//! A bit-exact port of CPython's `random.Random` (Mersenne Twister MT19937).
//!
//! lm-eval draws few-shot examples with `random.Random(fewshot_seed).sample(docs, n)`
//! (`lm_eval/api/samplers.py`, `ContextSampler.sample`) and bootstrap resamples with
//! `random.Random(i).choices(xs, k=len(xs))` (`lm_eval/api/metrics.py`, `bootstrap_stderr`).
//! Reproducing its prompts and standard errors therefore needs the exact same stream of
//! numbers, which this module provides. The C parts follow `Modules/_randommodule.c`
//! (`init_genrand`, `init_by_array`, `genrand_uint32`, `random_seed`, `random_random`,
//! `_random_Random_getrandbits_impl`); the Python parts follow `Lib/random.py`
//! (`_randbelow_with_getrandbits`, `randrange`, `shuffle`, `sample`, `choices`).

use crate::CoreError;

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// CPython's `random.Random`, seeded from a non-negative integer.
#[derive(Clone)]
pub struct PyRandom {
    state: [u32; N],
    index: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl PyRandom {
    /// `random.Random(seed)` for an integer seed.
    ///
    /// CPython (`random_seed`) splits `abs(seed)` into 32-bit words, least significant first
    /// (a zero seed is the single word `0`), and feeds them to `init_by_array`. A negative
    /// Python seed `-s` gives the same generator as `s`, so callers pass `s.unsigned_abs()`.
    pub fn new(seed: u64) -> Self {
        // Truncation is intended: the seed is split into its low and high 32-bit words.
        let low = seed as u32;
        let high = (seed >> 32) as u32;
        if high == 0 {
            Self::from_key(&[low])
        } else {
            Self::from_key(&[low, high])
        }
    }

    /// `init_by_array` from the MT19937 reference code, as used by `random_seed`.
    fn from_key(key: &[u32]) -> Self {
        let mut rng = Self::from_u32(19_650_218);
        let mt = &mut rng.state;
        let mut i = 1;
        let mut j = 0;
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            // `j` is below `key.len()`, which CPython also stores in a `uint32_t`-sized loop.
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            // `i` is below 624.
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        rng
    }

    /// `init_genrand` from the MT19937 reference code.
    fn from_u32(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1] ^ (state[i - 1] >> 30);
            // `i` is below 624.
            state[i] = prev.wrapping_mul(1_812_433_253).wrapping_add(i as u32);
        }
        Self { state, index: N }
    }

    /// Regenerates the whole state block (the loop at the top of `genrand_uint32`).
    fn twist(&mut self) {
        let mt = &mut self.state;
        for kk in 0..N {
            let y = (mt[kk] & UPPER_MASK) | (mt[(kk + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 0 { 0 } else { MATRIX_A };
            mt[kk] = mt[(kk + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// `genrand_uint32`: the next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random.random()`: a float in `[0, 1)` built from 53 random bits (`random_random`).
    pub fn random(&mut self) -> f64 {
        let a = f64::from(self.next_u32() >> 5);
        let b = f64::from(self.next_u32() >> 6);
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `random.getrandbits(k)` for `k <= 64`.
    ///
    /// CPython fills 32-bit words least significant first and drops the low bits of the last
    /// (most significant) word; `k == 0` consumes nothing.
    ///
    /// # Panics
    /// If `k > 64`.
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        assert!(k <= 64, "getrandbits supports at most 64 bits, got {k}");
        match k {
            0 => 0,
            1..=32 => u64::from(self.next_u32() >> (32 - k)),
            _ => {
                let low = u64::from(self.next_u32());
                let high = u64::from(self.next_u32() >> (64 - k));
                low | (high << 32)
            }
        }
    }

    /// `Random._randbelow_with_getrandbits(n)`: uniform in `[0, n)` by rejection sampling on
    /// `n.bit_length()` random bits.
    ///
    /// # Panics
    /// If `n == 0` (CPython documents the function for `n > 0` only).
    pub fn randbelow(&mut self, n: u64) -> u64 {
        assert!(n > 0, "randbelow needs a positive bound");
        let k = u64::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `random.randrange(start, stop, step)`.
    pub fn randrange(&mut self, start: i64, stop: i64, step: i64) -> Result<i64, CoreError> {
        let empty = || CoreError::EmptyRange { start, stop, step };
        let width = i128::from(stop) - i128::from(start);
        let step_wide = i128::from(step);
        let count = match step.signum() {
            1 => floor_div(width + step_wide - 1, step_wide),
            -1 => floor_div(width + step_wide + 1, step_wide),
            _ => return Err(empty()),
        };
        let count = u64::try_from(count)
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(empty)?;
        let offset = step_wide * i128::from(self.randbelow(count));
        // The result lies in [start, stop), so it fits in an i64.
        Ok((i128::from(start) + offset) as i64)
    }

    /// `random.shuffle(x)` (Fisher-Yates from the end, `j = randbelow(i + 1)`).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.randbelow_usize(i + 1);
            items.swap(i, j);
        }
    }

    /// The indices `random.sample(range(n), k)` would return, in selection order.
    ///
    /// CPython picks between two algorithms with a memory heuristic: when `n` is at most
    /// `21 + 4 ** ceil(log(3k, 4))` (the `4**` term only for `k > 5`) it runs a partial
    /// Fisher-Yates over a copy of the pool, otherwise it redraws `randbelow(n)` until it hits
    /// an index not selected yet. Both are reproduced, as they consume different numbers.
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Result<Vec<usize>, CoreError> {
        if k > n {
            return Err(CoreError::SampleTooLarge { k, n });
        }
        if n <= sample_setsize(k) {
            let mut pool: Vec<usize> = (0..n).collect();
            Ok((0..k)
                .map(|i| {
                    let j = self.randbelow_usize(n - i);
                    let picked = pool[j];
                    pool[j] = pool[n - i - 1];
                    picked
                })
                .collect())
        } else {
            let mut selected = std::collections::HashSet::with_capacity(k);
            Ok((0..k)
                .map(|_| loop {
                    let j = self.randbelow_usize(n);
                    if selected.insert(j) {
                        break j;
                    }
                })
                .collect())
        }
    }

    /// `random.sample(population, k)`.
    pub fn sample<T: Clone>(&mut self, population: &[T], k: usize) -> Result<Vec<T>, CoreError> {
        let indices = self.sample_indices(population.len(), k)?;
        Ok(indices.into_iter().map(|i| population[i].clone()).collect())
    }

    /// One unweighted draw of `random.choices`: `floor(random() * n)`.
    pub fn choice_index(&mut self, n: usize) -> usize {
        // `n` is a population size (below 2**53), and the product is in [0, n): truncation
        // is `floor` there, without a libm call (the bootstraps draw billions of these).
        (self.random() * n as f64) as usize
    }

    /// `random.choices(population, k=k)` (no weights).
    pub fn choices<T: Clone>(&mut self, population: &[T], k: usize) -> Vec<T> {
        (0..k)
            .map(|_| population[self.choice_index(population.len())].clone())
            .collect()
    }

    fn randbelow_usize(&mut self, n: usize) -> usize {
        // usize and u64 have the same width on every supported target.
        self.randbelow(n as u64) as usize
    }
}

/// The set-size threshold of `Random.sample` (see [`PyRandom::sample_indices`]).
fn sample_setsize(k: usize) -> usize {
    let mut setsize = 21usize;
    if k > 5 {
        // `math.log(k * 3, 4)` is computed as `log(3k) / log(4)`, as in `math_log_impl`.
        let exponent = ((k as f64 * 3.0).ln() / 4f64.ln()).ceil() as u32;
        setsize = setsize.saturating_add(4usize.saturating_pow(exponent));
    }
    setsize
}

/// Python's `//` on integers (rounds towards negative infinity).
fn floor_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if (a % b != 0) && ((a < 0) != (b < 0)) {
        q - 1
    } else {
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every expected value in this module was printed by CPython 3.11.7 (`python3`) with the
    // snippet quoted above each table, e.g. for `SEED_TABLE`:
    //   r = random.Random(seed)
    //   [r.getrandbits(32) for _ in range(3)]; [r.random() for _ in range(3)]
    //   [r.getrandbits(k) for k in (0, 1, 7, 31, 33, 53, 64)]
    //   [r._randbelow(n) for n in (1, 2, 3, 10, 1000, 2**40 + 3)]
    //   [r.randrange(5, 100, 7), r.randrange(100, -3, -9), r.randrange(-50, 50), r.randrange(3, 4)]
    //   x = list(range(10)); r.shuffle(x); r.choices(range(7), k=12)
    // all drawn in sequence from one generator.
    struct Expected {
        seed: u64,
        bits32: [u64; 3],
        random: [f64; 3],
        bits: [u64; 7],
        randbelow: [u64; 6],
        randrange: [i64; 4],
        shuffle: [usize; 10],
        choices: [usize; 12],
    }

    const SEED_TABLE: [Expected; 5] = [
        Expected {
            seed: 0,
            bits32: [3626764237, 1654615998, 3255389356],
            random: [0.890243920837131, 0.04048437818077755, 0.9654648863619172],
            bits: [
                0,
                0,
                51,
                1971893209,
                7661356601,
                8717165710927625,
                6604845167042249220,
            ],
            randbelow: [0, 0, 1, 2, 773, 553189221793],
            randrange: [61, 1, 27, 3],
            shuffle: [7, 0, 9, 3, 2, 5, 6, 8, 1, 4],
            choices: [2, 2, 4, 1, 3, 3, 3, 0, 6, 6, 0, 5],
        },
        Expected {
            seed: 1,
            bits32: [577090037, 2444712010, 3639700191],
            random: [0.8022650611681835, 0.06310682188770933, 0.11791870367106105],
            bits: [
                0,
                1,
                57,
                1014138928,
                2798570523,
                1891107552740886,
                8999366892653588108,
            ],
            randbelow: [0, 1, 1, 9, 780, 7589884249],
            randrange: [82, 37, -16, 3],
            shuffle: [2, 3, 8, 4, 7, 6, 0, 5, 1, 9],
            choices: [6, 5, 3, 5, 6, 3, 2, 4, 5, 6, 6, 2],
        },
        Expected {
            seed: 1234,
            bits32: [4150886329, 3342196574, 1892932127],
            random: [0.11685051774599753, 0.09064360641670188, 0.942534766638793],
            bits: [
                0,
                1,
                74,
                75003370,
                7179310482,
                886503085242822,
                6541872259009091638,
            ],
            randbelow: [0, 0, 0, 0, 354, 328408437877],
            randrange: [12, 82, 41, 3],
            shuffle: [6, 2, 5, 3, 4, 9, 1, 7, 8, 0],
            choices: [3, 0, 5, 0, 2, 5, 1, 4, 1, 6, 4, 6],
        },
        Expected {
            seed: (1 << 32) + 5,
            bits32: [675479763, 2085189291, 1213270837],
            random: [0.8899258643720599, 0.8353252635488171, 0.35506619235705983],
            bits: [
                0,
                0,
                99,
                2045549054,
                8284765514,
                8772714067266337,
                13471905691927776711,
            ],
            randbelow: [0, 0, 1, 3, 990, 350051233592],
            randrange: [47, 37, 49, 3],
            shuffle: [9, 3, 4, 1, 2, 7, 5, 0, 8, 6],
            choices: [6, 6, 3, 1, 3, 4, 6, 4, 1, 0, 5, 2],
        },
        Expected {
            seed: u64::MAX,
            bits32: [93740670, 1068495656, 1452108352],
            random: [0.6187512294349632, 0.45606388609950244, 0.09501752197422808],
            bits: [
                0,
                1,
                47,
                1649251863,
                7439366323,
                489573626298795,
                3551897395286785872,
            ],
            randbelow: [0, 0, 1, 7, 268, 687352314982],
            randrange: [33, 64, 46, 3],
            shuffle: [3, 4, 0, 8, 2, 1, 6, 5, 7, 9],
            choices: [2, 3, 3, 0, 0, 4, 6, 1, 4, 0, 5, 4],
        },
    ];

    #[test]
    fn streams_match_cpython_for_several_seeds() {
        for e in &SEED_TABLE {
            let mut r = PyRandom::new(e.seed);
            let bits32: Vec<u64> = (0..3).map(|_| r.getrandbits(32)).collect();
            assert_eq!(bits32, e.bits32, "seed {}", e.seed);
            let random: Vec<f64> = (0..3).map(|_| r.random()).collect();
            assert_eq!(random, e.random, "seed {}", e.seed);
            let bits: Vec<u64> = [0, 1, 7, 31, 33, 53, 64].map(|k| r.getrandbits(k)).to_vec();
            assert_eq!(bits, e.bits, "seed {}", e.seed);
            let below: Vec<u64> = [1, 2, 3, 10, 1000, (1 << 40) + 3]
                .map(|n| r.randbelow(n))
                .to_vec();
            assert_eq!(below, e.randbelow, "seed {}", e.seed);
            let ranges = [
                r.randrange(5, 100, 7).unwrap(),
                r.randrange(100, -3, -9).unwrap(),
                r.randrange(-50, 50, 1).unwrap(),
                r.randrange(3, 4, 1).unwrap(),
            ];
            assert_eq!(ranges, e.randrange, "seed {}", e.seed);
            let mut shuffled: Vec<usize> = (0..10).collect();
            r.shuffle(&mut shuffled);
            assert_eq!(shuffled, e.shuffle, "seed {}", e.seed);
            let population: Vec<usize> = (0..7).collect();
            assert_eq!(r.choices(&population, 12), e.choices, "seed {}", e.seed);
        }
    }

    /// r = random.Random(seed)
    /// r.sample(range(10), 4), r.sample(range(30), 6), r.sample(range(22), 22)   # pool method
    /// r = random.Random(seed)
    /// r.sample(range(1000), 5), r.sample(range(100000), 6), r.sample(range(40), 2)  # set method
    #[test]
    fn sample_matches_cpython_for_both_algorithms() {
        type Case = (u64, [&'static [usize]; 3], [&'static [usize]; 3]);
        let cases: [Case; 3] = [
            (
                1234,
                [
                    &[7, 1, 0, 9],
                    &[29, 25, 18, 1, 21, 22],
                    &[
                        2, 3, 11, 7, 0, 17, 16, 5, 10, 9, 18, 12, 19, 21, 1, 13, 14, 15, 4, 8, 6,
                        20,
                    ],
                ],
                [
                    &[989, 796, 451, 119, 7],
                    &[11880, 76313, 4577, 88023, 90844, 11001],
                    &[6, 22],
                ],
            ),
            (
                0,
                [
                    &[6, 9, 0, 2],
                    &[16, 15, 12, 25, 9, 28],
                    &[
                        11, 18, 6, 16, 4, 9, 17, 12, 1, 20, 15, 8, 14, 2, 21, 0, 5, 19, 10, 13, 7,
                        3,
                    ],
                ],
                [
                    &[864, 394, 776, 911, 430],
                    &[5306, 33936, 67013, 63691, 53075, 39755],
                    &[30, 22],
                ],
            ),
            (
                42,
                [
                    &[1, 0, 4, 9],
                    &[7, 4, 23, 3, 21, 27],
                    &[
                        17, 2, 18, 13, 1, 0, 20, 3, 14, 8, 9, 16, 12, 19, 6, 21, 11, 4, 15, 10, 5,
                        7,
                    ],
                ],
                [
                    &[654, 114, 25, 759, 281],
                    &[32098, 29256, 18289, 96530, 13434, 88696],
                    &[34, 5],
                ],
            ),
        ];
        for (seed, pool, set) in cases {
            let mut r = PyRandom::new(seed);
            for ((n, k), want) in [(10, 4), (30, 6), (22, 22)].into_iter().zip(pool) {
                assert_eq!(
                    r.sample_indices(n, k).unwrap(),
                    want,
                    "seed {seed} n {n} k {k}"
                );
            }
            let mut r = PyRandom::new(seed);
            for ((n, k), want) in [(1000, 5), (100_000, 6), (40, 2)].into_iter().zip(set) {
                assert_eq!(
                    r.sample_indices(n, k).unwrap(),
                    want,
                    "seed {seed} n {n} k {k}"
                );
            }
        }
    }

    /// r = random.Random(7)
    /// r.sample(range(22), 5), r.sample(range(300), 20), r.sample(range(6), 6)
    /// (the first two take the set method and redraw on collisions)
    #[test]
    fn sample_set_method_redraws_collisions_like_cpython() {
        let mut r = PyRandom::new(7);
        assert_eq!(r.sample_indices(22, 5).unwrap(), [10, 4, 12, 20, 1]);
        let want = [
            37, 274, 48, 187, 298, 29, 259, 109, 19, 44, 222, 214, 35, 123, 46, 282, 217, 30, 289,
            63,
        ];
        assert_eq!(r.sample_indices(300, 20).unwrap(), want);
        let letters = ['a', 'b', 'c', 'd', 'e', 'f'];
        assert_eq!(
            r.sample(&letters, 6).unwrap(),
            ['b', 'e', 'a', 'c', 'f', 'd']
        );
    }

    /// lm-eval's few-shot sampler keeps one `random.Random(1234)` and calls `sample` per doc:
    /// r = random.Random(1234); [r.sample(range(100), 6) for _ in range(3)]
    #[test]
    fn repeated_fewshot_draws_match_cpython() {
        let mut r = PyRandom::new(1234);
        let draws: Vec<Vec<usize>> = (0..3).map(|_| r.sample_indices(100, 6).unwrap()).collect();
        assert_eq!(
            draws,
            [
                [99, 56, 14, 0, 11, 74],
                [4, 85, 88, 10, 12, 98],
                [45, 30, 2, 3, 44, 82]
            ]
        );
    }

    #[test]
    fn sample_and_randrange_reject_what_cpython_rejects() {
        let mut r = PyRandom::new(0);
        assert!(matches!(
            r.sample_indices(3, 4),
            Err(CoreError::SampleTooLarge { k: 4, n: 3 })
        ));
        assert!(r.randrange(5, 5, 1).is_err());
        assert!(r.randrange(0, 10, 0).is_err());
        assert!(r.randrange(0, 10, -1).is_err());
        assert!(r.sample_indices(0, 0).unwrap().is_empty());
    }

    #[test]
    fn sample_setsize_follows_cpython_heuristic() {
        // 21 + 4 ** ceil(log(3k, 4)) for k > 5.
        assert_eq!(sample_setsize(5), 21);
        assert_eq!(sample_setsize(6), 21 + 64);
        assert_eq!(sample_setsize(22), 21 + 256);
    }

    #[test]
    fn floor_div_rounds_down() {
        assert_eq!(floor_div(7, 2), 3);
        assert_eq!(floor_div(-7, 2), -4);
        assert_eq!(floor_div(7, -2), -4);
        assert_eq!(floor_div(-7, -2), 3);
        assert_eq!(floor_div(-6, -2), 3);
    }
}
