//! The VLM screening tab: classify labelled patches with a vision-language model (or with the
//! ONNX detector, on the very same patches), then inspect the confusion matrix, the scores and
//! the patches behind every cell, and compare runs side by side.
//!
//! This file is the shell: the persisted settings, the tab's state, and every job it runs
//! (probe, VLM run, detector run, patch set, file dialogs) with their polling; the panels live
//! in `side_panel` (settings) and `results_panel` (runs and scores), the matrix in
//! [`crate::app::confusion_matrix`]. The science is the library's (`vlm`): nothing here
//! classifies, scores or writes a run file by itself.
//!
//! The API key is never part of [`VlmSettings`] (which is persisted): it is read from an
//! environment variable named by the user, or typed into a password field that lives only in
//! memory for this session.

mod results_panel;
mod side_panel;

use defect_detector::detect::{Detector, DetectorOptions};
use defect_detector::jobs::{Job, Notify};
use defect_detector::raster::PixelSize;
use defect_detector::vlm::detector_classifier::{
    DetectorScreenConfig, ScreeningRun, run_detector_eval, same_patches,
};
use defect_detector::vlm::generate::{PatchGenSpec, generate_patch_set};
use defect_detector::vlm::metrics::{ClassificationMetrics, UsageStats};
use defect_detector::vlm::prompt::{PromptTexts, Strategy};
use defect_detector::vlm::run::{ResponseCache, RunConfig, run_vlm_eval};
use defect_detector::vlm::{ApiKey, ChatClient, ClientConfig, PatchSet};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PickTarget {
    Folder,
    RunFile,
    Model,
}

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
    /// Thumbnails by patch hash, uploaded once rather than every frame.
    thumbs: HashMap<String, egui::TextureHandle>,
    /// Hashes with no image in memory or on disk, so no frame looks for them again.
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
        self.error = None;
        self.start_set_job(self.recipe(), notify);
    }

    /// Builds a patch set in the background; it becomes the tab's set and its thumbnails.
    fn start_set_job(&mut self, recipe: SetRecipe, notify: &Option<Notify>) {
        self.set_job = Some(Job::spawn("patch-set", notify.clone(), move |c| {
            Ok(Arc::new(LoadedSet {
                description: recipe.describe(),
                set: recipe.build(c)?,
            }))
        }));
    }

    /// The run whose matrix is shown, if any.
    fn shown_run(&self) -> Option<&RunSlot> {
        self.shown.and_then(|i| self.runs.get(i))
    }

    fn save_shown_run(&mut self) {
        let Some(slot) = self.shown_run() else {
            return;
        };
        let p = PathBuf::from(self.settings.run_file.trim());
        match slot.run.save_json(&p) {
            Ok(()) => self.status = format!("Saved {}", p.display()),
            Err(e) => self.error = Some(format!("{e:#}")),
        }
    }

    fn export_shown_csv(&mut self) {
        let Some(slot) = self.shown_run() else {
            return;
        };
        let p = PathBuf::from(self.settings.csv_file.trim());
        match slot.run.write_csv(&p) {
            Ok(()) => self.status = format!("Wrote {}", p.display()),
            Err(e) => self.error = Some(format!("{e:#}")),
        }
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

    /// Patches whose images are in memory (for thumbnails).
    #[cfg(test)]
    pub fn known_patch_count(&self) -> usize {
        self.known.len()
    }
}

#[cfg(test)]
#[path = "vlm_tab_tests.rs"]
mod tests;
