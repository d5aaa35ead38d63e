//! Helpers shared by the method tests.
use tch::Tensor;

/// A `[b, t]` batch of pseudo-random token ids below `vocab` with an all-ones mask, fixed by
/// `seed`. Not drawn from libtorch's global generator: the tests of a binary run on parallel
/// threads that share it, so a `manual_seed` could be consumed by another test before the draw
/// (a flaky-test regression: two "identical" calibration batches differed).
pub fn token_batch(b: i64, t: i64, vocab: i64, seed: u64) -> (Tensor, Tensor) {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let ids: Vec<i64> = (0..b * t)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as i64 % vocab
        })
        .collect();
    let ids = Tensor::from_slice(&ids).view([b, t]);
    let mask = ids.ones_like();
    (ids, mask)
}

#[test]
fn token_batches_are_fixed_by_their_seed() {
    let (a, mask) = token_batch(2, 6, 128, 3);
    assert!(a.equal(&token_batch(2, 6, 128, 3).0));
    assert!(!a.equal(&token_batch(2, 6, 128, 4).0));
    assert_eq!(a.size(), [2, 6]);
    assert!(i64::try_from(a.max()).unwrap() < 128 && i64::try_from(a.min()).unwrap() >= 0);
    assert!(mask.equal(&a.ones_like()));
}
