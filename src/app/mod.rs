//! The desktop app (egui). Only this module tree imports egui; it calls the library for work.
//! A thin shell switches between self-contained tabs, one file each.

pub mod canvas;
pub mod synth_tab;
pub mod vlm_tab;
pub mod widgets;

use defect_detector::jobs::Notify;
use serde::{Deserialize, Serialize};
use synth_tab::{SynthSettings, SynthTab};
use vlm_tab::{VlmSettings, VlmTab};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Tab {
    #[default]
    Synthesize,
    Vlm,
}

impl Tab {
    pub const ALL: [Tab; 2] = [Tab::Synthesize, Tab::Vlm];

    pub fn label(self) -> &'static str {
        match self {
            Tab::Synthesize => "Synthesize",
            Tab::Vlm => "VLM screening",
        }
    }
}

/// Everything remembered between runs (eframe storage).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub tab: Tab,
    pub synth: SynthSettings,
    pub vlm: VlmSettings,
}

#[derive(Default)]
pub struct StartOptions {}

pub struct DefectApp {
    pub tab: Tab,
    pub synth: SynthTab,
    pub vlm: VlmTab,
    notify: Option<Notify>,
}

impl DefectApp {
    pub fn new(ctx: &egui::Context, persisted: Persisted) -> Self {
        let notify = Some(synth_tab::repaint_notify(ctx));
        Self {
            tab: persisted.tab,
            synth: SynthTab::new(persisted.synth, notify.clone()),
            vlm: VlmTab::new(persisted.vlm),
            notify,
        }
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            tab: self.tab,
            synth: self.synth.settings.clone(),
            vlm: self.vlm.settings.clone(),
        }
    }

    /// The whole UI; separate from `eframe::App` so tests can drive it headless.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("tabs").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.strong("Defect Detector");
                ui.separator();
                for t in Tab::ALL {
                    ui.selectable_value(&mut self.tab, t, t.label());
                }
            });
        });
        match self.tab {
            Tab::Synthesize => self.synth.ui(ui, &self.notify),
            Tab::Vlm => self.vlm.ui(ui, &self.notify),
        }
    }
}

impl eframe::App for DefectApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.persisted());
    }
}

pub fn run_app(_opts: StartOptions) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_inner_size([1400.0, 900.0])
            .with_min_inner_size([800.0, 500.0])
            .with_title("Defect Detector"),
        ..Default::default()
    };
    eframe::run_native(
        "Defect Detector",
        options,
        Box::new(|cc| {
            let persisted: Persisted = cc
                .storage
                .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
                .unwrap_or_default();
            Ok(Box::new(DefectApp::new(&cc.egui_ctx, persisted)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}

#[cfg(test)]
mod tests;
