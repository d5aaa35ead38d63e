//! Checkpoint tensors: reads `model.safetensors` (or the shards listed in
//! `model.safetensors.index.json`), hands tensors out by name with shape checks, and reports
//! tensors nobody asked for, so a config that does not match its weights fails loudly.
use crate::error::{ModelError, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

pub struct WeightMap {
    tensors: HashMap<String, Tensor>,
    dir: PathBuf,
    device: Device,
    kind: Kind,
}

/// Shard file names listed in a `model.safetensors.index.json`, sorted and deduplicated.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|source| ModelError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let bad = |msg: String| ModelError::Safetensors {
        path: index.to_path_buf(),
        msg,
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("index is not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("index has no `weight_map` object".into()))?;
    let files: std::collections::BTreeSet<String> = map
        .values()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    Ok(files.into_iter().collect())
}

/// The safetensors files of a checkpoint directory, in a stable order.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    if index.exists() {
        return Ok(shard_names(&index)?.iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(ModelError::Io {
        path: single,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no {SINGLE_FILE} or {INDEX_FILE} in the checkpoint directory"),
        ),
    })
}

/// Every tensor's shape in the checkpoint in `dir`, read from the safetensors headers only
/// (no tensor data): what the pre-run checks compare with the config. A header longer than its
/// file, or a tensor whose data lies past the end of its file (a truncated download), is an
/// error naming the file.
pub fn read_shapes(dir: &Path) -> Result<BTreeMap<String, Vec<i64>>> {
    use std::io::Read;
    let mut shapes = BTreeMap::new();
    for file in checkpoint_files(dir)? {
        let bad = |msg: String| ModelError::Safetensors {
            path: file.clone(),
            msg,
        };
        let io = |source| ModelError::Io {
            path: file.clone(),
            source,
        };
        let mut f = std::fs::File::open(&file).map_err(io)?;
        let file_len = f.metadata().map_err(io)?.len();
        let mut len = [0u8; 8];
        f.read_exact(&mut len)
            .map_err(|e| bad(format!("cannot read the header length: {e}")))?;
        let header_len = u64::from_le_bytes(len);
        if header_len.saturating_add(8) > file_len {
            return Err(bad(format!(
                "the header claims {header_len} bytes but the file has {file_len}"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        f.read_exact(&mut header).map_err(io)?;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| bad(format!("the header is not JSON: {e}")))?;
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            let shape: Vec<i64> = info
                .get("shape")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .ok_or_else(|| bad(format!("tensor `{name}` has no shape")))?;
            let end = info
                .get("data_offsets")
                .and_then(|o| o.get(1))
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| bad(format!("tensor `{name}` has no data offsets")))?;
            if 8 + header_len + end > file_len {
                return Err(bad(format!(
                    "tensor `{name}` ends at byte {} but the file has {file_len} (truncated)",
                    8 + header_len + end
                )));
            }
            shapes.insert(name, shape);
        }
    }
    Ok(shapes)
}

impl WeightMap {
    /// Loads every tensor of the checkpoint in `dir`, converted to `kind` on `device`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<WeightMap> {
        let mut tensors = HashMap::new();
        for file in checkpoint_files(dir)? {
            if !file.exists() {
                return Err(ModelError::Io {
                    path: file,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "shard listed in the index is missing",
                    ),
                });
            }
            let loaded = Tensor::read_safetensors(&file).map_err(|e| ModelError::Safetensors {
                path: file.clone(),
                msg: e.to_string(),
            })?;
            tensors.extend(loaded);
        }
        Ok(WeightMap {
            tensors,
            dir: dir.to_path_buf(),
            device,
            kind,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Removes and returns tensor `name`, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        self.take_opt(name, shape)?
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
                dir: self.dir.clone(),
            })
    }

    pub fn take_opt(&mut self, name: &str, shape: &[i64]) -> Result<Option<Tensor>> {
        let Some(t) = self.tensors.remove(name) else {
            return Ok(None);
        };
        if t.size() != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.size(),
                dir: self.dir.clone(),
            });
        }
        Ok(Some(t.to_device(self.device).to_kind(self.kind)))
    }

    /// Fails if tensors remain that the model did not use (apart from known derived buffers).
    pub fn finish(self) -> Result<()> {
        let mut rest: Vec<&String> = self
            .tensors
            .keys()
            .filter(|k| !k.ends_with("rotary_emb.inv_freq"))
            .collect();
        rest.sort();
        match rest.first() {
            None => Ok(()),
            Some(first) => Err(ModelError::UnusedTensors {
                first: first.to_string(),
                count: rest.len(),
                dir: self.dir,
            }),
        }
    }
}

/// Writes named tensors as one `model.safetensors` (f32/bf16/f16 as given, sorted by name).
pub fn write_safetensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let list: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&list, path).map_err(|e| ModelError::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}
