//! Where the models run: the CPU or one CUDA GPU (`--device` / `NOVAPAY_DEVICE`). Asking for CUDA from
//! a binary built without the `cuda` feature, or on a machine without that GPU, is an error that says
//! what to do, never a silent fall-back to a CPU that would be ten times slower than planned.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// The device setting as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// GPU 0 when the binary has CUDA support and the machine a usable GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA GPU by ordinal (`cuda` = `cuda:0`).
    Cuda(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}`: expected cpu, cuda, cuda:N (N = GPU number) or auto")]
    Invalid(String),
    #[error(
        "--device {requested} asks for a GPU, but this novapay binary was built without CUDA support. \
         Build it with `cargo build --release --features cuda` (see Dockerfile.cuda and \
         scripts/gpu/check-cuda-build.sh), or run on the CPU with --device cpu (NOVAPAY_DEVICE=cpu)"
    )]
    NotCompiled { requested: DeviceChoice },
    #[error(
        "--device {requested}: CUDA GPU {ordinal} cannot be used ({reason}). Check `nvidia-smi` (driver \
         loaded? enough GPUs? in Docker: --gpus all), or run on the CPU with --device cpu"
    )]
    Unavailable {
        requested: DeviceChoice,
        ordinal: usize,
        reason: String,
    },
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" => return Ok(Self::Auto),
            "cpu" => return Ok(Self::Cpu),
            "cuda" | "gpu" => return Ok(Self::Cuda(0)),
            _ => {}
        }
        lower
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(Self::Cuda)
            .ok_or_else(|| DeviceError::Invalid(s.to_string()))
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this binary was built with the `cuda` feature.
pub const CUDA_COMPILED: bool = cfg!(feature = "cuda");

impl DeviceChoice {
    /// Settles `auto` to the CPU or `cuda:0` (opening GPU 0 once to find out) and checks that an
    /// explicit GPU can be opened. Call before sizing CPU thread pools: they only matter on the CPU.
    pub fn resolve(self) -> Result<Self, DeviceError> {
        match self {
            Self::Cpu => Ok(Self::Cpu),
            Self::Auto if CUDA_COMPILED && Device::new_cuda(0).is_ok() => Ok(Self::Cuda(0)),
            Self::Auto => Ok(Self::Cpu),
            Self::Cuda(_) => self.open().map(|_| self),
        }
    }

    /// The candle device. `auto` never fails: it falls back to the CPU.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => Ok(Self::Auto.resolve()?.open().unwrap_or(Device::Cpu)),
            Self::Cuda(_) if !CUDA_COMPILED => Err(DeviceError::NotCompiled { requested: self }),
            Self::Cuda(ordinal) => {
                Device::new_cuda(ordinal).map_err(|e| DeviceError::Unavailable {
                    requested: self,
                    ordinal,
                    // candle appends a backtrace when RUST_BACKTRACE is set: the first line says it.
                    reason: e.to_string().lines().next().unwrap_or_default().to_string(),
                })
            }
        }
    }

    /// True when the models run on the CPU: CPU thread settings and CPU-only kernels apply.
    /// `auto` counts as the CPU only in a binary without CUDA support; call [`Self::resolve`] first.
    pub fn is_cpu(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Auto => !CUDA_COMPILED,
            Self::Cuda(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_settings_parse_and_print_back() {
        for (text, want) in [
            ("cpu", DeviceChoice::Cpu),
            ("CPU", DeviceChoice::Cpu),
            (" auto ", DeviceChoice::Auto),
            ("cuda", DeviceChoice::Cuda(0)),
            ("gpu", DeviceChoice::Cuda(0)),
            ("cuda:0", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>(), Ok(want), "{text}");
            assert_eq!(want.to_string().parse::<DeviceChoice>(), Ok(want), "{want}");
        }
        for bad in ["", "tpu", "cuda:", "cuda:-1", "cuda:x", "cuda0", "metal"] {
            let err = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(
                err.to_string().contains("expected cpu, cuda, cuda:N"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_cpu_is_always_available_and_is_the_cpu() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        assert_eq!(DeviceChoice::Cpu.resolve(), Ok(DeviceChoice::Cpu));
        assert!(DeviceChoice::Cpu.is_cpu());
        assert!(!DeviceChoice::Cuda(0).is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_cuda_feature_auto_is_the_cpu_and_cuda_is_a_clear_error() {
        assert_eq!(DeviceChoice::Auto.resolve(), Ok(DeviceChoice::Cpu));
        assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
        assert!(DeviceChoice::Auto.is_cpu());
        for choice in [DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)] {
            let err = choice.open().unwrap_err();
            assert_eq!(err, DeviceError::NotCompiled { requested: choice });
            let msg = err.to_string();
            assert!(msg.contains(&format!("--device {choice}")), "{msg}");
            assert!(msg.contains("--features cuda"), "{msg}");
            assert!(msg.contains("--device cpu"), "{msg}");
            assert_eq!(choice.resolve(), Err(err));
        }
    }
}
