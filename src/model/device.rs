//! Choosing the candle device from a CLI string: `cpu`, `cuda`, `cuda:N`, `metal`, `auto`.

use candle_core::Device;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}`: expected cpu, cuda, cuda:N, metal or auto")]
    Unknown(String),
    #[error("device `{name}` is not available: {detail} (build with `--features cuda` or `--features metal`?)")]
    Unavailable { name: String, detail: String },
}

/// Parses and opens a device. `auto` picks CUDA, then Metal, then the CPU.
pub fn parse(spec: &str) -> Result<Device, DeviceError> {
    let unavailable = |e: candle_core::Error| DeviceError::Unavailable {
        name: spec.to_string(),
        detail: e.to_string(),
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0).map_err(unavailable)
            } else if candle_core::utils::metal_is_available() {
                Device::new_metal(0).map_err(unavailable)
            } else {
                Ok(Device::Cpu)
            }
        }
        "cuda" => Device::new_cuda(0).map_err(unavailable),
        "metal" => Device::new_metal(0).map_err(unavailable),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::new_cuda(n).map_err(unavailable),
            _ => Err(DeviceError::Unknown(s.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert!(parse("cpu").unwrap().is_cpu());
        assert!(parse("auto").is_ok());
        assert!(matches!(parse("tpu"), Err(DeviceError::Unknown(_))));
        assert!(matches!(parse("cuda:x"), Err(DeviceError::Unknown(_))));
        #[cfg(not(feature = "cuda"))]
        assert!(matches!(
            parse("cuda"),
            Err(DeviceError::Unavailable { .. })
        ));
    }
}
