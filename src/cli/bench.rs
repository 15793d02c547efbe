//! `defect-detector bench <job>`: prints one JSON object of median timings.

use super::runtime_args::RuntimeArgs;
use clap::{Args, Subcommand};

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
    /// Lattice maps and boundaries (training-free detector) of one synthetic frame, one thread.
    Lattice {
        #[arg(long, default_value_t = 20)]
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
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// End-to-end detection vs the bare `session.run` of the same model, in the same run.
    Detect {
        #[arg(long)]
        model: std::path::PathBuf,
        #[arg(long, default_value_t = 20)]
        runs: usize,
        #[arg(long, default_value_t = 768)]
        size: usize,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let v = match a.job {
        BenchJob::Synth { runs, size } => defect_detector::bench::bench_synth(runs.max(1), size)?,
        BenchJob::Lattice { runs, size } => {
            defect_detector::bench::bench_lattice(runs.max(1), size)?
        }
        BenchJob::Export { n, size } => defect_detector::bench::bench_export(n, size)?,
        BenchJob::Throughput {
            model,
            n,
            size,
            runtime,
        } => defect_detector::detect::bench::bench_throughput(
            &model,
            n.max(1),
            size,
            &runtime.detector_options(),
        )?,
        BenchJob::Detect {
            model,
            runs,
            size,
            runtime,
        } => defect_detector::detect::bench::bench_detect_with(
            &model,
            size,
            runs.max(1),
            &runtime.detector_options(),
        )?,
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
