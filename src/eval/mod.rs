//! `defect-detector eval`: a detector against a YOLO-OBB dataset split, with Ultralytics'
//! `val` definitions (see [`metrics`]) so the numbers compare with `yolo obb val`.
//!
//! What Ultralytics `val` does and this reproduces: each image scaled so its long side is the
//! model size and letterboxed (a static ONNX model disables rectangular batches), the 8-bit
//! pixels fed as they are, multi-label candidates above `conf` (0.01 for OBB since Ultralytics
//! 8.3), class-aware Fast-NMS with ProbIoU at `iou` 0.7, at most 300 detections, matching by
//! ProbIoU at 0.50:0.05:0.95, and the confusion matrix at confidence 0.25 and IoU 0.45.

pub mod acquisition;
pub mod bootstrap;
pub mod box_errors;
pub mod dont_care;
pub mod metrics;
pub mod real;

use crate::dataset::yolo::{Validation, read_labels};
use crate::detect::{DetectOptions, Detector, FilterOptions, Intensity, filter_with};
use crate::geometry::OrientedBox;
use crate::jobs::JobControl;
use anyhow::Context;
use metrics::{ApResult, ConfusionMatrix, ScoredBox};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Ultralytics' default `val` confidence for OBB models (0.001 for other tasks).
pub const VAL_CONF_OBB: f32 = 0.01;
pub const VAL_IOU: f64 = 0.7;
pub const VAL_MAX_DET: usize = 300;

pub use crate::dataset::spec::{DatasetSpec, label_path_for};

#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub split: String,
    pub conf: f32,
    pub iou: f64,
    pub max_det: usize,
    /// Join boundary boxes along one line ([`crate::detect::merge_line_boxes`]) as `detect`
    /// does; off reproduces Ultralytics' `val` exactly.
    pub merge_boundaries: bool,
    /// Fit point-defect boxes to the lattice around them as `detect` does
    /// ([`crate::frame::fit_point_cells`]); `None` reproduces Ultralytics' `val`.
    pub fit_cells: Option<crate::lattice::cells::CellFitParams>,
    /// Cut boundary boxes at the frame's edges as `detect` does
    /// ([`crate::detect::post::clip_line_boxes`]); off reproduces Ultralytics' `val`.
    pub clip_boundaries: bool,
    /// Which detectors score: the model alone (Ultralytics' `val`), the training-free lattice
    /// analysis, or both joined as `detect` joins them.
    pub method: crate::detect::combine::DetectMethod,
    /// Run the model on these dihedral copies of each frame and fuse their boxes
    /// ([`crate::detect::tta`]); `None`: one pass, as Ultralytics' `val`.
    pub tta: Option<Vec<crate::geometry::Dihedral>>,
    /// With `tta`: the scales every copy also runs at (`[1.0]`: the frame's own only).
    pub tta_scales: Vec<f64>,
    /// With `tta`: the top-left cuts every copy also runs at (`[0]`: the whole frame only).
    pub tta_cuts: Vec<usize>,
    /// Drop point boxes centred inside a boundary box of at least this confidence
    /// ([`crate::detect::post::drop_points_on_lines`]).
    pub points_off_boundaries: Option<f32>,
    /// Drop point-defect boxes that reach past the frame's edge
    /// ([`crate::detect::post::drop_points_across_edges`]), as `detect` does by default.
    pub points_inside_frame: bool,
    /// The crystal the lattice analysis (`method` lattice or both) assumes for frames whose
    /// own crystal is unknown; a synthetic frame's sidecar (through the dataset's
    /// `manifest.json`) names its own.
    pub crystal: crate::synth::crystal::CrystalSpec,
    /// Leave out of the scoring the detections on the point defects the dataset hides
    /// (`export --min-detectability`; [`dont_care`]); off: Ultralytics' `val`, which scores
    /// them as false positives.
    pub hidden_dont_care: bool,
    /// Give each synthetic frame the pixel size its sidecar records and resample it to the
    /// model's, as `detect` and the app do with a calibrated file (whole frame in one pass for
    /// a dynamic-input model); off: every frame at its own pixel scale, as Ultralytics' `val`
    /// (a model trained on 6-30 pm frames then reads a 7 pm frame's broad columns at twice
    /// the size the app would feed them at).
    pub calibrated: bool,
    /// With `calibrated`: also run each frame as sampled where the model trained at its pixel
    /// size and fuse the boxes, as `detect` and the app do
    /// ([`crate::detect::own_sampling_scale`]).
    pub own_sampling: bool,
    /// With `method` both: the confidence at which the model's boxes are joined with the
    /// lattice's ([`crate::frame::join_with_lattice`]), as `detect` joins them at its `--conf`
    /// (default 0.25). The ranked list is then what `detect` draws at this confidence plus the
    /// model's weaker boxes as it drew them. Joined at the scoring floor instead, a boundary
    /// box of the model at 0.05 that the lattice agrees with would rise above 0.25 and drop
    /// the point boxes inside it, which `detect` never shows.
    pub join_conf: f32,
    /// Write each frame's scored detections here as `<image stem>.txt`, Ultralytics'
    /// `save_txt` + `save_conf` lines (`class x1 y1 … x4 y4 conf`, corners normalised), for
    /// looking at what was found and missed frame by frame.
    pub save_detections: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            split: "test".into(),
            conf: VAL_CONF_OBB,
            iou: VAL_IOU,
            max_det: VAL_MAX_DET,
            merge_boundaries: false,
            fit_cells: None,
            clip_boundaries: false,
            method: crate::detect::combine::DetectMethod::Model,
            tta: None,
            tta_scales: vec![1.0],
            tta_cuts: vec![0],
            points_off_boundaries: None,
            points_inside_frame: false,
            crystal: crate::synth::crystal::Preset::Cdte110.spec(),
            hidden_dont_care: false,
            calibrated: false,
            own_sampling: true,
            join_conf: crate::detect::DEFAULT_CONF,
            save_detections: None,
        }
    }
}

/// What a synthetic frame's sidecar tells the evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameFacts {
    /// The crystal the frame shows (the realistic recipe mixes CdTe, Si and GaAs).
    pub crystal: crate::synth::crystal::CrystalSpec,
    /// The frame's pixel size (augmentations only turn, mirror and crop: it is the base
    /// image's).
    pub pixel_size: crate::raster::PixelSize,
}

/// The facts of each synthetic frame of a dataset folder, keyed by image path: the manifest
/// names each image's sidecar, whose parameters name the crystal and the pixel size. Empty
/// when the folder has no manifest (a dataset not written by `export`); a sidecar that cannot
/// be read is skipped, and its frames fall back to [`EvalOptions::crystal`].
pub fn frame_facts(dir: &Path) -> std::collections::HashMap<PathBuf, FrameFacts> {
    let mut out = std::collections::HashMap::new();
    let Ok(m) = crate::dataset::export::Manifest::read(dir) else {
        return out;
    };
    let mut by_sidecar = std::collections::HashMap::new();
    for rec in &m.images {
        let facts = by_sidecar
            .entry(rec.sidecar.clone())
            .or_insert_with(|| {
                crate::synth::read_sidecar(&dir.join(&rec.sidecar))
                    .map_err(|e| tracing::warn!("{e:#}"))
                    .ok()
                    .map(|sc| FrameFacts {
                        crystal: sc.params.crystal.spec(),
                        pixel_size: crate::raster::PixelSize {
                            nm_per_px: sc.pixel_size_nm,
                        },
                    })
            })
            .clone();
        if let Some(f) = facts {
            out.insert(same_file_key(&dir.join(&rec.file)), f);
        }
    }
    out
}

/// One key per file however its path was spelled (`./`, `..`, links).
fn same_file_key(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// One class row of the report.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassRow {
    pub class: usize,
    pub name: String,
    pub images: usize,
    pub instances: usize,
    pub precision: f64,
    pub recall: f64,
    pub map50: f64,
    pub map50_95: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalReport {
    pub model: PathBuf,
    pub dataset: PathBuf,
    pub split: String,
    pub names: Vec<String>,
    pub images: usize,
    pub instances: usize,
    pub conf: f32,
    pub iou: f64,
    pub precision: f64,
    pub recall: f64,
    pub map50: f64,
    pub map75: f64,
    pub map50_95: f64,
    pub per_class: Vec<ClassRow>,
    pub ap: ApResult,
    pub confusion: ConfusionMatrix,
    /// Geometry of the boxes found, against their labels.
    pub box_errors: Vec<box_errors::ClassBoxErrors>,
    /// With [`EvalOptions::hidden_dont_care`]: what was left out of the scoring.
    pub dont_care: Option<DontCareSummary>,
    pub provider: String,
    /// Mean milliseconds per image.
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    /// What each frame contributed, for [`EvalReport::bootstrap`].
    #[serde(skip)]
    pub frames: Vec<bootstrap::ScoredFrame>,
    /// Set by [`EvalReport::bootstrap`]: the spread of mAP over resampled frames.
    pub bootstrap: Option<bootstrap::BootstrapCi>,
}

/// What the don't-care regions of a run held and took out of the scoring.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct DontCareSummary {
    /// The dataset hid point defects below this detectability (`export --min-detectability`).
    pub min_detectability: f64,
    /// Hidden point defects in the images scored.
    pub hidden_defects: usize,
    /// Detections (above the candidate floor `conf`) left out because they matched one.
    pub detections_left_out: usize,
}

/// Runs the detector over a split and computes the metrics.
pub fn evaluate(
    det: &Detector,
    dataset: &Path,
    opts: &EvalOptions,
    ctl: Option<&JobControl>,
) -> anyhow::Result<EvalReport> {
    let spec = DatasetSpec::read(dataset)?;
    let nc = det.class_names().len();
    if spec.names.len() != nc {
        anyhow::bail!(
            "the model has {nc} classes ({}) but {} lists {} ({})",
            det.class_names().join(", "),
            spec.yaml.display(),
            spec.names.len(),
            spec.names.join(", ")
        );
    }
    if spec.names != det.class_names() {
        tracing::warn!(
            "class names differ: model {:?}, dataset {:?}; using the model's",
            det.class_names(),
            spec.names
        );
    }
    let images = spec.images(&opts.split)?;
    let facts = if opts.method == crate::detect::combine::DetectMethod::Model && !opts.calibrated {
        Default::default()
    } else {
        frame_facts(spec.yaml.parent().unwrap_or(Path::new(".")))
    };
    let dont_care = if opts.hidden_dont_care {
        Some(dont_care::DontCare::read(
            spec.yaml.parent().unwrap_or(Path::new(".")),
        )?)
    } else {
        None
    };
    let mut dc_summary = dont_care.as_ref().map(|d| DontCareSummary {
        min_detectability: d.min_detectability,
        hidden_defects: 0,
        detections_left_out: 0,
    });
    let validation = Validation {
        num_classes: nc,
        ..Default::default()
    };
    if let Some(dir) = &opts.save_detections {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut frames: Vec<bootstrap::ScoredFrame> = Vec::with_capacity(images.len());
    let mut per_image_classes = vec![0usize; nc];
    let mut cm = ConfusionMatrix::for_val_conf(nc, opts.conf);
    let mut geometry = box_errors::BoxErrorTally::new(nc);
    let (mut pre, mut inf, mut post) = (0.0, 0.0, 0.0);
    let mut provider = det.provider().to_string();
    for (k, img_path) in images.iter().enumerate() {
        if let Some(c) = ctl {
            c.check()?;
            c.set_progress(
                k as f64 / images.len() as f64,
                img_path.display().to_string(),
            );
        }
        let (img, _) = crate::detect::load_image_for_detection(img_path)?;
        let frame = facts.get(&same_file_key(img_path));
        let mut dopts = DetectOptions::ultralytics_val();
        dopts.floor_conf = opts.conf;
        let pixel_size = if opts.calibrated {
            let f = frame.with_context(|| {
                format!(
                    "{}: no pixel size for this frame (calibrated scoring needs the sidecar \
                     that `export` lists in manifest.json)",
                    img_path.display()
                )
            })?;
            // How `detect` fits a calibrated frame to the model: its own defaults, not a copy.
            let app = DetectOptions::default();
            dopts.fit = app.fit;
            dopts.match_model_scale = app.match_model_scale;
            dopts.one_pass = app.one_pass;
            Some(f.pixel_size)
        } else {
            None
        };
        if img.min_max().1 > 255.0 {
            dopts.intensity = Intensity::Fixed {
                lo: 0.0,
                hi: 65535.0,
            };
        }
        let filter = FilterOptions {
            conf: opts.conf,
            iou: opts.iou,
            agnostic: false,
            max_det: Some(opts.max_det),
            merge_lines: if opts.merge_boundaries {
                crate::detect::line_class(det.class_names())
            } else {
                None
            },
        };
        let r = det
            .detect(&img, pixel_size, &dopts)
            .with_context(|| format!("detecting in {}", img_path.display()))?;
        // As `detect` (`frame::model_scales`): a calibrated frame the model trained at the
        // pixel size of also runs as sampled, with every copy.
        let own =
            crate::detect::own_sampling_scale(det.info(), pixel_size).filter(|_| opts.own_sampling);
        let mut scales = opts.tta_scales.clone();
        if let Some(o) = own {
            crate::frame::add_scale(&mut scales, o);
        }
        let identity = vec![crate::geometry::Dihedral::IDENTITY];
        let copies = match (&opts.tta, own) {
            (Some(c), _) => Some(c),
            (None, Some(_)) => Some(&identity),
            (None, None) => None,
        };
        let (dets, timings) = match copies {
            Some(copies) => {
                let plan = crate::detect::tta::TtaPlan {
                    copies,
                    scales: &scales,
                    cuts: &opts.tta_cuts,
                    filter,
                    final_conf: 0.0,
                };
                let f =
                    crate::detect::tta::detect_tta(det, &img, pixel_size, &dopts, &plan, Some(&r))
                        .with_context(|| format!("detecting in {}", img_path.display()))?;
                (f.detections, f.timings)
            }
            None => (filter_with(&r.candidates, &filter), r.timings),
        };
        let t = std::time::Instant::now();
        let names = det.class_names();
        // Uncalibrated, the analysis reads the frame's scale from its lattice, as it does for
        // a file without a pixel size.
        let analysis = (opts.method != crate::detect::combine::DetectMethod::Model)
            .then(|| {
                let crystal = frame.map_or(&opts.crystal, |f| &f.crystal);
                let params = crate::lattice::LatticeParams {
                    point_defects: opts.method.uses_lattice_points(),
                    ..crate::lattice::LatticeParams::new(
                        crystal.clone(),
                        pixel_size.map(|p| p.nm_per_px),
                    )
                };
                crate::lattice::analyse(&img, &params).ok()
            })
            .flatten();
        let finishing = crate::frame::Finishing {
            method: opts.method,
            join_conf: match opts.method {
                crate::detect::combine::DetectMethod::Both => opts.join_conf.max(opts.conf),
                _ => opts.conf,
            },
            clip_boundaries: opts.clip_boundaries,
            fit_cells: opts.fit_cells.as_ref(),
            points_off_boundaries: opts.points_off_boundaries,
            points_inside_frame: opts.points_inside_frame,
            iou: opts.iou,
        };
        let mut dets = crate::frame::finish_frame(
            &img,
            dets,
            Some(&r),
            analysis.as_ref(),
            names,
            &finishing,
            &mut Default::default(),
        )
        .detections;
        pre += timings.preprocess_ms;
        inf += timings.inference_ms;
        post += timings.postprocess_ms + t.elapsed().as_secs_f64() * 1e3;
        provider = r.provider.clone();

        let label_file = label_path_for(img_path);
        let labels = if label_file.is_file() {
            read_labels(&label_file, &validation)?
        } else {
            Vec::new()
        };
        let (w, h) = (img.width as f64, img.height as f64);
        let gts: Vec<(OrientedBox, usize)> = labels
            .iter()
            .map(|l| (l.to_box_px(w, h), l.class))
            .collect();
        if let (Some(dc), Some(sum)) = (&dont_care, dc_summary.as_mut()) {
            let hidden = dc.of(img_path);
            sum.hidden_defects += hidden.len();
            sum.detections_left_out += dont_care::drop_dont_care(&mut dets, &gts, hidden);
        }
        if let Some(dir) = &opts.save_detections {
            let stem = img_path.file_stem().unwrap_or_default();
            let path = dir.join(stem).with_extension("txt");
            crate::fsio::atomic_write(&path, scored_lines(&dets, w, h).as_bytes())?;
        }
        let mut seen = vec![false; nc];
        for (_, c) in &gts {
            seen[*c] = true;
        }
        for (c, s) in seen.iter().enumerate() {
            per_image_classes[c] += *s as usize;
        }
        let iou: Vec<Vec<f64>> = gts
            .iter()
            .map(|(g, _)| {
                dets.iter()
                    .map(|d| crate::geometry::probiou(g, &d.obb))
                    .collect()
            })
            .collect();
        let pc: Vec<usize> = dets.iter().map(|d| d.class).collect();
        let tc: Vec<usize> = gts.iter().map(|g| g.1).collect();
        let frame_tp = if gts.is_empty() {
            vec![[false; metrics::N_IOU]; dets.len()]
        } else {
            metrics::match_predictions(&pc, &tc, &iou)
        };
        frames.push(bootstrap::ScoredFrame {
            tp: frame_tp,
            conf: dets.iter().map(|d| d.confidence).collect(),
            pred_cls: pc,
            target_cls: tc,
        });
        let scored: Vec<ScoredBox> = dets
            .iter()
            .map(|d| ScoredBox {
                obb: d.obb,
                conf: d.confidence,
                class: d.class,
            })
            .collect();
        cm.process_batch(&scored, &gts);
        geometry.add_image(&scored, &gts);
    }
    let ap = bootstrap::ap_of(&frames);
    let n_img = images.len() as f64;
    let per_class = ap
        .classes
        .iter()
        .enumerate()
        .map(|(i, &c)| ClassRow {
            class: c,
            name: det.class_names()[c].clone(),
            images: per_image_classes[c],
            instances: ap.n_labels[i],
            precision: ap.p[i],
            recall: ap.r[i],
            map50: ap.ap[i][0],
            map50_95: ap.class_ap(i),
        })
        .collect();
    Ok(EvalReport {
        model: det.info().path.clone(),
        dataset: spec.yaml.clone(),
        split: opts.split.clone(),
        names: det.class_names().to_vec(),
        images: images.len(),
        instances: frames.iter().map(|f| f.target_cls.len()).sum(),
        conf: opts.conf,
        iou: opts.iou,
        precision: ap.mp(),
        recall: ap.mr(),
        map50: ap.map50(),
        map75: ap.map75(),
        map50_95: ap.map(),
        per_class,
        ap,
        confusion: cm,
        box_errors: geometry.summary(det.class_names()),
        dont_care: dc_summary,
        provider,
        preprocess_ms: pre / n_img,
        inference_ms: inf / n_img,
        postprocess_ms: post / n_img,
        frames,
        bootstrap: None,
    })
}

/// Ultralytics' `save_txt` + `save_conf` text: a label line with the confidence last.
fn scored_lines(dets: &[crate::detect::Detection], w: f64, h: f64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for d in dets {
        let l = crate::formats::yolo::ObbLabel::from_box_px(d.class, &d.obb, w, h);
        let line = crate::formats::yolo::format_labels(std::slice::from_ref(&l));
        let _ = writeln!(s, "{} {:.5}", line.trim_end(), d.confidence);
    }
    s
}

/// An f32 setting as the decimal the user typed (0.01, not 0.009999999776).
fn round6(v: f32) -> f64 {
    (v as f64 * 1e6).round() / 1e6
}

impl EvalReport {
    /// Percentile-bootstrap intervals of mAP50 and mAP50-95 over the split's frames
    /// ([`bootstrap::bootstrap`]), kept in the report (its JSON and card entry) and returned.
    pub fn bootstrap(
        &mut self,
        resamples: usize,
        level: f64,
        seed: u64,
        targets: Option<(f64, f64)>,
    ) -> Option<&bootstrap::BootstrapCi> {
        self.bootstrap = bootstrap::bootstrap(&self.frames, resamples, level, seed, targets);
        self.bootstrap.as_ref()
    }

    /// The table Ultralytics prints (`%22s%11s...`), then the confusion matrix.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:>22}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}\n",
            "Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP50-95)"
        );
        let row = |name: &str, im: usize, inst: usize, p: f64, r: f64, a50: f64, a: f64| {
            format!("{name:>22}{im:>11}{inst:>11}{p:>11.3}{r:>11.3}{a50:>11.3}{a:>11.3}\n")
        };
        s += &row(
            "all",
            self.images,
            self.instances,
            self.precision,
            self.recall,
            self.map50,
            self.map50_95,
        );
        for c in &self.per_class {
            s += &row(
                &c.name,
                c.images,
                c.instances,
                c.precision,
                c.recall,
                c.map50,
                c.map50_95,
            );
        }
        s += &format!(
            "\nConfusion matrix (rows predicted, columns true; conf > {}, ProbIoU > {}):\n",
            self.confusion.conf, self.confusion.iou_thres
        );
        let mut labels: Vec<String> = self.names.clone();
        labels.push("background".into());
        let wdt = labels.iter().map(|l| l.len()).max().unwrap_or(10).max(6) + 2;
        s += &format!("{:>wdt$}", "");
        for l in &labels {
            s += &format!("{l:>wdt$}");
        }
        s.push('\n');
        for (i, r) in self.confusion.matrix.iter().enumerate() {
            s += &format!("{:>wdt$}", labels[i]);
            for v in r {
                s += &format!("{v:>wdt$}");
            }
            s.push('\n');
        }
        s += &box_errors::table(&self.box_errors);
        if let Some(d) = &self.dont_care {
            s += &format!(
                "Don't care: {} detections on {} point defects hidden below d′ {} left out of the \
                 scoring (neither true nor false)\n",
                d.detections_left_out, d.hidden_defects, d.min_detectability
            );
        }
        s += &format!(
            "Speed: {:.1}ms preprocess, {:.1}ms inference, {:.1}ms postprocess per image ({})\n",
            self.preprocess_ms, self.inference_ms, self.postprocess_ms, self.provider
        );
        s
    }

    pub fn to_json(&self) -> Value {
        let mut labels: Vec<String> = self.names.clone();
        labels.push("background".into());
        json!({
            "model": self.model.display().to_string(),
            "dataset": self.dataset.display().to_string(),
            "split": self.split,
            "images": self.images,
            "instances": self.instances,
            "conf": round6(self.conf),
            "iou": self.iou,
            "metrics": {
                "precision": self.precision,
                "recall": self.recall,
                "mAP50": self.map50,
                "mAP75": self.map75,
                "mAP50-95": self.map50_95,
            },
            "per_class": self.per_class,
            "best_f1_conf": self.ap.best_conf,
            "confusion_matrix": {
                "labels": labels,
                "rows": "predicted",
                "columns": "true",
                "conf": round6(self.confusion.conf),
                "iou": self.confusion.iou_thres,
                "matrix": self.confusion.matrix,
            },
            "box_geometry": self.box_errors,
            "dont_care": self.dont_care,
            "bootstrap": self.bootstrap,
            "provider": self.provider,
            "speed_ms_per_image": {
                "preprocess": self.preprocess_ms,
                "inference": self.inference_ms,
                "postprocess": self.postprocess_ms,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_yaml_forms() {
        let y = "# dataset\npath: /data/cdte  # root\ntrain: images/train\nval: images/val\ntest: [images/test, extra/test]\nnames:\n  0: grain_boundary\n  1: 'vacancy'\n  2: interstitial\n";
        let s = DatasetSpec::parse(y, Path::new("/x/data.yaml")).unwrap();
        assert_eq!(s.root, PathBuf::from("/data/cdte"));
        assert_eq!(s.names, vec!["grain_boundary", "vacancy", "interstitial"]);
        assert_eq!(s.splits["test"], vec!["images/test", "extra/test"]);
        let y = "train: images/train\nnames: ['a', 'b']\n";
        let s = DatasetSpec::parse(y, Path::new("/x/data.yaml")).unwrap();
        assert_eq!(s.root, PathBuf::from("/x"));
        assert_eq!(s.names, vec!["a", "b"]);
        let y = "path: rel\nnames: {0: a, 1: 'b'}\n";
        let s = DatasetSpec::parse(y, Path::new("/x/data.yaml")).unwrap();
        assert_eq!(
            (s.root, s.names),
            (PathBuf::from("/x/rel"), vec!["a".into(), "b".into()])
        );
        let y = "names: {0: a, 2: c}\n";
        assert!(DatasetSpec::parse(y, Path::new("/x/data.yaml")).is_err());
        let y = "path: rel\nnames: {0: 'a', 1: 'b'}\nnc: 3\n";
        let e = DatasetSpec::parse(y, Path::new("/x/data.yaml")).unwrap_err();
        assert!(e.to_string().contains("nc 3"), "{e}");
        let y = "names:\n  - x\n  - y\n";
        let s = DatasetSpec::parse(y, Path::new("/x/d.yaml")).unwrap();
        assert_eq!(s.names, vec!["x", "y"]);
    }

    #[test]
    fn huge_class_ids_in_data_yaml_are_refused() {
        // Both used to resize a vector to 10^15 entries and abort.
        for y in [
            "names: {999999999999999: a}\n",
            "names:\n  999999999999999: a\n",
        ] {
            let e = DatasetSpec::parse(y, Path::new("/x/data.yaml")).unwrap_err();
            let msg = format!("{e:#}");
            assert!(
                msg.contains("999999999999999") && msg.contains("beyond"),
                "{msg}"
            );
        }
    }

    /// The tiny transparent model (tests/data) on a two-image dataset: one labelled block
    /// found exactly, one unlabelled dimmer block as a false positive.
    #[test]
    fn evaluate_tiny_model_on_a_tiny_dataset() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        std::fs::create_dir_all(d.join("images/test")).unwrap();
        std::fs::create_dir_all(d.join("labels/test")).unwrap();
        std::fs::write(
            d.join("data.yaml"),
            format!(
                "path: {}\ntest: images/test\nnames:\n  0: grain_boundary\n  1: vacancy\n  2: interstitial\n",
                d.display()
            ),
        )
        .unwrap();
        let png = |name: &str, value: u8| {
            let mut px = vec![0u8; 64 * 64];
            for y in 24..32 {
                for x in 40..48 {
                    px[y * 64 + x] = value;
                }
            }
            image::GrayImage::from_raw(64, 64, px)
                .unwrap()
                .save(d.join("images/test").join(name))
                .unwrap();
        };
        png("a.png", 255);
        png("b.png", 200);
        let gt = OrientedBox::new(44.0, 28.0, 6.0, 4.0, 0.0);
        crate::dataset::yolo::write_labels(
            &d.join("labels/test/a.txt"),
            &[crate::dataset::yolo::ObbLabel::from_box_px(
                2, &gt, 64.0, 64.0,
            )],
        )
        .unwrap();
        let det = crate::test_support::cpu_detector("tests/data/tiny_obb.onnx");
        let r = evaluate(&det, d, &EvalOptions::default(), None).unwrap();
        assert_eq!((r.images, r.instances), (2, 1));
        // Only interstitial has labels, so it is the only class in the means.
        assert_eq!(r.per_class.len(), 1);
        let c = &r.per_class[0];
        assert_eq!((c.class, c.images, c.instances), (2, 1, 1));
        // TP at 1.0 then FP at 200/255: AP 0.995 at every IoU, P = R = 1 at the F1 peak.
        assert!((r.map50 - 0.995).abs() < 1e-12 && (r.map50_95 - 0.995).abs() < 1e-12);
        assert_eq!((r.precision, r.recall), (1.0, 1.0));
        // The block in b.png is a background false positive; the vacancy candidate at exactly
        // 0.25 is not above the matrix's 0.25 threshold.
        let m = &r.confusion.matrix;
        assert_eq!(m[2][2], 1.0);
        assert_eq!(m[2][3], 1.0);
        assert_eq!(m.iter().flatten().sum::<f64>(), 2.0);
        let table = r.table();
        assert!(
            table.contains("interstitial") && table.contains("0.995"),
            "{table}"
        );
        assert_eq!(r.to_json()["metrics"]["mAP50"], 0.995);
        // With the model run on the mirrored and half-turned copies the block is found in
        // each and the fused box is the same block: the scores stand. (Not the quarter turns:
        // this tiny model draws every box 6 × 4 along the image rows, whatever it sees.)
        let copies = crate::detect::tta::default_transforms()
            .into_iter()
            .filter(|t| t.quarter_turns % 2 == 0)
            .collect();
        let tta = evaluate(
            &det,
            d,
            &EvalOptions {
                tta: Some(copies),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!((tta.map50_95 - 0.995).abs() < 1e-12, "{}", tta.table());
        assert_eq!(tta.box_errors.len(), 1);
        assert!(tta.box_errors[0].median_iou > 0.99, "{:?}", tta.box_errors);
        // The scored detections, saved frame by frame, read back as the boxes scored with
        // their confidences: the true positive at 1.0 and b.png's false one at 200/255.
        let saved = tempfile::tempdir().unwrap();
        let with_saved = evaluate(
            &det,
            d,
            &EvalOptions {
                save_detections: Some(saved.path().join("dets")),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(with_saved.map50, r.map50);
        let mut confs = vec![];
        for stem in ["a", "b"] {
            let text =
                std::fs::read_to_string(saved.path().join("dets").join(format!("{stem}.txt")))
                    .unwrap_or_else(|e| panic!("{stem}: {e}"));
            for line in text.lines() {
                let (label, conf) = line.rsplit_once(' ').unwrap();
                let l = crate::formats::yolo::parse_labels(label, stem, &Validation::default())
                    .unwrap_or_else(|e| panic!("{line}: {e}"));
                assert_eq!(l.len(), 1);
                confs.push((stem, l[0].class, conf.parse::<f32>().unwrap()));
            }
        }
        assert!(confs.contains(&("a", 2, 1.0)), "{confs:?}");
        assert!(
            confs
                .iter()
                .any(|&(s, c, v)| s == "b" && c == 2 && (v - 200.0 / 255.0).abs() < 1e-4),
            "{confs:?}"
        );
        // A missing split is a clear error.
        let e = evaluate(
            &det,
            d,
            &EvalOptions {
                split: "val".into(),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no 'val' split"), "{e}");
        // Don't-care regions come from an export's manifest; a hand-made set has none to read.
        let e = evaluate(
            &det,
            d,
            &EvalOptions {
                hidden_dont_care: true,
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("manifest.json"), "{e:#}");
        // So is every frame's pixel size.
        let e = evaluate(
            &det,
            d,
            &EvalOptions {
                calibrated: true,
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("no pixel size"), "{e:#}");
    }

    /// The lattice analysis of `eval --method lattice|both` reads each synthetic frame as the
    /// crystal its sidecar names (the realistic recipe mixes CdTe, Si and GaAs), and
    /// `eval --calibrated` gives it the pixel size its sidecar records.
    #[test]
    fn frame_facts_come_from_each_frames_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ds");
        let cfg = crate::dataset::export::DatasetConfig {
            n: 6,
            seed: 11,
            size: 96,
            augment: vec!["r0".into(), "r90".into()],
            ..Default::default()
        };
        crate::dataset::export::export(
            &cfg,
            &out,
            &Default::default(),
            &crate::jobs::JobControl::detached(),
        )
        .unwrap();
        let m = crate::dataset::export::Manifest::read(&out).unwrap();
        // Reached through a spelling of the folder other than the manifest's.
        let facts = frame_facts(&out.join("images").join(".."));
        assert_eq!(facts.len(), m.images.len());
        let (mut names, mut sizes) = (std::collections::BTreeSet::new(), Vec::new());
        for rec in &m.images {
            let base = &m.base_images[rec.base_index];
            let preset = crate::synth::crystal::Preset::named_crystal(&base.preset)
                .unwrap_or_else(|e| panic!("{e:#}"));
            let got = &facts[&same_file_key(&out.join(&rec.file))];
            assert_eq!(got.crystal, preset.spec(), "{}", rec.file);
            assert!(
                (got.pixel_size.nm_per_px - base.pixel_size_pm / 1000.0).abs() < 1e-12,
                "{}: {:?} against {} pm",
                rec.file,
                got.pixel_size,
                base.pixel_size_pm
            );
            names.insert(got.crystal.name.clone());
            sizes.push(got.pixel_size.nm_per_px);
        }
        assert!(names.len() > 1, "one crystal only: {names:?}");
        sizes.sort_by(f64::total_cmp);
        assert!(
            sizes[0] < sizes[sizes.len() - 1],
            "one pixel size: {sizes:?}"
        );
        assert!(frame_facts(dir.path()).is_empty());
    }

    /// The project venv's Python that `scripts/setup.sh` makes; `None` (and a printed reason)
    /// where it is missing, so the script tests are skipped rather than failed.
    fn venv_python() -> Option<PathBuf> {
        let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        if python.is_file() {
            Some(python)
        } else {
            eprintln!("skipped: no .venv/bin/python (scripts/setup.sh makes it)");
            None
        }
    }

    /// `n` frames of the realistic recipe, all in the test split, labelled down to d′ 5 (the
    /// sidecars keep every defect with its d′), as the 400-frame sets are exported.
    fn export_d5_test_set(out: &Path, n: usize, seed: u64, size: usize) -> PathBuf {
        let cfg = crate::dataset::export::DatasetConfig {
            n,
            seed,
            size,
            augment: vec!["r0".into()],
            split: crate::dataset::export::SplitRatios {
                train: 0.0,
                val: 0.0,
                test: 1.0,
            },
            min_detectability: Some(5.0),
            ..Default::default()
        };
        let ctl = crate::jobs::JobControl::detached();
        crate::dataset::export::export(&cfg, out, &Default::default(), &ctl).unwrap();
        out.to_path_buf()
    }

    /// `training/loss_budget.py` prices each kind of false box by recomputing mAP from what
    /// `eval --save-detections` wrote: with nothing left out it must give `eval`'s own figures
    /// (the shipped model on frames of the realistic recipe, several classes, true and false
    /// boxes), and leaving every false box out the 0.995 ceiling of the interpolated AP.
    #[test]
    fn the_loss_budget_script_recomputes_evals_map() {
        let Some(python) = venv_python() else {
            return;
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let ds = export_d5_test_set(&dir.path().join("ds"), 6, 20261205, 384);
        let det = crate::test_support::cpu_detector("models/cdte-yolo11n-obb.onnx");
        // Scores the frames as the card does (with or without the edge rule), saving the
        // detections, and runs the script on them.
        let score_and_budget = |name: &str, points_inside_frame: bool| {
            let dets = dir.path().join(name);
            let r = evaluate(
                &det,
                &ds,
                &EvalOptions {
                    merge_boundaries: true,
                    fit_cells: Some(Default::default()),
                    clip_boundaries: true,
                    points_inside_frame,
                    save_detections: Some(dets.clone()),
                    ..Default::default()
                },
                None,
            )
            .unwrap();
            let out = dir.path().join(name).with_extension("json");
            let run = std::process::Command::new(&python)
                .arg(root.join("training/loss_budget.py"))
                .args([&ds, &dets])
                .arg("--json")
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
            (r, dets, v)
        };
        let (r, dets, v) = score_and_budget("dets", false);
        assert!(r.map50 > 0.3 && r.map50 < 0.995, "{}", r.table());
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(
            close(v["map50"].as_f64().unwrap(), r.map50),
            "{v} {}",
            r.table()
        );
        assert!(close(v["map50_95"].as_f64().unwrap(), r.map50_95), "{v}");
        for c in &r.per_class {
            assert!(
                close(v["per_class"][&c.name].as_f64().unwrap(), c.map50),
                "{v}"
            );
        }
        assert!(
            close(v["every_kind_left_out"].as_f64().unwrap(), 0.995),
            "{v}"
        );
        // Its "edge" kind is the boxes `detect`'s edge rule drops: scored with the rule, the
        // point boxes it counted are gone and no others.
        let edge = |v: &Value| {
            v["left_out"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["kind"] == "edge")
                .expect("an edge row")["boxes"]
                .as_u64()
                .unwrap() as usize
        };
        let point_boxes = |dir: &Path| -> usize {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .map(|t| t.lines().filter(|l| !l.starts_with("0 ")).count())
                .sum()
        };
        let (_, dets_ruled, ruled) = score_and_budget("dets-ruled", true);
        assert!(
            edge(&v) > 0,
            "these frames draw point boxes across the edge: {v}"
        );
        assert_eq!(edge(&ruled), 0, "{ruled}");
        assert_eq!(point_boxes(&dets) - point_boxes(&dets_ruled), edge(&v));
    }

    /// `training/ideal_observer.py` bounds the synthetic targets: it must read the same labels
    /// the exporter wrote (its d′ ≥ 5 counts are the label files' counts), and the observer
    /// must lose more on every defect than on the ones the dose shows.
    #[test]
    fn the_ideal_observer_script_reads_the_exporters_labels() {
        let Some(python) = venv_python() else {
            return;
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        let ds = export_d5_test_set(&dir.path().join("ds"), 12, 20261207, 256);
        let mut label_counts = [0usize; 3];
        for e in std::fs::read_dir(ds.join("labels/test")).unwrap() {
            let labels =
                crate::formats::yolo::read_labels(&e.unwrap().path(), &Default::default()).unwrap();
            for l in labels {
                label_counts[l.class] += 1;
            }
        }
        let run = |extra: &[&str]| -> Value {
            let out = std::process::Command::new(&python)
                .arg(root.join("training/ideal_observer.py"))
                .arg(&ds)
                .args(["--json", "--repeats", "5"])
                .args(extra)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let shown = run(&[]);
        let every = run(&["--all-defects"]);
        for (k, c) in [(1, "vacancy"), (2, "interstitial")] {
            assert_eq!(
                shown["counts"][c]["labelled"].as_u64().unwrap() as usize,
                label_counts[k],
                "{c}: {shown}"
            );
            let all = every["counts"][c]["labelled"].as_u64().unwrap();
            assert_eq!(all, every["counts"][c]["defects"].as_u64().unwrap());
            assert!(all as usize >= label_counts[k]);
        }
        let (m5, m_all) = (
            shown["map50"].as_f64().unwrap(),
            every["map50"].as_f64().unwrap(),
        );
        assert!(m5 > 0.9 && m5 <= 1.0, "{shown}");
        assert!(m_all <= m5, "{m_all} > {m5}");
    }

    #[test]
    fn label_paths_like_ultralytics() {
        assert_eq!(
            label_path_for(Path::new("/d/images/test/a.png")),
            PathBuf::from("/d/labels/test/a.txt")
        );
        assert_eq!(
            label_path_for(Path::new("/images/d/images/x.tif")),
            PathBuf::from("/images/d/labels/x.txt")
        );
    }
}
