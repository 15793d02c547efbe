//! `defect-detector eval-real`: the detector on the labelled real frames
//! (`assets/real-set/set.json`), scored as a microscopist would (see `eval::real`).

use super::detect::Method;
use super::runtime_args::RuntimeArgs;
use clap::Args;
use defect_detector::detect::{DEFAULT_CONF, DEFAULT_IOU, Detector};
use defect_detector::eval::real::{RealOptions, evaluate_real};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalRealArgs {
    /// YOLO-OBB model exported to ONNX.
    #[arg(long, default_value = "models/cdte-yolo11n-obb.onnx")]
    model: PathBuf,
    /// The labelled set.
    #[arg(long, default_value = "assets/real-set/set.json")]
    set: PathBuf,
    /// Folder of the set's images (default: the set file's "samples").
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Which detector to score: the model, the lattice analysis, or both joined (as `detect`).
    #[arg(long, value_enum, default_value_t = Method::Both)]
    method: Method,
    #[arg(long, default_value_t = DEFAULT_CONF)]
    conf: f32,
    #[arg(long, default_value_t = DEFAULT_IOU)]
    iou: f64,
    /// Test-time augmentation: the model also runs on each frame's mirror image and turns
    /// (8 copies) and the boxes are fused, as `detect --tta` (recorded in the card as
    /// `real_frames_tta`).
    #[arg(long)]
    tta: bool,
    /// Use each file's own calibration even where its lattice contradicts it (as
    /// `detect --trust-file-calibration`).
    #[arg(long)]
    trust_file_calibration: bool,
    /// Read every frame as this crystal (cdte110, si110, gaas110) instead of the set's own,
    /// e.g. `cdte110` to score what `detect` gives without `--crystal` (recorded in the card
    /// as `real_frames_as_<crystal>`).
    #[arg(long)]
    crystal: Option<String>,
    /// Run the model at the lattice's scale only, as `detect --single-lattice-scale`.
    #[arg(long)]
    single_lattice_scale: bool,
    /// Run a calibrated frame at the model's pixel size only, as `detect --model-scale-only`.
    #[arg(long)]
    model_scale_only: bool,
    /// Score every frame again as other acquisitions would record it: the 7 other quarter
    /// turns and mirrors, scan rotations of 15°, 30° and 45° (cropped to the largest upright
    /// rectangle inside) and 0.5×, 0.7× and 1.4× magnification (`default`), or a
    /// comma-separated list of `r90`, `f_r0`, `rot30`, `x0.5`, .... Reported apart from the
    /// targets.
    #[arg(long, value_name = "default|LIST")]
    variants: Option<String>,
    /// Write each scored frame (the original and every variant) into this folder as a PNG
    /// overlay (labels yellow, boundary boxes red, vacancies blue, interstitials green), its
    /// detections as `detect`'s CSV (confidence and source of each box) and the frame itself
    /// as a 16-bit PNG (`<stem>.<variant>.frame.png`; the pixel size is in the CSV's nm columns).
    #[arg(long, value_name = "DIR")]
    save_variants: Option<PathBuf>,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Record the report in this model card (`model.json`) as `real_frames` (with --tta:
    /// `real_frames_tta`).
    #[arg(long, value_name = "MODEL.json")]
    write_card: Option<PathBuf>,
    /// Exit with status 1 when a target is not met.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(a: EvalRealArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.conf) || !(0.0..=1.0).contains(&a.iou) {
        anyhow::bail!("--conf and --iou must be between 0 and 1");
    }
    let det = Detector::load(&a.model, &a.runtime.detector_options())?;
    let opts = RealOptions {
        method: a.method.into(),
        conf: a.conf,
        iou: a.iou,
        samples: a.samples.clone(),
        tta: a.tta.then(defect_detector::detect::tta::default_transforms),
        check_file_calibration: !a.trust_file_calibration,
        crystal: a
            .crystal
            .as_deref()
            .map(defect_detector::synth::crystal::Preset::named_crystal)
            .transpose()?,
        hedge_lattice_scale: !a.single_lattice_scale,
        hedge_own_sampling: !a.model_scale_only,
        save_variants: a.save_variants.clone(),
        variants: match a.variants.as_deref() {
            None => Vec::new(),
            Some("default") => defect_detector::eval::acquisition::default_variants(),
            Some(list) => list
                .split(',')
                .map(|v| defect_detector::eval::acquisition::Variant::from_name(v.trim()))
                .collect::<anyhow::Result<_>>()?,
        },
    };
    let report = evaluate_real(&det, &a.set, &opts)?;
    print!("{}", report.table());
    let value = serde_json::to_value(&report)?;
    if let Some(p) = &a.json {
        let bytes = serde_json::to_vec_pretty(&value)?;
        defect_detector::fsio::atomic_write(p, &bytes)?;
        eprintln!("wrote {}", p.display());
    }
    if let Some(card) = &a.write_card {
        let mut key = "real_frames".to_string();
        if let Some(c) = &opts.crystal {
            key += "_as_";
            key += c.cli_name();
        }
        if a.tta {
            key += "_tta";
        }
        defect_detector::fsio::set_json_key(card, &key, value)?;
        eprintln!("recorded in {}", card.display());
    }
    if a.check && !report.all_targets_met() {
        std::process::exit(1);
    }
    Ok(())
}
