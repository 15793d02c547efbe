//! The desktop app (egui). Only this module tree imports egui; it calls the library for work.
//! A thin shell switches between self-contained tabs, one file each.

pub mod annotate;
pub mod canvas;
pub mod confusion_matrix;
pub mod dataset_tab;
pub mod review_tab;
pub mod spectrum_panel;
mod synth_help;
mod synth_tab;
pub mod viewer_jobs;
pub mod viewer_labels;
pub mod viewer_realism;
pub mod viewer_tab;
pub mod viewer_watch;
pub mod vlm_tab;
pub mod widgets;
mod x11_focus;

use dataset_tab::{DatasetSettings, DatasetTab};
use defect_detector::jobs::Notify;
use review_tab::{ReviewSettings, ReviewTab};
use serde::{Deserialize, Serialize};
use synth_tab::{SynthSettings, SynthTab};
use viewer_tab::{ViewerSettings, ViewerTab};
use vlm_tab::{VlmSettings, VlmTab};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Tab {
    #[default]
    Synthesize,
    Viewer,
    Dataset,
    Vlm,
    Review,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Synthesize,
        Tab::Dataset,
        Tab::Viewer,
        Tab::Vlm,
        Tab::Review,
    ];

    /// Name on the command line (`defect-detector app --tab NAME`).
    pub fn cli_name(self) -> &'static str {
        match self {
            Tab::Synthesize => "synthesize",
            Tab::Viewer => "viewer",
            Tab::Dataset => "dataset",
            Tab::Vlm => "vlm",
            Tab::Review => "review",
        }
    }

    pub fn from_cli_name(s: &str) -> Option<Tab> {
        Tab::ALL.into_iter().find(|t| t.cli_name() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Tab::Synthesize => "Synthesize",
            Tab::Viewer => "Viewer",
            Tab::Dataset => "Dataset",
            Tab::Vlm => "VLM screening",
            Tab::Review => "Review",
        }
    }
}

/// Everything remembered between runs (eframe storage).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub tab: Tab,
    pub synth: SynthSettings,
    pub viewer: ViewerSettings,
    pub dataset: DatasetSettings,
    pub vlm: VlmSettings,
    pub review: ReviewSettings,
}

/// How the app starts: command-line choices override what was remembered.
#[derive(Default)]
pub struct StartOptions {
    pub tab: Option<Tab>,
    pub synth_params: Option<defect_detector::synth::SynthParams>,
    /// A file or folder to open in the Viewer.
    pub view: Option<std::path::PathBuf>,
    /// Saved screening runs (VLM or detector) to load into the VLM tab.
    pub vlm_runs: Vec<std::path::PathBuf>,
    /// A dataset folder to open in the Review tab.
    pub review: Option<std::path::PathBuf>,
    /// Viewer settings given on the command line (`view --method --crystal --lattice-map`).
    pub viewer_method: Option<defect_detector::detect::combine::DetectMethod>,
    pub viewer_crystal: Option<defect_detector::synth::crystal::Preset>,
    pub lattice_map: Option<defect_detector::lattice::render::MapKind>,
    /// Open the Viewer's power spectrum panel at start (`view --spectrum`).
    pub viewer_spectrum: bool,
    /// Test-time augmentation on or off in the Viewer (`view --tta on|off`, remembered).
    pub viewer_tta: Option<bool>,
}

pub struct DefectApp {
    pub tab: Tab,
    pub synth: SynthTab,
    pub viewer: ViewerTab,
    pub dataset: DatasetTab,
    pub vlm: VlmTab,
    pub review: ReviewTab,
    /// The "?" list of keyboard shortcuts is open.
    pub show_shortcuts: bool,
    notify: Option<Notify>,
}

impl DefectApp {
    pub fn new(ctx: &egui::Context, persisted: Persisted) -> Self {
        let notify = Some(synth_tab::repaint_notify(ctx));
        Self {
            tab: persisted.tab,
            synth: SynthTab::new(persisted.synth, notify.clone()),
            viewer: ViewerTab::new(persisted.viewer, ctx),
            dataset: DatasetTab::new(persisted.dataset, notify.clone()),
            vlm: VlmTab::new(persisted.vlm),
            review: ReviewTab::new(persisted.review),
            show_shortcuts: false,
            notify,
        }
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            tab: self.tab,
            synth: self.synth.settings.clone(),
            viewer: self.viewer.settings.clone(),
            dataset: self.dataset.settings.clone(),
            vlm: self.vlm.settings.clone(),
            review: self.review.settings.clone(),
        }
    }

    /// The whole UI; separate from `eframe::App` so tests can drive it headless.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        if ui.ctx().input(|i| i.viewport().close_requested()) {
            self.viewer.labels.flush();
            self.review.flush();
            // Failed saves are shown in a modal; closing now would drop the edits.
            if !self.viewer.labels.unsaved.is_empty() || !self.review.unsaved.is_empty() {
                ui.ctx()
                    .send_viewport_cmd(egui::ViewportCommand::CancelClose);
            }
        }
        egui::Panel::top("tabs").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.strong("Defect Detector");
                ui.separator();
                for t in Tab::ALL {
                    ui.selectable_value(&mut self.tab, t, t.label());
                }
                if self.synth.is_busy() || self.viewer.is_busy() {
                    ui.separator();
                    ui.spinner();
                    ui.label("working");
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    ui.toggle_value(&mut self.show_shortcuts, "?")
                        .on_hover_text("Keyboard shortcuts of this tab (?)");
                });
            });
        });
        let typing = ui.ctx().egui_wants_keyboard_input();
        let question = ui.input(|i| {
            i.events
                .iter()
                .any(|e| matches!(e, egui::Event::Text(t) if t == "?"))
        });
        if !typing && question {
            self.show_shortcuts = !self.show_shortcuts;
        }
        if self.show_shortcuts {
            let mut open = true;
            egui::Window::new(format!("Shortcuts: {}", self.tab.label()))
                .open(&mut open)
                .collapsible(false)
                .resizable(false)
                .anchor(egui::Align2::RIGHT_TOP, egui::vec2(-12.0, 40.0))
                .show(ui.ctx(), |ui| {
                    egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
                        for (keys, what) in shortcuts(self.tab) {
                            ui.monospace(*keys);
                            ui.label(*what);
                            ui.end_row();
                        }
                    });
                });
            self.show_shortcuts = open;
        }
        match self.tab {
            Tab::Synthesize => self.synth.ui(ui, &self.notify),
            Tab::Viewer => self.viewer.ui(ui),
            Tab::Dataset => self.dataset.ui(ui, &self.notify),
            Tab::Vlm => self.vlm.ui(ui, &self.notify),
            Tab::Review => self.review.ui(ui),
        }
        if let Some(dir) = self.dataset.review_request.take() {
            self.tab = Tab::Review;
            self.review.open(ui.ctx(), &dir);
        }
    }
}

/// Every keyboard shortcut of a tab, as the "?" overlay lists them.
pub fn shortcuts(tab: Tab) -> &'static [(&'static str, &'static str)] {
    const EDITOR: &[(&str, &str)] = &[
        ("click / Shift+click", "select a box / add to the selection"),
        (
            "drag",
            "draw a box; drag a box or its handles to move, resize, rotate",
        ),
        (
            "3 clicks",
            "a box from two corners of one side and the opposite side",
        ),
        ("0-9", "class of the selection (or of the next new box)"),
        ("z x c v", "rotate -5°, -0.5°, +0.5°, +5°"),
        ("Shift+arrows", "move the selection by 1 image pixel"),
        ("Delete / Backspace", "delete the selection"),
        ("Ctrl+D", "duplicate the selection"),
        (
            "Ctrl+Z / Ctrl+Shift+Z",
            "undo / redo (a whole drag is one step)",
        ),
        ("Escape", "clear the selection"),
    ];
    match tab {
        Tab::Viewer => &[
            ("→ / PageDown", "next image in the folder"),
            ("← / PageUp", "previous image"),
            (
                "L",
                "edit labels on this image (then the editor keys below)",
            ),
            ("D", "show / hide the detections panel"),
            ("wheel / drag", "zoom at the pointer / pan"),
            ("double-click", "fit the image"),
            ("?", "this list"),
            (
                "click / Shift+click",
                "select a box / add to the selection (edit mode)",
            ),
            ("0-9", "class of the selection (edit mode)"),
            ("z x c v", "rotate -5°, -0.5°, +0.5°, +5° (edit mode)"),
            ("Delete", "delete the selection (edit mode)"),
            ("Ctrl+Z / Ctrl+Shift+Z", "undo / redo (edit mode)"),
        ],
        Tab::Review => {
            const REVIEW: &[(&str, &str)] = &[
                ("d / →", "next image"),
                ("a / ←", "previous image"),
                ("Space", "mark verified / not verified"),
                ("?", "this list"),
            ];
            // Both lists, review keys first.
            static ALL: std::sync::OnceLock<Vec<(&str, &str)>> = std::sync::OnceLock::new();
            ALL.get_or_init(|| REVIEW.iter().chain(EDITOR).copied().collect())
        }
        Tab::Synthesize => &[
            ("wheel / drag", "zoom at the pointer / pan the preview"),
            ("double-click", "fit the preview"),
            ("?", "this list"),
        ],
        Tab::Dataset | Tab::Vlm => &[("?", "this list")],
    }
}

impl eframe::App for DefectApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        x11_focus::focus_on_press(ui.ctx(), frame);
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.persisted());
    }

    fn on_exit(&mut self) {
        // Label edits younger than the autosave delay.
        self.viewer.labels.flush();
        self.review.flush();
    }
}

pub fn run_app(opts: StartOptions) -> anyhow::Result<()> {
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
            let mut persisted: Persisted = cc
                .storage
                .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
                .unwrap_or_default();
            if let Some(t) = opts.tab {
                persisted.tab = t;
            }
            if let Some(p) = opts.synth_params {
                persisted.synth.params = p;
            }
            if let Some(m) = opts.viewer_method {
                persisted.viewer.method = m;
            }
            if let Some(c) = opts.viewer_crystal {
                persisted.viewer.crystal = c;
            }
            if let Some(t) = opts.viewer_tta {
                persisted.viewer.tta = t;
            }
            if opts.lattice_map.is_some() {
                persisted.viewer.lattice_map = opts.lattice_map;
            }
            let mut app = DefectApp::new(&cc.egui_ctx, persisted);
            if let Some(d) = &opts.review {
                app.tab = Tab::Review;
                app.review.open(&cc.egui_ctx, d);
            }
            for r in &opts.vlm_runs {
                app.tab = Tab::Vlm;
                app.vlm.load_run_file(r);
            }
            if let Some(v) = opts.view {
                app.tab = Tab::Viewer;
                app.viewer.open(&v);
                app.viewer.spectrum_panel.open |= opts.viewer_spectrum;
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}

#[cfg(test)]
mod tests;
