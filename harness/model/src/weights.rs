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
    /// The checkpoint's safetensors files, open for reading.
    files: Vec<(PathBuf, std::fs::File)>,
    tensors: HashMap<String, StoredTensor>,
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

/// Where one tensor's bytes lie in a safetensors file.
struct StoredTensor {
    /// Index into [`WeightMap::files`].
    file: usize,
    kind: Kind,
    shape: Vec<i64>,
    /// Absolute byte range in the file.
    begin: u64,
    end: u64,
}

/// Element type and size of a safetensors dtype.
fn stored_kind(dtype: &str) -> Option<(Kind, u64)> {
    Some(match dtype {
        "F64" => (Kind::Double, 8),
        "F32" => (Kind::Float, 4),
        "F16" => (Kind::Half, 2),
        "BF16" => (Kind::BFloat16, 2),
        "I64" => (Kind::Int64, 8),
        "I32" => (Kind::Int, 4),
        "I16" => (Kind::Int16, 2),
        "I8" => (Kind::Int8, 1),
        "U8" => (Kind::Uint8, 1),
        "BOOL" => (Kind::Bool, 1),
        _ => return None,
    })
}

/// The tensors of one safetensors file, from its header alone. A header longer than its file,
/// a tensor whose data lies past the end of its file (a truncated download), or whose byte
/// count does not match its shape and dtype, is an error naming the file.
fn read_header(
    mut f: &std::fs::File,
    path: &Path,
    index: usize,
) -> Result<Vec<(String, StoredTensor)>> {
    use std::io::Read;
    let bad = |msg: String| ModelError::Safetensors {
        path: path.to_path_buf(),
        msg,
    };
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
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
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("the header is not JSON: {e}")))?;
    let data_start = 8 + header_len;
    let mut tensors = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let shape: Vec<i64> = info
            .get("shape")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .ok_or_else(|| bad(format!("tensor `{name}` has no shape")))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(|o| serde_json::from_value(o.clone()).ok())
            .filter(|o: &Vec<u64>| o.len() == 2 && o[0] <= o[1])
            .ok_or_else(|| bad(format!("tensor `{name}` has no data offsets")))?;
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        let (kind, size) = stored_kind(dtype)
            .ok_or_else(|| bad(format!("tensor `{name}` has unsupported dtype `{dtype}`")))?;
        let (begin, end) = (data_start + offsets[0], data_start + offsets[1]);
        if end > file_len {
            return Err(bad(format!(
                "tensor `{name}` ends at byte {end} but the file has {file_len} (truncated)"
            )));
        }
        let elements = shape.iter().map(|&d| d.max(0) as u64).product::<u64>();
        if end - begin != elements * size {
            return Err(bad(format!(
                "tensor `{name}` has {} bytes, but shape {shape:?} of {dtype} needs {}",
                end - begin,
                elements * size
            )));
        }
        let stored = StoredTensor {
            file: index,
            kind,
            shape,
            begin,
            end,
        };
        tensors.push((name, stored));
    }
    Ok(tensors)
}

/// Every tensor's shape in the checkpoint in `dir`, read from the safetensors headers only
/// (no tensor data): what the pre-run checks compare with the config.
pub fn read_shapes(dir: &Path) -> Result<BTreeMap<String, Vec<i64>>> {
    let mut shapes = BTreeMap::new();
    for (index, path) in checkpoint_files(dir)?.iter().enumerate() {
        for (name, stored) in read_header(&open_shard(path)?, path, index)? {
            shapes.insert(name, stored.shape);
        }
    }
    Ok(shapes)
}

/// Opens one safetensors file of a checkpoint; a missing one is named as such.
fn open_shard(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|source| {
        let source = match source.kind() {
            std::io::ErrorKind::NotFound => std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "shard listed in the index is missing",
            ),
            _ => source,
        };
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

// Safetensors data is little-endian and is read into tensors as is.
const _: () = assert!(cfg!(target_endian = "little"));

impl WeightMap {
    /// Indexes every tensor of the checkpoint in `dir` (headers only). Tensors are read when
    /// taken, each straight into its own storage: loading never holds a file's bytes and its
    /// tensors at once, so peak memory is the model's size, not twice it.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<WeightMap> {
        let (mut files, mut tensors) = (Vec::new(), HashMap::new());
        for (index, path) in checkpoint_files(dir)?.into_iter().enumerate() {
            let file = open_shard(&path)?;
            tensors.extend(read_header(&file, &path, index)?);
            files.push((path, file));
        }
        Ok(WeightMap {
            files,
            tensors,
            dir: dir.to_path_buf(),
            device,
            kind,
        })
    }

    /// Reads a stored tensor's bytes into a new CPU tensor.
    fn read(&self, stored: &StoredTensor) -> Result<Tensor> {
        use std::os::unix::fs::FileExt;
        let (path, file) = &self.files[stored.file];
        let tensor = Tensor::empty(stored.shape.as_slice(), (stored.kind, Device::Cpu));
        let len = (stored.end - stored.begin) as usize;
        if len > 0 {
            // SAFETY: `tensor` is a fresh contiguous CPU tensor of exactly `len` bytes (its
            // shape and dtype were checked against the byte range in `read_header`), and no
            // other reference to its storage exists while the slice lives.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut u8, len) };
            file.read_exact_at(bytes, stored.begin)
                .map_err(|e| ModelError::Safetensors {
                    path: path.clone(),
                    msg: format!("cannot read bytes {}..{}: {e}", stored.begin, stored.end),
                })?;
        }
        Ok(tensor)
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
        let Some(stored) = self.tensors.remove(name) else {
            return Ok(None);
        };
        if stored.shape != shape {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: stored.shape,
                dir: self.dir.clone(),
            });
        }
        let tensor = self.read(&stored)?;
        Ok(Some(tensor.to_device(self.device).to_kind(self.kind)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, tensors: &[(&str, Tensor)]) {
        let map = tensors
            .iter()
            .map(|(name, t)| (name.to_string(), t.shallow_clone()))
            .collect();
        write_safetensors(&map, &dir.join(SINGLE_FILE)).unwrap();
    }

    #[test]
    fn tensors_are_read_on_take_in_every_stored_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let f32s = Tensor::randn([3, 5], (Kind::Float, Device::Cpu));
        let bf16s = Tensor::randn([4], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16);
        let ids = Tensor::from_slice(&[7i64, -2, 9]);
        let empty = Tensor::zeros([0, 4], (Kind::Float, Device::Cpu));
        write(
            dir.path(),
            &[
                ("a", f32s.shallow_clone()),
                ("b", bf16s.shallow_clone()),
                ("c", ids.shallow_clone()),
                ("e", empty),
            ],
        );
        let mut weights = WeightMap::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        assert!(weights.contains("a") && weights.contains("b"));
        assert!(weights.take("a", &[3, 5]).unwrap().equal(&f32s));
        // Stored bf16 arrives in the model's dtype, exactly the widened values.
        let b = weights.take("b", &[4]).unwrap();
        assert_eq!(b.kind(), Kind::Float);
        assert!(b.equal(&bf16s.to_kind(Kind::Float)));
        assert_eq!(weights.take("e", &[0, 4]).unwrap().size(), [0, 4]);
        // A shape the config implies but the file does not hold is named, before any read.
        let err = weights.take("c", &[4]).unwrap_err();
        assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{err}");
        assert_eq!(
            read_shapes(dir.path()).unwrap()["c"],
            vec![3],
            "read_shapes sees the header alone"
        );
        // Untaken tensors are reported by `finish`; a taken one reads back bit for bit.
        let mut weights = WeightMap::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        assert!(weights.read(&weights.tensors["c"]).unwrap().equal(&ids));
        weights.tensors.retain(|name, _| name == "c");
        let err = weights.finish().unwrap_err();
        assert!(err.to_string().contains("`c`"), "{err}");
    }

    #[test]
    fn a_byte_range_that_does_not_fit_shape_and_dtype_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[("w", Tensor::ones([2, 2], (Kind::Float, Device::Cpu)))],
        );
        let path = dir.path().join(SINGLE_FILE);
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
        // Same header length: claim 3 columns instead of 2 (16 bytes hold 4 floats, not 6).
        let lying = header.replacen("[2,2]", "[2,3]", 1);
        assert_ne!(lying, header, "{header}");
        let mut patched = bytes[..8].to_vec();
        patched.extend_from_slice(lying.as_bytes());
        patched.extend_from_slice(&bytes[8 + header_len..]);
        std::fs::write(&path, patched).unwrap();
        for err in [
            WeightMap::load(dir.path(), Device::Cpu, Kind::Float)
                .err()
                .unwrap(),
            read_shapes(dir.path()).unwrap_err(),
        ] {
            assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
            assert!(
                err.to_string()
                    .contains("tensor `w` has 16 bytes, but shape [2, 3] of F32 needs 24"),
                "{err}"
            );
        }
    }
}
