//! The VLM tab's results: progress, the list of runs, the shown run (confusion matrix and
//! scores), the patches behind a selected cell with their thumbnails, and the comparison.
//!
//! Draws the tab's state and records what the user picks (shown run, cell, runs to compare,
//! counts or fractions); work goes through the jobs in the shell, never started here.

use super::{RunSlot, SetRecipe, VlmTab};
use crate::app::confusion_matrix::confusion_matrix;
use defect_detector::vlm::detector_classifier::ScreeningRun;
use defect_detector::vlm::generate::PatchGenSpec;
use defect_detector::vlm::metrics::{ClassificationMetrics, UsageStats};
use defect_detector::vlm::record::PatchRecord;
use egui::{Color32, RichText, Vec2};

/// Most patches listed for a selected cell (each is a texture).
const MAX_LISTED: usize = 120;
const THUMB: f32 = 112.0;

impl VlmTab {
    pub(super) fn results_ui(&mut self, ui: &mut egui::Ui) {
        let control = match (&self.job, &self.set_job) {
            (Some(j), _) => Some(j.control().clone()),
            (None, Some(j)) => Some(j.control().clone()),
            _ => None,
        };
        if let Some(c) = control {
            ui.horizontal(|ui| {
                ui.add(
                    egui::ProgressBar::new(c.progress() as f32)
                        .desired_width(300.0)
                        .show_percentage(),
                );
                ui.label(c.message());
                if let Some(eta) = c.eta() {
                    ui.weak(format!("about {:.0} s left", eta.as_secs_f64()));
                }
            });
        }
        if let Some(e) = &self.error {
            ui.colored_label(Color32::from_rgb(213, 94, 0), e);
        }
        if !self.status.is_empty() {
            ui.label(&self.status);
        }
        if self.runs.is_empty() {
            ui.add_space(20.0);
            ui.label("No runs yet. Run a model on a patch set (left), or load a saved run JSON.");
            return;
        }
        self.runs_list_ui(ui);
        if let Some(i) = self.shown.filter(|&i| i < self.runs.len()) {
            ui.separator();
            self.run_detail_ui(ui, i);
        }
        if self.runs.iter().filter(|r| r.compare).count() >= 2 {
            ui.separator();
            egui::CollapsingHeader::new("Comparison")
                .default_open(true)
                .show(ui, |ui| self.comparison_ui(ui));
        }
    }

    fn runs_list_ui(&mut self, ui: &mut egui::Ui) {
        ui.strong("Runs");
        let mut remove = None;
        egui::Grid::new("vlm-runs")
            .striped(true)
            .num_columns(7)
            .show(ui, |ui| {
                ui.weak("compare");
                ui.weak("run");
                ui.weak("patches");
                ui.weak("accuracy");
                ui.weak("macro-F1");
                ui.weak("no answer");
                ui.weak("");
                ui.end_row();
                for (k, slot) in self.runs.iter_mut().enumerate() {
                    ui.checkbox(&mut slot.compare, format!("{}", k + 1))
                        .on_hover_text("Include in the comparison");
                    let label = slot.run.label();
                    if ui
                        .selectable_label(self.shown == Some(k), &label)
                        .on_hover_text(slot.run.patch_source())
                        .clicked()
                    {
                        self.shown = Some(k);
                        self.cell = None;
                    }
                    let m = &slot.metrics;
                    ui.label(m.total.to_string());
                    ui.label(pct(m.accuracy));
                    ui.label(num(m.macro_f1));
                    ui.label((m.total - m.answered).to_string());
                    if ui.small_button("Remove").clicked() {
                        remove = Some(k);
                    }
                    ui.end_row();
                }
            });
        if let Some(k) = remove {
            self.runs.remove(k);
            self.cell = None;
            self.shown = match self.shown {
                Some(s) if s == k => (!self.runs.is_empty()).then(|| k.min(self.runs.len() - 1)),
                Some(s) if s > k => Some(s - 1),
                other => other,
            };
        }
    }

    fn comparison_ui(&self, ui: &mut egui::Ui) {
        let cols: Vec<&RunSlot> = self.runs.iter().filter(|r| r.compare).collect();
        let mut classes: Vec<String> = Vec::new();
        for r in &cols {
            for c in r.run.classes() {
                if !classes.contains(c) {
                    classes.push(c.clone());
                }
            }
        }
        egui::ScrollArea::horizontal().show(ui, |ui| {
            egui::Grid::new("vlm-compare")
                .striped(true)
                .num_columns(cols.len() + 1)
                .show(ui, |ui| {
                    ui.weak("metric");
                    for r in &cols {
                        ui.strong(r.run.label());
                    }
                    ui.end_row();
                    let row = |ui: &mut egui::Ui, name: &str, f: &dyn Fn(&RunSlot) -> String| {
                        ui.label(name);
                        for r in &cols {
                            ui.label(f(r));
                        }
                        ui.end_row();
                    };
                    row(ui, "patches", &|r| r.metrics.total.to_string());
                    row(ui, "accuracy", &|r| pct(r.metrics.accuracy));
                    row(ui, "accuracy (answered)", &|r| {
                        pct(r.metrics.answered_accuracy)
                    });
                    row(ui, "macro-F1", &|r| num(r.metrics.macro_f1));
                    for c in &classes {
                        row(ui, &format!("F1 {c}"), &|r| {
                            r.metrics
                                .per_class
                                .iter()
                                .find(|s| &s.class == c)
                                .map_or("-".into(), |s| num(s.f1))
                        });
                    }
                    row(ui, "no answer", &|r| {
                        (r.metrics.total - r.metrics.answered).to_string()
                    });
                    row(ui, "latency p50", &|r| ms(r.usage.latency_p50_ms));
                    row(ui, "latency p95", &|r| ms(r.usage.latency_p95_ms));
                    row(ui, "tokens", &|r| r.usage.total_tokens().to_string());
                });
        });
    }

    fn run_detail_ui(&mut self, ui: &mut egui::Ui, i: usize) {
        let slot = &self.runs[i];
        ui.heading(slot.run.label());
        let src = slot.run.patch_source();
        ui.weak(format!(
            "patches: {}",
            PatchGenSpec::from_description(src).map_or_else(|| src.to_string(), |g| g.summary())
        ))
        .on_hover_text(src);
        for n in slot.run.notes() {
            ui.weak(format!("note: {n}"));
        }
        ui.horizontal(|ui| {
            ui.label("Matrix:");
            ui.selectable_value(&mut self.settings.normalised, false, "Counts");
            ui.selectable_value(&mut self.settings.normalised, true, "Row-normalised");
        });
        let normalised = self.settings.normalised;
        let slot = &self.runs[i];
        let mut matrix = |ui: &mut egui::Ui| {
            if let Some(c) =
                confusion_matrix(ui, &slot.metrics.matrix, normalised, self.cell, "vlm-cell")
            {
                self.cell = if self.cell == Some(c) { None } else { Some(c) };
            }
            ui.weak("rows: true class · columns: answer · click a cell to list its patches");
        };
        // Scores beside the matrix when there is room, below it otherwise.
        if ui.available_width() >= 1000.0 {
            ui.horizontal_top(|ui| {
                ui.vertical(|ui| matrix(ui));
                ui.add_space(16.0);
                ui.vertical(|ui| scores_ui(ui, &slot.metrics, &slot.usage, &slot.run));
            });
        } else {
            matrix(ui);
            ui.add_space(8.0);
            scores_ui(ui, &slot.metrics, &slot.usage, &slot.run);
        }
    }

    pub(super) fn selection_ui(&mut self, ui: &mut egui::Ui, i: usize) {
        let Some((t, p)) = self.cell else {
            return;
        };
        let run = &self.runs[i].run;
        let classes = run.classes();
        let (Some(truth), pred) = (classes.get(t), classes.get(p)) else {
            return;
        };
        let records: Vec<PatchRecord> = run
            .records()
            .iter()
            .filter(|r| {
                &r.truth == truth
                    && match pred {
                        Some(c) => r.predicted.as_ref() == Some(c),
                        None => r.predicted.is_none(),
                    }
            })
            .cloned()
            .collect();
        let pred_name = pred.map_or("no answer", |s| s.as_str());
        ui.horizontal(|ui| {
            ui.strong(format!(
                "True {truth}, answered {pred_name}: {} patch(es)",
                records.len()
            ));
            if ui.small_button("Close").clicked() {
                self.cell = None;
            }
        });
        let patch_source = run.patch_source().to_string();
        let ctx = ui.ctx().clone();
        let missing = records
            .iter()
            .take(MAX_LISTED)
            .filter(|r| self.thumb(&ctx, r).is_none())
            .count();
        if missing > 0 {
            ui.horizontal(|ui| {
                ui.weak(format!("{missing} patch image(s) not in memory"));
                if PatchGenSpec::from_description(&patch_source).is_some()
                    && ui
                        .add_enabled(!self.is_busy(), egui::Button::new("Regenerate the patches"))
                        .on_hover_text(
                            "Rebuild the synthetic set this run used, to show its images",
                        )
                        .clicked()
                {
                    let notify = self.notify.clone();
                    self.start_set_job(SetRecipe::from_patch_source(&patch_source), &notify);
                }
            });
        }
        egui::Grid::new("vlm-cell-patches")
            .striped(true)
            .num_columns(2)
            .show(ui, |ui| {
                for r in records.iter().take(MAX_LISTED) {
                    match self.thumb(&ctx, r) {
                        Some(tex) => {
                            ui.add(
                                egui::Image::from_texture(&tex)
                                    .fit_to_exact_size(Vec2::splat(THUMB)),
                            )
                            .on_hover_text(&r.hash);
                        }
                        None => {
                            ui.add_sized([THUMB, THUMB], egui::Label::new("(no image)"));
                        }
                    }
                    ui.vertical(|ui| {
                        ui.label(RichText::new(&r.source).small());
                        let conf = r.confidence.map_or(String::new(), |c| format!(" ({c:.2})"));
                        ui.label(format!(
                            "answer: {}{conf}",
                            r.predicted.as_deref().unwrap_or("none")
                        ));
                        if let Some(e) = &r.explanation {
                            ui.label(RichText::new(e).italics());
                        }
                        if let Some(f) = r.failure {
                            ui.label(format!(
                                "failure: {f}{}",
                                r.failure_detail
                                    .as_deref()
                                    .map(|d| format!(": {}", shorten(d, 200)))
                                    .unwrap_or_default()
                            ));
                            if let Some(raw) = &r.raw_reply {
                                ui.weak(format!("reply: {}", shorten(raw, 300)));
                            }
                        }
                    });
                    ui.end_row();
                }
            });
        if records.len() > MAX_LISTED {
            ui.weak(format!("… and {} more", records.len() - MAX_LISTED));
        }
    }

    /// The thumbnail of a record's patch: from a set in memory, else from its source file.
    fn thumb(&mut self, ctx: &egui::Context, r: &PatchRecord) -> Option<egui::TextureHandle> {
        if let Some(t) = self.thumbs.get(&r.hash) {
            return Some(t.clone());
        }
        if self.missing.contains(&r.hash) {
            return None;
        }
        let img = if let Some((set, i)) = self.known.get(&r.hash) {
            let p = &set.set.patches[*i];
            Some(egui::ColorImage::from_gray(
                [p.width as usize, p.height as usize],
                &p.gray,
            ))
        } else {
            // Folder runs record file paths: small PNGs decode in well under a frame.
            image::open(&r.source).ok().map(|i| {
                let g = i.to_luma8();
                egui::ColorImage::from_gray([g.width() as usize, g.height() as usize], g.as_raw())
            })
        };
        let Some(img) = img else {
            self.missing.insert(r.hash.clone());
            return None;
        };
        let opts = egui::TextureOptions {
            magnification: egui::TextureFilter::Nearest,
            minification: egui::TextureFilter::Linear,
            ..Default::default()
        };
        let texture = ctx.load_texture(format!("vlm-thumb-{}", r.hash), img, opts);
        self.thumbs.insert(r.hash.clone(), texture.clone());
        Some(texture)
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

/// Milliseconds with enough digits for fast detectors and slow servers alike.
fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 10.0 => format!("{v:.2} ms"),
        Some(v) => format!("{v:.0} ms"),
    }
}

fn scores_ui(ui: &mut egui::Ui, m: &ClassificationMetrics, u: &UsageStats, run: &ScreeningRun) {
    ui.label(
        RichText::new(format!(
            "Accuracy {}  ·  macro-F1 {}",
            pct(m.accuracy),
            num(m.macro_f1)
        ))
        .size(16.0)
        .strong(),
    );
    ui.label(format!(
        "{} correct of {} patches; {} answered ({} on answered)",
        m.correct,
        m.total,
        m.answered,
        pct(m.answered_accuracy)
    ));
    ui.add_space(4.0);
    egui::Grid::new("vlm-per-class")
        .striped(true)
        .num_columns(5)
        .show(ui, |ui| {
            for h in ["class", "support", "precision", "recall", "F1"] {
                ui.weak(h);
            }
            ui.end_row();
            for c in &m.per_class {
                ui.label(&c.class);
                ui.label(c.support.to_string());
                ui.label(num(c.precision));
                ui.label(num(c.recall));
                ui.label(num(c.f1));
                ui.end_row();
            }
        });
    ui.add_space(4.0);
    if m.failures.is_empty() {
        ui.label("No failures");
    } else {
        ui.label(format!(
            "No answer: {}",
            m.failures
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let latency_name = match run {
        ScreeningRun::Vlm(_) => "Latency",
        ScreeningRun::Detector(_) => "Detection time",
    };
    ui.label(format!(
        "{latency_name} p50 {} · p95 {} ({} responses, {} from cache)",
        ms(u.latency_p50_ms),
        ms(u.latency_p95_ms),
        u.responses,
        u.cached
    ));
    if let ScreeningRun::Vlm(r) = run {
        ui.label(format!(
            "Tokens: {} prompt + {} completion = {} ({} responses reported usage)",
            u.prompt_tokens,
            u.completion_tokens,
            u.total_tokens(),
            u.with_usage
        ));
        let f = r.answer_formats();
        if !f.is_empty() {
            ui.label(format!(
                "Answer formats: {}",
                f.iter()
                    .map(|(k, n)| format!("{k:?} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        ui.weak(format!(
            "{} · {} · {:.1} s · {}",
            r.meta.endpoint, r.meta.strategy, r.meta.wall_s, r.meta.started_utc
        ));
    }
}
