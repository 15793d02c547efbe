//! The ONNX oriented-box detector used as a patch classifier, scored exactly like a VLM run.
//!
//! A patch's class is the class of its most confident detection after the usual filtering
//! (confidence threshold, NMS); a patch without detections is `bulk`. The evaluated patches
//! come from [`plan_sample`] with the VLM run's seed, n and k, so the two are compared on the
//! very same images (checked by hash when a run is given).
//!
//! Owns how a detection becomes a patch class and the detector run's metadata; scoring and
//! files are [`crate::vlm::record`]'s. Must not change how the detector detects (that is
//! [`crate::detect`]'s).

use crate::fsio::csv_field;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::detect::{DetectOptions, Detector, Fit, Intensity};
use crate::jobs::JobControl;
use crate::raster::{ImageF32, PixelSize};
use crate::vlm::metrics::{ClassificationMetrics, UsageSample, UsageStats};
use crate::vlm::patches::{Patch, PatchSet, normalise_class_name};
use crate::vlm::prompt::FailureKind;
use crate::vlm::record::{CsvColumn, PatchRecord, RunRecord};
use crate::vlm::run::{VlmRun, plan_sample, utc_now};

/// The patch class that means "nothing found".
pub const BULK_CLASS: &str = "bulk";

pub const DETECTOR_RUN_FORMAT_VERSION: u32 = 1;

/// Marks a run file as a detector run (VLM runs have no `kind`).
pub const DETECTOR_RUN_KIND: &str = "detector";

#[derive(Clone, Debug, PartialEq)]
pub struct DetectorScreenConfig {
    pub n_per_class: usize,
    /// Patches per class held out as few-shot examples by the VLM run being matched; it
    /// changes which patches are evaluated only when a class is small (see [`plan_sample`]).
    pub k_per_class: usize,
    pub seed: u64,
    /// Detections at or below this confidence are ignored.
    pub conf: f32,
    /// NMS IoU threshold.
    pub iou: f64,
    /// Calibration of the patches; the detector resamples them to the model's pixel size when
    /// both are known (a model trained at 15 pm/px sees a 25 pm/px patch at its own scale).
    pub pixel_size: Option<PixelSize>,
    pub patch_source: String,
}

impl DetectorScreenConfig {
    pub fn new(n_per_class: usize, seed: u64) -> Self {
        Self {
            n_per_class,
            k_per_class: 0,
            seed,
            conf: crate::detect::DEFAULT_CONF,
            iou: crate::detect::DEFAULT_IOU,
            pixel_size: None,
            patch_source: String::new(),
        }
    }

    /// The sample of an existing VLM run: same seed, n and (effective) k.
    pub fn matching(run: &VlmRun) -> Self {
        Self {
            k_per_class: run.meta.k_per_class,
            patch_source: run.meta.patch_source.clone(),
            ..Self::new(run.meta.n_per_class, run.meta.seed)
        }
    }

    /// Patches already hold the 8-bit values a model sees, so they go in unchanged; small
    /// patches are letterboxed into the model input at their own (or the model's) scale.
    pub fn detect_options(&self) -> DetectOptions {
        DetectOptions {
            intensity: Intensity::Fixed { lo: 0.0, hi: 255.0 },
            fit: Fit::Tile { overlap: 0.2 },
            match_model_scale: true,
            ..Default::default()
        }
    }
}

/// Everything needed to understand and repeat a detector run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorRunMeta {
    pub tool: String,
    pub model_path: String,
    pub model_classes: Vec<String>,
    pub model_imgsz: usize,
    pub model_nm_per_px: Option<f64>,
    pub provider: String,
    pub conf: f32,
    pub iou: f64,
    pub patch_nm_per_px: Option<f64>,
    pub seed: u64,
    pub n_per_class: usize,
    pub k_per_class: usize,
    pub patch_source: String,
    pub started_utc: String,
    pub finished_utc: String,
    pub wall_s: f64,
    pub notes: Vec<String>,
}

/// A detector screening run: the same records as a VLM run (class, confidence, a one-line
/// explanation naming the detection, latency = detection time), so both are scored and shown
/// the same way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorRun {
    pub format_version: u32,
    pub kind: String,
    pub meta: DetectorRunMeta,
    pub classes: Vec<String>,
    pub records: Vec<PatchRecord>,
}

/// Narrower than a VLM's CSV (a detector has no replies, tokens or retries to report); the
/// `detection` column is the record's explanation, and the rounding is what these files
/// have always had.
const DETECTOR_CSV: &[CsvColumn] = &[
    ("source", |r| csv_field(&r.source)),
    ("hash", |r| r.hash.clone()),
    ("truth", |r| csv_field(&r.truth)),
    ("predicted", |r| {
        csv_field(r.predicted.as_deref().unwrap_or(""))
    }),
    ("failure", |r| {
        r.failure.map(|f| f.name().to_string()).unwrap_or_default()
    }),
    ("confidence", |r| {
        r.confidence.map(|c| format!("{c:.4}")).unwrap_or_default()
    }),
    ("detection", |r| {
        csv_field(r.explanation.as_deref().unwrap_or(""))
    }),
    ("latency_ms", |r| {
        r.latency_ms.map(|l| format!("{l:.2}")).unwrap_or_default()
    }),
];

impl RunRecord for DetectorRun {
    const KIND: Option<&'static str> = Some(DETECTOR_RUN_KIND);
    const NAME: &'static str = "detector";
    const FORMAT_VERSION: u32 = DETECTOR_RUN_FORMAT_VERSION;
    const CSV_COLUMNS: &'static [CsvColumn] = DETECTOR_CSV;

    fn format_version(&self) -> u32 {
        self.format_version
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn records(&self) -> &[PatchRecord] {
        &self.records
    }

    /// A detector spends no tokens and caches nothing: only its time counts.
    fn usage_sample(r: &PatchRecord) -> UsageSample {
        UsageSample {
            latency_ms: r.latency_ms,
            ..Default::default()
        }
    }
}

/// Maps each detector class to a patch class by (normalised) name.
fn class_map(model_names: &[String], set: &PatchSet) -> Vec<Option<usize>> {
    model_names
        .iter()
        .map(|n| set.class_index(&normalise_class_name(n)))
        .collect()
}

/// The patch's 8-bit pixels as the detector's input image.
fn patch_image(p: &Patch) -> ImageF32 {
    ImageF32::from_vec(
        p.width as usize,
        p.height as usize,
        p.gray.iter().map(|&v| f32::from(v)).collect(),
    )
}

/// Classifies one patch; the record carries the strongest detection as its explanation.
pub fn classify_patch(
    det: &Detector,
    set: &PatchSet,
    patch: &Patch,
    map: &[Option<usize>],
    cfg: &DetectorScreenConfig,
) -> anyhow::Result<PatchRecord> {
    let res = det
        .detect(&patch_image(patch), cfg.pixel_size, &cfg.detect_options())
        .with_context(|| format!("{}: detection failed", patch.source))?;
    let kept = res.filtered(cfg.conf, cfg.iou);
    let usable: Vec<_> = kept
        .iter()
        .filter(|d| map.get(d.class).copied().flatten().is_some())
        .collect();
    let ignored = kept.len() - usable.len();
    let mut rec = PatchRecord {
        source: patch.source.clone(),
        hash: patch.hash.clone(),
        truth: set.classes[patch.class].clone(),
        predicted: None,
        failure: None,
        failure_detail: None,
        answer_format: None,
        confidence: None,
        explanation: None,
        raw_reply: None,
        latency_ms: Some((res.timings.total_ms() * 1000.0).round() / 1000.0),
        prompt_tokens: None,
        completion_tokens: None,
        cached: false,
        attempts: 1,
    };
    let ignored_note = if ignored > 0 {
        format!("; {ignored} detection(s) of classes not screened ignored")
    } else {
        String::new()
    };
    match usable.first() {
        Some(best) => {
            let c = map[best.class].unwrap_or(0);
            rec.predicted = Some(set.classes[c].clone());
            rec.confidence = Some(f64::from(best.confidence));
            rec.explanation = Some(format!(
                "{} {:.2} at ({:.1}, {:.1}) px, {:.1} × {:.1} px; {} detection(s) above {}{ignored_note}",
                best.class_name,
                best.confidence,
                best.obb.cx,
                best.obb.cy,
                best.obb.w,
                best.obb.h,
                usable.len(),
                cfg.conf
            ));
        }
        None => match set.class_index(BULK_CLASS) {
            Some(b) => {
                rec.predicted = Some(set.classes[b].clone());
                rec.explanation = Some(format!("no detection above {}{ignored_note}", cfg.conf));
            }
            None => {
                rec.failure = Some(FailureKind::NoDetection);
                rec.failure_detail = Some(format!(
                    "no detection above {} and the set has no {BULK_CLASS} class{ignored_note}",
                    cfg.conf
                ));
            }
        },
    }
    Ok(rec)
}

/// Runs the detector on the evaluated sample of `set`. Patches go one at a time (the
/// detector serialises runs anyway); progress and cancel go through `control`.
pub fn run_detector_eval(
    set: &PatchSet,
    det: &Detector,
    model_path: &Path,
    cfg: &DetectorScreenConfig,
    control: &JobControl,
) -> anyhow::Result<DetectorRun> {
    anyhow::ensure!(
        cfg.conf.is_finite() && (0.0..1.0).contains(&cfg.conf),
        "confidence threshold {} must be in 0..1",
        cfg.conf
    );
    let started_utc = utc_now();
    let t0 = std::time::Instant::now();
    let plan = plan_sample(set, cfg.n_per_class, cfg.k_per_class, cfg.seed)?;
    let map = class_map(det.class_names(), set);
    let mut notes = plan.notes.clone();
    let unmapped: Vec<&str> = det
        .class_names()
        .iter()
        .zip(&map)
        .filter(|(_, m)| m.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    if !unmapped.is_empty() {
        notes.push(format!(
            "model classes not in the patch set (their detections are ignored): {}",
            unmapped.join(", ")
        ));
    }
    let info = det.info();
    if cfg.pixel_size.is_none() && info.nm_per_px.is_some() {
        notes.push(
            "patches are uncalibrated: they are shown to the model at their own pixel scale".into(),
        );
    }
    let total = plan.eval.len();
    let mut records = Vec::with_capacity(total);
    control.set_progress(0.0, format!("0/{total} patches"));
    for (j, &i) in plan.eval.iter().enumerate() {
        control.check()?;
        records.push(classify_patch(det, set, &set.patches[i], &map, cfg)?);
        control.set_progress(
            (j + 1) as f64 / total as f64,
            format!("{}/{total} patches", j + 1),
        );
    }
    Ok(DetectorRun {
        format_version: DETECTOR_RUN_FORMAT_VERSION,
        kind: DETECTOR_RUN_KIND.into(),
        meta: DetectorRunMeta {
            tool: concat!("defect-detector ", env!("CARGO_PKG_VERSION")).into(),
            model_path: model_path.display().to_string(),
            model_classes: det.class_names().to_vec(),
            model_imgsz: info.imgsz,
            model_nm_per_px: info.nm_per_px,
            provider: det.provider().to_string(),
            conf: cfg.conf,
            iou: cfg.iou,
            patch_nm_per_px: cfg.pixel_size.map(|p| p.nm_per_px),
            seed: cfg.seed,
            n_per_class: cfg.n_per_class,
            k_per_class: cfg.k_per_class,
            patch_source: cfg.patch_source.clone(),
            started_utc,
            finished_utc: utc_now(),
            wall_s: t0.elapsed().as_millis() as f64 / 1000.0,
            notes,
        },
        classes: set.classes.clone(),
        records,
    })
}

/// A VLM run or a detector run: what the GUI lists, compares and saves.
// Only a handful of runs are ever held, so the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum ScreeningRun {
    Vlm(VlmRun),
    Detector(DetectorRun),
}

impl ScreeningRun {
    pub fn classes(&self) -> &[String] {
        match self {
            Self::Vlm(r) => &r.classes,
            Self::Detector(r) => &r.classes,
        }
    }

    pub fn records(&self) -> &[PatchRecord] {
        match self {
            Self::Vlm(r) => &r.records,
            Self::Detector(r) => &r.records,
        }
    }

    pub fn patch_source(&self) -> &str {
        match self {
            Self::Vlm(r) => &r.meta.patch_source,
            Self::Detector(r) => &r.meta.patch_source,
        }
    }

    /// (seed, n per class, k per class) of the sample.
    pub fn sample(&self) -> (u64, usize, usize) {
        match self {
            Self::Vlm(r) => (r.meta.seed, r.meta.n_per_class, r.meta.k_per_class),
            Self::Detector(r) => (r.meta.seed, r.meta.n_per_class, r.meta.k_per_class),
        }
    }

    /// A short name: model and strategy, or the detector file and threshold.
    pub fn label(&self) -> String {
        match self {
            Self::Vlm(r) => format!(
                "{} · {} · seed {}",
                r.meta.model, r.meta.strategy, r.meta.seed
            ),
            Self::Detector(r) => {
                let file = Path::new(&r.meta.model_path)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| r.meta.model_path.clone());
                format!(
                    "detector {file} · conf {} · seed {}",
                    r.meta.conf, r.meta.seed
                )
            }
        }
    }

    pub fn notes(&self) -> &[String] {
        match self {
            Self::Vlm(r) => &r.meta.notes,
            Self::Detector(r) => &r.meta.notes,
        }
    }

    pub fn metrics(&self) -> anyhow::Result<ClassificationMetrics> {
        match self {
            Self::Vlm(r) => r.metrics(),
            Self::Detector(r) => r.metrics(),
        }
    }

    pub fn usage(&self) -> UsageStats {
        match self {
            Self::Vlm(r) => r.usage(),
            Self::Detector(r) => r.usage(),
        }
    }

    pub fn save_json(&self, path: &Path) -> anyhow::Result<()> {
        match self {
            Self::Vlm(r) => r.save_json(path),
            Self::Detector(r) => r.save_json(path),
        }
    }

    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        match self {
            Self::Vlm(r) => r.write_csv(path),
            Self::Detector(r) => r.write_csv(path),
        }
    }

    /// Reads either kind of run file; the file's `kind` says which.
    pub fn load_json(path: &Path) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a JSON file", path.display()))?;
        let run = if v.get("kind").and_then(|k| k.as_str()) == Some(DETECTOR_RUN_KIND) {
            DetectorRun::from_json_bytes(&bytes).map(Self::Detector)
        } else {
            VlmRun::from_json_bytes(&bytes).map(Self::Vlm)
        };
        run.with_context(|| path.display().to_string())
    }
}

/// Whether two runs evaluated the same patches (by image hash, in order).
pub fn same_patches(a: &[PatchRecord], b: &[PatchRecord]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.hash == y.hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{DetectorOptions, Device};

    fn tiny() -> Detector {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_obb.onnx");
        let opts = DetectorOptions {
            device: Device::Cpu,
            threads: 1,
            runtime_library: None,
            ..Default::default()
        };
        Detector::load(&path, &opts).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Dark 32x32 8-bit patches, with a white 16x16 block in the top-left for "defect"
    /// classes. The tiny model scores a class per pyramid level by the mean brightness of a
    /// cell, so a white block gives detections and a dark patch gives none.
    fn set() -> PatchSet {
        let classes = ["bulk", "vacancy", "interstitial", "grain_boundary"];
        let mut patches = Vec::new();
        for c in 0..classes.len() {
            for i in 0..4 {
                // A faint texture keeps patches distinct images (distinct hashes).
                let mut px: Vec<u8> = (0..32 * 32)
                    .map(|k| ((k * 7 + i * 13 + c * 31) % 5) as u8)
                    .collect();
                if c > 0 {
                    for y in 0..16 {
                        for x in 0..16 {
                            px[y * 32 + x] = 255;
                        }
                    }
                }
                patches.push(Patch::from_gray8(c, 32, 32, px, format!("test {c}-{i}")).unwrap());
            }
        }
        PatchSet {
            classes: classes.iter().map(|s| s.to_string()).collect(),
            patches,
        }
    }

    #[test]
    fn one_prediction_per_sampled_patch_and_metrics() {
        let det = tiny();
        let set = set();
        let mut cfg = DetectorScreenConfig::new(3, 5);
        // Above the letterbox grey (114/255 = 0.45), which the tiny model scores as a cell mean.
        cfg.conf = 0.5;
        let run = run_detector_eval(
            &set,
            &det,
            Path::new("tiny_obb.onnx"),
            &cfg,
            &JobControl::detached(),
        )
        .unwrap();
        assert_eq!(run.records.len(), 12);
        let plan = plan_sample(&set, 3, 0, 5).unwrap();
        let want: Vec<&str> = plan
            .eval
            .iter()
            .map(|&i| set.patches[i].hash.as_str())
            .collect();
        let got: Vec<&str> = run.records.iter().map(|r| r.hash.as_str()).collect();
        assert_eq!(want, got, "the detector sees the VLM sample");
        for r in &run.records {
            if r.truth == "bulk" {
                // Dark patches: nothing found, so bulk.
                assert_eq!(r.predicted.as_deref(), Some("bulk"), "{r:?}");
                assert_eq!(r.confidence, None);
            } else {
                // A bright block: some defect class with its confidence.
                let p = r.predicted.as_deref().unwrap();
                assert_ne!(p, "bulk", "{r:?}");
                assert!(r.confidence.unwrap() > 0.5);
                assert!(r.explanation.as_deref().unwrap().contains(" at ("));
            }
            assert!(r.latency_ms.unwrap() >= 0.0);
        }
        let m = run.metrics().unwrap();
        assert_eq!(m.total, 12);
        assert_eq!(m.answered, 12);
        assert_eq!(m.matrix.counts[0][0], 3, "every bulk patch right");
        assert_eq!(m.per_class[0].recall, Some(1.0));
        assert!(m.accuracy.unwrap() >= 0.25);
        let u = run.usage();
        assert_eq!(u.responses, 12);
        assert_eq!(u.total_tokens(), 0);

        // Round trip through JSON, and CSV has a row per patch.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("det.json");
        run.save_json(&p).unwrap();
        assert_eq!(DetectorRun::load_json(&p).unwrap(), run);
        assert_eq!(run.to_csv().lines().count(), 13);
        let any = ScreeningRun::load_json(&p).unwrap();
        assert_eq!(any, ScreeningRun::Detector(run.clone()));
        assert!(any.label().starts_with("detector tiny_obb.onnx"));
        // A VLM run file is not a detector run.
        std::fs::write(&p, br#"{"format_version":1,"kind":"vlm"}"#).unwrap();
        assert!(DetectorRun::load_json(&p).is_err());
    }

    #[test]
    fn without_bulk_class_nothing_found_is_a_failure() {
        let det = tiny();
        let mut set = set();
        // Drop bulk: dark patches now have no class to fall back on.
        set.classes[0] = "dark".into();
        let mut cfg = DetectorScreenConfig::new(2, 1);
        cfg.conf = 0.5;
        let run =
            run_detector_eval(&set, &det, Path::new("m"), &cfg, &JobControl::detached()).unwrap();
        let dark: Vec<_> = run.records.iter().filter(|r| r.truth == "dark").collect();
        assert_eq!(dark.len(), 2);
        assert!(
            dark.iter()
                .all(|r| r.failure == Some(FailureKind::NoDetection))
        );
        let m = run.metrics().unwrap();
        assert_eq!(m.failures.get(&FailureKind::NoDetection), Some(&2));
    }

    #[test]
    fn cancel_and_bad_threshold() {
        let det = tiny();
        let set = set();
        let c = JobControl::detached();
        c.cancel();
        let e = run_detector_eval(
            &set,
            &det,
            Path::new("m"),
            &DetectorScreenConfig::new(2, 1),
            &c,
        )
        .unwrap_err();
        assert!(crate::jobs::is_cancelled(&e));
        let mut cfg = DetectorScreenConfig::new(2, 1);
        cfg.conf = f32::NAN;
        assert!(
            run_detector_eval(&set, &det, Path::new("m"), &cfg, &JobControl::detached()).is_err()
        );
    }
}
