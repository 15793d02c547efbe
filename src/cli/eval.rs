//! `eval`: score a detector on a labelled YOLO-OBB dataset (mAP, per-class P/R, confusion
//! matrix) and optionally write the model card's synthetic-test entry. Argument parsing and
//! reporting only: the scoring lives in `defect_detector::eval`.

use super::runtime_args::RuntimeArgs;
use clap::Args;
use defect_detector::detect::Detector;
use defect_detector::eval::{EvalOptions, VAL_CONF_OBB, VAL_IOU, VAL_MAX_DET, evaluate};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
    /// YOLO-OBB model exported to ONNX.
    #[arg(long)]
    model: PathBuf,
    /// Dataset folder holding data.yaml (or the yaml file itself).
    dataset: PathBuf,
    /// Split to evaluate (a key of data.yaml).
    #[arg(long, default_value = "test")]
    split: String,
    /// Confidence floor of the candidates (Ultralytics' OBB val default).
    #[arg(long, default_value_t = VAL_CONF_OBB)]
    conf: f32,
    /// ProbIoU threshold of the NMS.
    #[arg(long, default_value_t = VAL_IOU)]
    iou: f64,
    /// Maximum detections per image.
    #[arg(long, default_value_t = VAL_MAX_DET)]
    max_det: usize,
    /// Join grain-boundary boxes along one line, as `detect` and the app do (off: exactly
    /// Ultralytics' `val` post-processing).
    #[arg(long)]
    merge_boundaries: bool,
    /// Fit point-defect boxes to the lattice around them, as `detect` and the app do (off:
    /// exactly Ultralytics' `val` post-processing)
    #[arg(long)]
    fit_cells: bool,
    /// Cut boundary boxes at the frame's edges as the labels are, as `detect` and the app do
    /// (off: exactly Ultralytics' `val` post-processing)
    #[arg(long)]
    clip_boundaries: bool,
    /// Which detectors score: the model alone (Ultralytics' `val`), the training-free
    /// lattice analysis, or both joined as `detect` joins them.
    #[arg(long, value_enum, default_value = "model")]
    method: super::detect::Method,
    /// Test-time augmentation: run the model on the frame, its mirror image and their turns
    /// (8 copies), and fuse the boxes (8 model runs per frame).
    #[arg(long)]
    tta: bool,
    /// With --tta: the scales each copy also runs at, e.g. `1,0.85,1.15` (1: the frame as it
    /// is). `1,0.838,0.872` are the readings `detect` fuses where a CdTe frame's pixel size
    /// came from its lattice (CdTe, Si, GaAs; `CrystalSpec::preset_scales`).
    #[arg(long, value_delimiter = ',', default_value = "1", requires = "tta")]
    tta_scales: Vec<f64>,
    /// With --tta: which dihedral copies run: all eight, or the frame alone (with
    /// --tta-scales, to score scales without the turns and mirrors).
    #[arg(long, value_enum, default_value = "all", requires = "tta")]
    tta_copies: TtaCopies,
    /// With --tta: also run every copy on the frame with this many rows and columns cut from
    /// its top-left, e.g. `0,8` (0: the whole frame). A cut of 8 moves the lattice 4 px against
    /// the model's stride grid, a sampling no turn or mirror gives.
    #[arg(long, value_delimiter = ',', default_value = "0", requires = "tta")]
    tta_cuts: Vec<usize>,
    /// Drop point-defect boxes centred inside a grain-boundary box of at least this
    /// confidence, as `detect` does (a defect on a boundary is neither bulk nor boundary).
    #[arg(long, value_name = "CONF")]
    points_off_boundaries: Option<f32>,
    /// Drop point-defect boxes that reach past the frame's edge, as `detect` does (the
    /// labels place no point defect across the edge).
    #[arg(long)]
    points_inside_frame: bool,
    /// With --method both: join the model's boxes with the lattice's at this confidence, as
    /// `detect` does at its --conf; the model's boxes below it are scored as it drew them,
    /// the lattice's are left out (0: join at the --conf floor)
    #[arg(long, value_name = "CONF", default_value_t = defect_detector::detect::DEFAULT_CONF)]
    join_conf: f32,
    /// Crystal and zone axis the lattice analysis (`--method lattice|both`) assumes for frames
    /// without a sidecar (cdte110, si110, gaas110); a synthetic frame's own sidecar wins.
    #[arg(long, default_value = "cdte110")]
    crystal: String,
    /// Leave out of the scoring the detections on point defects the dataset hides (a set
    /// exported with `--min-detectability`: its sidecars still hold them): neither true nor
    /// false, as KITTI's DontCare boxes. Off: Ultralytics' `val`, which counts them as false
    /// positives although the defect is in the crystal.
    #[arg(long)]
    hidden_dont_care: bool,
    /// Give each frame the pixel size its sidecar records (a set written by `export`) and
    /// resample it to the model's, as `detect` and the app do with a calibrated file (off:
    /// every frame at its own pixel scale, as Ultralytics' `val`).
    #[arg(long)]
    calibrated: bool,
    /// With --calibrated: run each frame at the model's pixel size only. By default a frame
    /// whose pixel size lies in the span the model was trained on also runs as sampled and the
    /// boxes are fused, as `detect` and the app do (`detect --model-scale-only`)
    #[arg(long)]
    model_scale_only: bool,
    /// Also report how far mAP50 and mAP50-95 could move on another draw of as many frames:
    /// a 95 % percentile-bootstrap interval over this many resamples of the frames (0: off),
    /// and the share of resamples reaching the project's targets (mAP50 0.98, mAP50-95 0.90).
    /// Recorded in the JSON and the card entry.
    #[arg(long, default_value_t = 0, value_name = "N")]
    bootstrap: usize,
    /// With --bootstrap: also score this second model on the same frames with the same
    /// settings, and report the paired interval of the difference (this model minus that one)
    /// and how often this one scored higher. A difference between two models is measured far
    /// more precisely than either score.
    #[arg(long, value_name = "OTHER.onnx", requires = "bootstrap")]
    against: Option<PathBuf>,
    /// Write each frame's scored detections to this folder as `<image stem>.txt` (Ultralytics'
    /// `save_txt` + `save_conf`: `class x1 y1 … x4 y4 conf`, corners normalised).
    #[arg(long, value_name = "DIR")]
    save_detections: Option<PathBuf>,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record the report in this model card (`model.json`) under `--card-key` (with the
    /// dataset, split and settings), so the card's numbers come from this run.
    #[arg(long, value_name = "MODEL.json")]
    write_card: Option<PathBuf>,
    /// The card key `--write-card` records under, e.g. `synthetic_test_detectable` for a test
    /// set exported with `--min-detectability`.
    #[arg(long, default_value = "synthetic_test", requires = "write_card")]
    card_key: String,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// The synthetic test targets of the issue "Detections on real frames, part 2": mAP50 and
/// mAP50-95.
const TARGETS: (f64, f64) = (0.98, 0.90);

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TtaCopies {
    All,
    Frame,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.conf) || !(0.0..=1.0).contains(&a.iou) {
        anyhow::bail!("--conf and --iou must be between 0 and 1");
    }
    if a.points_off_boundaries
        .is_some_and(|c| !(0.0..=1.0).contains(&c))
    {
        anyhow::bail!("--points-off-boundaries is a confidence between 0 and 1");
    }
    if !(0.0..=1.0).contains(&a.join_conf) {
        anyhow::bail!("--join-conf is a confidence between 0 and 1");
    }
    let det = Detector::load(&a.model, &a.runtime.detector_options())?;
    let opts = EvalOptions {
        split: a.split.clone(),
        conf: a.conf,
        iou: a.iou,
        max_det: a.max_det,
        merge_boundaries: a.merge_boundaries,
        fit_cells: a.fit_cells.then(Default::default),
        clip_boundaries: a.clip_boundaries,
        method: a.method.into(),
        tta: a.tta.then(|| match a.tta_copies {
            TtaCopies::All => defect_detector::detect::tta::default_transforms(),
            TtaCopies::Frame => vec![defect_detector::geometry::Dihedral::IDENTITY],
        }),
        tta_scales: a.tta_scales.clone(),
        tta_cuts: a.tta_cuts.clone(),
        points_off_boundaries: a.points_off_boundaries,
        points_inside_frame: a.points_inside_frame,
        crystal: defect_detector::synth::crystal::Preset::named_crystal(&a.crystal)?.spec(),
        hidden_dont_care: a.hidden_dont_care,
        calibrated: a.calibrated,
        own_sampling: !a.model_scale_only,
        join_conf: a.join_conf,
        save_detections: a.save_detections.clone(),
    };
    let mut report = evaluate(&det, &a.dataset, &opts, None)?;
    print!("{}", report.table());
    let (map50, map50_95, frames) = (report.map50, report.map50_95, report.images);
    if let Some(ci) = report.bootstrap(a.bootstrap, 0.95, 0, Some(TARGETS)) {
        println!("{}", ci.line(map50, map50_95, frames));
    }
    if let Some(other) = &a.against {
        let det2 = Detector::load(other, &a.runtime.detector_options())?;
        let r2 = evaluate(&det2, &a.dataset, &opts, None)?;
        println!(
            "{}: mAP50 {:.4}, mAP50-95 {:.4}",
            other.display(),
            r2.map50,
            r2.map50_95
        );
        match defect_detector::eval::bootstrap::paired(
            &report.frames,
            &r2.frames,
            a.bootstrap,
            0.95,
            0,
        ) {
            Some(p) => println!("{}", p.line("this model", "the other")),
            None => anyhow::bail!(
                "{} scored {} frames and {} scored {}: not the same frames",
                a.model.display(),
                report.frames.len(),
                other.display(),
                r2.frames.len()
            ),
        }
    }
    if let Some(p) = &a.json {
        let bytes = serde_json::to_vec_pretty(&report.to_json())?;
        defect_detector::fsio::atomic_write(p, &bytes)?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(card) = &a.write_card {
        let entry = serde_json::json!({
            "dataset": a.dataset.display().to_string(),
            "split": a.split,
            "conf": a.conf,
            "iou": a.iou,
            "merge_boundaries": a.merge_boundaries,
            "fit_cells": a.fit_cells,
            "tta": a.tta,
            "tta_scales": a.tta_scales,
            "tta_cuts": a.tta_cuts,
            "points_off_boundaries": a.points_off_boundaries,
            "points_inside_frame": a.points_inside_frame,
            "tta_copies": format!("{:?}", a.tta_copies).to_lowercase(),
            "clip_boundaries": a.clip_boundaries,
            "hidden_dont_care": a.hidden_dont_care,
            "calibrated": a.calibrated,
            "model_scale_only": a.model_scale_only,
            "join_conf": a.join_conf,
            "method": defect_detector::detect::combine::DetectMethod::from(a.method).label(),
            "report": report.to_json(),
        });
        defect_detector::fsio::set_json_key(card, &a.card_key, entry)?;
        eprintln!("recorded in {}", card.display());
    }
    Ok(())
}
