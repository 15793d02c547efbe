//! The Synthesize tab: lattice, defect, probe, noise and scan parameters on the left, a live
//! preview with its oriented-box labels in the middle. The preview is regenerated on a
//! background thread whenever a parameter changes (latest wins; the UI never waits).

use super::canvas::{ImageCanvas, OverlayBox};
use super::synth_help::param_help;
use super::widgets::{class_legend, count_range, folder_picker, span_range, zoom_buttons};
use defect_detector::classes::DefectClass;
use defect_detector::jobs::{Job, Latest, Notify};
use defect_detector::synth::crystal::Preset;
use defect_detector::synth::detectability::ROSE_SNR;
use defect_detector::synth::params::{DoseMode, ProbeModel};
use defect_detector::synth::{self, ImageFormat, SynthParams, Synthesized, WrittenFiles};
use egui::Slider;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What is remembered between runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthSettings {
    pub params: SynthParams,
    pub show_class: [bool; 3],
    pub format: ImageFormat,
    pub out_dir: String,
}

impl Default for SynthSettings {
    fn default() -> Self {
        Self {
            params: SynthParams::default(),
            show_class: [true; 3],
            format: ImageFormat::Png,
            out_dir: "synthetic".into(),
        }
    }
}

pub struct Preview {
    pub synth: Synthesized,
    pub gray: Vec<u8>,
    pub ms: f64,
}

pub struct SynthTab {
    pub settings: SynthSettings,
    canvas: ImageCanvas,
    preview: Latest<Preview>,
    /// Each label's ideal-observer SNR (d′) for the current preview, measured after it arrives
    /// so the live preview does not wait for the two extra renders it takes.
    snr: Latest<Vec<Option<f64>>>,
    pub current_snr: Option<Vec<Option<f64>>>,
    requested: Option<SynthParams>,
    pub current: Option<Preview>,
    pub error: Option<String>,
    save_job: Option<Job<WrittenFiles>>,
    pick_job: Option<Job<Option<std::path::PathBuf>>>,
    pub status: String,
    /// Preview updates delivered, for the updates-per-second readout.
    updates: Vec<f64>,
    /// Pointer position and value under it.
    readout: String,
}

impl SynthTab {
    pub fn new(settings: SynthSettings, notify: Option<Notify>) -> Self {
        Self {
            settings,
            canvas: ImageCanvas::new("synth-preview"),
            preview: Latest::new("synth-preview", notify.clone()),
            snr: Latest::new("synth-detectability", notify),
            current_snr: None,
            requested: None,
            current: None,
            error: None,
            save_job: None,
            pick_job: None,
            status: String::new(),
            updates: Vec::new(),
            readout: String::new(),
        }
    }

    pub fn is_busy(&self) -> bool {
        self.preview.is_busy() || self.snr.is_busy()
    }

    /// Starts a preview if the parameters changed since the last request.
    fn request_if_changed(&mut self) {
        if self.requested.as_ref() == Some(&self.settings.params) {
            return;
        }
        let p = self.settings.params.clone();
        self.requested = Some(p.clone());
        self.preview.request(move |_c| {
            let t = std::time::Instant::now();
            let synth = synth::generate(&p)?;
            let gray = synth.to_u8();
            Ok(Preview {
                synth,
                gray,
                ms: t.elapsed().as_secs_f64() * 1e3,
            })
        });
    }

    fn poll(&mut self, ctx: &egui::Context) {
        if let Some(r) = self.preview.poll() {
            match r {
                Ok(p) => {
                    self.canvas
                        .set_gray(ctx, p.synth.image.width, p.synth.image.height, &p.gray);
                    self.error = None;
                    let now = ctx.input(|i| i.time);
                    self.updates.push(now);
                    self.updates.retain(|t| now - t < 2.0);
                    let s = p.synth.clone();
                    self.snr
                        .request(move |_| Ok(synth::detectability::label_snr(&s)));
                    self.current_snr = None;
                    self.current = Some(p);
                }
                Err(e) => self.error = Some(format!("{e:#}")),
            }
        }
        if let Some(Ok(v)) = self.snr.poll() {
            self.current_snr = Some(v);
        }
        if let Some(job) = self.save_job.take() {
            match job.try_take() {
                Ok(Ok(files)) => self.status = format!("Saved {}", files.image.display()),
                Ok(Err(e)) => self.status = format!("Could not save: {e:#}"),
                Err(job) => self.save_job = Some(job),
            }
        }
        if let Some(job) = self.pick_job.take() {
            match job.try_take() {
                Ok(Ok(Some(dir))) => self.settings.out_dir = dir.display().to_string(),
                Ok(_) => {}
                Err(job) => self.pick_job = Some(job),
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, notify: &Option<Notify>) {
        let ctx = ui.ctx().clone();
        self.poll(&ctx);
        egui::Panel::left("synth-params")
            .resizable(true)
            .default_size(330.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.params_ui(ui, notify));
            });
        egui::CentralPanel::default().show(ui, |ui| self.preview_ui(ui));
        self.request_if_changed();
    }

    fn params_ui(&mut self, ui: &mut egui::Ui, notify: &Option<Notify>) {
        let p = &mut self.settings.params;
        ui.heading("Synthesize");
        egui::CollapsingHeader::new("Crystal")
            .default_open(true)
            .show(ui, |ui| {
                egui::ComboBox::from_label("Preset")
                    .selected_text(p.crystal.preset.label())
                    .show_ui(ui, |ui| {
                        for pr in Preset::ALL {
                            ui.selectable_value(&mut p.crystal.preset, pr, pr.label());
                        }
                    });
                if p.crystal.preset == Preset::Custom {
                    let c = &mut p.crystal.custom;
                    ui.add(Slider::new(&mut c.a_u, 1.0..=20.0).text("cell a_u (Å)"))
                        .on_hover_text(param_help("cell a_u (Å)"));
                    ui.add(Slider::new(&mut c.b_v, 1.0..=20.0).text("cell b_v (Å)"))
                        .on_hover_text(param_help("cell b_v (Å)"));
                    for sp in c.species.iter_mut() {
                        ui.horizontal(|ui| {
                            ui.add(egui::TextEdit::singleline(&mut sp.symbol).desired_width(40.0));
                            ui.add(Slider::new(&mut sp.z, 1.0..=100.0).text("Z"))
                                .on_hover_text(param_help("Z"));
                        });
                    }
                    ui.label(format!(
                        "{} basis columns (edit via a parameter file)",
                        c.sites.len()
                    ));
                }
                ui.add(
                    Slider::new(&mut p.crystal.z_exponent, 1.0..=2.0)
                        .text("Z exponent n (I ~ Z^n)"),
                )
                .on_hover_text(param_help("Z exponent n (I ~ Z^n)"));
            });
        egui::CollapsingHeader::new("Image")
            .default_open(true)
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.add(egui::DragValue::new(&mut p.seed).prefix("seed "));
                    if ui
                        .button("Random seed")
                        .on_hover_text("Draw a new seed")
                        .clicked()
                    {
                        p.seed = rand::random::<u32>() as u64;
                    }
                });
                ui.add(Slider::new(&mut p.width, 64..=2048).text("width (px)"))
                    .on_hover_text(param_help("width (px)"));
                ui.add(Slider::new(&mut p.height, 64..=2048).text("height (px)"))
                    .on_hover_text(param_help("height (px)"));
                ui.add(Slider::new(&mut p.pixel_size_pm, 5.0..=50.0).text("pixel size (pm/px)"))
                    .on_hover_text(param_help("pixel size (pm/px)"));
                let mut fixed = p.rotation_deg.is_some();
                ui.checkbox(&mut fixed, "fixed rotation");
                if fixed {
                    let mut r = p.rotation_deg.unwrap_or(0.0);
                    ui.add(Slider::new(&mut r, 0.0..=360.0).text("rotation (°)"))
                        .on_hover_text(param_help("rotation (°)"));
                    p.rotation_deg = Some(r);
                } else {
                    p.rotation_deg = None;
                }
            });
        egui::CollapsingHeader::new("Defects")
            .default_open(true)
            .show(ui, |ui| {
                let d = &mut p.defects;
                count_range(ui, "vacancies", &mut d.vacancies, 0..=50);
                ui.add(
                    Slider::new(&mut d.dumbbell_vacancy_prob, 0.0..=1.0)
                        .text("whole-dumbbell fraction"),
                )
                .on_hover_text(param_help("whole-dumbbell fraction"));
                ui.add(
                    Slider::new(&mut d.partial_occupancy_prob, 0.0..=1.0)
                        .text("partial-occupancy fraction"),
                )
                .on_hover_text(param_help("partial-occupancy fraction"));
                span_range(
                    ui,
                    "remaining occupancy",
                    &mut d.partial_occupancy,
                    0.0..=0.95,
                );
                count_range(ui, "interstitials", &mut d.interstitials, 0..=50);
                span_range(
                    ui,
                    "interstitial occupancy",
                    &mut d.interstitial_occupancy,
                    0.05..=1.5,
                );
                count_range(ui, "Σ3 twin boundaries", &mut d.twin_boundaries, 0..=4);
                count_range(ui, "tilt boundaries", &mut d.tilt_boundaries, 0..=4);
                span_range(
                    ui,
                    "tilt misorientation (°)",
                    &mut d.tilt_misorientation_deg,
                    3.0..=177.0,
                );
                count_range(ui, "twin lamellae", &mut d.twin_lamellae, 0..=2);
                span_range(
                    ui,
                    "lamella thickness (nm)",
                    &mut d.lamella_thickness_nm,
                    0.3..=10.0,
                );
                ui.add(
                    Slider::new(&mut d.axis_aligned_boundary_fraction, 0.0..=1.0)
                        .text("tilt boundaries near an axis"),
                )
                .on_hover_text(
                    "Fraction of tilt boundaries running within 8° of an image axis, as real \
                     boundaries often do",
                );
                ui.add(Slider::new(&mut d.edge_margin_px, 0.0..=128.0).text("edge margin (px)"))
                    .on_hover_text(param_help("edge margin (px)"));
                egui::CollapsingHeader::new("Boundary neighbourhood")
                    .default_open(false)
                    .show(ui, |ui| {
                        let b = &mut d.boundary_structure;
                        ui.add(Slider::new(&mut b.strain_a, 0.0..=2.0).text("bending (Å)"))
                            .on_hover_text(param_help("bending (Å)"))
                            .on_hover_text(
                                "Largest column shift along the boundary from lattice bending; \
                                 real tilt boundaries bend the lattice over a few nm",
                            );
                        ui.add(
                            Slider::new(&mut b.strain_decay_nm, 0.1..=20.0)
                                .text("bending decay (nm)"),
                        )
                        .on_hover_text(param_help("bending decay (nm)"));
                        ui.add(
                            Slider::new(&mut b.core_disorder_a, 0.0..=1.0)
                                .text("core disorder (Å RMS)"),
                        )
                        .on_hover_text("Random column displacements in the boundary core");
                        ui.add(
                            Slider::new(&mut b.core_width_a, 0.0..=20.0)
                                .text("core half-width (Å)"),
                        )
                        .on_hover_text(param_help("core half-width (Å)"));
                        ui.add(
                            Slider::new(&mut b.dechannelling, -0.5..=0.8).text("band darkening"),
                        )
                        .on_hover_text(
                            "Relative intensity loss of columns along the boundary \
                             (dechannelling); negative = brighter (segregation)",
                        );
                        ui.add(
                            Slider::new(&mut b.dechannelling_width_a, 0.5..=50.0)
                                .text("band half-width (Å)"),
                        )
                        .on_hover_text(param_help("band half-width (Å)"));
                        ui.add(Slider::new(&mut b.twin_factor, 0.0..=1.0).text("twins get ×"))
                            .on_hover_text(param_help("twins get ×"))
                            .on_hover_text(
                                "Coherent twins are nearly perfect: they get this fraction of \
                                 the bending, disorder and darkening",
                            );
                    });
            });
        egui::CollapsingHeader::new("Probe")
            .default_open(false)
            .show(ui, |ui| {
                let pr = &mut p.probe;
                ui.horizontal(|ui| {
                    ui.selectable_value(&mut pr.model, ProbeModel::Aberrations, "From aberrations");
                    ui.selectable_value(&mut pr.model, ProbeModel::Gaussian, "Gaussian");
                });
                match pr.model {
                    ProbeModel::Gaussian => {
                        ui.add(Slider::new(&mut pr.gaussian_fwhm_a, 0.4..=3.0).text("FWHM (Å)"))
                            .on_hover_text(param_help("FWHM (Å)"));
                    }
                    ProbeModel::Aberrations => {
                        ui.add(Slider::new(&mut pr.voltage_kv, 30.0..=300.0).text("voltage (kV)"))
                            .on_hover_text(param_help("voltage (kV)"));
                        ui.add(
                            Slider::new(&mut pr.aperture_mrad, 5.0..=40.0).text("aperture (mrad)"),
                        )
                        .on_hover_text(param_help("aperture (mrad)"));
                        ui.add(
                            Slider::new(&mut pr.defocus_a, -300.0..=300.0).text("defocus C1 (Å)"),
                        )
                        .on_hover_text(param_help("defocus C1 (Å)"));
                        ui.add(
                            Slider::new(&mut pr.cs_um, -50.0..=2000.0)
                                .logarithmic(false)
                                .text("Cs (µm)"),
                        )
                        .on_hover_text(param_help("Cs (µm)"));
                    }
                }
                ui.add(Slider::new(&mut pr.source_sigma_a, 0.0..=1.5).text("source size σ (Å)"))
                    .on_hover_text(param_help("source size σ (Å)"));
                ui.add(
                    Slider::new(&mut pr.directional_sigma_a, 0.0..=2.0)
                        .text("directional blur σ (Å)"),
                )
                .on_hover_text(
                    "Extra blur along one direction: a slightly mistilted thick specimen or \
                     residual astigmatism; along the dumbbells it merges them into elongated \
                     blobs, as in many real frames",
                );
                ui.add(
                    Slider::new(&mut pr.directional_angle_deg, 0.0..=180.0)
                        .text("its direction (° from x)"),
                )
                .on_hover_text(param_help("its direction (° from x)"));
            });
        egui::CollapsingHeader::new("Specimen and noise")
            .default_open(false)
            .show(ui, |ui| {
                let s = &mut p.specimen;
                ui.add(Slider::new(&mut s.background, 0.0..=8.0).text("background"))
                    .on_hover_text(param_help("background"));
                ui.add(
                    Slider::new(&mut s.background_gradient, 0.0..=1.0).text("background gradient"),
                )
                .on_hover_text(param_help("background gradient"));
                ui.add(
                    Slider::new(&mut s.thickness_variation, 0.0..=0.5).text("thickness variation"),
                )
                .on_hover_text(param_help("thickness variation"));
                ui.add(
                    Slider::new(&mut s.thickness_wavelength_nm, 1.0..=100.0)
                        .text("its wavelength (nm)"),
                )
                .on_hover_text(param_help("its wavelength (nm)"));
                ui.add(Slider::new(&mut s.column_sigma_a, 0.0..=1.2).text("column width σ (Å)"))
                    .on_hover_text(
                        "Width of each atom column (thermal vibration, channelling spread), \
                         convolved with the probe. Real thick CdTe: dumbbells merge at about \
                         0.4–0.7 Å",
                    );
                ui.add(Slider::new(&mut s.amorphous, 0.0..=1.0).text("amorphous layer (RMS)"))
                    .on_hover_text(
                        "Texture of amorphous surface layers, as a fraction of a column peak; \
                         it carries its own shot noise",
                    );
                ui.add(
                    Slider::new(&mut s.amorphous_length_a, 1.0..=100.0)
                        .text("its correlation length (Å)"),
                )
                .on_hover_text(param_help("its correlation length (Å)"));
                let n = &mut p.noise;
                ui.checkbox(&mut n.enabled, "shot and read noise");
                ui.horizontal(|ui| {
                    ui.selectable_value(&mut n.dose_mode, DoseMode::ElectronsPerA2, "dose e-/Å²");
                    ui.selectable_value(&mut n.dose_mode, DoseMode::PeakCounts, "peak counts");
                });
                match n.dose_mode {
                    DoseMode::ElectronsPerA2 => {
                        ui.add(
                            Slider::new(&mut n.dose_e_per_a2, 1e2..=1e7)
                                .logarithmic(true)
                                .text("dose (e-/Å²)"),
                        )
                        .on_hover_text(param_help("dose (e-/Å²)"));
                        ui.add(
                            Slider::new(&mut n.collection_efficiency, 0.001..=1.0)
                                .logarithmic(true)
                                .text("HAADF collection at a column"),
                        )
                        .on_hover_text(param_help("HAADF collection at a column"));
                    }
                    DoseMode::PeakCounts => {
                        ui.add(
                            Slider::new(&mut n.peak_counts, 1.0..=1e5)
                                .logarithmic(true)
                                .text("counts at a column peak"),
                        )
                        .on_hover_text(param_help("counts at a column peak"));
                    }
                }
                ui.add(Slider::new(&mut n.read_noise, 0.0..=50.0).text("read noise (counts RMS)"))
                    .on_hover_text(param_help("read noise (counts RMS)"));
            });
        egui::CollapsingHeader::new("Scan distortions")
            .default_open(false)
            .show(ui, |ui| {
                let s = &mut p.scan;
                ui.add(Slider::new(&mut s.line_jitter_px, 0.0..=5.0).text("line jitter (px RMS)"))
                    .on_hover_text(param_help("line jitter (px RMS)"));
                ui.add(
                    Slider::new(&mut s.line_jitter_correlation, 0.0..=0.99)
                        .text("jitter line-to-line correlation"),
                )
                .on_hover_text(param_help("jitter line-to-line correlation"));
                let md = defect_detector::synth::params::MAX_DRIFT_PX_PER_KLINE;
                ui.add(
                    Slider::new(&mut s.drift_x_px_per_kline, -md..=md)
                        .text("drift x (px/1000 lines)"),
                )
                .on_hover_text("Shear: 100 px per 1000 lines is a 10 % shear");
                ui.add(
                    Slider::new(&mut s.drift_y_px_per_kline, -md..=md)
                        .text("drift y (px/1000 lines)"),
                )
                .on_hover_text("Stretch of the slow-scan axis: 100 is 10 %");
                ui.add(
                    Slider::new(&mut s.jitter_bursts_per_kline, 0.0..=50.0)
                        .text("jitter bursts (per 1000 lines)"),
                )
                .on_hover_text("Bursts of torn lines: the horizontal streaks of real frames");
                ui.add(
                    Slider::new(&mut s.jitter_burst_px, 0.0..=6.0).text("burst jitter (px RMS)"),
                )
                .on_hover_text(param_help("burst jitter (px RMS)"));
                ui.add(
                    Slider::new(&mut s.jitter_burst_lines, 1.0..=100.0)
                        .text("burst length (lines)"),
                )
                .on_hover_text(param_help("burst length (lines)"));
                ui.add(Slider::new(&mut s.wobble_px, 0.0..=2.0).text("stray-field wobble (px)"))
                    .on_hover_text(param_help("stray-field wobble (px)"));
                ui.add(
                    Slider::new(&mut s.wobble_period_lines, 2.0..=400.0)
                        .text("wobble period (lines)"),
                )
                .on_hover_text(param_help("wobble period (lines)"));
                ui.add(Slider::new(&mut s.afterglow_px, 0.0..=5.0).text("detector afterglow (px)"))
                    .on_hover_text(param_help("detector afterglow (px)"));
                ui.add(Slider::new(&mut s.flyback_amplitude, 0.0..=2.0).text("flyback streak"))
                    .on_hover_text(param_help("flyback streak"));
                ui.add(
                    Slider::new(&mut s.flyback_length_px, 0.0..=200.0).text("flyback length (px)"),
                )
                .on_hover_text(param_help("flyback length (px)"));
            });
        egui::CollapsingHeader::new("Labels")
            .default_open(false)
            .show(ui, |ui| {
                let l = &mut p.labels;
                ui.add(Slider::new(&mut l.cell_margin, 0.0..=1.0).text("point-defect box margin"))
                    .on_hover_text(param_help("point-defect box margin"));
                ui.add(
                    Slider::new(&mut l.boundary_width_a, 2.0..=40.0).text("boundary box width (Å)"),
                )
                .on_hover_text(param_help("boundary box width (Å)"));
            });
        ui.separator();
        if ui.button("Reset to defaults").clicked() {
            let seed = self.settings.params.seed;
            self.settings.params = SynthParams {
                seed,
                ..Default::default()
            };
        }
        ui.separator();
        ui.label("Save this image with labels and sidecar");
        if let Some(picked) = folder_picker(ui, &mut self.settings.out_dir, self.pick_job.is_some())
        {
            self.pick_job = Some(picked);
        }
        ui.horizontal(|ui| {
            ui.selectable_value(&mut self.settings.format, ImageFormat::Png, "PNG 8-bit");
            ui.selectable_value(
                &mut self.settings.format,
                ImageFormat::Tiff16,
                "TIFF 16-bit counts",
            );
        });
        let can_save = self.current.is_some() && self.save_job.is_none();
        if ui
            .add_enabled(can_save, egui::Button::new("Save"))
            .clicked()
            && let Some(cur) = &self.current
        {
            let s = cur.synth.clone();
            let dir = std::path::PathBuf::from(&self.settings.out_dir);
            let fmt = self.settings.format;
            self.save_job = Some(Job::spawn("save-synth", notify.clone(), move |_| {
                let stem = format!(
                    "synth_{}_s{}",
                    s.params.crystal.preset.cli_name(),
                    s.params.seed
                );
                synth::write_outputs(&s, &dir, &stem, fmt)
            }));
        }
        if !self.status.is_empty() {
            ui.label(&self.status);
        }
    }

    fn overlay(&self) -> Vec<OverlayBox> {
        let Some(cur) = &self.current else {
            return vec![];
        };
        let px_a = cur.synth.params.pixel_size_a();
        cur.synth
            .labels
            .iter()
            .enumerate()
            .filter(|(_, l)| self.settings.show_class[l.class.id()])
            .map(|(i, l)| {
                let snr = match (l.class, &self.current_snr) {
                    (DefectClass::GrainBoundary, _) => String::new(),
                    (_, None) => "\nSNR d': measuring...".into(),
                    (_, Some(v)) => match v.get(i).copied().flatten() {
                        Some(d) if d < ROSE_SNR => format!(
                            "\nSNR d' {d:.1} (ideal observer): below Rose's {ROSE_SNR}, \
                             the noise hides it"
                        ),
                        Some(d) => format!("\nSNR d' {d:.1} (ideal observer)"),
                        None => String::new(),
                    },
                };
                OverlayBox {
                    obb: l.obb,
                    class: l.class.id(),
                    caption: None,
                    tooltip: format!(
                        "{}\ncentre ({:.1}, {:.1}) px\n{:.1} × {:.1} px = {:.2} × {:.2} nm\nangle {:.1}°{snr}",
                        l.class.name(),
                        l.obb.cx,
                        l.obb.cy,
                        l.obb.w,
                        l.obb.h,
                        l.obb.w * px_a / 10.0,
                        l.obb.h * px_a / 10.0,
                        l.obb.angle.to_degrees()
                    ),
                }
            })
            .collect()
    }

    fn preview_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let mut counts = [0usize; 3];
            if let Some(cur) = &self.current {
                for l in &cur.synth.labels {
                    counts[l.class.id()] += 1;
                }
            }
            class_legend(ui, &mut self.settings.show_class, &counts);
            ui.separator();
            zoom_buttons(ui, &mut self.canvas, "preview");
            if let Some(cur) = &self.current {
                ui.separator();
                let ups = if self.updates.len() >= 2 {
                    let span = self.updates.last().unwrap() - self.updates.first().unwrap();
                    if span > 0.0 {
                        (self.updates.len() - 1) as f64 / span
                    } else {
                        0.0
                    }
                } else {
                    0.0
                };
                ui.label(format!(
                    "{}×{} px · {:.1} nm field · generated in {:.1} ms{}",
                    cur.synth.image.width,
                    cur.synth.image.height,
                    cur.synth.image.width as f64 * cur.synth.params.pixel_size_pm / 1000.0,
                    cur.ms,
                    if ups > 0.5 {
                        format!(" · {ups:.0} updates/s")
                    } else {
                        String::new()
                    }
                ));
                let hidden = self
                    .current_snr
                    .as_ref()
                    .map_or(0, |v| v.iter().flatten().filter(|&&d| d < ROSE_SNR).count());
                if hidden > 0 {
                    ui.label(format!(
                        "· {hidden} point defect(s) below SNR d' {ROSE_SNR} (hover a box)"
                    ))
                    .on_hover_text(
                        "The ideal observer's signal-to-noise ratio at this dose: below Rose's \
                         criterion (5) the noise hides the defect from any detector.",
                    );
                }
                if !cur.synth.scene.unplaced.is_empty() {
                    ui.colored_label(
                        egui::Color32::from_rgb(230, 159, 0),
                        format!("no room for: {}", cur.synth.scene.unplaced.join(", ")),
                    );
                }
            }
            if self.preview.is_busy() {
                ui.spinner();
            }
            ui.label(&self.readout);
        });
        if let Some(e) = &self.error {
            ui.colored_label(egui::Color32::from_rgb(213, 94, 0), e);
        }
        let boxes = self.overlay();
        let r = self.canvas.show(ui, &boxes, true);
        if let (Some(resp), Some(cur)) = (&r.response, &self.current) {
            super::widgets::scale_bar(
                ui,
                resp.rect,
                self.canvas.zoom(),
                cur.synth.params.pixel_size_pm / 1000.0,
            );
        }
        self.readout = match (r.pointer_image_pos, &self.current) {
            (Some(p), Some(cur)) => {
                let v = cur.synth.image.get(p[0] as usize, p[1] as usize);
                let nm = cur.synth.params.pixel_size_pm / 1000.0;
                format!(
                    "x {:.0} y {:.0} px · ({:.3}, {:.3}) nm · {:.0} counts",
                    p[0],
                    p[1],
                    p[0] * nm,
                    p[1] * nm,
                    v
                )
            }
            _ => String::new(),
        };
    }
}

/// The notify callback the GUI passes to jobs: wake the UI.
pub fn repaint_notify(ctx: &egui::Context) -> Notify {
    let ctx = ctx.clone();
    Arc::new(move || ctx.request_repaint())
}
