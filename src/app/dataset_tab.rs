//! The Dataset tab: domain-randomization ranges, symmetries, splits and crops on the left;
//! example thumbnails of the current randomization, the export progress and a summary of the
//! last export in the middle. Export runs as a background job with progress, ETA and Cancel.

use super::canvas::{class_color32, paint_box};
use super::widgets::{class_key, count_range, folder_picker, span_range_speed};
use defect_detector::classes::DefectClass;
use defect_detector::dataset::export::{
    CropOptions, DatasetConfig, ExportSummary, ExportTarget, Split, SplitRatios, export,
    target_is_nonempty, target_problem,
};
use defect_detector::dataset::randomize::{
    DomainRandomization, Sampling, base_image_seed, draw_params_in,
};
use defect_detector::geometry::Dihedral;
use defect_detector::jobs::{Job, Latest, Notify, is_cancelled};
use defect_detector::synth::detectability::ROSE_SNR;
use defect_detector::synth::scene::DefectLabel;
use defect_detector::synth::{self, SynthParams};
use egui::{DragValue, Slider};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Side of the example images (px): about their size on screen in a 3-column layout, and
/// small enough that all of them render in well under a second.
const THUMB_SIZE: usize = 320;
/// Two full rows of 3 (or three of 2).
const THUMBS: usize = 6;
/// Narrowest an example may be drawn before the layout drops a column (points).
const MIN_THUMB_SIDE: f32 = 240.0;

/// What is remembered between runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetSettings {
    pub n: usize,
    pub seed: u64,
    pub size: usize,
    /// One flag per element of `Dihedral::all()`.
    pub augment: [bool; 8],
    pub split: SplitRatios,
    pub crop_enabled: bool,
    pub crop: CropOptions,
    pub dr: DomainRandomization,
    pub out_dir: String,
    /// Leave out the point defects the dose hides (ideal-observer SNR below `min_detectability`).
    pub detectable_only: bool,
    pub min_detectability: f64,
    /// Show every frame resampled to `fed_pm`, as the app feeds a calibrated frame to a model
    /// of that pixel size (`export --resample-to-pm`).
    pub as_fed: bool,
    pub fed_pm: f64,
}

impl Default for DatasetSettings {
    fn default() -> Self {
        let c = DatasetConfig::default();
        Self {
            n: c.n,
            seed: c.seed,
            size: c.size,
            augment: [true; 8],
            split: c.split,
            crop_enabled: false,
            crop: CropOptions::default(),
            dr: c.randomization,
            out_dir: "dataset".into(),
            detectable_only: false,
            min_detectability: ROSE_SNR,
            as_fed: false,
            fed_pm: 16.0,
        }
    }
}

impl DatasetSettings {
    pub fn config(&self) -> DatasetConfig {
        DatasetConfig {
            n: self.n,
            seed: self.seed,
            size: self.size,
            augment: Dihedral::all()
                .iter()
                .zip(self.augment)
                .filter(|(_, on)| *on)
                .map(|(d, _)| d.name())
                .collect(),
            split: self.split,
            crop: self.crop_enabled.then(|| self.crop.clone()),
            randomization: self.dr.clone(),
            sampling: Sampling::default(),
            base: SynthParams::default(),
            min_detectability: self.detectable_only.then_some(self.min_detectability),
            resample_to_pm: self.as_fed.then_some(self.fed_pm),
        }
    }
}

struct Thumb {
    texture: egui::TextureHandle,
    caption: String,
    labels: Vec<DefectLabel>,
}

/// One example as the background job hands it back. The image is rendered at the thumbnail
/// size, so its labels are already in thumbnail pixels.
struct ThumbData {
    gray: Vec<u8>,
    caption: String,
    labels: Vec<DefectLabel>,
}

pub struct DatasetTab {
    pub settings: DatasetSettings,
    job: Option<Job<ExportSummary>>,
    pick_job: Option<Job<Option<PathBuf>>>,
    /// The folder is not empty: waiting for the user to confirm overwriting it.
    confirm: Option<PathBuf>,
    /// The last finished export, or why it failed.
    pub last: Option<Result<ExportSummary, String>>,
    pub status: String,
    previews: Latest<Vec<ThumbData>>,
    /// What the examples show: randomization, seed, base images, and the pixel size they are
    /// fed at ("as the model is fed").
    requested: Option<(DomainRandomization, u64, usize, Option<f64>)>,
    thumbs: Vec<Thumb>,
    /// "Open in Review" was clicked: the shell switches tabs and opens this dataset.
    pub review_request: Option<PathBuf>,
}

impl DatasetTab {
    pub fn new(settings: DatasetSettings, notify: Option<Notify>) -> Self {
        Self {
            settings,
            job: None,
            pick_job: None,
            confirm: None,
            last: None,
            status: String::new(),
            previews: Latest::new("dataset-thumbs", notify),
            requested: None,
            thumbs: Vec::new(),
            review_request: None,
        }
    }

    pub fn is_exporting(&self) -> bool {
        self.job.is_some()
    }

    fn request_thumbs(&mut self) {
        let key = (
            self.settings.dr.clone(),
            self.settings.seed,
            self.settings.n,
            self.settings.as_fed.then_some(self.settings.fed_pm),
        );
        if self.requested.as_ref() == Some(&key) || self.settings.dr.validate().is_err() {
            return;
        }
        self.requested = Some(key.clone());
        let (dr, seed, n, fed) = key;
        self.previews.request(move |c| {
            let fed_cfg = DatasetConfig {
                size: THUMB_SIZE,
                resample_to_pm: fed,
                ..Default::default()
            };
            let base = SynthParams {
                width: THUMB_SIZE,
                height: THUMB_SIZE,
                ..Default::default()
            };
            let mut out = Vec::new();
            let strata = Sampling::default().strata(seed, n);
            for i in 0..THUMBS {
                c.check()?;
                // The same draws as the first base images of the dataset (at thumbnail size).
                let p = fed_cfg.as_fed(draw_params_in(
                    &base,
                    &dr,
                    base_image_seed(seed, i),
                    strata.as_ref().map(|s| s.of(i)),
                ));
                let mut s = synth::generate(&p)?;
                // Cheap at this size, and it lets the examples show what "only defects the
                // dose shows" leaves out without a new request when it is switched.
                s.measure_detectability();
                out.push(ThumbData {
                    gray: s.to_u8(),
                    caption: format!(
                        "{} · {} · dose {:.0e} e/Å²",
                        p.crystal.preset.label(),
                        match p.resample_to {
                            Some(_) => format!(
                                "{:.1} pm/px fed at {:.1}",
                                p.pixel_size_pm,
                                p.output_pixel_size_pm()
                            ),
                            None => format!("{:.1} pm/px", p.pixel_size_pm),
                        },
                        p.noise.dose_e_per_a2
                    ),
                    labels: s.labels,
                });
            }
            Ok(out)
        });
    }

    fn start(&mut self, overwrite: bool, notify: &Option<Notify>) {
        let cfg = self.settings.config();
        if let Err(e) = cfg.validate() {
            self.last = Some(Err(format!("{e:#}")));
            return;
        }
        let out = PathBuf::from(&self.settings.out_dir);
        let target = ExportTarget {
            shard: None,
            overwrite,
        };
        self.status.clear();
        self.last = None;
        self.job = Some(Job::spawn("export", notify.clone(), move |c| {
            export(&cfg, &out, &target, c)
        }));
    }

    fn poll(&mut self, ctx: &egui::Context) {
        if let Some(job) = self.job.take() {
            match job.try_take() {
                Ok(Ok(s)) => {
                    self.status = format!("Exported to {}", absolute(&s.out).display());
                    self.last = Some(Ok(s));
                }
                Ok(Err(e)) if is_cancelled(&e) => {
                    self.status = "Cancelled: nothing was written".into();
                }
                Ok(Err(e)) => self.last = Some(Err(format!("{e:#}"))),
                Err(job) => self.job = Some(job),
            }
        }
        if let Some(job) = self.pick_job.take() {
            match job.try_take() {
                Ok(Ok(Some(dir))) => self.settings.out_dir = dir.display().to_string(),
                Ok(_) => {}
                Err(job) => self.pick_job = Some(job),
            }
        }
        if let Some(Ok(v)) = self.previews.poll() {
            self.thumbs = v
                .into_iter()
                .enumerate()
                .map(|(i, t)| Thumb {
                    texture: ctx.load_texture(
                        format!("dataset-thumb-{i}"),
                        egui::ColorImage::from_gray([THUMB_SIZE, THUMB_SIZE], &t.gray),
                        egui::TextureOptions::LINEAR,
                    ),
                    caption: t.caption,
                    labels: t.labels,
                })
                .collect();
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, notify: &Option<Notify>) {
        let ctx = ui.ctx().clone();
        self.poll(&ctx);
        egui::Panel::left("dataset-params")
            .resizable(true)
            .default_size(380.0)
            .show(ui, |ui| {
                // The export stays in view below however far the settings scroll.
                egui::Panel::bottom("dataset-export").show(ui, |ui| self.export_ui(ui, notify));
                egui::ScrollArea::vertical().show(ui, |ui| self.params_ui(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| self.main_ui(ui));
        self.confirm_ui(&ctx, notify);
        self.request_thumbs();
    }

    fn params_ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut self.settings;
        ui.heading("Dataset");
        egui::CollapsingHeader::new("Size and splits")
            .default_open(true)
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label("base images");
                    ui.add(DragValue::new(&mut s.n).range(1..=100_000))
                        .on_hover_text(
                            "N base images; each gives one image per symmetry (and crop)",
                        );
                });
                ui.horizontal(|ui| {
                    ui.label("seed");
                    ui.add(DragValue::new(&mut s.seed));
                });
                ui.add(Slider::new(&mut s.size, 64..=2048).text("image size (px)"));
                ui.label("Split by base image (train / val / test)");
                ui.horizontal(|ui| {
                    ui.add(
                        DragValue::new(&mut s.split.train)
                            .range(0.0..=1.0)
                            .speed(0.01)
                            .prefix("train "),
                    );
                    ui.add(
                        DragValue::new(&mut s.split.val)
                            .range(0.0..=1.0)
                            .speed(0.01)
                            .prefix("val "),
                    );
                    ui.add(
                        DragValue::new(&mut s.split.test)
                            .range(0.0..=1.0)
                            .speed(0.01)
                            .prefix("test "),
                    );
                });
                if s.split.validate().is_ok() {
                    let c = s.split.counts(s.n);
                    ui.label(format!("{} / {} / {} base images", c[0], c[1], c[2]));
                    let empty = s.split.empty_splits(s.n);
                    if !empty.is_empty() {
                        let names: Vec<&str> = empty.iter().map(|e| e.name()).collect();
                        ui.colored_label(
                            egui::Color32::from_rgb(230, 120, 60),
                            format!(
                                "{} base images leave the {} split empty: raise the number of \
                                 base images or set its fraction to 0",
                                s.n,
                                names.join(" and ")
                            ),
                        );
                    }
                }
            });
        egui::CollapsingHeader::new("Augmentation")
            .default_open(true)
            .show(ui, |ui| {
                ui.label("Symmetries of the square (labels follow exactly)");
                // Rotations on the left, the same rotations of the mirror image on the right.
                let all = Dihedral::all();
                egui::Grid::new("dataset-symmetries").show(ui, |ui| {
                    for row in 0..4 {
                        for i in [row, row + 4] {
                            let d = all[i];
                            ui.checkbox(&mut s.augment[i], d.describe())
                                .on_hover_text(format!(
                                    "{} in file names and manifest.json. Turns are clockwise; \
                                     the mirror is left–right and comes first.",
                                    d.name()
                                ));
                        }
                        ui.end_row();
                    }
                });
                ui.horizontal(|ui| {
                    if ui.button("all").clicked() {
                        s.augment = [true; 8];
                    }
                    if ui.button("identity only").clicked() {
                        s.augment = [false; 8];
                        s.augment[0] = true;
                    }
                });
                ui.checkbox(&mut s.crop_enabled, "random crops");
                if s.crop_enabled {
                    let max = s.size.max(16);
                    ui.add(Slider::new(&mut s.crop.tile, 16..=max).text("tile (px)"));
                    ui.add(Slider::new(&mut s.crop.per_image, 1..=16).text("crops per variant"));
                    ui.add(
                        Slider::new(&mut s.crop.min_boundary_frac, 0.0..=1.0)
                            .text("min. cut boundary (of tile)"),
                    );
                }
                let per = s.augment.iter().filter(|x| **x).count()
                    * if s.crop_enabled { s.crop.per_image } else { 1 };
                ui.label(format!("{} images in total", per * s.n));
                ui.checkbox(&mut s.detectable_only, "only defects the dose shows")
                    .on_hover_text(
                        "Leave out of the labels the vacancies and interstitials whose \
                         ideal-observer signal-to-noise ratio d' at the frame's dose is below \
                         the minimum (Rose: about 5). The sidecars keep them, with their d'.",
                    );
                if s.detectable_only {
                    ui.add(Slider::new(&mut s.min_detectability, 0.0..=20.0).text("min. d'"));
                }
                ui.checkbox(&mut s.as_fed, "as the model is fed")
                    .on_hover_text(
                        "Record each frame at the pixel size it is drawn at, then resample it \
                         to the model's pixel size, as the Viewer and detect do with a \
                         calibrated file: the model trains on what it will be fed.",
                    );
                if s.as_fed {
                    ui.add(Slider::new(&mut s.fed_pm, 3.0..=100.0).text("model pm/px"));
                }
            });
        let dr = &mut s.dr;
        egui::CollapsingHeader::new("Domain randomization")
            .default_open(true)
            .show(ui, |ui| {
                span_range_speed(
                    ui,
                    "pixel size (pm/px)",
                    &mut dr.pixel_size_pm,
                    3.0..=100.0,
                    0.1,
                );
                span_range_speed(
                    ui,
                    "rotation (°)",
                    &mut dr.rotation_deg,
                    -360.0..=360.0,
                    1.0,
                );
                span_range_speed(ui, "dose (e/Å²)", &mut dr.dose_e_per_a2, 1e2..=1e7, 100.0);
                ui.add(
                    Slider::new(&mut dr.gaussian_probe_fraction, 0.0..=1.0)
                        .text("Gaussian probe fraction"),
                );
                span_range_speed(
                    ui,
                    "Gaussian FWHM (Å)",
                    &mut dr.gaussian_fwhm_a,
                    0.4..=3.0,
                    0.01,
                );
                span_range_speed(
                    ui,
                    "aberration probe source σ (Å)",
                    &mut dr.source_sigma_a,
                    0.0..=1.5,
                    0.01,
                );
                span_range_speed(ui, "defocus (Å)", &mut dr.defocus_a, -300.0..=300.0, 1.0);
                span_range_speed(
                    ui,
                    "line jitter (px)",
                    &mut dr.line_jitter_px,
                    0.0..=5.0,
                    0.01,
                );
                let md = defect_detector::synth::params::MAX_DRIFT_PX_PER_KLINE;
                span_range_speed(
                    ui,
                    "drift x, y (px/1000 lines)",
                    &mut dr.drift_px_per_kline,
                    -md..=md,
                    0.1,
                );
                span_range_speed(ui, "background", &mut dr.background, 0.0..=8.0, 0.01);
                egui::CollapsingHeader::new("Realism: specimen, boundaries, scan")
                    .default_open(false)
                    .show(ui, |ui| {
                        span_range_speed(
                            ui,
                            "jitter bursts (per 1000 lines)",
                            &mut dr.jitter_bursts_per_kline,
                            0.0..=50.0,
                            0.1,
                        );
                        span_range_speed(
                            ui,
                            "burst jitter (px)",
                            &mut dr.jitter_burst_px,
                            0.0..=6.0,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "afterglow (px)",
                            &mut dr.afterglow_px,
                            0.0..=5.0,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "background gradient",
                            &mut dr.background_gradient,
                            0.0..=1.0,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "column width σ (Å)",
                            &mut dr.column_sigma_a,
                            0.0..=1.2,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "amorphous layer (RMS)",
                            &mut dr.amorphous,
                            0.0..=1.0,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "amorphous length (Å)",
                            &mut dr.amorphous_length_a,
                            1.0..=100.0,
                            0.1,
                        );
                        span_range_speed(
                            ui,
                            "thickness variation",
                            &mut dr.thickness_variation,
                            0.0..=0.5,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "thickness wavelength (nm)",
                            &mut dr.thickness_wavelength_nm,
                            1.0..=100.0,
                            0.1,
                        );
                        span_range_speed(
                            ui,
                            "boundary bending (Å)",
                            &mut dr.boundary_strain_a,
                            0.0..=2.0,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "bending decay (nm)",
                            &mut dr.boundary_strain_decay_nm,
                            0.1..=20.0,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "core disorder (Å)",
                            &mut dr.boundary_core_disorder_a,
                            0.0..=1.0,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "directional blur σ (Å)",
                            &mut dr.directional_sigma_a,
                            0.0..=2.0,
                            0.01,
                        );
                        span_range_speed(
                            ui,
                            "core half-width (Å)",
                            &mut dr.boundary_core_width_a,
                            0.0..=20.0,
                            0.1,
                        );
                        span_range_speed(
                            ui,
                            "boundary band darkening",
                            &mut dr.boundary_dechannelling,
                            -0.5..=0.8,
                            0.01,
                        );
                        count_range(ui, "twin lamellae", &mut dr.twin_lamellae, 0..=2);
                        span_range_speed(
                            ui,
                            "lamella thickness (nm)",
                            &mut dr.lamella_thickness_nm,
                            0.3..=10.0,
                            0.01,
                        );
                        ui.add(
                            Slider::new(&mut dr.axis_aligned_boundary_fraction, 0.0..=1.0)
                                .text("tilt boundaries near an axis"),
                        );
                    });
                count_range(ui, "vacancies", &mut dr.vacancies, 0..=50);
                count_range(ui, "interstitials", &mut dr.interstitials, 0..=50);
                count_range(ui, "boundaries", &mut dr.boundaries, 0..=4);
                ui.add(
                    Slider::new(&mut dr.boundary_free_fraction, 0.0..=1.0)
                        .text("images without boundaries"),
                );
                ui.add(
                    Slider::new(&mut dr.twin_fraction, 0.0..=1.0).text("twin (vs tilt) fraction"),
                );
                ui.label("Crystal mix (weights)");
                ui.horizontal(|ui| {
                    let w = &mut dr.presets;
                    ui.add(
                        DragValue::new(&mut w.cdte)
                            .range(0.0..=10.0)
                            .speed(0.01)
                            .prefix("CdTe "),
                    );
                    ui.add(
                        DragValue::new(&mut w.si)
                            .range(0.0..=10.0)
                            .speed(0.01)
                            .prefix("Si "),
                    );
                    ui.add(
                        DragValue::new(&mut w.gaas)
                            .range(0.0..=10.0)
                            .speed(0.01)
                            .prefix("GaAs "),
                    );
                });
                if ui.button("Reset ranges").clicked() {
                    *dr = DomainRandomization::default();
                }
                if let Err(e) = dr.validate() {
                    ui.colored_label(egui::Color32::from_rgb(213, 94, 0), format!("{e:#}"));
                }
            });
    }

    fn export_ui(&mut self, ui: &mut egui::Ui, notify: &Option<Notify>) {
        ui.add_space(4.0);
        ui.label("Output folder");
        if let Some(j) = folder_picker(ui, &mut self.settings.out_dir, self.pick_job.is_some()) {
            self.pick_job = Some(j);
        }
        // A relative folder lands wherever the app was started: say where that is.
        ui.add(
            egui::Label::new(
                egui::RichText::new(
                    absolute(&PathBuf::from(&self.settings.out_dir))
                        .display()
                        .to_string(),
                )
                .weak(),
            )
            .wrap(),
        );
        let busy = self.is_exporting() || self.confirm.is_some();
        if ui
            .add_enabled(!busy, egui::Button::new("Export"))
            .on_hover_text("Write images, labels, data.yaml, manifest.json and README.md")
            .clicked()
        {
            let out = PathBuf::from(&self.settings.out_dir);
            if target_is_nonempty(&out) {
                self.confirm = Some(out);
            } else {
                self.start(false, notify);
            }
        }
    }

    fn confirm_ui(&mut self, ctx: &egui::Context, notify: &Option<Notify>) {
        let Some(out) = self.confirm.clone() else {
            return;
        };
        let problem = target_problem(&out, true);
        let mut choice: Option<bool> = None;
        egui::Window::new("Folder is not empty")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .show(ctx, |ui| match &problem {
                Some(p) => {
                    ui.label(p);
                    if ui.button("OK").clicked() {
                        choice = Some(false);
                    }
                }
                None => {
                    ui.label(format!(
                        "{} already holds a dataset. Replace it? The old one is removed only \
                         after the new one is complete.",
                        out.display()
                    ));
                    ui.horizontal(|ui| {
                        if ui.button("Overwrite").clicked() {
                            choice = Some(true);
                        }
                        if ui.button("Keep it").clicked() {
                            choice = Some(false);
                        }
                    });
                }
            });
        if let Some(go) = choice {
            self.confirm = None;
            if go {
                self.start(true, notify);
            }
        }
    }

    fn main_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(job) = &self.job {
            let c = job.control();
            let eta = c
                .eta()
                .map(|d| format!(" · ETA {:.0} s", d.as_secs_f64()))
                .unwrap_or_default();
            ui.horizontal(|ui| {
                ui.add(
                    egui::ProgressBar::new(c.progress() as f32)
                        .desired_width(400.0)
                        .text(format!(
                            "{} · {:.0} s{eta}",
                            c.message(),
                            c.elapsed().as_secs_f64()
                        )),
                );
                if ui.button("Cancel").clicked() {
                    job.cancel();
                }
            });
        }
        if !self.status.is_empty() {
            ui.label(&self.status);
        }
        match &self.last {
            Some(Ok(s)) => {
                summary_ui(ui, s);
                if ui
                    .button("Open in Review")
                    .on_hover_text("Look through the exported images and their labels")
                    .clicked()
                {
                    self.review_request = Some(absolute(&s.out));
                }
            }
            Some(Err(e)) => {
                ui.colored_label(egui::Color32::from_rgb(213, 94, 0), e);
            }
            None => {}
        }
        ui.separator();
        ui.horizontal(|ui| {
            ui.strong(format!(
                "Examples of the current randomization: the first {THUMBS} base images with \
                 their labels (drawn at {THUMB_SIZE} px; the dataset's are {} px)",
                self.settings.size
            ));
            if self.previews.is_busy() {
                ui.spinner();
            }
        });
        class_key(ui);
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| self.examples_ui(ui));
    }

    /// The examples in as many columns of at least `MIN_THUMB_SIDE` as fit (at most 3), each
    /// as wide as the columns allow.
    fn examples_ui(&self, ui: &mut egui::Ui) {
        let s = &self.settings;
        let hide_below = s.detectable_only.then_some(s.min_detectability);
        let gap = ui.spacing().item_spacing.x.max(12.0);
        let w = ui.available_width();
        let cols = ((w + gap) / (MIN_THUMB_SIDE + gap)).floor().clamp(1.0, 3.0) as usize;
        let side = ((w - gap * (cols - 1) as f32) / cols as f32).floor();
        for row in self.thumbs.chunks(cols) {
            ui.horizontal_top(|ui| {
                ui.spacing_mut().item_spacing.x = gap;
                for t in row {
                    ui.vertical(|ui| {
                        ui.set_width(side);
                        thumb_ui(ui, t, side, hide_below);
                    });
                }
            });
            ui.add_space(8.0);
        }
    }
}

/// One example: the image with its boxes, what was drawn, and how many labels of each class.
/// With `hide_below`, the point defects whose d′ is below it (left out of the labels) are drawn
/// dashed and counted apart.
fn thumb_ui(ui: &mut egui::Ui, t: &Thumb, side: f32, hide_below: Option<f64>) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(side, side), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.image(
        t.texture.id(),
        rect,
        egui::Rect::from_min_max(egui::Pos2::ZERO, egui::pos2(1.0, 1.0)),
        egui::Color32::WHITE,
    );
    let scale = side / THUMB_SIZE as f32;
    let to_screen =
        |p: defect_detector::geometry::Pt| rect.min + egui::vec2(p[0] as f32, p[1] as f32) * scale;
    let hidden = |l: &DefectLabel| l.hidden_by_noise(hide_below);
    for l in &t.labels {
        if hidden(l) {
            let mut pts: Vec<egui::Pos2> = l.obb.corners().iter().map(|&c| to_screen(c)).collect();
            pts.push(pts[0]);
            let color = class_color32(l.class.id()).gamma_multiply(0.8);
            painter.extend(egui::Shape::dashed_line(
                &pts,
                egui::Stroke::new(1.0, color),
                4.0,
                4.0,
            ));
        } else {
            paint_box(&painter, &l.obb, l.class.id(), 1.5, to_screen);
        }
    }
    ui.label(&t.caption);
    let mut counts: Vec<String> = DefectClass::ALL
        .iter()
        .map(|&c| {
            let n = t
                .labels
                .iter()
                .filter(|l| l.class == c && !hidden(l))
                .count();
            format!("{n} {}", c.name())
        })
        .collect();
    let n_hidden = t.labels.iter().filter(|l| hidden(l)).count();
    if let (Some(min), true) = (hide_below, n_hidden > 0) {
        counts.push(format!(
            "{n_hidden} hidden by noise (d' < {min:.1}, dashed)"
        ));
    }
    ui.label(egui::RichText::new(counts.join(" · ")).weak());
}

/// `p` resolved against the current directory (without touching the disk), as the export and
/// the Review tab will resolve it.
fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn summary_ui(ui: &mut egui::Ui, s: &ExportSummary) {
    ui.strong(format!(
        "{} images from {} base images · {:.1} MB · {:.1} s",
        s.images,
        s.base_images,
        s.bytes as f64 / 1e6,
        s.seconds
    ));
    egui::Grid::new("export-summary")
        .striped(true)
        .show(ui, |ui| {
            ui.label("split");
            ui.label("base images");
            ui.label("images");
            for c in DefectClass::ALL {
                ui.label(c.name());
            }
            ui.end_row();
            for sp in Split::ALL {
                let v = s.splits.get(&sp).copied().unwrap_or_default();
                ui.label(sp.name());
                ui.label(v.base_images.to_string());
                ui.label(v.images.to_string());
                for c in DefectClass::ALL {
                    ui.label(v.labels.get(c).to_string());
                }
                ui.end_row();
            }
        });
}

#[cfg(test)]
mod tests {
    use crate::app::{DefectApp, Persisted, Tab};
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    fn harness(out: &std::path::Path) -> Harness<'static, DefectApp> {
        let ctx = egui::Context::default();
        let mut p = Persisted {
            tab: Tab::Dataset,
            ..Default::default()
        };
        p.dataset.n = 3;
        p.dataset.size = 96;
        p.dataset.out_dir = out.display().to_string();
        let app = DefectApp::new(&ctx, p);
        Harness::builder()
            .with_size(egui::vec2(1300.0, 1000.0))
            .build_ui_state(|ui, app: &mut DefectApp| app.show(ui), app)
    }

    fn wait_export(h: &mut Harness<'static, DefectApp>) {
        for _ in 0..3000 {
            h.step();
            if !h.state().dataset.is_exporting() {
                h.step();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("export never finished");
    }

    #[test]
    fn detectable_only_labels_what_the_dose_shows() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ds");
        let mut h = harness(&out);
        h.step();
        assert_eq!(h.state().dataset.settings.config().min_detectability, None);
        h.get_by_label("only defects the dose shows").click();
        h.step();
        h.step();
        assert!(h.query_all_by_label_contains("min. d'").next().is_some());
        assert_eq!(
            h.state().dataset.settings.config().min_detectability,
            Some(defect_detector::synth::detectability::ROSE_SNR)
        );
        h.get_by_label("Export").click();
        h.step();
        wait_export(&mut h);
        assert!(h.state().dataset.last.clone().expect("a result").is_ok());
        let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(readme.contains("ideal-observer signal-to-noise ratio d′ is at least 5"));
    }

    #[test]
    fn export_button_writes_a_dataset_and_shows_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ds");
        let mut h = harness(&out);
        h.step();
        h.get_by_label("Export").click();
        h.step();
        wait_export(&mut h);
        let last = h.state().dataset.last.clone();
        let s = last.expect("a result").expect("export succeeded");
        assert_eq!(s.images, 24);
        assert!(out.join("data.yaml").is_file() && out.join("manifest.json").is_file());
        let pngs = std::fs::read_dir(out.join("images/train")).unwrap().count();
        assert_eq!(
            pngs,
            s.splits[&defect_detector::dataset::export::Split::Train].images
        );
        assert!(
            h.query_by_label_contains("images from 3 base images")
                .is_some()
        );
        // Exporting again asks before replacing the dataset; "Keep it" leaves it alone.
        h.get_by_label("Export").click();
        h.step();
        h.step();
        assert!(
            h.query_by_label_contains("already holds a dataset")
                .is_some()
        );
        h.get_by_label("Keep it").click();
        h.step();
        assert!(!h.state().dataset.is_exporting());
        // Overwrite replaces it with the new settings.
        h.state_mut().dataset.settings.n = 2;
        h.step();
        h.get_by_label("Export").click();
        h.step();
        h.step();
        h.get_by_label("Overwrite").click();
        h.step();
        wait_export(&mut h);
        let m = defect_detector::dataset::export::Manifest::read(&out).unwrap();
        assert_eq!(m.base_images.len(), 2);
    }

    #[test]
    fn symmetries_are_named_in_words_with_the_code_on_hover() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(&dir.path().join("ds"));
        h.step();
        let f_r90 = 5;
        assert!(h.state().dataset.settings.augment[f_r90]);
        h.get_by_label("mirrored + rotated 90°").click();
        h.step();
        assert!(!h.state().dataset.settings.augment[f_r90]);
        assert!(
            h.state()
                .dataset
                .settings
                .config()
                .augment
                .iter()
                .all(|n| n != "f_r90")
        );
        // Tooltips wait for a still pointer; no wait in a test.
        h.ctx.all_styles_mut(|s| {
            s.interaction.tooltip_delay = 0.0;
            s.interaction.show_tooltips_only_when_still = false;
        });
        h.get_by_label("mirrored + rotated 90°").hover();
        h.run_steps(3);
        assert!(h.query_by_label_contains("f_r90 in file names").is_some());
        assert!(
            h.query_by_label("f_r90").is_none(),
            "the code is not a label"
        );
    }

    #[test]
    fn the_output_folder_is_shown_as_an_absolute_path() {
        let mut h = harness(std::path::Path::new("some/relative/ds"));
        h.step();
        let abs = std::env::current_dir().unwrap().join("some/relative/ds");
        assert!(h.query_by_label(&abs.display().to_string()).is_some());
    }

    #[test]
    fn examples_arrive_with_their_labels_inside_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(&dir.path().join("ds"));
        for _ in 0..3000 {
            h.step();
            if !h.state().dataset.thumbs.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let thumbs = &h.state().dataset.thumbs;
        assert_eq!(thumbs.len(), super::THUMBS);
        assert!(thumbs.iter().any(|t| !t.labels.is_empty()));
        // Labels are in thumbnail pixels: every box centre lies on the thumbnail.
        let side = super::THUMB_SIZE as f64;
        for l in thumbs.iter().flat_map(|t| &t.labels) {
            assert!((0.0..=side).contains(&l.obb.cx) && (0.0..=side).contains(&l.obb.cy));
        }
        h.step();
        assert!(
            h.query_all_by_label_contains("grain_boundary")
                .next()
                .is_some()
        );
    }

    #[test]
    fn open_in_review_shows_the_exported_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ds");
        let mut h = harness(&out);
        h.step();
        assert!(h.query_by_label("Open in Review").is_none());
        h.get_by_label("Export").click();
        h.step();
        wait_export(&mut h);
        h.get_by_label("Open in Review").click();
        h.run_steps(2);
        let app = h.state();
        assert_eq!(app.tab, Tab::Review);
        let listing = app.review.listing.as_ref().expect("dataset opened");
        assert_eq!(app.review.settings.dir, out.display().to_string());
        assert_eq!(listing.items.len(), 24);
        assert!(app.review.current.is_some(), "the first image is shown");
    }

    #[test]
    fn cancel_leaves_no_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ds");
        let mut h = harness(&out);
        h.state_mut().dataset.settings.n = 5000;
        h.state_mut().dataset.settings.size = 64;
        h.step();
        h.get_by_label("Export").click();
        h.step();
        assert!(h.state().dataset.is_exporting());
        h.get_by_label("Cancel").click();
        wait_export(&mut h);
        assert!(h.state().dataset.status.contains("Cancelled"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
