//! `--device auto|cpu|cuda[:N]` and `--dtype f32|bf16|f16` as used by every command.
use crate::error::{ModelError, Result};
use tch::{Device, Kind};

pub fn parse_device(s: &str) -> Result<Device> {
    let bad = || {
        ModelError::Invalid(format!(
            "unknown device `{s}` (expected auto, cpu, cuda or cuda:N)"
        ))
    };
    let device = match s {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:") {
            Some(n) => Device::Cuda(n.parse().map_err(|_| bad())?),
            None => return Err(bad()),
        },
    };
    if let Device::Cuda(i) = device {
        let available = tch::Cuda::device_count() as usize;
        if i >= available {
            return Err(ModelError::Invalid(format!(
                "device `{s}` requested but {available} CUDA device(s) are available"
            )));
        }
    }
    Ok(device)
}

pub fn parse_kind(s: &str) -> Result<Kind> {
    match s {
        "f32" | "float32" | "fp32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        "f16" | "float16" | "fp16" | "half" => Ok(Kind::Half),
        _ => Err(ModelError::Invalid(format!(
            "unknown dtype `{s}` (expected f32, bf16 or f16)"
        ))),
    }
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bf16",
        Kind::Half => "f16",
        _ => "f32",
    }
}

pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        assert_eq!(parse_kind("bf16").unwrap(), Kind::BFloat16);
        assert!(parse_kind("int8").unwrap_err().to_string().contains("int8"));
    }
}
