//! Keys and values of positions already run, so that later tokens attend to them without
//! recomputing them: per layer for a batch being decoded ([`KvCache`]), and per sequence
//! ([`SequenceKv`]) for prefixes that several batches extend (the evaluator's prefix cache).
//!
//! A batch built from sequences of different lengths is right-padded: each row holds its
//! sequence's positions first, then a gap that its attention mask marks as padding. New tokens
//! follow the gap; [`crate::Model::forward_hidden`] derives their positions from the mask
//! (`cumsum − 1`), so a row continues exactly where its sequence ended.
use tch::{Kind, Tensor};

/// Keys and values `[B, kv_heads, S, head_dim]` of one layer.
#[derive(Debug, Default)]
pub struct LayerCache {
    pub kv: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    /// Appends the new positions' keys and values and returns those of all positions.
    pub(crate) fn append(&mut self, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let (k, v) = match self.kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
            None => (k, v),
        };
        self.kv = Some((k.shallow_clone(), v.shallow_clone()));
        (k, v)
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
        self.layers
            .first()
            .and_then(|l| l.kv.as_ref())
            .map_or(0, |(k, _)| k.size()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
                .map(|(k, v)| LayerCache {
                    kv: Some((
                        k.expand([rows, -1, -1, -1], false),
                        v.expand([rows, -1, -1, -1], false),
                    )),
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
                LayerCache {
                    kv: Some((Tensor::cat(&ks, 0), Tensor::cat(&vs, 0))),
                }
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
                let (k, v) = l.kv.as_ref().expect("a filled cache");
                (pick(k), pick(v))
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
