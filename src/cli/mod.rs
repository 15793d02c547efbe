//! Command-line interface. Each subcommand lives in its own file and only calls the library.

use clap::{Parser, Subcommand};

mod bench;
mod calibration_args;
mod detect;
mod eval;
mod eval_real;
mod export;
mod info;
mod lattice;
mod realism;
mod runtime_args;
mod synth;
mod vlm_eval;
mod watch;

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
    /// Start the desktop app (the default with no subcommand), optionally on a tab with
    /// synthesis parameters from a file (a sidecar's "params" or a full parameter JSON).
    App(AppArgs),
    /// Open a STEM image file, or a folder to flip through, in the Viewer.
    View {
        /// Image file or folder.
        path: std::path::PathBuf,
        /// Detector: model, lattice or both (remembered).
        #[arg(long, value_enum)]
        method: Option<detect::Method>,
        /// Crystal of the frames (cdte110, si110, gaas110; remembered).
        #[arg(long)]
        crystal: Option<String>,
        /// Lattice map to overlay: orientation, discontinuity, spacing, strength (remembered).
        #[arg(long)]
        lattice_map: Option<String>,
        /// Open the power spectrum panel (zoomed to the lattice spots) at start.
        #[arg(long)]
        spectrum: bool,
        /// Test-time augmentation: the model on 8 dihedral copies, boxes fused (remembered).
        #[arg(long, value_parser = ["on", "off"])]
        tta: Option<String>,
    },
    /// Synthesize one STEM image with its YOLO-OBB labels and a JSON sidecar.
    Synth(Box<synth::SynthArgs>),
    /// Benchmarks: print one JSON object of median timings.
    Bench(bench::BenchArgs),
    /// Screen labelled patches with a vision-language model and score it.
    VlmEval(Box<vlm_eval::VlmEvalArgs>),
    /// Detect defects in images with a YOLO-OBB ONNX model; writes JSON, CSV and YOLO-OBB text.
    Detect(detect::DetectArgs),
    /// Evaluate a model on a YOLO-OBB dataset split with Ultralytics' val metrics.
    Eval(eval::EvalArgs),
    /// Score a model on the labelled real frames (assets/real-set): boundaries found with the
    /// right orientation, false positives per frame, the project's targets.
    EvalReal(Box<eval_real::EvalRealArgs>),
    /// Print what a microscopy image file holds (size, pixel type, calibration, metadata) as JSON.
    Info(info::InfoArgs),
    /// Export a YOLO-OBB training dataset (honest by-base-image splits); merge shards; validate.
    Export(Box<export::ExportArgs>),
    /// Realism statistics of STEM images (pixel size from the lattice, column width, noise,
    /// scan jitter and drift), optionally against a dataset's 5–95 % ranges.
    Realism(Box<realism::RealismArgs>),
    /// Training-free boundaries and point defects read from the crystal lattice (no model).
    Lattice(Box<lattice::LatticeArgs>),
    /// Live mode: detect each new image written into a folder, appending to a JSONL/CSV log.
    Watch(watch::WatchArgs),
}

#[derive(clap::Args)]
struct AppArgs {
    /// Tab to open.
    #[arg(long)]
    tab: Option<String>,
    /// Synthesis parameters (JSON: a parameter file or an image sidecar).
    #[arg(long)]
    synth_params: Option<std::path::PathBuf>,
    /// Saved screening runs (from `vlm-eval --out`) to open in the VLM tab.
    #[arg(long)]
    vlm_run: Vec<std::path::PathBuf>,
    /// A dataset folder (images + YOLO-OBB labels) to open in the Review tab.
    #[arg(long)]
    review: Option<std::path::PathBuf>,
}

fn start_options(a: AppArgs) -> anyhow::Result<crate::app::StartOptions> {
    use anyhow::Context;
    let tab = match a.tab {
        Some(t) => Some(crate::app::Tab::from_cli_name(&t).with_context(|| {
            let names: Vec<_> = crate::app::Tab::ALL.iter().map(|t| t.cli_name()).collect();
            format!("unknown tab '{t}' (one of {})", names.join(", "))
        })?),
        None => None,
    };
    let synth_params = match a.synth_params {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            // A sidecar holds the parameters under "params".
            let v = v.get("params").cloned().unwrap_or(v);
            let p: defect_detector::synth::SynthParams = serde_json::from_value(v)
                .with_context(|| format!("{} holds no valid parameters", path.display()))?;
            p.validate()?;
            Some(p)
        }
        None => None,
    };
    Ok(crate::app::StartOptions {
        tab,
        synth_params,
        view: None,
        vlm_runs: a.vlm_run,
        review: a.review,
        ..Default::default()
    })
}

/// Printing commands end quietly when their reader goes away (`defect-detector info F | head`),
/// as Unix tools do. Not for the app or the VLM client: with the default action a peer that
/// closes a socket would kill the process instead of returning an error.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Some(
            Command::Info(_)
                | Command::Synth(_)
                | Command::Bench(_)
                | Command::Eval(_)
                | Command::EvalReal(_)
                | Command::Export(_)
                | Command::Detect(_)
                | Command::Realism(_)
                | Command::Lattice(_)
        )
    ) {
        quiet_on_closed_pipe();
    }
    match cli.command {
        None => crate::app::run_app(crate::app::StartOptions::default()),
        Some(Command::App(a)) => crate::app::run_app(start_options(a)?),
        Some(Command::View {
            path,
            method,
            crystal,
            lattice_map,
            spectrum,
            tta,
        }) => {
            anyhow::ensure!(path.exists(), "{} does not exist", path.display());
            use defect_detector::lattice::render::MapKind;
            let lattice_map = match lattice_map {
                Some(name) => Some(
                    MapKind::ALL
                        .into_iter()
                        .find(|k| k.label() == name)
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "unknown lattice map '{name}' (orientation, discontinuity, spacing, strength)"
                            )
                        })?,
                ),
                None => None,
            };
            crate::app::run_app(crate::app::StartOptions {
                view: Some(path),
                viewer_method: method.map(Into::into),
                viewer_crystal: crystal
                    .map(|c| defect_detector::synth::crystal::Preset::named_crystal(&c))
                    .transpose()?,
                lattice_map,
                viewer_spectrum: spectrum,
                viewer_tta: tta.map(|t| t == "on"),
                ..Default::default()
            })
        }
        Some(Command::Synth(a)) => synth::run(*a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::VlmEval(a)) => vlm_eval::run(*a),
        Some(Command::Detect(a)) => detect::run(a),
        Some(Command::Eval(a)) => eval::run(a),
        Some(Command::EvalReal(a)) => eval_real::run(*a),
        Some(Command::Info(a)) => info::run(a),
        Some(Command::Export(a)) => export::run(*a),
        Some(Command::Watch(a)) => watch::run(a),
        Some(Command::Realism(a)) => realism::run(*a),
        Some(Command::Lattice(a)) => lattice::run(*a),
    }
}

/// Whether log lines on stderr may carry ANSI colour codes: only on a terminal, and not when
/// `NO_COLOR` is set (no-color.org). `watch 2>> watch.log` must write plain text.
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod log_tests {
    use super::log_colours;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(!log_colours(false, None), "a log file gets no escape codes");
        assert!(!log_colours(true, Some("1".into())));
        assert!(log_colours(true, Some("".into())));
    }
}
