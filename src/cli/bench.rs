//! `defect-detector bench <job>`: prints one JSON object of median timings.

use clap::{Args, Subcommand};
use defect_detector::detect::{DetectorOptions, Device};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    job: BenchJob,
}

#[derive(Subcommand, Debug)]
enum BenchJob {
    /// One synthetic image with labels and the full imaging model, single thread.
    Synth {
        #[arg(long, default_value_t = 30)]
        runs: usize,
        #[arg(long, default_value_t = 768)]
        size: usize,
    },
    /// Dataset export: N base images x 8 symmetries as PNG, median of 3 runs, peak memory.
    Export {
        #[arg(long, default_value_t = 80)]
        n: usize,
        #[arg(long, default_value_t = 768)]
        size: usize,
    },
    /// Batch throughput: PNG files on disk -> load + detect + write results, images per second.
    Throughput {
        #[arg(long)]
        model: std::path::PathBuf,
        #[arg(long, default_value_t = 16)]
        n: usize,
        #[arg(long, default_value_t = 768)]
        size: usize,
    },
    /// End-to-end detection vs the bare `session.run` of the same model, in the same run.
    Detect {
        #[arg(long)]
        model: std::path::PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(long, default_value_t = 768)]
        size: usize,
        /// auto, cpu or cuda
        #[arg(long, default_value = "auto")]
        device: Device,
        /// Intra-op threads (0: ONNX Runtime's choice)
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// ONNX Runtime worker spinning: on or off (the detector's default is on)
        #[arg(long)]
        spinning: Option<Toggle>,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Toggle {
    On,
    Off,
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let v = match a.job {
        BenchJob::Synth { runs, size } => defect_detector::bench::bench_synth(runs.max(1), size)?,
        BenchJob::Export { n, size } => defect_detector::dataset::export::bench_export(n, size)?,
        BenchJob::Throughput { model, n, size } => {
            defect_detector::detect::bench::bench_throughput(&model, n.max(1), size)?
        }
        BenchJob::Detect {
            model,
            runs,
            size,
            device,
            threads,
            spinning,
        } => {
            let defaults = DetectorOptions::default();
            let opts = DetectorOptions {
                device,
                threads,
                spinning: spinning.map_or(defaults.spinning, |t| matches!(t, Toggle::On)),
                ..defaults
            };
            defect_detector::detect::bench::bench_detect_with(&model, size, runs.max(1), &opts)?
        }
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
