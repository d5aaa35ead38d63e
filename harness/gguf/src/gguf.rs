//! A memory-mapped reader for GGUF files, versions 2 and 3.
//!
//! The layout follows ggml's spec (`docs/gguf.md` in ggml-org/ggml; reference reader `gguf.cpp`):
//!
//! ```text
//! u32 magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
//! metadata_kv_count × { string key | u32 value_type | value }
//! tensor_count     × { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//! padding to `general.alignment` (default 32)
//! tensor data; each tensor at data_offset + offset
//! ```
//!
//! A string is a `u64` byte length followed by UTF-8 bytes (no terminator); an array value is a
//! `u32` element type, a `u64` length and the elements. All numbers are little-endian: big-endian
//! files (which llama.cpp can write for s390x) show up as an unsupported version.
//!
//! Everything is validated when the file is opened, including that each tensor's bytes lie inside
//! the file, so [`GgufFile::tensor_data`] cannot fail afterwards.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Error, IoContext, Result};

const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section and of every tensor offset when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;

macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $block:literal, $size:literal;)*) => {
        /// A ggml tensor type, with the block geometry that sizes its data.
        ///
        /// Ids, block sizes (elements per block) and type sizes (bytes per block) are ggml's
        /// `type_traits` table (`ggml.c`; block structs in `ggml-common.h`), the same as gguf-py's
        /// `GGML_QUANT_SIZES`. Knowing every type lets the reader bounds-check any file, even one
        /// whose types [`crate::dequant`] cannot decode.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum GgmlType {
            $($variant,)*
        }

        impl GgmlType {
            /// The type with this on-disk id, if ggml defines one.
            pub fn from_id(id: u32) -> Option<Self> {
                match id {
                    $($id => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// The on-disk id.
            pub fn id(self) -> u32 {
                match self {
                    $(Self::$variant => $id,)*
                }
            }

            /// The name gguf-py uses (`"Q4_1"`, `"F32"`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => stringify!($variant),)*
                }
            }

            /// Elements per block.
            pub fn block_size(self) -> usize {
                match self {
                    $(Self::$variant => $block,)*
                }
            }

            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self {
                    $(Self::$variant => $size,)*
                }
            }
        }
    };
}

ggml_types! {
    F32 = 0, 1, 4;
    F16 = 1, 1, 2;
    Q4_0 = 2, 32, 18;
    Q4_1 = 3, 32, 20;
    Q5_0 = 6, 32, 22;
    Q5_1 = 7, 32, 24;
    Q8_0 = 8, 32, 34;
    // ggml-common.h: two halves + 32 quants (gguf-py 0.19 still says 40, from the old f32 layout).
    Q8_1 = 9, 32, 36;
    Q2_K = 10, 256, 84;
    Q3_K = 11, 256, 110;
    Q4_K = 12, 256, 144;
    Q5_K = 13, 256, 176;
    Q6_K = 14, 256, 210;
    Q8_K = 15, 256, 292;
    IQ2_XXS = 16, 256, 66;
    IQ2_XS = 17, 256, 74;
    IQ3_XXS = 18, 256, 98;
    IQ1_S = 19, 256, 50;
    IQ4_NL = 20, 32, 18;
    IQ3_S = 21, 256, 110;
    IQ2_S = 22, 256, 82;
    IQ4_XS = 23, 256, 136;
    I8 = 24, 1, 1;
    I16 = 25, 1, 2;
    I32 = 26, 1, 4;
    I64 = 27, 1, 8;
    F64 = 28, 1, 8;
    IQ1_M = 29, 256, 56;
    BF16 = 30, 1, 2;
    TQ1_0 = 34, 256, 54;
    TQ2_0 = 35, 256, 66;
    MXFP4 = 39, 32, 17;
    NVFP4 = 40, 64, 36;
    Q1_0 = 41, 128, 18;
}

/// A typed metadata value (`gguf_type` in the spec; the enum order is the on-disk type id).
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetadataValue {
    /// The spec's name for the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "uint8",
            Self::I8(_) => "int8",
            Self::U16(_) => "uint16",
            Self::I16(_) => "int16",
            Self::U32(_) => "uint32",
            Self::I32(_) => "int32",
            Self::F32(_) => "float32",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
            Self::U64(_) => "uint64",
            Self::I64(_) => "int64",
            Self::F64(_) => "float64",
        }
    }

    /// Any integer type, widened. Writers differ in which width they use for counts and ids.
    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }
}

/// Rust types that a metadata value can be read as, with [`GgufFile::get`].
pub trait FromMetadata<'a>: Sized {
    /// What the value should have been, for the error message.
    const EXPECTED: &'static str;
    /// The value as `Self`, or `None` if it has another type or is out of range.
    fn from_metadata(value: &'a MetadataValue) -> Option<Self>;
}

impl FromMetadata<'_> for usize {
    const EXPECTED: &'static str = "a non-negative integer";
    fn from_metadata(value: &MetadataValue) -> Option<Self> {
        value.as_i128().and_then(|v| v.try_into().ok())
    }
}

impl FromMetadata<'_> for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_metadata(value: &MetadataValue) -> Option<Self> {
        value.as_i128().and_then(|v| v.try_into().ok())
    }
}

/// Floats are widened exactly, as Python's `float(numpy.float32)` does in transformers.
impl FromMetadata<'_> for f64 {
    const EXPECTED: &'static str = "a float";
    fn from_metadata(value: &MetadataValue) -> Option<Self> {
        match *value {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => None,
        }
    }
}

impl<'a> FromMetadata<'a> for &'a str {
    const EXPECTED: &'static str = "a string";
    fn from_metadata(value: &'a MetadataValue) -> Option<Self> {
        match value {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'a, T: FromMetadata<'a>> FromMetadata<'a> for Vec<T> {
    const EXPECTED: &'static str = "an array";
    fn from_metadata(value: &'a MetadataValue) -> Option<Self> {
        match value {
            MetadataValue::Array(items) => items.iter().map(T::from_metadata).collect(),
            _ => None,
        }
    }
}

/// One entry of the tensor-info table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's `ne`: `ne[0]` is the fastest-varying (contiguous) dimension.
    pub ne: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the first byte, relative to the start of the data section.
    pub offset: u64,
    /// Size of the tensor's data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// The shape in PyTorch order (slowest dimension first), i.e. `ne` reversed.
    pub fn torch_shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// An open, validated GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<TensorInfo>,
    alignment: usize,
    data_offset: usize,
}

impl GgufFile {
    /// Maps `path` and parses its header, metadata and tensor table.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).io_context(path, "opening")?;
        // SAFETY: the map is only read. As with every memory-mapped reader, the file must not be
        // truncated or rewritten by another process while it is open.
        let mmap = unsafe { Mmap::map(&file) }.io_context(path, "memory-mapping")?;
        let header = parse(path, &mmap)?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// The raw value of a metadata key.
    pub fn value(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A metadata value as `T`; `Ok(None)` if the key is absent, an error if it has another type.
    pub fn get<'a, T: FromMetadata<'a>>(&'a self, key: &str) -> Result<Option<T>> {
        self.value(key)
            .map(|value| {
                T::from_metadata(value).ok_or_else(|| {
                    self.metadata_error(
                        key,
                        format!("expected {}, found {}", T::EXPECTED, value.type_name()),
                    )
                })
            })
            .transpose()
    }

    /// Like [`Self::get`], but a missing key is an error.
    pub fn require<'a, T: FromMetadata<'a>>(&'a self, key: &str) -> Result<T> {
        self.get(key)?
            .ok_or_else(|| self.metadata_error(key, "missing".into()))
    }

    fn metadata_error(&self, key: &str, problem: String) -> Error {
        Error::Metadata {
            path: self.path.clone(),
            key: key.into(),
            problem,
        }
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Alignment of the data section (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// The raw bytes of a tensor of this file (checked to be in bounds by [`Self::open`]).
    pub fn tensor_data(&self, tensor: &TensorInfo) -> &[u8] {
        let start = self.data_offset + tensor.offset as usize;
        &self.mmap[start..start + tensor.n_bytes as usize]
    }
}

struct Header {
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<TensorInfo>,
    alignment: usize,
    data_offset: usize,
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Header> {
    let mut cur = Cursor {
        path,
        bytes,
        pos: 0,
    };
    let magic = cur.take(4, "magic")?;
    if magic != MAGIC {
        return Err(Error::BadMagic {
            path: path.into(),
            found: magic.to_vec(),
        });
    }
    let version = cur.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::UnsupportedVersion {
            path: path.into(),
            version,
        });
    }
    let n_tensors = cur.u64("tensor count")?;
    let n_kv = cur.u64("metadata count")?;
    let metadata = (0..n_kv)
        .map(|_| cur.key_value())
        .collect::<Result<Vec<_>>>()?;
    let alignment = alignment(path, &metadata)?;
    let tensors = (0..n_tensors)
        .map(|_| cur.tensor_info(alignment))
        .collect::<Result<Vec<_>>>()?;
    let data_offset = cur.pos.next_multiple_of(alignment);
    for tensor in &tensors {
        check_bounds(path, tensor, data_offset, bytes.len())?;
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// `general.alignment`: a `u32` power of two (gguf.cpp asserts this), 32 when absent.
fn alignment(path: &Path, metadata: &[(String, MetadataValue)]) -> Result<usize> {
    match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, MetadataValue::U32(a))) if a.is_power_of_two() => Ok(*a as usize),
        Some((_, value)) => Err(Error::Invalid {
            path: path.into(),
            what: "general.alignment".into(),
            problem: format!("expected a uint32 power of two, found {value:?}"),
        }),
    }
}

/// Checks that the tensor's bytes lie inside the file.
fn check_bounds(
    path: &Path,
    tensor: &TensorInfo,
    data_offset: usize,
    file_len: usize,
) -> Result<()> {
    let start = (data_offset as u64).saturating_add(tensor.offset);
    let end = start.saturating_add(tensor.n_bytes);
    if end > file_len as u64 {
        return Err(Error::TensorOutOfBounds {
            path: path.into(),
            tensor: tensor.name.clone(),
            start,
            end,
            len: file_len as u64,
        });
    }
    Ok(())
}

/// A bounds-checked little-endian reader over the mapped bytes.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let available = (self.bytes.len() - self.pos) as u64;
        if n > available {
            return Err(Error::Truncated {
                path: self.path.into(),
                what: what.into(),
                offset: self.pos as u64,
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self
            .take(N as u64, what)?
            .try_into()
            .expect("take returns N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn invalid(&self, what: &str, problem: String) -> Error {
        Error::Invalid {
            path: self.path.into(),
            what: what.into(),
            problem,
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let start = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.invalid(what, format!("string at offset {start} is not UTF-8: {e}")))
    }

    fn key_value(&mut self) -> Result<(String, MetadataValue)> {
        let key = self.string("metadata key")?;
        let what = format!("value of metadata key {key:?}");
        let value_type = self.u32(&what)?;
        let value = self.value(value_type, &what)?;
        Ok((key, value))
    }

    fn value(&mut self, value_type: u32, what: &str) -> Result<MetadataValue> {
        use MetadataValue as V;
        Ok(match value_type {
            0 => V::U8(u8::from_le_bytes(self.array(what)?)),
            1 => V::I8(i8::from_le_bytes(self.array(what)?)),
            2 => V::U16(u16::from_le_bytes(self.array(what)?)),
            3 => V::I16(i16::from_le_bytes(self.array(what)?)),
            4 => V::U32(self.u32(what)?),
            5 => V::I32(i32::from_le_bytes(self.array(what)?)),
            6 => V::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)? {
                [0] => V::Bool(false),
                [1] => V::Bool(true),
                [b] => return Err(self.invalid(what, format!("bool byte {b} is neither 0 nor 1"))),
            },
            8 => V::String(self.string(what)?),
            9 => self.array_value(what)?,
            10 => V::U64(self.u64(what)?),
            11 => V::I64(i64::from_le_bytes(self.array(what)?)),
            12 => V::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.invalid(what, format!("unknown value type {other}"))),
        })
    }

    fn array_value(&mut self, what: &str) -> Result<MetadataValue> {
        let item_type = self.u32(what)?;
        let len = self.u64(what)?;
        // Every element takes at least one byte, so a length beyond the file is truncation; this
        // also keeps a corrupt length from reserving a huge vector.
        let remaining = (self.bytes.len() - self.pos) as u64;
        if len > remaining {
            return Err(Error::Truncated {
                path: self.path.into(),
                what: format!("{what} ({len} array elements)"),
                offset: self.pos as u64,
                needed: len,
                len: self.bytes.len() as u64,
            });
        }
        let items = (0..len)
            .map(|_| self.value(item_type, what))
            .collect::<Result<Vec<_>>>()?;
        Ok(MetadataValue::Array(items))
    }

    /// One tensor-info entry; checks block divisibility and offset alignment, and sizes the data.
    fn tensor_info(&mut self, alignment: usize) -> Result<TensorInfo> {
        let name = self.string("tensor name")?;
        let what = format!("tensor info of {name:?}");
        let n_dims = self.u32(&what)?;
        if n_dims > MAX_DIMS {
            return Err(self.invalid(&what, format!("{n_dims} dimensions (at most {MAX_DIMS})")));
        }
        let ne = (0..n_dims)
            .map(|_| self.u64(&what))
            .collect::<Result<Vec<_>>>()?;
        let type_id = self.u32(&what)?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| Error::UnsupportedType {
            path: self.path.into(),
            tensor: name.clone(),
            id: type_id,
            name: "unknown",
        })?;
        let offset = self.u64(&what)?;
        let (block, row) = (
            ggml_type.block_size() as u64,
            ne.first().copied().unwrap_or(1),
        );
        if !row.is_multiple_of(block) {
            let problem =
                format!("ne[0] = {row} is not a multiple of the {ggml_type:?} block size {block}");
            return Err(self.invalid(&what, problem));
        }
        if !offset.is_multiple_of(alignment as u64) {
            let problem = format!("offset {offset} is not a multiple of the alignment {alignment}");
            return Err(self.invalid(&what, problem));
        }
        let n_bytes = ne
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|n| (n / block).checked_mul(ggml_type.type_size() as u64))
            .ok_or_else(|| self.invalid(&what, format!("dimensions {ne:?} overflow")))?;
        Ok(TensorInfo {
            name,
            ne,
            ggml_type,
            offset,
            n_bytes,
        })
    }
}
