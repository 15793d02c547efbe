//! `defect-detector watch DIR [--model M.onnx] --out RESULTS_DIR`: live mode beside a microscope.

use super::runtime_args::RuntimeArgs;
use anyhow::Context;
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
    /// YOLO-OBB model exported to ONNX (default: the first model in `models/`, the shipped one,
    /// as for `detect`).
    #[arg(long)]
    model: Option<PathBuf>,
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
    /// Skip the check of each frame against what the model was trained on (its `realism`
    /// statistics against the model card's ranges; logged as `outside_training`).
    #[arg(long)]
    no_realism_check: bool,
}

fn print_record(r: &WatchRecord, names: &[String], crystal_name: &str) {
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
                    "{ts} warning: {}: {}",
                    r.key.path.display(),
                    defect_detector::realism::not_the_crystal_message(crystal_name, m)
                );
            }
            if !d.outside_training.is_empty() {
                eprintln!(
                    "{ts} warning: {}: {}",
                    r.key.path.display(),
                    defect_detector::realism::unlike_training_message(&d.outside_training)
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
        realism_check: !a.no_realism_check,
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
    let model = match a.model.clone() {
        Some(m) => m,
        None => defect_detector::detect::default_model()
            .context("no --model given and no .onnx model in models/")?,
    };
    let crystal_name = opts.lattice.crystal.name.clone();
    let stats = run_watch(&a.dir, &model, &a.out, &opts, &ctl, |r, names| {
        print_record(r, names, &crystal_name)
    })?;
    eprintln!(
        "{} image(s) processed, {} failed",
        stats.processed, stats.failed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        a: WatchArgs,
    }

    fn parse(v: &[&str]) -> WatchArgs {
        use clap::Parser;
        let mut all = vec!["t"];
        all.extend(v);
        Wrap::try_parse_from(all)
            .unwrap_or_else(|e| panic!("{e}"))
            .a
    }

    /// As for `detect`, the shipped model is the default; a frame of another structure is logged
    /// with its lattice match so a script reading the log can tell.
    #[test]
    fn without_model_the_shipped_one_watches_and_logs_the_lattice_match() {
        assert!(parse(&["in", "--out", "res"]).model.is_none());
        let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
        let (emi, ser) = (
            "SrTiO3_HAADF_TitanCubed_openNCEM.emi",
            "SrTiO3_HAADF_TitanCubed_openNCEM_1.ser",
        );
        if !samples.join(emi).is_file() {
            eprintln!("skipped the run: {} is absent", samples.display());
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        for f in [emi, ser] {
            std::fs::copy(samples.join(f), dir.join(f)).unwrap();
        }
        let out = t.path().join("res");
        let (d, o) = (dir.display().to_string(), out.display().to_string());
        let mut v = vec![d.as_str(), "--out", o.as_str(), "--once", "--device", "cpu"];
        let ort = format!("{}/.ort/libonnxruntime.so", env!("CARGO_MANIFEST_DIR"));
        if std::path::Path::new(&ort).exists() {
            v.extend(["--ort-lib", &ort]);
        }
        run(parse(&v)).unwrap();
        let log = std::fs::read_to_string(out.join(JSONL_NAME)).unwrap();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // The .ser is the .emi's data: one frame.
        assert_eq!(lines.len(), 1, "{log}");
        let m = lines[0]["lattice_match"].as_f64().expect("judged");
        assert!(
            defect_detector::realism::not_the_crystal(Some(m)).is_some(),
            "SrTiO3 [001] read as CdTe [110] should not match: {m}"
        );
        // And the frame is unlike what the shipped model was trained on, as the Viewer says.
        let out = lines[0]["outside_training"].as_array().expect("flagged");
        assert!(
            out.iter()
                .any(|o| o.as_str().unwrap().starts_with("share of spectrum peaks")),
            "{out:?}"
        );
    }
}
