//! The ONNX Runtime flags shared by every subcommand that loads a detector.

use clap::Args;
use defect_detector::detect::{DetectorOptions, Device};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    On,
    Off,
}

#[derive(Args, Clone, Debug)]
pub struct RuntimeArgs {
    /// auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Inference threads (0: ONNX Runtime's choice).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// ONNX Runtime workers spin while waiting (faster on CPU) or sleep (leave the cores
    /// to other work sooner).
    #[arg(long, value_enum, default_value = "on")]
    pub spinning: Toggle,
    /// ONNX Runtime library (default: ORT_DYLIB_PATH, .ort/, the project .venv).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
}

impl RuntimeArgs {
    pub fn detector_options(&self) -> DetectorOptions {
        DetectorOptions {
            device: self.device,
            threads: self.threads,
            runtime_library: self.ort_lib.clone(),
            spinning: self.spinning == Toggle::On,
        }
    }
}
