//! The VLM screening tab: classify labelled patches with a vision-language model (or with the
//! ONNX detector, on the very same patches), then inspect the confusion matrix, the scores and
//! the patches behind every cell, and compare runs side by side.
//!
//! The API key is never part of [`VlmSettings`] (which is persisted): it is read from an
//! environment variable named by the user, or typed into a password field that lives only in
//! memory for this session.

use super::widgets::folder_picker;
use defect_detector::detect::{Detector, DetectorOptions};
use defect_detector::jobs::{Job, Notify};
use defect_detector::raster::PixelSize;
use defect_detector::synth::crystal::Preset;
use defect_detector::vlm::detector_classifier::{
    DetectorScreenConfig, ScreeningRun, run_detector_eval, same_patches,
};
use defect_detector::vlm::generate::{PatchGenSpec, generate_patch_set};
use defect_detector::vlm::metrics::{ClassificationMetrics, UsageStats};
use defect_detector::vlm::prompt::{PromptTexts, Strategy};
use defect_detector::vlm::record::PatchRecord;
use defect_detector::vlm::run::{ResponseCache, RunConfig, run_vlm_eval};
use defect_detector::vlm::{ApiKey, ChatClient, ClientConfig, PatchSet};
use egui::{Align2, Color32, FontId, Rect, RichText, Sense, Stroke, Vec2};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the patches come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PatchSourceKind {
    #[default]
    Generated,
    Folder,
}

/// Where the API key comes from. The key itself is never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum KeySource {
    /// Local servers (Ollama, llama.cpp) need none.
    #[default]
    None,
    EnvVar,
    /// Typed into the password field; kept in memory for this session only.
    Typed,
}

/// What is remembered between sessions (no secrets).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct VlmSettings {
    pub source: PatchSourceKind,
    pub folder: String,
    /// Pixel size of folder patches (pm/px), 0 when unknown; lets the detector match scales.
    pub folder_pixel_pm: f64,
    pub generate: PatchGenSpec,
    pub base_url: String,
    pub model: String,
    pub key_source: KeySource,
    pub key_env: String,
    pub strategy: Strategy,
    pub texts: PromptTexts,
    pub n_per_class: usize,
    pub k_per_class: usize,
    pub seed: u64,
    pub concurrency: usize,
    pub timeout_s: f64,
    pub json_mode: bool,
    pub use_cache: bool,
    pub cache_dir: String,
    pub detector_model: String,
    pub det_conf: f32,
    /// Row-normalised matrix instead of counts.
    pub normalised: bool,
    pub run_file: String,
    pub csv_file: String,
}

impl Default for VlmSettings {
    fn default() -> Self {
        Self {
            source: PatchSourceKind::Generated,
            folder: "patches".into(),
            folder_pixel_pm: 0.0,
            generate: PatchGenSpec::default(),
            base_url: "http://localhost:11434/v1".into(),
            model: "llava".into(),
            key_source: KeySource::None,
            key_env: "OPENAI_API_KEY".into(),
            strategy: Strategy::ZeroShot,
            texts: PromptTexts::default(),
            n_per_class: 20,
            k_per_class: 3,
            seed: 1,
            concurrency: 4,
            timeout_s: 60.0,
            json_mode: false,
            use_cache: true,
            cache_dir: "vlm-cache".into(),
            detector_model: String::new(),
            det_conf: defect_detector::detect::DEFAULT_CONF,
            normalised: false,
            run_file: "vlm-run.json".into(),
            csv_file: "vlm-run.csv".into(),
        }
    }
}

/// A patch set recipe; its description is what runs record as `patch_source`.
#[derive(Clone, Debug, PartialEq)]
pub enum SetRecipe {
    Generated(PatchGenSpec),
    Folder(PathBuf),
}

impl SetRecipe {
    pub fn describe(&self) -> String {
        match self {
            SetRecipe::Generated(s) => s.describe(),
            SetRecipe::Folder(p) => p.display().to_string(),
        }
    }

    /// The recipe a run's `patch_source` names.
    pub fn from_patch_source(s: &str) -> Self {
        match PatchGenSpec::from_description(s) {
            Some(spec) => SetRecipe::Generated(spec),
            None => SetRecipe::Folder(PathBuf::from(s)),
        }
    }

    fn build(&self, c: &defect_detector::jobs::JobControl) -> anyhow::Result<PatchSet> {
        match self {
            SetRecipe::Generated(spec) => generate_patch_set(spec, c),
            SetRecipe::Folder(p) => PatchSet::load_dir(p),
        }
    }
}

/// A patch set in memory with the description it was built from.
pub struct LoadedSet {
    pub description: String,
    pub set: PatchSet,
}

/// One listed run with its scores computed once.
pub struct RunSlot {
    pub run: ScreeningRun,
    pub metrics: ClassificationMetrics,
    pub usage: UsageStats,
    pub compare: bool,
}

/// What a background job produced.
struct Finished {
    set: Option<Arc<LoadedSet>>,
    run: ScreeningRun,
    /// Said after the run was added (e.g. whether the detector saw the same patches).
    note: String,
}

/// Pixels of a thumbnail.
struct Thumb {
    texture: egui::TextureHandle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PickTarget {
    Folder,
    RunFile,
    Model,
}

/// Most patches listed for a selected cell (each is a texture).
const MAX_LISTED: usize = 120;
const THUMB: f32 = 112.0;

pub struct VlmTab {
    pub settings: VlmSettings,
    /// Session-only API key (never persisted, never logged).
    typed_key: String,
    pub runs: Vec<RunSlot>,
    /// The run whose matrix is shown.
    pub shown: Option<usize>,
    /// Selected matrix cell: (true class, predicted column; the last column is "no answer").
    pub cell: Option<(usize, usize)>,
    set: Option<Arc<LoadedSet>>,
    job: Option<Job<Finished>>,
    /// "Test connection" in flight: the HTTP status the server answered with.
    probe_job: Option<Job<u16>>,
    set_job: Option<Job<Arc<LoadedSet>>>,
    pick_job: Option<(PickTarget, Job<Option<PathBuf>>)>,
    /// Patches known by hash (from every set built this session), for thumbnails.
    known: HashMap<String, (Arc<LoadedSet>, usize)>,
    thumbs: HashMap<String, Thumb>,
    missing: HashSet<String>,
    pub status: String,
    pub error: Option<String>,
    notify: Option<Notify>,
}

impl VlmTab {
    pub fn new(mut settings: VlmSettings) -> Self {
        if settings.detector_model.is_empty()
            && let Some(p) = super::viewer_tab::default_model().map(|p| p.display().to_string())
        {
            settings.detector_model = p;
        }
        Self {
            settings,
            typed_key: String::new(),
            runs: Vec::new(),
            shown: None,
            cell: None,
            set: None,
            job: None,
            probe_job: None,
            set_job: None,
            pick_job: None,
            known: HashMap::new(),
            thumbs: HashMap::new(),
            missing: HashSet::new(),
            status: String::new(),
            error: None,
            notify: None,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.job.is_some() || self.set_job.is_some() || self.probe_job.is_some()
    }

    /// Adds a run to the list and shows it.
    pub fn add_run(&mut self, run: ScreeningRun) -> anyhow::Result<()> {
        let metrics = run.metrics()?;
        let usage = run.usage();
        self.runs.push(RunSlot {
            run,
            metrics,
            usage,
            compare: true,
        });
        self.shown = Some(self.runs.len() - 1);
        self.cell = None;
        Ok(())
    }

    /// Makes a patch set's images available as thumbnails (matched by hash).
    pub fn add_known_set(&mut self, set: Arc<LoadedSet>) {
        for (i, p) in set.set.patches.iter().enumerate() {
            self.known.insert(p.hash.clone(), (set.clone(), i));
            self.missing.remove(&p.hash);
        }
    }

    pub fn load_run_file(&mut self, path: &Path) {
        match ScreeningRun::load_json(path).and_then(|r| self.add_run(r)) {
            Ok(()) => {
                self.status = format!("Loaded {}", path.display());
                self.error = None;
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
    }

    fn recipe(&self) -> SetRecipe {
        match self.settings.source {
            PatchSourceKind::Generated => SetRecipe::Generated(self.settings.generate.clone()),
            PatchSourceKind::Folder => SetRecipe::Folder(PathBuf::from(&self.settings.folder)),
        }
    }

    /// The in-memory set if it was built from `recipe`.
    fn cached_set(&self, recipe: &SetRecipe) -> Option<Arc<LoadedSet>> {
        let d = recipe.describe();
        self.set.as_ref().filter(|s| s.description == d).cloned()
    }

    fn api_key(&self) -> anyhow::Result<Option<ApiKey>> {
        match self.settings.key_source {
            KeySource::None => Ok(None),
            KeySource::EnvVar => ApiKey::from_env(self.settings.key_env.trim()).map(Some),
            KeySource::Typed => {
                let k = self.typed_key.trim();
                anyhow::ensure!(!k.is_empty(), "type the API key first (or choose no key)");
                Ok(Some(ApiKey::new(k)))
            }
        }
    }

    /// Checks that the server answers at all, in the background.
    fn start_probe(&mut self, notify: &Option<Notify>) {
        let s = &self.settings;
        if let Err(e) = defect_detector::vlm::client::check_endpoint(&s.base_url) {
            self.error = Some(e);
            return;
        }
        let key = self.api_key().ok().flatten();
        let client = ChatClient::new(ClientConfig::new(s.base_url.trim(), s.model.trim()), key);
        self.error = None;
        self.probe_job = Some(Job::spawn("vlm-probe", notify.clone(), move |_| {
            client.probe().map_err(anyhow::Error::msg)
        }));
    }

    fn poll_probe(&mut self) {
        let Some(job) = self.probe_job.take() else {
            return;
        };
        match job.try_take() {
            Err(job) => self.probe_job = Some(job),
            Ok(Ok(status)) => {
                self.status = match status {
                    200..=299 => format!("the server answers (HTTP {status})"),
                    401 | 403 => format!(
                        "the server answers but refuses the key (HTTP {status}): check the API key"
                    ),
                    _ => format!(
                        "something answers (HTTP {status}) but not as an OpenAI-compatible \
                         server: check the base URL (it usually ends in /v1)"
                    ),
                };
            }
            Ok(Err(e)) => self.error = Some(format!("{e:#}")),
        }
    }

    fn start_vlm_run(&mut self, notify: &Option<Notify>) {
        let s = &self.settings;
        let key = match self.api_key() {
            Ok(k) => k,
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                return;
            }
        };
        if s.base_url.trim().is_empty() || s.model.trim().is_empty() {
            self.error = Some("give the server's base URL and the model name".into());
            return;
        }
        if let Err(e) = defect_detector::vlm::client::check_endpoint(&s.base_url) {
            self.error = Some(e);
            return;
        }
        let mut cc = ClientConfig::new(s.base_url.trim(), s.model.trim());
        cc.timeout = Duration::from_secs_f64(s.timeout_s.clamp(1.0, 3600.0));
        cc.json_mode = s.json_mode;
        cc.jitter_seed = s.seed;
        let client = ChatClient::new(cc, key);
        let recipe = self.recipe();
        let cfg = RunConfig {
            strategy: s.strategy,
            n_per_class: s.n_per_class.max(1),
            k_per_class: s.k_per_class,
            seed: s.seed,
            concurrency: s.concurrency.max(1),
            texts: s.texts.clone(),
            cache: s
                .use_cache
                .then(|| ResponseCache::new(PathBuf::from(&s.cache_dir))),
            patch_source: recipe.describe(),
        };
        let cached = self.cached_set(&recipe);
        self.error = None;
        self.job = Some(Job::spawn("vlm-run", notify.clone(), move |c| {
            // A server that is not there fails the run at once, not after every patch.
            c.set_progress(0.0, "connecting");
            client.probe().map_err(anyhow::Error::msg)?;
            let set = match cached {
                Some(s) => s,
                None => Arc::new(LoadedSet {
                    description: recipe.describe(),
                    set: recipe.build(c)?,
                }),
            };
            let run = run_vlm_eval(&set.set, &client, &cfg, c)?;
            Ok(Finished {
                set: Some(set),
                run: ScreeningRun::Vlm(run),
                note: String::new(),
            })
        }));
    }

    /// The detector on the shown run's sample (or, with no run shown, on the sample the
    /// current settings would screen).
    fn start_detector_run(&mut self, notify: &Option<Notify>) {
        let model = PathBuf::from(self.settings.detector_model.trim());
        let shown = self.shown.and_then(|i| self.runs.get(i));
        let (recipe, mut cfg, paired) = match shown {
            Some(slot) => {
                let (seed, n, k) = slot.run.sample();
                let mut cfg = DetectorScreenConfig::new(n, seed);
                cfg.k_per_class = k;
                (
                    SetRecipe::from_patch_source(slot.run.patch_source()),
                    cfg,
                    Some((slot.run.label(), slot.run.records().to_vec())),
                )
            }
            None => {
                let s = &self.settings;
                let mut cfg = DetectorScreenConfig::new(s.n_per_class.max(1), s.seed);
                cfg.k_per_class = if s.strategy.uses_examples() {
                    s.k_per_class
                } else {
                    0
                };
                (self.recipe(), cfg, None)
            }
        };
        cfg.conf = self.settings.det_conf;
        cfg.patch_source = recipe.describe();
        cfg.pixel_size = match &recipe {
            SetRecipe::Generated(spec) => Some(spec.pixel_size()),
            SetRecipe::Folder(_) => (self.settings.folder_pixel_pm > 0.0)
                .then(|| PixelSize::from_pm(self.settings.folder_pixel_pm)),
        };
        let cached = self.cached_set(&recipe);
        self.error = None;
        self.job = Some(Job::spawn("detector-run", notify.clone(), move |c| {
            c.set_progress(0.0, "loading the model");
            let det = Detector::load(&model, &DetectorOptions::default())?;
            let set = match cached {
                Some(s) => s,
                None => Arc::new(LoadedSet {
                    description: recipe.describe(),
                    set: recipe.build(c)?,
                }),
            };
            let run = run_detector_eval(&set.set, &det, &model, &cfg, c)?;
            let note = match paired {
                Some((label, records)) if same_patches(&records, &run.records) => {
                    format!("same {} patches as {label}", records.len())
                }
                Some((label, _)) => format!(
                    "warning: the patches differ from those of {label} (was the folder changed?)"
                ),
                None => String::new(),
            };
            Ok(Finished {
                set: Some(set),
                run: ScreeningRun::Detector(run),
                note,
            })
        }));
    }

    fn start_prepare(&mut self, notify: &Option<Notify>) {
        let recipe = self.recipe();
        self.error = None;
        self.set_job = Some(Job::spawn("patch-set", notify.clone(), move |c| {
            Ok(Arc::new(LoadedSet {
                description: recipe.describe(),
                set: recipe.build(c)?,
            }))
        }));
    }

    fn poll(&mut self) {
        self.poll_probe();
        if let Some(job) = self.job.take() {
            match job.try_take() {
                Ok(Ok(f)) => {
                    if let Some(set) = f.set {
                        self.add_known_set(set.clone());
                        self.set = Some(set);
                    }
                    let label = f.run.label();
                    let all_failed =
                        matches!(&f.run, ScreeningRun::Vlm(r) if r.all_requests_failed());
                    let n = f.run.records().len();
                    if all_failed {
                        // Its 0 % would read as the model's result: not kept as a run.
                        self.error = Some(format!(
                            "{label}: every one of the {n} requests failed (no answer from the \
                             server); the run was not saved. Check the URL and model with \
                             \"Test connection\"."
                        ));
                        return;
                    }
                    match self.add_run(f.run) {
                        Ok(()) => {
                            self.status = if f.note.is_empty() {
                                format!("Finished {label}")
                            } else {
                                format!("Finished {label}: {}", f.note)
                            };
                        }
                        Err(e) => self.error = Some(format!("{e:#}")),
                    }
                }
                Ok(Err(e)) if defect_detector::jobs::is_cancelled(&e) => {
                    self.status = "Cancelled (answers received so far are cached)".into();
                }
                Ok(Err(e)) => self.error = Some(format!("{e:#}")),
                Err(job) => self.job = Some(job),
            }
        }
        if let Some(job) = self.set_job.take() {
            match job.try_take() {
                Ok(Ok(set)) => {
                    self.add_known_set(set.clone());
                    self.status = format!("{} patches ready", set.set.patches.len());
                    self.set = Some(set);
                }
                Ok(Err(e)) if defect_detector::jobs::is_cancelled(&e) => {}
                Ok(Err(e)) => self.error = Some(format!("{e:#}")),
                Err(job) => self.set_job = Some(job),
            }
        }
        if let Some((target, job)) = self.pick_job.take() {
            match job.try_take() {
                Ok(Ok(Some(p))) => {
                    let p = p.display().to_string();
                    match target {
                        PickTarget::Folder => self.settings.folder = p,
                        PickTarget::RunFile => self.settings.run_file = p,
                        PickTarget::Model => self.settings.detector_model = p,
                    }
                }
                Ok(_) => {}
                Err(job) => self.pick_job = Some((target, job)),
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, notify: &Option<Notify>) {
        self.notify = notify.clone();
        self.poll();
        egui::Panel::left("vlm-settings")
            .resizable(true)
            .default_size(340.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.settings_ui(ui, notify));
            });
        // The patches behind the selected cell sit beside the matrix, not below the fold.
        if let (Some(i), Some(_)) = (self.shown.filter(|&i| i < self.runs.len()), self.cell) {
            egui::Panel::right("vlm-cell-patches")
                .resizable(true)
                .default_size(400.0)
                .show(ui, |ui| {
                    egui::ScrollArea::vertical()
                        .id_salt("vlm-cell-scroll")
                        .show(ui, |ui| self.selection_ui(ui, i));
                });
        }
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("vlm-results")
                .show(ui, |ui| self.results_ui(ui));
        });
    }

    fn pick_file(&mut self, target: PickTarget, notify: &Option<Notify>) {
        let start = match target {
            PickTarget::RunFile => self.settings.run_file.clone(),
            _ => self.settings.detector_model.clone(),
        };
        let dir = Path::new(&start)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let job = Job::spawn("pick-file", notify.clone(), move |_| {
            let mut d = rfd::FileDialog::new().set_directory(dir);
            d = match target {
                PickTarget::Model => d.add_filter("ONNX model", &["onnx"]),
                _ => d.add_filter("run JSON", &["json"]),
            };
            Ok(d.pick_file())
        });
        self.pick_job = Some((target, job));
    }

    fn settings_ui(&mut self, ui: &mut egui::Ui, notify: &Option<Notify>) {
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
            let shown = self.shown.and_then(|i| self.runs.get(i));
            if ui
                .add_enabled(shown.is_some(), egui::Button::new("Save run JSON"))
                .on_hover_text("Save the shown run")
                .clicked()
                && let Some(slot) = shown
            {
                let p = PathBuf::from(self.settings.run_file.trim());
                match slot.run.save_json(&p) {
                    Ok(()) => self.status = format!("Saved {}", p.display()),
                    Err(e) => self.error = Some(format!("{e:#}")),
                }
            }
        });
        ui.horizontal(|ui| {
            labelled(
                ui,
                "CSV file",
                egui::TextEdit::singleline(&mut self.settings.csv_file).desired_width(150.0),
            );
            let shown = self.shown.and_then(|i| self.runs.get(i));
            if ui
                .add_enabled(shown.is_some(), egui::Button::new("Export CSV"))
                .clicked()
                && let Some(slot) = shown
            {
                let p = PathBuf::from(self.settings.csv_file.trim());
                match slot.run.write_csv(&p) {
                    Ok(()) => self.status = format!("Wrote {}", p.display()),
                    Err(e) => self.error = Some(format!("{e:#}")),
                }
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
        ui.horizontal(|ui| {
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

    fn results_ui(&mut self, ui: &mut egui::Ui) {
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
            if let Some(c) = confusion_matrix_ui(ui, &slot.metrics, normalised, self.cell) {
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

    fn selection_ui(&mut self, ui: &mut egui::Ui, i: usize) {
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
                    let recipe = SetRecipe::from_patch_source(&patch_source);
                    self.set_job = Some(Job::spawn("patch-set", self.notify.clone(), move |c| {
                        Ok(Arc::new(LoadedSet {
                            description: recipe.describe(),
                            set: recipe.build(c)?,
                        }))
                    }));
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
            return Some(t.texture.clone());
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
        self.thumbs.insert(
            r.hash.clone(),
            Thumb {
                texture: texture.clone(),
            },
        );
        Some(texture)
    }

    /// Patches whose images are in memory (for thumbnails).
    #[cfg(test)]
    pub fn known_patch_count(&self) -> usize {
        self.known.len()
    }
}

/// A label and a widget named by it (screen readers and tests find the widget by the label).
fn labelled(ui: &mut egui::Ui, text: &str, w: impl egui::Widget) -> egui::Response {
    let l = ui.label(text);
    ui.add(w).labelled_by(l.id)
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

/// Five stops of viridis: perceptually even, and readable by colour-blind users.
const VIRIDIS: [[u8; 3]; 5] = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
];

fn viridis(v: f64) -> Color32 {
    let x = v.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let c = |k: usize| (VIRIDIS[i][k] as f64 * (1.0 - f) + VIRIDIS[i + 1][k] as f64 * f) as u8;
    Color32::from_rgb(c(0), c(1), c(2))
}

fn text_on(c: Color32) -> Color32 {
    let l = 0.299 * c.r() as f32 + 0.587 * c.g() as f32 + 0.114 * c.b() as f32;
    if l > 140.0 {
        Color32::BLACK
    } else {
        Color32::WHITE
    }
}

/// Accessible name of a matrix cell (what tests and screen readers use).
pub fn cell_label(classes: &[String], t: usize, p: usize) -> String {
    let pred = classes.get(p).map_or("no answer", |s| s.as_str());
    format!("true {}, answered {pred}", classes[t])
}

/// The confusion matrix as a clickable heatmap; returns the clicked cell. Cells are coloured
/// by the row-normalised fraction in both modes, so colours compare across rows and runs.
fn confusion_matrix_ui(
    ui: &mut egui::Ui,
    m: &ClassificationMetrics,
    normalised: bool,
    selected: Option<(usize, usize)>,
) -> Option<(usize, usize)> {
    let classes = &m.matrix.classes;
    let nr = classes.len();
    let nc = nr + 1;
    let font = FontId::proportional(12.5);
    let text_w = |s: &str| {
        ui.fonts_mut(|f| {
            f.layout_no_wrap(s.to_string(), font.clone(), Color32::WHITE)
                .size()
                .x
        })
    };
    let row_label_w = classes.iter().map(|c| text_w(c)).fold(60.0, f32::max) + 10.0;
    let cell_w = classes
        .iter()
        .map(|c| text_w(c))
        .fold(text_w("no answer"), f32::max)
        .max(56.0)
        + 10.0;
    let cell_h = 34.0;
    let header_h = 22.0;
    let size = Vec2::new(
        row_label_w + nc as f32 * cell_w,
        header_h + nr as f32 * cell_h,
    );
    let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
    let painter = ui.painter_at(rect);
    let fg = ui.visuals().text_color();
    let weak = ui.visuals().weak_text_color();
    for c in 0..nc {
        let name = classes.get(c).map_or("no answer", |s| s.as_str());
        let x = rect.left() + row_label_w + (c as f32 + 0.5) * cell_w;
        painter.text(
            egui::pos2(x, rect.top() + header_h / 2.0),
            Align2::CENTER_CENTER,
            name,
            font.clone(),
            if c < nr { fg } else { weak },
        );
    }
    let rn = m.matrix.row_normalised();
    let mut clicked = None;
    for t in 0..nr {
        let y = rect.top() + header_h + t as f32 * cell_h;
        painter.text(
            egui::pos2(rect.left() + row_label_w - 8.0, y + cell_h / 2.0),
            Align2::RIGHT_CENTER,
            &classes[t],
            font.clone(),
            fg,
        );
        for (p, (&frac, &count)) in rn[t].iter().zip(&m.matrix.counts[t]).enumerate() {
            let cell = Rect::from_min_size(
                egui::pos2(rect.left() + row_label_w + p as f32 * cell_w, y),
                Vec2::new(cell_w, cell_h),
            )
            .shrink(1.0);
            let fill = viridis(frac);
            painter.rect_filled(cell, 3.0, fill);
            if p == t {
                painter.rect_stroke(
                    cell,
                    3.0,
                    Stroke::new(1.5, Color32::from_gray(230)),
                    egui::StrokeKind::Inside,
                );
            }
            if selected == Some((t, p)) {
                painter.rect_stroke(
                    cell.expand(1.0),
                    3.0,
                    Stroke::new(3.0, Color32::from_rgb(230, 159, 0)),
                    egui::StrokeKind::Outside,
                );
            }
            let text = if normalised {
                format!("{frac:.2}")
            } else {
                count.to_string()
            };
            painter.text(
                cell.center(),
                Align2::CENTER_CENTER,
                text,
                FontId::proportional(14.0),
                text_on(fill),
            );
            let label = cell_label(classes, t, p);
            let resp = ui
                .interact(
                    cell,
                    ui.make_persistent_id(("vlm-cell", t, p)),
                    Sense::click(),
                )
                .on_hover_text(format!(
                    "{label}: {count} patch(es), {:.1}% of the row",
                    frac * 100.0
                ));
            resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, label.clone()));
            if resp.clicked() {
                clicked = Some((t, p));
            }
        }
    }
    clicked
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

#[cfg(test)]
#[path = "vlm_tab_tests.rs"]
mod tests;
