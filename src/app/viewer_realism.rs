//! The Viewer's realism section: the `realism` statistics of the current frame (measured on a
//! background thread), the pixel size estimated from the lattice for files without a
//! calibration, the warning when the frame lies outside what the loaded model was trained on,
//! and "Make a matched dataset from this image".

use defect_detector::dataset::export::{DatasetConfig, ExportSummary, ExportTarget};
use defect_detector::dataset::randomize::DomainRandomization;
use defect_detector::frame::CalibrationConflict;
use defect_detector::jobs::{Job, Latest, Notify};
use defect_detector::raster::{ImageF32, PixelSize};
use defect_detector::realism::{self, CalibrationSource, Outside, RealismStats, TrainingRealism};
use defect_detector::synth::crystal::Preset;
use egui::Color32;
use std::path::{Path, PathBuf};

/// Base images of a matched dataset made from the Viewer (each with 4 symmetries).
const MATCHED_BASE_IMAGES: usize = 100;

pub struct RealismPanel {
    job: Latest<(RealismStats, Option<CalibrationConflict>)>,
    /// The image generation the last request was for, and the result for it.
    requested_for: usize,
    pub result: Option<(usize, Result<RealismStats, String>)>,
    /// A file calibration the frame's lattice contradicts, for the image generation measured.
    conflict: Option<(usize, CalibrationConflict)>,
    /// The loaded model's training ranges (None: the card has none, so no warning).
    card_for: String,
    card: Result<Option<TrainingRealism>, String>,
    match_job: Option<Job<(PathBuf, ExportSummary)>>,
    pub match_status: String,
    notify: Option<Notify>,
}

impl RealismPanel {
    pub fn new(notify: Option<Notify>) -> Self {
        Self {
            job: Latest::new("realism", notify.clone()),
            requested_for: 0,
            result: None,
            conflict: None,
            card_for: String::new(),
            card: Ok(None),
            match_job: None,
            match_status: String::new(),
            notify,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.job.is_busy() || self.match_job.is_some()
    }

    /// Measures a newly shown image.
    pub fn request(
        &mut self,
        generation: usize,
        img: &ImageF32,
        file_nm: Option<f64>,
        user_nm: Option<f64>,
        crystal: Preset,
    ) {
        self.requested_for = generation;
        self.result = None;
        self.conflict = None;
        let img = img.clone();
        self.job.request(move |_| {
            let spec = crystal.spec();
            let stats = realism::measure(&img, &spec, file_nm, user_nm)?;
            // The file's calibration is checked against the lattice; a typed one is the
            // user's word.
            let conflict = match (file_nm, user_nm) {
                (Some(nm_per_px), None) => defect_detector::frame::check_file_calibration(
                    &img,
                    &spec,
                    PixelSize { nm_per_px },
                ),
                _ => None,
            };
            Ok((stats, conflict))
        });
    }

    /// Call each frame; true when a new measurement arrived.
    pub fn poll(&mut self) -> bool {
        let mut arrived = false;
        if let Some(r) = self.job.poll() {
            let g = self.requested_for;
            let (stats, conflict) = match r {
                Ok((s, c)) => (Ok(s), c),
                Err(e) => (Err(format!("{e:#}")), None),
            };
            self.result = Some((g, stats));
            self.conflict = conflict.map(|c| (g, c));
            arrived = true;
        }
        if let Some(job) = self.match_job.take() {
            match job.try_take() {
                Ok(Ok((out, s))) => {
                    self.match_status =
                        format!("Matched dataset: {} images in {}", s.images, out.display());
                }
                Ok(Err(e)) => self.match_status = format!("Matched dataset failed: {e:#}"),
                Err(job) => {
                    let c = job.control();
                    self.match_status = format!(
                        "Making a matched dataset… {:.0} % {}",
                        100.0 * c.progress(),
                        c.message()
                    );
                    self.match_job = Some(job);
                }
            }
        }
        arrived
    }

    /// The measurement of image `generation`, if it succeeded.
    pub fn stats(&self, generation: usize) -> Option<&RealismStats> {
        match &self.result {
            Some((g, Ok(s))) if *g == generation => Some(s),
            _ => None,
        }
    }

    /// The pixel size the lattice gives, for a file without calibration.
    pub fn lattice_nm_per_px(&self, generation: usize) -> Option<f64> {
        self.stats(generation)
            .filter(|s| s.nm_per_px_source == CalibrationSource::Lattice)
            .map(|s| s.nm_per_px)
    }

    /// The file calibration of image `generation` that its lattice contradicts, if any.
    pub fn conflict(&self, generation: usize) -> Option<CalibrationConflict> {
        self.conflict
            .filter(|(g, _)| *g == generation)
            .map(|(_, c)| c)
    }

    /// Whether an uncalibrated image is still waiting for its lattice estimate.
    pub fn pending(&self, generation: usize) -> bool {
        self.requested_for == generation && self.result.is_none()
    }

    /// Re-reads the model card when the model changes.
    pub fn set_model(&mut self, model_path: &str) {
        if self.card_for == model_path {
            return;
        }
        self.card_for = model_path.to_string();
        self.card = if model_path.is_empty() {
            Ok(None)
        } else {
            realism::model_training_realism(Path::new(model_path)).map_err(|e| format!("{e:#}"))
        };
    }

    /// What the loaded model was trained on, from its card: crystal, number of images and
    /// pixel-size range, e.g. "synthetic cdte110 frames (30 measured), 7–29 pm/px".
    pub fn trained_on(&self) -> Option<String> {
        let Ok(Some(card)) = &self.card else {
            return None;
        };
        let px = card
            .ranges
            .iter()
            .find(|r| r.name == "pixel_size_pm")
            .map(|r| format!(", {:.0}–{:.0} pm/px", r.p5, r.p95))
            .unwrap_or_default();
        let fwhm = card
            .ranges
            .iter()
            .find(|r| r.name == "column_fwhm_a")
            .map(|r| format!(", columns {:.2}–{:.2} Å wide", r.p5, r.p95))
            .unwrap_or_default();
        Some(format!(
            "Trained on synthetic {} frames{px}{fwhm} (5–95 % of {} training images)",
            card.crystal, card.images
        ))
    }

    /// Statistics of the frame outside the model's training ranges.
    pub fn outside(&self, generation: usize) -> Vec<Outside> {
        match (&self.card, self.stats(generation)) {
            (Ok(Some(card)), Some(s)) => realism::outside(s, &card.ranges),
            _ => Vec::new(),
        }
    }

    /// The out-of-distribution banner, drawn above the image.
    pub fn banner(ui: &mut egui::Ui, out: &[Outside]) {
        if out.is_empty() {
            return;
        }
        let list: Vec<String> = out.iter().map(|o| o.to_string()).collect();
        ui.colored_label(
            Color32::from_rgb(230, 159, 0),
            format!(
                "Unlike the model's training data: {}. Detections may be unreliable; \
                 a matched dataset (Realism, left) can fix this.",
                list.join(", ")
            ),
        );
    }

    /// The side-panel section.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        generation: usize,
        image_path: Option<&Path>,
        crystal: Preset,
    ) {
        match &self.card {
            Ok(Some(c)) => {
                ui.label(format!(
                    "Model trained on {} ({} images measured)",
                    c.crystal, c.images
                ))
                .on_hover_text(&c.source);
                if let Some(r) = c.ranges.iter().find(|r| r.name == "pixel_size_pm") {
                    ui.label(format!("its pixel sizes: {:.1}–{:.1} pm/px", r.p5, r.p95));
                }
            }
            Ok(None) => {
                ui.label("The model card records no training ranges: no realism warning.");
            }
            Err(e) => {
                ui.colored_label(Color32::from_rgb(213, 94, 0), e);
            }
        }
        match &self.result {
            Some((g, Ok(s))) if *g == generation => {
                let out: Vec<String> = self
                    .outside(generation)
                    .iter()
                    .map(|o| o.name.clone())
                    .collect();
                egui::Grid::new("realism-grid")
                    .num_columns(2)
                    .show(ui, |ui| {
                        for v in s.values() {
                            let flag = out.iter().any(|n| n == v.name);
                            let text = realism::fmt_num(v.value);
                            ui.label(v.label);
                            if flag {
                                ui.colored_label(
                                    Color32::from_rgb(230, 159, 0),
                                    format!("{text}  (outside)"),
                                );
                            } else {
                                ui.label(text);
                            }
                            ui.end_row();
                        }
                    });
                if s.eight_bit {
                    ui.label("8-bit export: background and contrast describe a display window.");
                }
                match (&s.lattice, s.lattice_crop) {
                    (None, _) => {
                        ui.label("No clear lattice: no scan statistics.");
                    }
                    (Some(_), Some([x, y, n])) => {
                        ui.label(format!(
                            "Lattice and scan statistics from one grain: the {n}² crop at \
                             ({x}, {y}); the whole frame holds no single clear lattice."
                        ));
                    }
                    (Some(_), None) => {}
                }
            }
            Some((g, Err(e))) if *g == generation => {
                ui.colored_label(Color32::from_rgb(213, 94, 0), format!("Not measured: {e}"));
            }
            _ if self.job.is_busy() => {
                ui.label("Measuring…");
            }
            _ => {}
        }
        let frame = self.stats(generation).cloned();
        let can = frame.is_some() && image_path.is_some() && self.match_job.is_none();
        if ui
            .add_enabled(
                can,
                egui::Button::new("Make a matched dataset from this image"),
            )
            .on_hover_text(format!(
                "Export {MATCHED_BASE_IMAGES} base images (×4 symmetries) whose pixel size, \
                 column width, background, noise and scan distortions are centred on this \
                 frame's, beside the image, for fine-tuning to this microscope"
            ))
            .clicked()
            && let (Some(frame), Some(path)) = (frame, image_path)
        {
            self.start_match(frame, path, crystal);
        }
        if !self.match_status.is_empty() {
            ui.label(&self.match_status);
        }
    }

    fn start_match(&mut self, frame: RealismStats, image: &Path, crystal: Preset) {
        let stem = image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "frame".into());
        let dir = image.parent().unwrap_or(Path::new("."));
        // A fresh folder name: export refuses to write into a non-empty one.
        let out = (0..1000)
            .map(|k| {
                if k == 0 {
                    dir.join(format!("{stem}-matched-dataset"))
                } else {
                    dir.join(format!("{stem}-matched-dataset-{k}"))
                }
            })
            .find(|p| !p.exists())
            .unwrap_or_else(|| dir.join(format!("{stem}-matched-dataset-new")));
        self.match_status = format!("Making a matched dataset in {}…", out.display());
        self.match_job = Some(Job::spawn(
            "matched-dataset",
            self.notify.clone(),
            move |c| {
                c.set_progress(0.0, "matching the randomization");
                let report = defect_detector::dataset::like::matched_randomization(
                    &[frame],
                    crystal,
                    &DomainRandomization::default(),
                )?;
                let cfg = DatasetConfig {
                    n: MATCHED_BASE_IMAGES,
                    augment: defect_detector::dataset::export::parse_augment("r0,r90,f_r0,f_r90")?,
                    randomization: report.randomization.clone(),
                    ..DatasetConfig::default()
                };
                cfg.validate()?;
                let s = defect_detector::dataset::export::export(
                    &cfg,
                    &out,
                    &ExportTarget::default(),
                    c,
                )?;
                defect_detector::fsio::atomic_write(
                    &out.join("match.json"),
                    &serde_json::to_vec_pretty(&report)?,
                )?;
                Ok((out, s))
            },
        ));
    }
}
