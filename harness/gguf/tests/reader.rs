//! The GGUF reader on files written by the test helper: round trip and error reporting.

mod common;

use std::path::{Path, PathBuf};

use common::{q4_1_block, GgufBuilder, Tensor, Value};
use moebench_gguf::dequant::dequantize;
use moebench_gguf::gguf::{GgmlType, MetadataValue};
use moebench_gguf::{Error, GgufFile};

fn write(dir: &Path, builder: &GgufBuilder) -> PathBuf {
    let path = dir.join("model.gguf");
    builder.write(&path);
    path
}

/// Two metadata keys, one Q4_1 and one F32 tensor.
fn small_file() -> GgufBuilder {
    // Q4_1 block by hand: d = 0.25 (f16 0x3400), m = -1.0 (f16 0xBC00), nibbles 0..16 then 15..0.
    let nibbles = std::array::from_fn(|i| if i < 16 { i as u8 } else { 31 - i as u8 });
    GgufBuilder::default()
        .kv("general.architecture", Value::str("llama"))
        .kv(
            "tokenizer.ggml.tokens",
            Value::StrArray(vec!["a".into(), "ü".into()]),
        )
        .kv("flag", Value::Bool(true))
        .tensor(Tensor {
            name: "q".into(),
            ne: vec![32, 2],
            type_id: 3,
            data: [
                q4_1_block(0x3400, 0xBC00, nibbles),
                q4_1_block(0x3C00, 0x0000, [15; 32]),
            ]
            .concat(),
        })
        .tensor(Tensor::f32("f", &[3], &[1.5, -2.0, 0.0]))
}

#[test]
fn reads_metadata_tensor_infos_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = GgufFile::open(&write(dir.path(), &small_file())).unwrap();

    assert_eq!(gguf.version(), 3);
    assert_eq!(gguf.metadata().len(), 3);
    assert_eq!(
        gguf.require::<&str>("general.architecture").unwrap(),
        "llama"
    );
    assert_eq!(
        gguf.require::<Vec<&str>>("tokenizer.ggml.tokens").unwrap(),
        ["a", "ü"]
    );
    assert_eq!(gguf.value("flag"), Some(&MetadataValue::Bool(true)));
    assert_eq!(gguf.get::<usize>("absent").unwrap(), None);

    assert_eq!(gguf.alignment(), 32);
    assert_eq!(gguf.data_offset() % 32, 0);
    let q = gguf.tensor("q").unwrap();
    assert_eq!(
        (q.ne.as_slice(), q.ggml_type, q.offset, q.n_bytes),
        (&[32, 2][..], GgmlType::Q4_1, 0, 40)
    );
    assert_eq!(q.torch_shape(), [2, 32]);
    let f = gguf.tensor("f").unwrap();
    assert_eq!((f.ggml_type, f.offset, f.n_bytes), (GgmlType::F32, 64, 12));

    let values = dequantize(q.ggml_type, gguf.tensor_data(q)).unwrap();
    // Block 0: nibble * 0.25 - 1, so 0 -> -1, 15 -> 2.75; value 16 is nibble 15 again.
    assert_eq!(&values[..3], [-1.0, -0.75, -0.5]);
    assert_eq!(values[15], 2.75);
    assert_eq!(values[16], 2.75);
    assert_eq!(values[31], -1.0);
    // Block 1: d = 1, m = 0, every nibble 15.
    assert!(values[32..].iter().all(|&v| v == 15.0));
    assert_eq!(
        dequantize(f.ggml_type, gguf.tensor_data(f)).unwrap(),
        [1.5, -2.0, 0.0]
    );
}

#[test]
fn honours_general_alignment_and_version_2() {
    let mut builder = small_file().kv("general.alignment", Value::U32(64));
    builder.alignment = 64;
    builder.version = 2;
    let dir = tempfile::tempdir().unwrap();
    let gguf = GgufFile::open(&write(dir.path(), &builder)).unwrap();
    assert_eq!((gguf.version(), gguf.alignment()), (2, 64));
    assert_eq!(gguf.data_offset() % 64, 0);
    let f = gguf.tensor("f").unwrap();
    assert_eq!(f.offset, 64);
    assert_eq!(
        dequantize(f.ggml_type, gguf.tensor_data(f)).unwrap(),
        [1.5, -2.0, 0.0]
    );
}

#[test]
fn wrong_metadata_type_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = GgufFile::open(&write(dir.path(), &small_file())).unwrap();
    let err = gguf.require::<usize>("general.architecture").unwrap_err();
    assert!(matches!(err, Error::Metadata { .. }), "{err:?}");
    assert!(
        err.to_string().ends_with(
            "metadata key \"general.architecture\": expected a non-negative integer, found string"
        ),
        "{err}"
    );
    let err = gguf.require::<f64>("missing.key").unwrap_err();
    assert!(
        err.to_string()
            .ends_with("metadata key \"missing.key\": missing"),
        "{err}"
    );
}

/// Opens `bytes` as a file and returns the error, checking that the message names the file.
fn open_error(bytes: &[u8]) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = GgufFile::open(&path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", path.display())),
        "{err}"
    );
    err
}

#[test]
fn bad_magic() {
    let mut bytes = small_file().to_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let err = open_error(&bytes);
    assert!(
        matches!(&err, Error::BadMagic { found, .. } if found == b"GGML"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .ends_with("not a GGUF file: bad magic [47, 47, 4d, 4c], expected \"GGUF\""),
        "{err}"
    );
    // A file shorter than the magic is truncated, not mis-identified.
    assert!(matches!(
        open_error(b"GG"),
        Error::Truncated { needed: 4, .. }
    ));
}

#[test]
fn unsupported_version() {
    let mut builder = small_file();
    builder.version = 1;
    let err = open_error(&builder.to_bytes());
    assert!(
        matches!(err, Error::UnsupportedVersion { version: 1, .. }),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .ends_with("unsupported GGUF version 1 (supported: 2 and 3)"));
}

#[test]
fn truncated_header() {
    let bytes = small_file().to_bytes();
    // Cut inside the metadata: in the middle of the tokens array.
    let cut = bytes.windows(1).position(|w| w == b"\xc3").unwrap(); // first byte of "ü"
    let err = open_error(&bytes[..cut]);
    match &err {
        Error::Truncated {
            what,
            offset,
            needed,
            len,
            ..
        } => {
            assert_eq!(what, "value of metadata key \"tokenizer.ggml.tokens\"");
            assert_eq!((*offset, *needed, *len), (cut as u64, 2, cut as u64));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(err.to_string().contains("truncated GGUF file"), "{err}");
}

#[test]
fn tensor_data_out_of_bounds() {
    let bytes = small_file().to_bytes();
    let err = open_error(&bytes[..bytes.len() - 1]);
    match &err {
        Error::TensorOutOfBounds {
            tensor, end, len, ..
        } => {
            assert_eq!(tensor, "f");
            assert_eq!(*end, bytes.len() as u64);
            assert_eq!(*len, bytes.len() as u64 - 1);
        }
        other => panic!("expected TensorOutOfBounds, got {other:?}"),
    }
}

#[test]
fn unknown_ggml_type_id() {
    let mut builder = small_file();
    builder.tensors[1].type_id = 4; // Q4_2, removed from ggml long ago
    let err = open_error(&builder.to_bytes());
    assert!(
        matches!(&err, Error::UnsupportedType { id: 4, name: "unknown", tensor, .. } if tensor == "f"),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .ends_with("tensor \"f\": ggml type 4 (unknown) is not supported"));
}

#[test]
fn misaligned_tensor_offset() {
    let mut builder = small_file();
    builder.alignment = 4; // the file does not say so, so the reader expects 32
    let err = open_error(&builder.to_bytes());
    assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("is not a multiple of the alignment 32"),
        "{err}"
    );
}
