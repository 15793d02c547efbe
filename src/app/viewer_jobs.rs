//! The Viewer's background jobs, one owner each: the job (or latest-wins runner), the state its
//! results build up, and what a finished job turns into. `ViewerTab::poll` calls each owner once
//! per frame.
//!
//! An owner keeps to its own state and hands back a result or a [`Note`] for the status or error
//! line; it must not reach into the tab. What a finished job sets off elsewhere (detecting a
//! freshly loaded image, opening a picked file) is the tab's decision.

use super::canvas::ImageCanvas;
use defect_detector::detect::tta::FrameRuns;
use defect_detector::detect::{DetectOptions, Detector, DetectorOptions};
use defect_detector::formats::display::{self as disp, Colormap, DisplaySettings};
use defect_detector::formats::{self, StemImage, fft};
use defect_detector::jobs::{Job, Latest, Notify};
use defect_detector::lattice::{LatticeParams, LatticeResult};
use defect_detector::raster::{ImageF32, PixelSize};
use defect_detector::synth::crystal::CrystalSpec;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A line for the user from a finished job.
pub enum Note {
    Status(String),
    Error(String),
}

/// The next image of the folder, loaded ahead so flipping feels instant.
#[derive(Default)]
pub struct Prefetch {
    job: Option<(PathBuf, Job<StemImage>)>,
    ready: Option<(PathBuf, StemImage)>,
}

impl Prefetch {
    /// Starts loading `next` unless it is loading or loaded already.
    pub fn request(&mut self, next: PathBuf) {
        if self.job.as_ref().is_some_and(|(p, _)| p == &next)
            || self.ready.as_ref().is_some_and(|(p, _)| p == &next)
        {
            return;
        }
        let p2 = next.clone();
        self.job = Some((
            next,
            Job::spawn("prefetch", None, move |_| formats::load(&p2)),
        ));
    }

    /// A failed prefetch is dropped silently: opening that file loads it again and reports why.
    pub fn poll(&mut self) {
        if let Some((p, job)) = self.job.take() {
            match job.try_take() {
                Ok(Ok(img)) => self.ready = Some((p, img)),
                Ok(Err(_)) => {}
                Err(job) => self.job = Some((p, job)),
            }
        }
    }

    /// The prefetched image when it is `path`'s. Any prefetched image goes: flipping on makes
    /// the next one wanted instead.
    pub fn take(&mut self, path: &Path) -> Option<StemImage> {
        self.ready
            .take()
            .filter(|(p, _)| p == path)
            .map(|(_, img)| img)
    }
}

/// The detection model: loaded on a background thread (building an ONNX Runtime session would
/// stall the UI), then kept until its path changes.
pub struct ModelLoader {
    loaded: Option<Arc<Detector>>,
    job: Option<Job<Arc<Detector>>>,
    /// The path of `loaded`, or of the load running.
    path: String,
    notify: Option<Notify>,
}

impl ModelLoader {
    pub fn new(notify: Option<Notify>) -> Self {
        Self {
            loaded: None,
            job: None,
            path: String::new(),
            notify,
        }
    }

    /// The model of `path` when it is loaded; otherwise starts loading it (unless a load is
    /// running already, whose end the caller waits for) and gives `None`.
    pub fn ensure(&mut self, path: &str) -> Option<Arc<Detector>> {
        if self.loaded.is_some() && self.path == path {
            return self.loaded.clone();
        }
        if self.job.is_none() && !path.is_empty() {
            let file = PathBuf::from(path);
            self.path = path.to_string();
            self.loaded = None;
            self.job = Some(Job::spawn("load-model", self.notify.clone(), move |_| {
                Ok(Arc::new(Detector::load(
                    &file,
                    &DetectorOptions::default(),
                )?))
            }));
        }
        None
    }

    pub fn is_loading(&self) -> bool {
        self.job.is_some()
    }

    pub fn loaded(&self) -> Option<&Arc<Detector>> {
        self.loaded.as_ref()
    }

    /// When a load ends: the model, now kept, with a status line describing it; or the error.
    pub fn poll(&mut self) -> Option<anyhow::Result<(Arc<Detector>, String)>> {
        let job = self.job.take()?;
        match job.try_take() {
            Ok(Ok(d)) => {
                let status = format!(
                    "Model {} ({} classes, {} px{}, {})",
                    Path::new(&self.path)
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy(),
                    d.class_names().len(),
                    d.info().imgsz,
                    if d.info().dynamic_input {
                        ", whole frames in one pass"
                    } else {
                        ""
                    },
                    d.provider()
                );
                self.loaded = Some(d.clone());
                Some(Ok((d, status)))
            }
            Ok(Err(e)) => Some(Err(e)),
            Err(job) => {
                self.job = Some(job);
                None
            }
        }
    }
}

/// Detection of the shown image (latest wins).
pub struct DetectionJob {
    job: Latest<FrameRuns>,
    /// The image generation of the last request; a result for an earlier image is dropped.
    generation: usize,
}

impl DetectionJob {
    pub fn new(notify: Option<Notify>) -> Self {
        Self {
            job: Latest::new("detect", notify),
            generation: 0,
        }
    }

    /// With `tta` the model also runs on the image's 7 other dihedral copies, and with more
    /// than one of `scales` at each of them ([`defect_detector::synth::crystal::CrystalSpec::preset_scales`]); every
    /// copy's candidates are kept, and fused again at each step of the sliders as `detect`
    /// fuses them at its threshold ([`FrameRuns::boxes`]).
    pub fn request(
        &mut self,
        generation: usize,
        det: Arc<Detector>,
        img: ImageF32,
        px: Option<PixelSize>,
        tta: bool,
        scales: Vec<f64>,
    ) {
        self.generation = generation;
        self.job.request(move |c| {
            let copies = if tta {
                defect_detector::detect::tta::default_transforms()
            } else {
                vec![defect_detector::geometry::Dihedral::IDENTITY]
            };
            FrameRuns::run(
                &det,
                &img,
                px,
                &DetectOptions::default(),
                &copies,
                &scales,
                Some(c),
            )
        });
    }

    /// The image generation detection was last asked for.
    pub fn generation(&self) -> usize {
        self.generation
    }

    pub fn is_busy(&self) -> bool {
        self.job.is_busy()
    }

    /// A finished detection of the image `generation`, or an error (whichever image it was for).
    pub fn poll(&mut self, generation: usize) -> Option<anyhow::Result<FrameRuns>> {
        match self.job.poll()? {
            Ok(res) if self.generation == generation => Some(Ok(res)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// The lattice analysis of the shown image: its maps, and its boundaries to join with the
/// model's.
pub struct LatticeJob {
    job: Latest<LatticeResult>,
    /// The image generation the running analysis belongs to.
    generation: usize,
    /// The last analysis of the shown image (maps, boundaries with misorientation).
    pub result: Option<Arc<LatticeResult>>,
    /// Bumped when new lattice boxes arrive, so the shown detections and map are redone.
    pub version: usize,
}

impl LatticeJob {
    pub fn new(notify: Option<Notify>) -> Self {
        Self {
            job: Latest::new("lattice", notify),
            generation: 0,
            result: None,
            version: 0,
        }
    }

    pub fn request(
        &mut self,
        generation: usize,
        img: ImageF32,
        crystal: CrystalSpec,
        px: Option<PixelSize>,
    ) {
        self.generation = generation;
        self.job.request(move |_| {
            let params = LatticeParams::new(crystal, px.map(|p| p.nm_per_px));
            defect_detector::lattice::analyse(&img, &params)
        });
    }

    /// Forgets the last analysis (a new image, a new detection run). A new version, so what
    /// was drawn from it (the map layer, the joined detections) is dropped too.
    pub fn clear(&mut self) {
        self.result = None;
        self.version += 1;
    }

    pub fn is_busy(&self) -> bool {
        self.job.is_busy()
    }

    /// Keeps a finished analysis of the image `generation`; a failure is only a status line
    /// (many frames hold no readable lattice).
    pub fn poll(&mut self, generation: usize) -> Option<Note> {
        match self.job.poll()? {
            Ok(l) if self.generation == generation => {
                self.result = Some(Arc::new(l));
                self.version += 1;
                None
            }
            Ok(_) => None,
            Err(e) => Some(Note::Status(format!("Lattice analysis: {e:#}"))),
        }
    }
}

/// The shown image as a texture, rendered on a background thread whenever the image or the
/// display settings change.
pub struct RenderJob {
    job: Latest<(usize, usize, Vec<u8>)>,
    rendered_for: Option<(DisplaySettings, usize)>,
}

impl RenderJob {
    pub fn new(notify: Option<Notify>) -> Self {
        Self {
            job: Latest::new("render-image", notify),
            rendered_for: None,
        }
    }

    pub fn invalidate(&mut self) {
        self.rendered_for = None;
    }

    pub fn is_busy(&self) -> bool {
        self.job.is_busy()
    }

    /// Starts a render when `image` (of `generation`) or `display` changed, and hands a finished
    /// one to the canvas.
    pub fn poll(
        &mut self,
        ctx: &egui::Context,
        image: Option<&StemImage>,
        display: DisplaySettings,
        generation: usize,
        canvas: &mut ImageCanvas,
    ) {
        if let Some(cur) = image {
            let want = (display, generation);
            if self.rendered_for != Some(want) {
                self.rendered_for = Some(want);
                let img = cur.image.clone();
                let max_side = ctx.input(|i| i.max_texture_side).max(256);
                self.job.request(move |_| {
                    // Textures have a size limit: bin huge images for display only.
                    let shown = img.shrink_to_fit(max_side);
                    Ok((
                        shown.width,
                        shown.height,
                        disp::render_rgba(&shown, &display),
                    ))
                });
            }
        }
        if let Some(Ok((w, h, rgba))) = self.job.poll()
            && let Some(cur) = image
        {
            canvas.set_rgba_scaled(ctx, [cur.width(), cur.height()], w, h, &rgba);
        }
    }
}

/// A power spectrum as the spectrum panel shows it.
pub struct Spectrum {
    pub texture: egui::TextureHandle,
    /// The `log(1 + |F|²)` values the texture shows, for snapping clicks to spots.
    pub data: ImageF32,
    pub size: usize,
    pub region: [usize; 4],
    /// Counts the spectra shown: marks made on one are meaningless on the next.
    pub version: u64,
}

/// The power spectrum of the part of the image in view.
pub struct SpectrumJob {
    job: Latest<(ImageF32, [usize; 4])>,
    pub shown: Option<Spectrum>,
    shown_count: u64,
}

impl SpectrumJob {
    pub fn new(notify: Option<Notify>) -> Self {
        Self {
            job: Latest::new("power-spectrum", notify),
            shown: None,
            shown_count: 0,
        }
    }

    /// The spectrum of `region` (x, y, width, height) of `img`.
    pub fn request(&mut self, img: ImageF32, region: [usize; 4]) {
        self.job
            .request(move |_| Ok((fft::power_spectrum(&img, Some(region)), region)));
    }

    pub fn is_busy(&self) -> bool {
        self.job.is_busy()
    }

    /// Turns a finished spectrum into a texture.
    pub fn poll(&mut self, ctx: &egui::Context) -> Option<Note> {
        match self.job.poll()? {
            Ok((ps, region)) => {
                let (lo, hi) = disp::auto_contrast(&ps, 1.0, 99.9);
                let s = DisplaySettings {
                    lo,
                    hi,
                    colormap: Colormap::Inferno,
                    ..Default::default()
                };
                let rgba = disp::render_rgba(&ps, &s);
                let img = egui::ColorImage::from_rgba_unmultiplied([ps.width, ps.height], &rgba);
                let texture = ctx.load_texture("spectrum", img, egui::TextureOptions::LINEAR);
                self.shown_count += 1;
                self.shown = Some(Spectrum {
                    texture,
                    size: ps.width,
                    data: ps,
                    region,
                    version: self.shown_count,
                });
                None
            }
            Err(e) => Some(Note::Error(format!("Spectrum: {e:#}"))),
        }
    }
}

/// Writing the shown detections to files, one save at a time.
#[derive(Default)]
pub struct SaveJob {
    job: Option<Job<Vec<PathBuf>>>,
}

impl SaveJob {
    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// Runs `write` (which gives the files it wrote) on a background thread.
    pub fn start(
        &mut self,
        notify: Option<Notify>,
        write: impl FnOnce() -> anyhow::Result<Vec<PathBuf>> + Send + 'static,
    ) {
        self.job = Some(Job::spawn("save-detections", notify, move |_| write()));
    }

    /// Names the written files, or says why nothing was.
    pub fn poll(&mut self) -> Option<Note> {
        let job = self.job.take()?;
        match job.try_take() {
            Ok(Ok(paths)) => Some(Note::Status(format!(
                "Wrote {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            Ok(Err(e)) => Some(Note::Error(format!("Could not save: {e:#}"))),
            Err(job) => {
                self.job = Some(job);
                None
            }
        }
    }
}

/// The native file dialog, run off the UI thread because it blocks until closed.
#[derive(Default)]
pub struct FilePicker {
    job: Option<Job<Option<PathBuf>>>,
}

impl FilePicker {
    pub fn is_open(&self) -> bool {
        self.job.is_some()
    }

    pub fn open(&mut self) {
        self.job = Some(Job::spawn("pick-file", None, |_| {
            Ok(rfd::FileDialog::new()
                .add_filter("STEM images", &formats::extensions().collect::<Vec<_>>())
                .pick_file())
        }));
    }

    /// The file chosen, once the dialog closed with one.
    pub fn poll(&mut self) -> Option<PathBuf> {
        let job = self.job.take()?;
        match job.try_take() {
            Ok(Ok(Some(p))) => Some(p),
            Ok(_) => None,
            Err(job) => {
                self.job = Some(job);
                None
            }
        }
    }
}

/// Side of a folder-strip thumbnail (px).
pub const THUMB: usize = 96;

/// A file and its preview (None when it cannot be read).
type Thumbnail = (PathBuf, Option<egui::ColorImage>);

/// A small gray preview of a file (None when it cannot be read).
fn thumbnail(path: &Path) -> Option<egui::ColorImage> {
    let s = formats::load(path).ok()?;
    let small = s.image.shrink_to_fit(THUMB);
    let d = DisplaySettings::auto(&small);
    let rgba = disp::render_rgba(&small, &d);
    Some(egui::ColorImage::from_rgba_unmultiplied(
        [small.width, small.height],
        &rgba,
    ))
}

/// The folder strip's thumbnails: made in the background a few at a time, nearest the shown
/// image first, so a large folder never stalls flipping.
pub struct Thumbnails {
    textures: HashMap<PathBuf, Option<egui::TextureHandle>>,
    job: Option<Job<Vec<Thumbnail>>>,
    notify: Option<Notify>,
}

impl Thumbnails {
    pub fn new(notify: Option<Notify>) -> Self {
        Self {
            textures: HashMap::new(),
            job: None,
            notify,
        }
    }

    /// `Some(None)`: the file cannot be read; `None`: no thumbnail yet.
    pub fn get(&self, path: &Path) -> Option<&Option<egui::TextureHandle>> {
        self.textures.get(path)
    }

    /// Keeps finished thumbnails and starts the next few of `folder`, nearest `current` first.
    pub fn poll(&mut self, ctx: &egui::Context, folder: &[PathBuf], current: Option<&Path>) {
        if let Some(job) = self.job.take() {
            match job.try_take() {
                Ok(Ok(batch)) => {
                    for (p, img) in batch {
                        let tex = img.map(|i| {
                            ctx.load_texture(
                                format!("thumb-{}", p.display()),
                                i,
                                egui::TextureOptions::LINEAR,
                            )
                        });
                        self.textures.insert(p, tex);
                    }
                }
                Ok(Err(_)) => {}
                Err(job) => self.job = Some(job),
            }
        }
        if self.job.is_none() {
            let centre = current
                .and_then(|c| folder.iter().position(|p| p == c))
                .unwrap_or(0) as isize;
            let mut missing: Vec<PathBuf> = folder
                .iter()
                .filter(|p| !self.textures.contains_key(*p))
                .cloned()
                .collect();
            missing.sort_by_key(|p| {
                (folder.iter().position(|q| q == p).unwrap_or(0) as isize - centre).abs()
            });
            missing.truncate(6);
            if !missing.is_empty() {
                self.job = Some(Job::spawn("thumbnails", self.notify.clone(), move |c| {
                    let mut out = Vec::new();
                    for p in missing {
                        c.check()?;
                        let t = thumbnail(&p);
                        out.push((p, t));
                    }
                    Ok(out)
                }));
            }
        }
    }
}
