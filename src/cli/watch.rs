//! `defect-detector watch DIR --model M.onnx --out RESULTS_DIR`: live mode beside a microscope.

use super::runtime_args::RuntimeArgs;
use clap::Args;
use defect_detector::detect::{
    DEFAULT_CONF, DEFAULT_IOU, DEFAULT_TILE_OVERLAP, DetectOptions, Fit,
};
use defect_detector::jobs::JobControl;
use defect_detector::watch::{CSV_NAME, JSONL_NAME, RunWatchOptions, WatchRecord, run_watch};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct WatchArgs {
    /// Folder the microscope software writes images into.
    dir: PathBuf,
    /// YOLO-OBB model exported to ONNX.
    #[arg(long)]
    model: PathBuf,
    /// Results folder: detections.jsonl and detections.csv are appended there (and read back
    /// on a restart, so nothing is processed twice).
    #[arg(long)]
    out: PathBuf,
    /// Process the images already there (waiting for files still being written), then exit.
    #[arg(long)]
    once: bool,
    /// Seconds between two looks at the folder; a file is ready when two looks agree.
    #[arg(long, default_value_t = 0.5)]
    interval: f64,
    /// Confidence threshold.
    #[arg(long, default_value_t = DEFAULT_CONF)]
    conf: f32,
    /// ProbIoU threshold of the rotated NMS.
    #[arg(long, default_value_t = DEFAULT_IOU)]
    iou: f64,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    calibration: super::calibration_args::CalibrationArgs,
    /// Which detector: the trained model, the training-free lattice analysis, or both.
    #[arg(long, value_enum, default_value_t = super::detect::Method::Both)]
    method: super::detect::Method,
}

fn print_record(r: &WatchRecord, names: &[String]) {
    let ts = defect_detector::watch::utc_timestamp(r.timestamp);
    match &r.outcome {
        Ok(d) => {
            let parts: Vec<String> = names
                .iter()
                .zip(&d.counts)
                .map(|(n, c)| format!("{n} {c}"))
                .collect();
            // A pixel size that is not the file's own is worth a word.
            let scale = match (d.calibration, d.nm_per_px) {
                ("file", _) | (_, None) => String::new(),
                (how, Some(nm)) => format!(" at {:.2} pm/px ({how})", nm * 1e3),
            };
            println!(
                "{ts} {}: {} detections ({}) in {:.1} ms{scale}",
                r.key.path.display(),
                d.detections.len(),
                parts.join(", "),
                d.total_ms()
            );
            if let Some(m) = defect_detector::realism::not_the_crystal(d.lattice_match) {
                eprintln!(
                    "{ts} warning: {}: not the crystal's lattice (only {:.0} % of the strongest \
                     spatial frequencies on its rings): its boxes mean nothing",
                    r.key.path.display(),
                    m * 100.0
                );
            }
        }
        Err(e) => eprintln!("{ts} error: {}: {e} (skipped)", r.key.path.display()),
    }
}

pub fn run(a: WatchArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.conf) || !(0.0..=1.0).contains(&a.iou) {
        anyhow::bail!("--conf and --iou must be between 0 and 1");
    }
    if !(a.interval.is_finite() && a.interval > 0.0) {
        anyhow::bail!("--interval must be a positive number of seconds");
    }
    let opts = RunWatchOptions {
        interval: Duration::from_secs_f64(a.interval),
        once: a.once,
        conf: a.conf,
        iou: a.iou,
        detector: a.runtime.detector_options(),
        lattice: a.calibration.lattice_use(a.method.into())?,
        detect: DetectOptions {
            fit: Fit::Tile {
                overlap: DEFAULT_TILE_OVERLAP,
            },
            ..Default::default()
        },
    };
    eprintln!(
        "watching {} every {} s; results appended to {} and {}{}",
        a.dir.display(),
        a.interval,
        a.out.join(JSONL_NAME).display(),
        a.out.join(CSV_NAME).display(),
        if a.once { "" } else { " (Ctrl+C stops)" }
    );
    // Ctrl+C ends the process at once; that is safe because every log line is written whole
    // with one write, and the JSON line that marks a file processed comes last.
    let ctl = JobControl::detached();
    let stats = run_watch(&a.dir, &a.model, &a.out, &opts, &ctl, print_record)?;
    eprintln!(
        "{} image(s) processed, {} failed",
        stats.processed, stats.failed
    );
    Ok(())
}
