//! Command-line interface. Each subcommand lives in its own file and only calls the library.

use clap::{Parser, Subcommand};

mod info;
mod synth;

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
    /// Print what a microscopy image file holds (size, pixel type, calibration, metadata) as JSON.
    Info(info::InfoArgs),
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => crate::app::run_app(crate::app::StartOptions::default()),
        Some(Command::Synth(a)) => synth::run(a),
        Some(Command::Info(a)) => info::run(a),
    }
}
