//! Command-line interface. Each subcommand lives in its own file and only calls the library.

use clap::{Parser, Subcommand};

mod bench;
mod detect;
mod eval;
mod export;
mod synth;
mod vlm_eval;

#[derive(Parser)]
#[command(
    name = "defect-detector",
    version,
    about = "Find defects in atomic-resolution STEM images"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Synthesize one STEM image with its YOLO-OBB labels and a JSON sidecar.
    Synth(synth::SynthArgs),
    /// Benchmarks: print one JSON object of median timings.
    Bench(bench::BenchArgs),
    /// Screen labelled patches with a vision-language model and score it.
    VlmEval(Box<vlm_eval::VlmEvalArgs>),
    /// Detect defects in images with a YOLO-OBB ONNX model; writes JSON, CSV and YOLO-OBB text.
    Detect(detect::DetectArgs),
    /// Evaluate a model on a YOLO-OBB dataset split with Ultralytics' val metrics.
    Eval(eval::EvalArgs),
    /// Export a YOLO-OBB training dataset (honest by-base-image splits); merge shards; validate.
    Export(Box<export::ExportArgs>),
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => crate::app::run_app(crate::app::StartOptions::default()),
        Some(Command::Synth(a)) => synth::run(a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::VlmEval(a)) => vlm_eval::run(*a),
        Some(Command::Detect(a)) => detect::run(a),
        Some(Command::Eval(a)) => eval::run(a),
        Some(Command::Export(a)) => export::run(*a),
    }
}
