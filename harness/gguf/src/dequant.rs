//! Dequantisation of ggml tensor data to `f32`, bit for bit as ggml does it.
//!
//! Block layouts and formulas are ggml's reference `dequantize_row_*` functions
//! (`ggml-quants.c`; structs in `ggml-common.h`), which gguf-py's `quants.py` mirrors in numpy and
//! transformers uses to load GGUF checkpoints. Each value is one `f32` multiply (and, for the
//! `_1` types, one add) of exactly the operands ggml uses, with no fused multiply-add, so the
//! results are identical to theirs. `f16` scales are widened with the `half` crate, which is exact.
//!
//! All quantised types here use blocks of 32 values:
//!
//! | type | bytes | layout                                   | value `i` (0..32)             |
//! |------|-------|------------------------------------------|-------------------------------|
//! | Q4_0 | 18    | `f16 d, u8 qs[16]`                       | `(q4(i) - 8) * d`             |
//! | Q4_1 | 20    | `f16 d, f16 m, u8 qs[16]`                | `q4(i) * d + m`               |
//! | Q5_0 | 22    | `f16 d, u32 qh, u8 qs[16]`               | `(q5(i) - 16) * d`            |
//! | Q5_1 | 24    | `f16 d, f16 m, u32 qh, u8 qs[16]`        | `q5(i) * d + m`               |
//! | Q8_0 | 34    | `f16 d, i8 qs[32]`                       | `qs[i] * d`                   |
//!
//! where `q4(i)` is the low nibble of `qs[i]` for `i < 16` and the high nibble of `qs[i - 16]`
//! otherwise, and `q5(i) = q4(i) | (bit i of qh) << 4`.

use half::{bf16, f16};

use crate::gguf::GgmlType;

/// Elements per block of every quantised type handled here (`QK4_0` = ... = `QK8_0` = 32).
const QK: usize = 32;

/// A dequantiser for one ggml type; obtained with [`Dequantizer::new`], which is the only place
/// that can fail, so running it cannot.
#[derive(Clone, Copy)]
pub struct Dequantizer {
    ggml_type: GgmlType,
    kernel: fn(&[u8], &mut [f32]),
}

impl std::fmt::Debug for Dequantizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Dequantizer").field(&self.ggml_type).finish()
    }
}

impl Dequantizer {
    /// The dequantiser for `ggml_type`, or `None` if the type is not supported.
    pub fn new(ggml_type: GgmlType) -> Option<Self> {
        let kernel: fn(&[u8], &mut [f32]) = match ggml_type {
            GgmlType::F32 => f32_row,
            GgmlType::F16 => f16_row,
            GgmlType::BF16 => bf16_row,
            GgmlType::Q4_0 => q4_0_row,
            GgmlType::Q4_1 => q4_1_row,
            GgmlType::Q5_0 => q5_0_row,
            GgmlType::Q5_1 => q5_1_row,
            GgmlType::Q8_0 => q8_0_row,
            _ => return None,
        };
        Some(Self { ggml_type, kernel })
    }

    /// Dequantises `data` (whole blocks of this type) into `out`.
    ///
    /// # Panics
    /// If `out.len()` is not the number of values that `data` holds.
    pub fn run(&self, data: &[u8], out: &mut [f32]) {
        let ty = self.ggml_type;
        assert_eq!(
            data.len() % ty.type_size(),
            0,
            "{} data is not whole blocks",
            ty.name()
        );
        assert_eq!(
            data.len() / ty.type_size() * ty.block_size(),
            out.len(),
            "{} data and output lengths disagree",
            ty.name()
        );
        (self.kernel)(data, out);
    }
}

/// Dequantises `data` of type `ggml_type` into a new vector; `None` if the type is not supported.
pub fn dequantize(ggml_type: GgmlType, data: &[u8]) -> Option<Vec<f32>> {
    let dequantizer = Dequantizer::new(ggml_type)?;
    let mut out = vec![0.0; data.len() / ggml_type.type_size() * ggml_type.block_size()];
    dequantizer.run(data, &mut out);
    Some(out)
}

fn f32_row(data: &[u8], out: &mut [f32]) {
    for (bytes, y) in data.chunks_exact(4).zip(out) {
        *y = f32::from_le_bytes(bytes.try_into().unwrap());
    }
}

fn f16_row(data: &[u8], out: &mut [f32]) {
    for (bytes, y) in data.chunks_exact(2).zip(out) {
        *y = f16_at(bytes, 0);
    }
}

/// bf16 is the top half of an f32 (gguf-py: `(bits as i32) << 16` viewed as f32).
fn bf16_row(data: &[u8], out: &mut [f32]) {
    for (bytes, y) in data.chunks_exact(2).zip(out) {
        *y = bf16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
    }
}

/// Calls `block` on each `BYTES`-byte block of `data` and its 32 outputs.
fn for_blocks<const BYTES: usize>(
    data: &[u8],
    out: &mut [f32],
    block: impl Fn(&[u8; BYTES], &mut [f32]),
) {
    for (b, y) in data.chunks_exact(BYTES).zip(out.chunks_exact_mut(QK)) {
        block(b.try_into().unwrap(), y);
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// The 4-bit quant of value `i`: low nibbles hold values 0..16, high nibbles values 16..32.
fn q4(qs: &[u8], i: usize) -> u8 {
    if i < QK / 2 {
        qs[i] & 0x0F
    } else {
        qs[i - QK / 2] >> 4
    }
}

/// The 5-bit quant of value `i`: its nibble plus bit `i` of `qh` as bit 4.
fn q5(qh: u32, qs: &[u8], i: usize) -> u8 {
    q4(qs, i) | (((qh >> i) & 1) as u8) << 4
}

fn q4_0_row(data: &[u8], out: &mut [f32]) {
    for_blocks::<18>(data, out, |b, y| {
        let d = f16_at(b, 0);
        for (i, y) in y.iter_mut().enumerate() {
            *y = (q4(&b[2..], i) as i32 - 8) as f32 * d;
        }
    });
}

fn q4_1_row(data: &[u8], out: &mut [f32]) {
    for_blocks::<20>(data, out, |b, y| {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        for (i, y) in y.iter_mut().enumerate() {
            *y = q4(&b[4..], i) as f32 * d + m;
        }
    });
}

fn q5_0_row(data: &[u8], out: &mut [f32]) {
    for_blocks::<22>(data, out, |b, y| {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes(b[2..6].try_into().unwrap());
        for (i, y) in y.iter_mut().enumerate() {
            *y = (q5(qh, &b[6..], i) as i32 - 16) as f32 * d;
        }
    });
}

fn q5_1_row(data: &[u8], out: &mut [f32]) {
    for_blocks::<24>(data, out, |b, y| {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        let qh = u32::from_le_bytes(b[4..8].try_into().unwrap());
        for (i, y) in y.iter_mut().enumerate() {
            *y = q5(qh, &b[8..], i) as f32 * d + m;
        }
    });
}

fn q8_0_row(data: &[u8], out: &mut [f32]) {
    for_blocks::<34>(data, out, |b, y| {
        let d = f16_at(b, 0);
        for (q, y) in b[2..].iter().zip(y) {
            *y = *q as i8 as f32 * d;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f16 bit patterns used below, all exact: 0.5, 0.25, -1.0, 2.0, 1.5.
    const HALF: u16 = 0x3800;
    const QUARTER: u16 = 0x3400;
    const MINUS_ONE: u16 = 0xBC00;
    const TWO: u16 = 0x4000;
    const ONE_AND_HALF: u16 = 0x3E00;

    /// 16 nibble bytes whose low nibble is `i % 16` and high nibble is `15 - i % 16`.
    fn ramp_nibbles() -> Vec<u8> {
        (0..16u8).map(|i| i | (15 - i) << 4).collect()
    }

    /// The nibble of value `i` in `ramp_nibbles`.
    fn ramp(i: usize) -> f32 {
        if i < 16 {
            i as f32
        } else {
            (15 - (i - 16)) as f32
        }
    }

    fn run(ty: GgmlType, block: &[u8]) -> Vec<f32> {
        dequantize(ty, block).expect("supported type")
    }

    #[test]
    fn q4_0_subtracts_eight_and_scales() {
        let mut block = HALF.to_le_bytes().to_vec();
        block.extend(ramp_nibbles());
        let expected: Vec<f32> = (0..32).map(|i| (ramp(i) - 8.0) * 0.5).collect();
        assert_eq!(run(GgmlType::Q4_0, &block), expected);
        // Spot-check by hand: value 0 is nibble 0 -> -4.0; value 16 is nibble 15 -> 3.5.
        assert_eq!(expected[0], -4.0);
        assert_eq!(expected[16], 3.5);
    }

    #[test]
    fn q4_1_scales_and_adds_min() {
        let mut block = QUARTER.to_le_bytes().to_vec();
        block.extend(MINUS_ONE.to_le_bytes());
        block.extend(ramp_nibbles());
        let out = run(GgmlType::Q4_1, &block);
        // value 3: nibble 3 -> 3 * 0.25 - 1 = -0.25; value 31: high nibble of qs[15] = 0 -> -1.
        assert_eq!(out[3], -0.25);
        assert_eq!(out[31], -1.0);
        let expected: Vec<f32> = (0..32).map(|i| ramp(i) * 0.25 - 1.0).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn q5_0_takes_the_fifth_bit_from_qh() {
        // Bits 0 and 17 of qh set: value 0 gets +16, value 17 gets +16.
        let qh: u32 = 1 | 1 << 17;
        let mut block = TWO.to_le_bytes().to_vec();
        block.extend(qh.to_le_bytes());
        block.extend(ramp_nibbles());
        let out = run(GgmlType::Q5_0, &block);
        assert_eq!(out[0], (0.0 + 16.0 - 16.0) * 2.0); // 0
        assert_eq!(out[1], (1.0 - 16.0) * 2.0); // -30
        assert_eq!(out[17], (14.0 + 16.0 - 16.0) * 2.0); // 28: high nibble of qs[1] is 14
        assert_eq!(out[16], (15.0 - 16.0) * 2.0); // -2
    }

    #[test]
    fn q5_1_adds_min_after_the_fifth_bit() {
        let qh: u32 = 1 << 31;
        let mut block = HALF.to_le_bytes().to_vec();
        block.extend(ONE_AND_HALF.to_le_bytes());
        block.extend(qh.to_le_bytes());
        block.extend(ramp_nibbles());
        let out = run(GgmlType::Q5_1, &block);
        assert_eq!(out[0], 1.5); // 0 * 0.5 + 1.5
        assert_eq!(out[5], 4.0); // 5 * 0.5 + 1.5
        assert_eq!(out[31], 9.5); // (0 | 16) * 0.5 + 1.5
        assert_eq!(out[30], 2.0); // high nibble of qs[14] = 1 -> 0.5 + 1.5
    }

    #[test]
    fn q8_0_is_signed_bytes_times_scale() {
        let mut block = QUARTER.to_le_bytes().to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let out = run(GgmlType::Q8_0, &block);
        assert_eq!(out[0], -4.0); // -16 * 0.25
        assert_eq!(out[31], 3.75); // 15 * 0.25
        let expected: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.25).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn non_power_of_two_scales() {
        // d = f16 0x3555 = 0.333251953125 (not a power of two), m = f16 0x3C01 = 1.0009765625.
        let mut block = 0x3555u16.to_le_bytes().to_vec();
        block.extend(0x3C01u16.to_le_bytes());
        block.extend(ramp_nibbles());
        let out = run(GgmlType::Q4_1, &block);
        let (d, m) = (0.333_251_95_f32, 1.000_976_6_f32);
        assert_eq!(out[7], 7.0 * d + m);
        assert_eq!(out[7], 13655.0 / 4096.0); // 3.333740234375, exact
    }

    #[test]
    fn floats_widen_exactly() {
        let f32s: Vec<u8> = [1.5f32, -0.0, f32::MAX]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(run(GgmlType::F32, &f32s), vec![1.5, -0.0, f32::MAX]);
        let f16s: Vec<u8> = [MINUS_ONE, 0x0001, 0x7BFF]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        // 0x0001 is the smallest f16 subnormal 2^-24; 0x7BFF is the largest f16, 65504.
        assert_eq!(
            run(GgmlType::F16, &f16s),
            vec![-1.0, 2f32.powi(-24), 65504.0]
        );
        let bf16s: Vec<u8> = [0x3FC0u16, 0xC000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(run(GgmlType::BF16, &bf16s), vec![1.5, -2.0]); // 0x3FC00000, 0xC0000000
    }

    #[test]
    fn unsupported_types_have_no_dequantizer() {
        assert!(Dequantizer::new(GgmlType::Q4_K).is_none());
        assert!(dequantize(GgmlType::I32, &[0; 4]).is_none());
    }

    #[test]
    #[should_panic(expected = "lengths disagree")]
    fn run_checks_the_output_length() {
        Dequantizer::new(GgmlType::Q8_0)
            .unwrap()
            .run(&[0; 34], &mut [0.0; 31]);
    }
}
