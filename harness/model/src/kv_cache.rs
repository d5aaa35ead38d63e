//! Keys and values of positions already run, so that later tokens attend to them without
//! recomputing them: per layer for a batch being decoded ([`KvCache`]), and per sequence
//! ([`SequenceKv`]) for prefixes that several batches extend (the evaluator's prefix cache).
//!
//! A batch built from sequences of different lengths is right-padded: each row holds its
//! sequence's positions first, then a gap that its attention mask marks as padding. New tokens
//! follow the gap; [`crate::Model::forward_hidden`] derives their positions from the mask
//! (`cumsum − 1`), so a row continues exactly where its sequence ended.
use tch::{Kind, Tensor};

/// Keys and values of one layer: buffers `[B, kv_heads, capacity, head_dim]` whose first `len`
/// columns are filled. Appending writes in place while capacity lasts, so a decoding step copies
/// only its own column instead of the whole cache (`cat` per step is O(context));
/// [`KvCache::reserve`] sizes the next growth. For no-grad use (evaluation, generation).
#[derive(Debug, Default)]
pub struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
    len: i64,
    reserve: i64,
}

impl LayerCache {
    fn filled(k: Tensor, v: Tensor) -> LayerCache {
        LayerCache {
            len: k.size()[2],
            kv: Some((k, v)),
            reserve: 0,
        }
    }

    /// Appends the new positions' keys and values and returns those of all positions.
    pub(crate) fn append(&mut self, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        let Some((bk, bv)) = self.kv.take() else {
            self.len = t;
            self.kv = Some((k.shallow_clone(), v.shallow_clone()));
            return (k, v);
        };
        let (bk, bv) = if self.len + t > bk.size()[2] {
            let capacity = self.len + t + std::mem::take(&mut self.reserve);
            let grow = |old: &Tensor, new: &Tensor| {
                let mut size = new.size();
                size[0] = old.size()[0].max(new.size()[0]);
                size[2] = capacity;
                let buffer = new.new_empty(size.as_slice(), (new.kind(), new.device()));
                buffer
                    .narrow(2, 0, self.len)
                    .copy_(&old.narrow(2, 0, self.len));
                buffer
            };
            (grow(&bk, &k), grow(&bv, &v))
        } else {
            (bk, bv)
        };
        bk.narrow(2, self.len, t).copy_(&k);
        bv.narrow(2, self.len, t).copy_(&v);
        self.len += t;
        let out = (bk.narrow(2, 0, self.len), bv.narrow(2, 0, self.len));
        self.kv = Some((bk, bv));
        out
    }

    /// The filled keys and values.
    fn keys_values(&self) -> Option<(Tensor, Tensor)> {
        self.kv
            .as_ref()
            .map(|(k, v)| (k.narrow(2, 0, self.len), v.narrow(2, 0, self.len)))
    }
}

/// One KV cache per layer.
#[derive(Debug, Default)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
}

impl KvCache {
    pub fn new(num_layers: usize) -> KvCache {
        KvCache {
            layers: (0..num_layers).map(|_| LayerCache::default()).collect(),
        }
    }

    /// Number of positions (columns) already cached, padding included.
    pub fn len(&self) -> i64 {
        self.layers.first().map_or(0, |l| l.len)
    }

    /// Makes the next growth of every layer leave room for `positions` more columns (decoding
    /// reserves the tokens it may generate, so its steps write in place).
    pub fn reserve(&mut self, positions: i64) {
        for layer in &mut self.layers {
            layer.reserve = positions;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every column from `len` on (rejected draft tokens); the next append overwrites them.
    pub fn truncate(&mut self, len: i64) {
        for layer in &mut self.layers {
            layer.len = layer.len.min(len);
        }
    }

    /// A batch whose row `r` continues `seqs[r]`, and the `[B, S]` attention mask of the cached
    /// columns (1 = real) when the sequences differ in length (`None`: no padding). Rows that
    /// all continue the same sequence share its storage (an expanded view, no copy).
    pub fn from_sequences(seqs: &[&SequenceKv]) -> (KvCache, Option<Tensor>) {
        let rows = seqs.len() as i64;
        let longest = seqs.iter().map(|s| s.len).max().unwrap_or(0);
        let first = seqs[0];
        if seqs.iter().all(|s| std::ptr::eq(*s, first)) {
            let layers = first
                .layers
                .iter()
                .map(|(k, v)| {
                    LayerCache::filled(
                        k.expand([rows, -1, -1, -1], false),
                        v.expand([rows, -1, -1, -1], false),
                    )
                })
                .collect();
            return (KvCache { layers }, None);
        }
        let pad = |t: &Tensor, len: i64| {
            if len == longest {
                t.shallow_clone()
            } else {
                t.constant_pad_nd([0, 0, 0, longest - len])
            }
        };
        let layers = (0..first.layers.len())
            .map(|l| {
                let ks: Vec<Tensor> = seqs.iter().map(|s| pad(&s.layers[l].0, s.len)).collect();
                let vs: Vec<Tensor> = seqs.iter().map(|s| pad(&s.layers[l].1, s.len)).collect();
                LayerCache::filled(Tensor::cat(&ks, 0), Tensor::cat(&vs, 0))
            })
            .collect();
        let padded = seqs.iter().any(|s| s.len != longest);
        let mask = padded.then(|| {
            let device = first.layers[0].0.device();
            let lens: Vec<i64> = seqs.iter().map(|s| s.len).collect();
            Tensor::arange(longest, (Kind::Int64, device))
                .unsqueeze(0)
                .lt_tensor(&Tensor::from_slice(&lens).to_device(device).unsqueeze(1))
                .to_kind(Kind::Int64)
                .view([rows, longest])
        });
        (KvCache { layers }, mask)
    }

    /// The keys and values of row `row` at the columns `spans` (`(start, len)` each, in order):
    /// its real positions, as a sequence of its own (`cat` copies, so the batch can be freed).
    pub fn sequence(&self, row: i64, spans: &[(i64, i64)]) -> SequenceKv {
        let pick = |t: &Tensor| {
            let t = t.get(row);
            let parts: Vec<Tensor> = spans
                .iter()
                .filter(|(_, len)| *len > 0)
                .map(|&(start, len)| t.narrow(1, start, len))
                .collect();
            Tensor::cat(&parts, 1).unsqueeze(0)
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let (k, v) = l.keys_values().expect("a filled cache");
                (pick(&k), pick(&v))
            })
            .collect();
        SequenceKv {
            layers,
            len: spans.iter().map(|(_, len)| len).sum(),
        }
    }
}

/// Keys and values of one sequence's positions, `[1, kv_heads, len, head_dim]` per layer.
#[derive(Debug)]
pub struct SequenceKv {
    layers: Vec<(Tensor, Tensor)>,
    len: i64,
}

impl SequenceKv {
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held (keys and values of every layer).
    pub fn bytes(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|(k, v)| [k, v])
            .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn ramp(rows: i64, len: i64, start: f64) -> Tensor {
        Tensor::arange(rows * 2 * len * 3, (Kind::Float, Device::Cpu)).view([rows, 2, len, 3])
            + start
    }

    #[test]
    fn appends_in_place_match_concatenation_whatever_the_reserve() {
        let steps = [
            ramp(2, 5, 0.0),
            ramp(2, 1, 100.0),
            ramp(2, 1, 200.0),
            ramp(2, 3, 300.0),
        ];
        let mut plain = LayerCache::default();
        let mut reserved = LayerCache::default();
        let mut expected: Option<Tensor> = None;
        for (i, s) in steps.iter().enumerate() {
            if i == 1 {
                reserved.reserve = 2; // room for the next two steps, then growth again
            }
            expected = Some(match expected {
                None => s.copy(),
                Some(e) => Tensor::cat(&[e, s.copy()], 2),
            });
            let (k1, _) = plain.append(s.copy(), s.copy());
            let (k2, v2) = reserved.append(s.copy(), s.copy());
            let e = expected.as_ref().unwrap();
            assert!(k1.equal(e) && k2.equal(e) && v2.equal(e), "step {i}");
        }
        assert_eq!(reserved.len, 10);
    }

    #[test]
    fn sequences_of_different_lengths_are_right_padded_and_read_back() {
        let cache = |len: i64, start: f64| KvCache {
            layers: vec![LayerCache::filled(ramp(1, len, start), ramp(1, len, start))],
        };
        let a = cache(4, 0.0).sequence(0, &[(0, 4)]);
        let b = cache(2, 50.0).sequence(0, &[(0, 2)]);
        assert_eq!((a.len(), b.len()), (4, 2));
        assert_eq!(a.bytes(), 2 * 2 * 4 * 3 * 4);
        let (batch, mask) = KvCache::from_sequences(&[&a, &b]);
        assert_eq!(batch.len(), 4);
        let mask: Vec<i64> = Vec::try_from(mask.expect("padded").flatten(0, -1)).unwrap();
        assert_eq!(mask, vec![1, 1, 1, 1, 1, 1, 0, 0]);
        // Row 1's real columns read back equal `b`; the gap is skipped.
        let back = batch.sequence(1, &[(0, 2), (4, 0)]);
        assert!(back.layers[0].0.equal(&b.layers[0].0));
        // One sequence continued by several rows: a view, no mask.
        let (shared, mask) = KvCache::from_sequences(&[&a, &a, &a]);
        assert!(mask.is_none());
        let (k, _) = shared.layers[0].keys_values().unwrap();
        assert_eq!(k.size(), vec![3, 2, 4, 3]);
        assert!(k.get(2).equal(&a.layers[0].0.get(0)));
    }
}
