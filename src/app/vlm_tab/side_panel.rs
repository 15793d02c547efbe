//! The VLM tab's side panel: the patch source, the provider and key, strategy and sample,
//! prompt texts, the detector, and run files.
//!
//! Edits the persisted settings (and the session-only typed key) and starts work only through
//! the shell's methods; it must not put the typed key anywhere but `typed_key`.

use super::{KeySource, PatchSourceKind, PickTarget, VlmTab};
use crate::app::widgets::folder_picker;
use defect_detector::jobs::Notify;
use defect_detector::synth::crystal::Preset;
use defect_detector::vlm::prompt::{PromptTexts, Strategy};
use egui::RichText;
use std::path::PathBuf;

impl VlmTab {
    pub(super) fn settings_ui(&mut self, ui: &mut egui::Ui, notify: &Option<Notify>) {
        ui.heading("VLM screening");
        let busy = self.is_busy();
        egui::CollapsingHeader::new("Patches")
            .default_open(true)
            .show(ui, |ui| self.patches_ui(ui, notify));
        egui::CollapsingHeader::new("Provider")
            .default_open(true)
            .show(ui, |ui| self.provider_ui(ui));
        egui::CollapsingHeader::new("Strategy and sample")
            .default_open(true)
            .show(ui, |ui| self.strategy_ui(ui));
        egui::CollapsingHeader::new("Prompt texts")
            .default_open(false)
            .show(ui, |ui| self.texts_ui(ui));
        ui.separator();
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!busy, egui::Button::new(RichText::new("Run").strong()))
                .on_hover_text("Screen the sample with the model")
                .clicked()
            {
                self.start_vlm_run(notify);
            }
            if ui
                .add_enabled(
                    self.probe_job.is_none(),
                    egui::Button::new("Test connection"),
                )
                .on_hover_text(
                    "Ask the server for its models (GET /models, 5 s): is anything there?",
                )
                .clicked()
            {
                self.start_probe(notify);
            }
            if self.probe_job.is_some() {
                ui.spinner();
            }
            if busy && ui.button("Cancel").clicked() {
                if let Some(j) = &self.job {
                    j.cancel();
                }
                if let Some(j) = &self.set_job {
                    j.cancel();
                }
            }
        });
        ui.separator();
        ui.strong("Detector");
        ui.horizontal(|ui| {
            labelled(
                ui,
                "Model",
                egui::TextEdit::singleline(&mut self.settings.detector_model)
                    .desired_width(180.0)
                    .hint_text("models/….onnx"),
            );
            if ui
                .add_enabled(self.pick_job.is_none(), egui::Button::new("Browse…"))
                .clicked()
            {
                self.pick_file(PickTarget::Model, notify);
            }
        });
        ui.add(
            egui::Slider::new(&mut self.settings.det_conf, 0.01..=0.95)
                .text("confidence threshold"),
        );
        let can_det = !busy && !self.settings.detector_model.trim().is_empty();
        if ui
            .add_enabled(
                can_det,
                egui::Button::new("Run detector on the same patches"),
            )
            .on_hover_text(
                "Class of the strongest detection (bulk when none) on the shown run's patches, \
                 or on the sample above when no run is shown",
            )
            .clicked()
        {
            self.start_detector_run(notify);
        }
        ui.separator();
        ui.strong("Run files");
        ui.horizontal(|ui| {
            labelled(
                ui,
                "Run file",
                egui::TextEdit::singleline(&mut self.settings.run_file).desired_width(180.0),
            );
            if ui
                .add_enabled(self.pick_job.is_none(), egui::Button::new("Pick…"))
                .clicked()
            {
                self.pick_file(PickTarget::RunFile, notify);
            }
        });
        ui.horizontal(|ui| {
            if ui.button("Load run JSON").clicked() {
                let p = PathBuf::from(self.settings.run_file.trim());
                self.load_run_file(&p);
            }
            if ui
                .add_enabled(
                    self.shown_run().is_some(),
                    egui::Button::new("Save run JSON"),
                )
                .on_hover_text("Save the shown run")
                .clicked()
            {
                self.save_shown_run();
            }
        });
        ui.horizontal(|ui| {
            labelled(
                ui,
                "CSV file",
                egui::TextEdit::singleline(&mut self.settings.csv_file).desired_width(150.0),
            );
            if ui
                .add_enabled(self.shown_run().is_some(), egui::Button::new("Export CSV"))
                .clicked()
            {
                self.export_shown_csv();
            }
        });
    }

    fn patches_ui(&mut self, ui: &mut egui::Ui, notify: &Option<Notify>) {
        let s = &mut self.settings;
        ui.horizontal(|ui| {
            ui.selectable_value(&mut s.source, PatchSourceKind::Generated, "Generated");
            ui.selectable_value(&mut s.source, PatchSourceKind::Folder, "Folder");
        });
        match s.source {
            PatchSourceKind::Generated => {
                let g = &mut s.generate;
                egui::Grid::new("vlm-gen").num_columns(2).show(ui, |ui| {
                    labelled(
                        ui,
                        "Patch size (px)",
                        egui::DragValue::new(&mut g.patch_size).range(16..=512),
                    );
                    ui.end_row();
                    labelled(
                        ui,
                        "Patches per class",
                        egui::DragValue::new(&mut g.per_class).range(1..=2000),
                    );
                    ui.end_row();
                    labelled(
                        ui,
                        "Pixel size (pm/px)",
                        egui::DragValue::new(&mut g.pixel_size_pm)
                            .range(5.0..=100.0)
                            .speed(0.5),
                    );
                    ui.end_row();
                    labelled(ui, "Generator seed", egui::DragValue::new(&mut g.seed));
                    ui.end_row();
                    let l = ui.label("Crystal");
                    egui::ComboBox::from_id_salt("vlm-preset")
                        .selected_text(g.preset.label())
                        .show_ui(ui, |ui| {
                            for p in Preset::ALL.into_iter().filter(|p| *p != Preset::Custom) {
                                ui.selectable_value(&mut g.preset, p, p.label());
                            }
                        })
                        .response
                        .labelled_by(l.id);
                    ui.end_row();
                });
                ui.weak(format!(
                    "{:.2} nm per patch side; bulk, vacancy, interstitial, grain_boundary",
                    g.patch_size as f64 * g.pixel_size_pm / 1000.0
                ));
            }
            PatchSourceKind::Folder => {
                ui.label("One subfolder per class, or files named Class_N.png");
                if let Some(j) = folder_picker(ui, &mut s.folder, self.pick_job.is_some()) {
                    self.pick_job = Some((PickTarget::Folder, j));
                }
                ui.horizontal(|ui| {
                    labelled(
                        ui,
                        "Pixel size (pm/px, 0 = unknown)",
                        egui::DragValue::new(&mut s.folder_pixel_pm)
                            .range(0.0..=1000.0)
                            .speed(0.5),
                    );
                });
            }
        }
        // Wrapped: the class counts must not widen the panel once the patches are ready.
        ui.horizontal_wrapped(|ui| {
            if ui
                .add_enabled(!self.is_busy(), egui::Button::new("Prepare patches"))
                .on_hover_text("Load or generate the set now (a run does it when needed)")
                .clicked()
            {
                self.start_prepare(notify);
            }
            let d = self.recipe().describe();
            if let Some(set) = self.set.as_ref().filter(|s| s.description == d) {
                let counts = set.set.counts();
                ui.weak(
                    set.set
                        .classes
                        .iter()
                        .zip(counts)
                        .map(|(c, n)| format!("{c} {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
        });
    }

    fn provider_ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut self.settings;
        egui::Grid::new("vlm-provider")
            .num_columns(2)
            .show(ui, |ui| {
                labelled(
                    ui,
                    "Base URL",
                    egui::TextEdit::singleline(&mut s.base_url)
                        .desired_width(200.0)
                        .hint_text("http://localhost:11434/v1"),
                );
                ui.end_row();
                labelled(
                    ui,
                    "Model name",
                    egui::TextEdit::singleline(&mut s.model).desired_width(200.0),
                );
                ui.end_row();
            });
        egui::CollapsingHeader::new("No VLM server?")
            .default_open(false)
            .show(ui, |ui| {
                ui.small(
                    "Any OpenAI-compatible chat server with image input works. On this \
                     computer: Ollama (`ollama pull qwen2.5vl`, base URL \
                     http://localhost:11434/v1, key none), vLLM (`vllm serve MODEL`, \
                     http://localhost:8000/v1) or LM Studio (http://localhost:1234/v1). \
                     Hosted: the provider's /v1 URL with its key from an environment variable. \
                     \"Test connection\" checks that something answers before a run.",
                );
                ui.small(
                    "Without any server, \"Run detector on the same patches\" scores the ONNX \
                     detector on the same patches offline.",
                );
            });
        ui.horizontal(|ui| {
            ui.label("API key:");
            ui.selectable_value(&mut s.key_source, KeySource::None, "none");
            ui.selectable_value(&mut s.key_source, KeySource::EnvVar, "from env var");
            ui.selectable_value(&mut s.key_source, KeySource::Typed, "typed");
        });
        match s.key_source {
            KeySource::None => {}
            KeySource::EnvVar => {
                ui.horizontal(|ui| {
                    labelled(
                        ui,
                        "Variable name",
                        egui::TextEdit::singleline(&mut s.key_env).desired_width(160.0),
                    );
                });
                let set = std::env::var(s.key_env.trim()).is_ok_and(|v| !v.trim().is_empty());
                ui.weak(if set {
                    "variable is set"
                } else {
                    "variable is not set"
                });
            }
            KeySource::Typed => {
                ui.horizontal(|ui| {
                    labelled(
                        ui,
                        "API key",
                        egui::TextEdit::singleline(&mut self.typed_key)
                            .password(true)
                            .desired_width(180.0),
                    );
                });
                ui.weak("kept in memory for this session only, never saved");
            }
        }
    }

    fn strategy_ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut self.settings;
        egui::Grid::new("vlm-strategy")
            .num_columns(2)
            .show(ui, |ui| {
                let l = ui.label("Strategy");
                egui::ComboBox::from_id_salt("vlm-strategy-combo")
                    .selected_text(s.strategy.name())
                    .show_ui(ui, |ui| {
                        for st in Strategy::ALL {
                            ui.selectable_value(&mut s.strategy, st, st.name());
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                labelled(
                    ui,
                    "N per class",
                    egui::DragValue::new(&mut s.n_per_class).range(1..=1000),
                );
                ui.end_row();
                let l = ui.label("k examples per class");
                ui.add_enabled(
                    s.strategy.uses_examples(),
                    egui::DragValue::new(&mut s.k_per_class).range(0..=10),
                )
                .labelled_by(l.id);
                ui.end_row();
                labelled(ui, "Sample seed", egui::DragValue::new(&mut s.seed));
                ui.end_row();
                labelled(
                    ui,
                    "Parallel requests",
                    egui::DragValue::new(&mut s.concurrency).range(1..=64),
                );
                ui.end_row();
                labelled(
                    ui,
                    "Timeout (s)",
                    egui::DragValue::new(&mut s.timeout_s).range(1.0..=3600.0),
                );
                ui.end_row();
            });
        ui.checkbox(&mut s.json_mode, "ask for JSON output (json_object)");
        ui.horizontal(|ui| {
            let l = ui.checkbox(&mut s.use_cache, "cache replies in");
            ui.add_enabled(
                s.use_cache,
                egui::TextEdit::singleline(&mut s.cache_dir).desired_width(120.0),
            )
            .labelled_by(l.id);
        });
    }

    fn texts_ui(&mut self, ui: &mut egui::Ui) {
        let t = &mut self.settings.texts;
        let edit = |ui: &mut egui::Ui, label: &str, text: &mut String| {
            ui.label(label);
            ui.add(
                egui::TextEdit::multiline(text)
                    .desired_rows(2)
                    .desired_width(f32::INFINITY),
            );
        };
        ui.weak(
            "Placeholders: {classes} in task and answer format; {n}, {class} in example label.",
        );
        edit(ui, "System", &mut t.system);
        edit(ui, "Task", &mut t.task);
        edit(ui, "Answer format", &mut t.answer_format);
        edit(ui, "Definitions intro", &mut t.definitions_intro);
        for d in t.definitions.iter_mut() {
            edit(ui, &format!("Definition: {}", d.class), &mut d.text);
        }
        edit(ui, "Crystallography", &mut t.crystallography);
        edit(ui, "Appearance intro", &mut t.appearance_intro);
        for d in t.appearance.iter_mut() {
            edit(ui, &format!("Appearance: {}", d.class), &mut d.text);
        }
        edit(ui, "Examples intro", &mut t.examples_intro);
        edit(ui, "Example label", &mut t.example_label);
        edit(ui, "Query intro", &mut t.query_intro);
        if ui.button("Reset texts").clicked() {
            *t = PromptTexts::default();
        }
    }
}

/// A label and a widget named by it (screen readers and tests find the widget by the label).
fn labelled(ui: &mut egui::Ui, text: &str, w: impl egui::Widget) -> egui::Response {
    let l = ui.label(text);
    ui.add(w).labelled_by(l.id)
}
