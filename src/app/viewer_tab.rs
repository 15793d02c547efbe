//! The Viewer tab: open real STEM files (DM3/4, SER/EMI, EMD, MRC, TIFF, PNG, JPEG), flip
//! through a folder, set contrast, read calibrated positions, look at the power spectrum, and
//! overlay the detector's oriented boxes with instant confidence / IoU re-filtering.
//!
//! Loading, rendering, the spectrum and detection each run on a background thread (latest
//! wins); the next image of the folder is loaded ahead so flipping feels instant. Each job has
//! its owner in `viewer_jobs`; this file decides what a finished job sets off.

use super::canvas::{ImageCanvas, OverlayBox};
use super::synth_tab::repaint_notify;
use super::viewer_jobs::{
    DetectionJob, FilePicker, LatticeJob, ModelLoader, Note, Prefetch, RenderJob, SaveJob,
    SpectrumJob, THUMB, Thumbnails,
};
use defect_detector::classes::{DefectClass, class_color};
use defect_detector::detect::{self, Detection, DetectionResult};
use defect_detector::formats::display::{self as disp, Colormap, DisplaySettings, Histogram};
use defect_detector::formats::{self, StemImage};
use defect_detector::frame;
use defect_detector::jobs::{Latest, Notify};
use defect_detector::raster::PixelSize;
use egui::{Color32, Slider};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the shown detections were filtered with: a change re-filters them.
#[derive(Clone, Copy, Debug, PartialEq)]
struct FilterKey {
    conf: f32,
    iou: f64,
    candidates: usize,
    lattice_version: usize,
    method: defect_detector::detect::combine::DetectMethod,
    fit_cells: bool,
    tta: bool,
    points_off_boundaries: bool,
    points_inside_frame: bool,
}

/// What is remembered between runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewerSettings {
    pub recent: Vec<String>,
    pub model_path: String,
    pub conf: f32,
    pub iou: f64,
    pub show_class: Vec<bool>,
    pub auto_contrast: bool,
    pub p_lo: f64,
    pub p_hi: f64,
    pub gamma: f32,
    pub colormap: Colormap,
    pub invert: bool,
    /// Pixel sizes typed in for uncalibrated files (nm/px), by path.
    pub pixel_sizes: BTreeMap<String, f64>,
    pub auto_detect: bool,
    pub show_boxes: bool,
    /// Folder for label files edited in the Viewer; empty: beside each image.
    pub labels_dir: String,
    /// Crystal used to read the lattice (realism statistics, pixel size of uncalibrated files).
    pub crystal: defect_detector::synth::crystal::Preset,
    /// The trained model, the training-free lattice analysis, or both.
    pub method: defect_detector::detect::combine::DetectMethod,
    /// A lattice map drawn over the image (orientation colour wheel, discontinuity heat map…).
    pub lattice_map: Option<defect_detector::lattice::render::MapKind>,
    pub lattice_map_opacity: f32,
    /// The detections (counts, timings, table) in their own panel right of the image.
    pub show_detections_panel: bool,
    /// Fit the model's point-defect boxes to the lattice around them.
    pub fit_cells: bool,
    /// Test-time augmentation: the model on the image's 8 dihedral copies, boxes fused.
    pub tta: bool,
    /// Check a file's calibration against its lattice and use the lattice's pixel size when
    /// the two clearly disagree ([`frame::check_file_calibration`]).
    pub check_file_calibration: bool,
    /// Where the pixel size comes from the lattice, run the model at every preset crystal's
    /// reading of it and fuse the boxes ([`defect_detector::synth::crystal::CrystalSpec::preset_scales`]).
    pub hedge_lattice_scale: bool,
    /// Also run a calibrated frame as sampled where the model trained at that pixel size
    /// ([`defect_detector::detect::own_sampling_scale`]).
    pub hedge_own_sampling: bool,
    /// Drop point-defect boxes centred inside a boundary box, as `detect` does.
    pub points_off_boundaries: bool,
    /// Drop point-defect boxes that reach past the frame's edge, as `detect` does.
    pub points_inside_frame: bool,
}

impl Default for ViewerSettings {
    fn default() -> Self {
        Self {
            recent: Vec::new(),
            model_path: default_model()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            conf: detect::DEFAULT_CONF,
            iou: detect::DEFAULT_IOU,
            show_class: vec![true; 3],
            auto_contrast: true,
            p_lo: 0.1,
            p_hi: 99.9,
            gamma: 1.0,
            colormap: Colormap::Gray,
            invert: false,
            pixel_sizes: BTreeMap::new(),
            auto_detect: true,
            show_boxes: true,
            labels_dir: String::new(),
            crystal: defect_detector::synth::crystal::Preset::Cdte110,
            method: Default::default(),
            lattice_map: None,
            lattice_map_opacity: 0.5,
            show_detections_panel: true,
            fit_cells: true,
            tta: false,
            check_file_calibration: true,
            hedge_lattice_scale: true,
            hedge_own_sampling: true,
            points_off_boundaries: true,
            points_inside_frame: true,
        }
    }
}

pub use defect_detector::detect::default_model;

/// Sort order of the detection table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Confidence,
    Class,
    X,
    Y,
}

pub struct ViewerTab {
    pub settings: ViewerSettings,
    notify: Option<Notify>,
    /// Realism statistics, lattice calibration and the out-of-distribution warning.
    pub realism: super::viewer_realism::RealismPanel,
    pub canvas: ImageCanvas,
    pub path_input: String,
    load: Latest<StemImage>,
    prefetch: Prefetch,
    pub current: Option<StemImage>,
    folder: Vec<PathBuf>,
    pub display: DisplaySettings,
    histogram: Option<Histogram>,
    render: RenderJob,
    generation: usize,
    model: ModelLoader,
    detection: DetectionJob,
    pub result: Option<DetectionResult>,
    /// Under TTA or the scale hedge, every copy's candidates: the model boxes are these
    /// fused at the slider's confidence, as `detect` fuses them at its `--conf`.
    copy_runs: Option<defect_detector::detect::tta::CopyRuns>,
    pub filtered: Vec<Detection>,
    filtered_for: Option<FilterKey>,
    /// Model boundary boxes in `filtered` the lattice contradicted (weighed down, `both`).
    pub contradicted_boundaries: usize,
    /// Point boxes the edge rule left out of `filtered`.
    pub points_at_edges: usize,
    /// Point boxes fitted to the current image's lattice (slider steps re-filter the same boxes).
    cell_fits: frame::CellFitCache,
    /// The lattice analysis of the current image: map layer, boundaries joined with the model's.
    pub(crate) lattice: LatticeJob,
    /// "Label with lattice analysis" was pressed and waits for the analysis.
    pub(crate) label_with_lattice: bool,
    /// Which lattice result and map the canvas layer shows.
    layer_for: Option<(usize, Option<defect_detector::lattice::render::MapKind>)>,
    sort: SortBy,
    pub(crate) spectrum: SpectrumJob,
    /// Zoom, marked spots, calibration and where the spectrum is docked.
    pub spectrum_panel: super::spectrum_panel::SpectrumPanel,
    /// The image generation the last spectrum was asked for (an open panel follows the image).
    spectrum_for: usize,
    pub error: Option<String>,
    pub status: String,
    readout: String,
    save: SaveJob,
    picker: FilePicker,
    thumbs: Thumbnails,
    pub watch: super::viewer_watch::WatchPanel,
    pub labels: super::viewer_labels::ViewerLabels,
}

impl ViewerTab {
    pub fn new(settings: ViewerSettings, ctx: &egui::Context) -> Self {
        let notify = Some(repaint_notify(ctx));
        Self {
            settings,
            canvas: ImageCanvas::new("viewer"),
            path_input: String::new(),
            load: Latest::new("load-image", notify.clone()),
            prefetch: Prefetch::default(),
            current: None,
            folder: Vec::new(),
            display: DisplaySettings::default(),
            histogram: None,
            render: RenderJob::new(notify.clone()),
            generation: 0,
            model: ModelLoader::new(notify.clone()),
            detection: DetectionJob::new(notify.clone()),
            result: None,
            copy_runs: None,
            filtered: Vec::new(),
            contradicted_boundaries: 0,
            points_at_edges: 0,
            filtered_for: None,
            cell_fits: Default::default(),
            lattice: LatticeJob::new(notify.clone()),
            label_with_lattice: false,
            layer_for: None,
            sort: SortBy::Confidence,
            spectrum: SpectrumJob::new(notify.clone()),
            spectrum_panel: Default::default(),
            spectrum_for: 0,
            error: None,
            status: String::new(),
            readout: String::new(),
            save: SaveJob::default(),
            picker: FilePicker::default(),
            thumbs: Thumbnails::new(notify.clone()),
            watch: Default::default(),
            labels: Default::default(),
            realism: super::viewer_realism::RealismPanel::new(notify.clone()),
            notify,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.load.is_busy()
            || self.render.is_busy()
            || self.detection.is_busy()
            || self.model.is_loading()
            || self.spectrum.is_busy()
            || self.realism.is_busy()
            || self.lattice.is_busy()
    }

    /// Opens a file, or the first image of a folder (then the arrow keys flip through it).
    pub fn open(&mut self, path: &Path) {
        let file = if path.is_dir() {
            self.folder = formats::list_images(path);
            match self.folder.first() {
                Some(f) => f.clone(),
                None => {
                    self.error = Some(format!("{} holds no supported images", path.display()));
                    return;
                }
            }
        } else {
            if let Some(dir) = path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                self.folder = formats::list_images(dir);
            }
            path.to_path_buf()
        };
        self.path_input = file.display().to_string();
        let key = file.display().to_string();
        self.settings.recent.retain(|r| r != &key);
        self.settings.recent.insert(0, key);
        self.settings.recent.truncate(12);
        if let Some(img) = self.prefetch.take(&file) {
            self.set_image(img);
            return;
        }
        self.load.request(move |_| formats::load(&file));
    }

    fn folder_index(&self) -> Option<usize> {
        let cur = self.current.as_ref()?;
        self.folder.iter().position(|p| p == &cur.path)
    }

    fn step(&mut self, delta: isize) {
        let Some(i) = self.folder_index() else { return };
        let n = self.folder.len() as isize;
        let j = (i as isize + delta).clamp(0, n - 1) as usize;
        if j != i {
            let p = self.folder[j].clone();
            self.open(&p);
        }
    }

    /// Loads the next image of the folder in the background.
    fn prefetch_next(&mut self) {
        let Some(i) = self.folder_index() else { return };
        if let Some(next) = self.folder.get(i + 1).cloned() {
            self.prefetch.request(next);
        }
    }

    /// The image's pixel size: one the user set for this file (typed, or calibrated from a
    /// spectrum spot: a file's calibration can be wrong), else the lattice's where it
    /// contradicts the file's ([`Self::file_conflict`]), else the file's own, else the one
    /// its lattice gives.
    pub fn pixel_size(&self) -> Option<PixelSize> {
        let cur = self.current.as_ref()?;
        self.typed_pixel_size()
            .map(|nm| PixelSize { nm_per_px: nm })
            .or_else(|| self.file_conflict().map(|c| c.lattice))
            .or(cur.pixel_size)
            .or_else(|| {
                self.realism
                    .lattice_nm_per_px(self.generation)
                    .map(|nm| PixelSize { nm_per_px: nm })
            })
    }

    /// Where [`Self::pixel_size`] comes from, in the words of
    /// [`frame::Calibration::source`] ("user" for a typed one).
    pub fn calibration_source(&self) -> &'static str {
        let Some(cur) = self.current.as_ref() else {
            return "none";
        };
        if self.typed_pixel_size().is_some() {
            "user"
        } else if self.file_conflict().is_some() {
            "lattice, not the file's"
        } else if cur.pixel_size.is_some() {
            "file"
        } else if self.lattice_pixel_size().is_some() {
            "lattice"
        } else {
            "none"
        }
    }

    /// The current file's calibration where its lattice contradicts it and the check is on.
    pub fn file_conflict(&self) -> Option<frame::CalibrationConflict> {
        if !self.settings.check_file_calibration || self.typed_pixel_size().is_some() {
            return None;
        }
        self.realism.conflict(self.generation)
    }

    /// The current frame's pixel size from its lattice (only for files without one).
    pub fn lattice_pixel_size(&self) -> Option<f64> {
        self.realism.lattice_nm_per_px(self.generation)
    }

    /// Share of the current frame's strongest spectrum peaks on the crystal's lattice
    /// (`RealismStats::lattice_match`), once its statistics are in.
    pub fn lattice_match(&self) -> Option<f64> {
        self.realism
            .stats(self.generation)
            .and_then(|s| s.lattice_match)
    }

    /// Statistics of the current frame outside the loaded model's training ranges.
    pub fn unlike_training(&self) -> Vec<defect_detector::realism::Outside> {
        self.realism.outside(self.generation)
    }

    /// A pixel size the user set for the current file.
    fn typed_pixel_size(&self) -> Option<f64> {
        let cur = self.current.as_ref()?;
        self.settings
            .pixel_sizes
            .get(&cur.path.display().to_string())
            .copied()
            .filter(|v| *v > 0.0)
    }

    /// Measures the current frame (lattice, column width, background, noise, scan).
    fn request_realism(&mut self) {
        let Some(cur) = &self.current else { return };
        let file = cur.pixel_size.map(|p| p.nm_per_px);
        let typed = self.typed_pixel_size();
        let img = cur.image.clone();
        self.realism
            .request(self.generation, &img, file, typed, self.settings.crystal);
    }

    fn set_image(&mut self, img: StemImage) {
        self.generation += 1;
        // Proposals asked for on the previous image are not added to this one.
        self.label_with_lattice = false;
        self.lattice.clear();
        self.histogram = Some(disp::histogram(&img.image, 256));
        if self.settings.auto_contrast {
            let (lo, hi) = disp::auto_contrast(&img.image, self.settings.p_lo, self.settings.p_hi);
            self.display.lo = lo;
            self.display.hi = hi;
        }
        self.result = None;
        self.copy_runs = None;
        self.filtered.clear();
        self.filtered_for = None;
        self.cell_fits.clear();
        self.spectrum.shown = None;
        self.error = None;
        self.current = Some(img);
        self.render.invalidate();
        self.request_realism();
        // An uncalibrated frame waits for its lattice estimate (see `poll_realism`).
        if self.settings.auto_detect
            && !self.settings.model_path.is_empty()
            && self.pixel_size().is_some()
        {
            self.run_detection();
        }
        self.prefetch_next();
    }

    pub fn run_detection(&mut self) {
        if self.settings.method == defect_detector::detect::combine::DetectMethod::Lattice {
            // The lattice analysis alone needs no model: its boxes become the result when it
            // finishes (see `lattice_only_result`).
            if self.current.is_some() {
                self.result = None;
                self.copy_runs = None;
                self.lattice.clear();
                self.request_lattice();
            }
            return;
        }
        let Some(det) = self.model.ensure(&self.settings.model_path) else {
            // Runs when the model has loaded (see `poll_model`).
            return;
        };
        let Some(cur) = self.current.as_ref() else {
            return;
        };
        let img = cur.image.clone();
        let px = self.pixel_size();
        let scales = self.model_scales();
        self.lattice.clear();
        self.request_lattice();
        self.detection
            .request(self.generation, det, img, px, self.settings.tta, scales);
    }

    /// The scales the model runs at on the current image: every preset crystal's reading of
    /// a pixel size taken from the lattice (as `detect` does), else the image's own; and the
    /// image as sampled where the model trained at its pixel size.
    pub fn model_scales(&self) -> Vec<f64> {
        let own = self
            .model
            .loaded()
            .filter(|_| self.settings.hedge_own_sampling)
            .and_then(|d| defect_detector::detect::own_sampling_scale(d.info(), self.pixel_size()));
        frame::model_scales(
            &self.settings.crystal.spec(),
            self.settings.hedge_lattice_scale,
            self.scale_from_lattice(),
            own,
        )
    }

    /// The preset crystals' readings the model runs at (one where the pixel size is not the
    /// lattice's or that hedge is off).
    fn lattice_scale_count(&self) -> usize {
        frame::model_scales(
            &self.settings.crystal.spec(),
            self.settings.hedge_lattice_scale,
            self.scale_from_lattice(),
            None,
        )
        .len()
    }

    fn scale_from_lattice(&self) -> bool {
        matches!(
            self.calibration_source(),
            "lattice" | "lattice, not the file's"
        )
    }

    /// Starts the lattice analysis of the current image when its boxes or maps are shown.
    pub(crate) fn request_lattice(&mut self) {
        let wanted = self.settings.method != defect_detector::detect::combine::DetectMethod::Model
            || self.settings.lattice_map.is_some()
            || self.label_with_lattice;
        if wanted {
            self.request_lattice_now();
        }
    }

    /// Keeps the canvas's map layer in step with the lattice result and the chosen map.
    fn sync_map_layer(&mut self, ctx: &egui::Context) {
        let key = (self.lattice.version, self.settings.lattice_map);
        if self.layer_for == Some(key) {
            self.canvas
                .set_layer_opacity(self.settings.lattice_map_opacity);
            return;
        }
        match (&self.lattice.result, self.settings.lattice_map) {
            (Some(l), Some(kind)) => {
                let (rgba, rect) = defect_detector::lattice::render::map_rgba(&l.maps, kind);
                self.canvas.set_layer(
                    ctx,
                    Some((l.maps.cols, l.maps.rows, &rgba, rect)),
                    self.settings.lattice_map_opacity,
                );
            }
            _ => self.canvas.set_layer(ctx, None, 0.0),
        }
        self.layer_for = Some(key);
    }

    /// The lattice boundary a detection lies on (same line within its width, within 20°), for
    /// its misorientation.
    pub(crate) fn lattice_boundary_of(
        &self,
        b: &defect_detector::geometry::OrientedBox,
    ) -> Option<&defect_detector::lattice::LatticeBoundary> {
        use defect_detector::detect::combine::{AGREE_DEG, axis_angle_deg, off_axis};
        let l = self.lattice.result.as_ref()?;
        l.boundaries.iter().find(|lb| {
            off_axis(&lb.obb, b) <= lb.obb.h.min(lb.obb.w)
                && axis_angle_deg(b, &lb.obb) <= AGREE_DEG
        })
    }

    /// Once per frame, before drawing, so the frame shows what the jobs finished since the last.
    fn poll(&mut self, ctx: &egui::Context) {
        self.poll_load();
        self.poll_realism();
        self.prefetch.poll();
        self.poll_model();
        let lattice = self.lattice.poll(self.generation);
        self.lattice_only_result();
        self.note(lattice);
        self.poll_detection();
        let image = self.current.as_ref();
        self.render
            .poll(ctx, image, self.display, self.generation, &mut self.canvas);
        let spectrum = self.spectrum.poll(ctx);
        self.note(spectrum);
        let saved = self.save.poll();
        self.note(saved);
        let current = self.current.as_ref().map(|c| c.path.as_path());
        self.thumbs.poll(ctx, &self.folder, current);
        if let Some(p) = self.picker.poll() {
            self.open(&p);
        }
        self.refilter();
    }

    fn note(&mut self, note: Option<Note>) {
        match note {
            Some(Note::Status(s)) => self.status = s,
            Some(Note::Error(e)) => self.error = Some(e),
            None => {}
        }
    }

    fn poll_load(&mut self) {
        match self.load.poll() {
            Some(Ok(img)) => self.set_image(img),
            Some(Err(e)) => self.error = Some(format!("{e:#}")),
            None => {}
        }
    }

    fn poll_realism(&mut self) {
        self.realism.set_model(&self.settings.model_path);
        if !self.realism.poll() || !self.settings.auto_detect || self.settings.model_path.is_empty()
        {
            return;
        }
        let uncalibrated = self
            .current
            .as_ref()
            .is_some_and(|c| c.pixel_size.is_none())
            && self.typed_pixel_size().is_none();
        if uncalibrated && self.detection.generation() != self.generation {
            // The lattice has calibrated an uncalibrated frame: detect at that pixel size.
            self.run_detection();
        } else if self.file_conflict().is_some() {
            // The frame was detected at the file's pixel size, which its lattice contradicts.
            self.run_detection();
        }
    }

    fn poll_model(&mut self) {
        match self.model.poll() {
            Some(Ok((d, status))) => {
                self.status = status;
                let n = d.class_names().len();
                if self.settings.show_class.len() < n {
                    self.settings.show_class.resize(n, true);
                }
                if self.current.is_some() && self.result.is_none() {
                    self.run_detection();
                }
            }
            Some(Err(e)) => self.error = Some(format!("Model: {e:#}")),
            None => {}
        }
    }

    fn poll_detection(&mut self) {
        match self.detection.poll(self.generation) {
            Some(Ok(runs)) => {
                self.result = Some(runs.result);
                self.copy_runs = runs.copies;
                self.filtered_for = None;
            }
            Some(Err(e)) => self.error = Some(format!("Detection: {e:#}")),
            None => {}
        }
    }

    /// With the lattice detector alone there is no model run: an empty model result carries
    /// the lattice boxes through the same filtering, table and overlay.
    fn lattice_only_result(&mut self) {
        use defect_detector::detect::combine::DetectMethod;
        if self.settings.method != DetectMethod::Lattice || self.result.is_some() {
            return;
        }
        let (Some(l), Some(cur)) = (&self.lattice.result, &self.current) else {
            return;
        };
        self.copy_runs = None;
        self.result = Some(defect_detector::detect::DetectionResult {
            candidates: Vec::new(),
            width: cur.image.width,
            height: cur.image.height,
            pixel_size: self.pixel_size(),
            class_names: defect_detector::classes::default_class_names(),
            provider: format!("lattice analysis ({:.0} ms)", l.timings_ms.total),
            timings: Default::default(),
            tiles: 0,
            scale: 1.0,
        });
        self.filtered_for = None;
    }

    /// Instant re-filtering: NMS over the kept candidates (or the copies fused again), no
    /// model run.
    fn refilter(&mut self) {
        if let Some(res) = &self.result {
            let m = self.settings.method;
            let key = FilterKey {
                conf: self.settings.conf,
                iou: self.settings.iou,
                candidates: res.candidates.len(),
                lattice_version: self.lattice.version,
                method: m,
                fit_cells: self.settings.fit_cells,
                tta: self.settings.tta,
                points_off_boundaries: self.settings.points_off_boundaries,
                points_inside_frame: self.settings.points_inside_frame,
            };
            if self.filtered_for != Some(key) {
                let model = defect_detector::detect::tta::boxes_at(
                    res,
                    self.copy_runs.as_ref(),
                    self.settings.conf,
                    self.settings.iou,
                );
                let lattice = self.lattice.result.as_deref();
                let finished = match &self.current {
                    Some(cur) => {
                        let fit = defect_detector::lattice::cells::CellFitParams::for_crystal(
                            &self.settings.crystal.spec(),
                        );
                        let finishing = frame::Finishing {
                            method: m,
                            join_conf: self.settings.conf,
                            clip_boundaries: true,
                            fit_cells: self.settings.fit_cells.then_some(&fit),
                            points_off_boundaries: self
                                .settings
                                .points_off_boundaries
                                .then_some(0.0),
                            points_inside_frame: self.settings.points_inside_frame,
                            iou: self.settings.iou,
                        };
                        // The frame's own run seconds the lattice's lone boundaries, as in
                        // `detect`.
                        frame::finish_frame(
                            &cur.image,
                            model,
                            Some(res),
                            lattice,
                            &res.class_names,
                            &finishing,
                            &mut self.cell_fits,
                        )
                    }
                    // No image to finish the boxes against: joined only.
                    None => {
                        let (detections, contradicted_boundaries) = frame::join_with_lattice(
                            m,
                            model,
                            None,
                            lattice,
                            self.settings.conf,
                            &res.class_names,
                        );
                        frame::Finished {
                            detections,
                            contradicted_boundaries,
                            points_at_edges: 0,
                        }
                    }
                };
                self.filtered = finished.detections;
                self.contradicted_boundaries = finished.contradicted_boundaries;
                self.points_at_edges = finished.points_at_edges;
                self.filtered_for = Some(key);
                self.sort_table();
            }
        }
    }

    fn sort_table(&mut self) {
        match self.sort {
            SortBy::Confidence => self
                .filtered
                .sort_by(|a, b| b.confidence.total_cmp(&a.confidence)),
            SortBy::Class => self.filtered.sort_by(|a, b| {
                a.class
                    .cmp(&b.class)
                    .then(b.confidence.total_cmp(&a.confidence))
            }),
            SortBy::X => self.filtered.sort_by(|a, b| a.obb.cx.total_cmp(&b.obb.cx)),
            SortBy::Y => self.filtered.sort_by(|a, b| a.obb.cy.total_cmp(&b.obb.cy)),
        }
    }

    fn handle_input(&mut self, ui: &egui::Ui) {
        let typing = ui.ctx().memory(|m| m.focused().is_some());
        if self.labels.enabled {
            // Before the arrows below: Shift+arrows nudge the selected boxes.
            self.labels.annot.handle_keys(ui);
        }
        if !typing && ui.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::L)) {
            self.labels.enabled = !self.labels.enabled;
        }
        if !typing && ui.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::D)) {
            self.settings.show_detections_panel = !self.settings.show_detections_panel;
        }
        let (next, prev, dropped) = ui.input(|i| {
            let plain = !typing && !i.modifiers.shift;
            (
                plain
                    && (i.key_pressed(egui::Key::ArrowRight) || i.key_pressed(egui::Key::PageDown)),
                plain && (i.key_pressed(egui::Key::ArrowLeft) || i.key_pressed(egui::Key::PageUp)),
                i.raw
                    .dropped_files
                    .iter()
                    .map(|f| f.path().to_path_buf())
                    .find(|p| !p.as_os_str().is_empty()),
            )
        });
        if next {
            self.step(1);
        }
        if prev {
            self.step(-1);
        }
        if let Some(p) = dropped {
            self.open(&p);
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.poll(&ctx);
        self.handle_input(ui);
        self.sync_labels();
        self.labels.autosave(&ctx);
        egui::Panel::left("viewer-side")
            .resizable(true)
            .default_size(320.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.side_ui(ui));
            });
        self.spectrum_ui(ui);
        if self.folder.len() > 1 {
            egui::Panel::bottom("viewer-strip").show(ui, |ui| self.strip_ui(ui));
        }
        if self.settings.show_detections_panel && self.current.is_some() {
            egui::Panel::right("viewer-detections")
                .resizable(true)
                .default_size(300.0)
                .show(ui, |ui| self.detections_panel_ui(ui));
        }
        self.sync_map_layer(&ctx);
        egui::CentralPanel::default().show(ui, |ui| self.central_ui(ui));
    }

    /// The folder as a strip of thumbnails; click one to open it.
    fn strip_ui(&mut self, ui: &mut egui::Ui) {
        let current = self.folder_index();
        let mut open = None;
        egui::ScrollArea::horizontal()
            .id_salt("strip")
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    for (i, p) in self.folder.iter().enumerate() {
                        let name = p
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let selected = current == Some(i);
                        let resp = ui
                            .vertical(|ui| {
                                ui.set_width(THUMB as f32);
                                let r = match self.thumbs.get(p) {
                                    Some(Some(t)) => {
                                        let sz = t.size_vec2()
                                            * (THUMB as f32 / t.size_vec2().max_elem());
                                        ui.add(
                                            egui::Image::new((t.id(), sz))
                                                .sense(egui::Sense::click()),
                                        )
                                    }
                                    Some(None) => ui.add(
                                        egui::Label::new("unreadable").sense(egui::Sense::click()),
                                    ),
                                    None => ui.add(egui::Spinner::new().size(24.0)),
                                };
                                let label = if selected {
                                    egui::RichText::new(&name).strong()
                                } else {
                                    egui::RichText::new(&name).small()
                                };
                                ui.add(egui::Label::new(label).truncate());
                                r
                            })
                            .inner;
                        if selected {
                            ui.painter().rect_stroke(
                                resp.rect.expand(2.0),
                                2.0,
                                egui::Stroke::new(2.0, Color32::from_rgb(230, 159, 0)),
                                egui::StrokeKind::Outside,
                            );
                        }
                        if resp.clicked() {
                            open = Some(p.clone());
                        }
                    }
                });
            });
        if let Some(p) = open {
            self.open(&p);
        }
    }

    fn side_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Viewer");
        ui.horizontal(|ui| {
            ui.add(
                egui::TextEdit::singleline(&mut self.path_input)
                    .desired_width(190.0)
                    .hint_text("file or folder"),
            )
            .on_hover_text("Path of an image file or folder");
            if ui.button("Open").clicked() {
                let p = PathBuf::from(self.path_input.trim());
                self.open(&p);
            }
        });
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!self.picker.is_open(), egui::Button::new("Browse…"))
                .clicked()
            {
                self.picker.open();
            }
            let n = self.folder.len();
            if let Some(i) = self.folder_index() {
                if ui
                    .button("< Prev")
                    .on_hover_text("Previous (←, PageUp)")
                    .clicked()
                {
                    self.step(-1);
                }
                ui.label(format!("{}/{n}", i + 1));
                if ui
                    .button("Next >")
                    .on_hover_text("Next (→, PageDown)")
                    .clicked()
                {
                    self.step(1);
                }
            }
        });
        if !self.settings.recent.is_empty() {
            egui::CollapsingHeader::new("Recent files").show(ui, |ui| {
                let mut open = None;
                for r in &self.settings.recent {
                    let name = Path::new(r)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| r.clone());
                    if ui.link(name).on_hover_text(r).clicked() {
                        open = Some(PathBuf::from(r));
                    }
                }
                if let Some(p) = open {
                    self.open(&p);
                }
            });
        }
        ui.separator();
        if let Some(cur) = &self.current {
            egui::CollapsingHeader::new("File")
                .default_open(true)
                .show(ui, |ui| {
                    ui.label(format!("{} · {}", cur.format, cur.pixel_type));
                    ui.label(format!(
                        "{} × {} px{}",
                        cur.width(),
                        cur.height(),
                        if cur.pages > 1 {
                            format!(" · page {}/{}", cur.page + 1, cur.pages)
                        } else {
                            String::new()
                        }
                    ));
                    if !cur.metadata.is_empty() {
                        egui::CollapsingHeader::new(format!("Metadata ({})", cur.metadata.len()))
                            .default_open(false)
                            .show(ui, |ui| {
                                for (k, v) in &cur.metadata {
                                    let (shown, source) =
                                        defect_detector::formats::display::pretty_metadata(k, v);
                                    let r = ui.label(format!("{}: {shown}", k.replace('_', " ")));
                                    if let Some(src) = source {
                                        r.on_hover_text(format!("{v}\nfrom {src}"));
                                    }
                                }
                            });
                    }
                });
            let key = cur.path.display().to_string();
            let lattice = self.lattice_pixel_size();
            let mut remeasure = false;
            let file_nm = cur.pixel_size.map(|p| p.nm_per_px);
            let conflict = self.realism.conflict(self.generation);
            match cur.pixel_size {
                Some(p) if self.typed_pixel_size().is_none() => {
                    match conflict.filter(|_| self.settings.check_file_calibration) {
                        Some(c) => {
                            ui.colored_label(
                                Color32::from_rgb(230, 159, 0),
                                format!(
                                    "Pixel size {:.2} pm/px from the lattice: the file's {:.2} \
                                     pm/px ({}) fits no {} lattice",
                                    c.lattice.nm_per_px * 1000.0,
                                    p.nm_per_px * 1000.0,
                                    cur.original_unit.clone().unwrap_or_else(|| "nm".into()),
                                    self.settings.crystal.label()
                                ),
                            );
                        }
                        None => {
                            ui.label(format!(
                                "Pixel size {:.2} pm/px ({} in file)",
                                p.nm_per_px * 1000.0,
                                cur.original_unit.clone().unwrap_or_else(|| "nm".into())
                            ));
                        }
                    }
                    if conflict.is_some()
                        && ui
                            .checkbox(
                                &mut self.settings.check_file_calibration,
                                "use the lattice's pixel size",
                            )
                            .on_hover_text(
                                "The file's calibration lies more than 25 % from this crystal's \
                                 lattice, and no lattice is near it (two independent measures \
                                 agree on the lattice's scale). A calibration from the wrong \
                                 magnification, or a rebinned frame, does this. Untick to \
                                 detect at the file's pixel size; the crystal is set under \
                                 Realism.",
                            )
                            .changed()
                    {
                        self.run_detection();
                    }
                }
                _ => {
                    ui.horizontal(|ui| {
                        let mut v = self.settings.pixel_sizes.get(&key).copied().unwrap_or(0.0);
                        let changed = ui
                            .add(pixel_size_field(&mut v))
                            .on_hover_text("Type the pixel size in nm/px to override the file's or the lattice's (remembered for this file; auto or 0: use those)")
                            .changed();
                        ui.label(if v > 0.0 {
                            match file_nm {
                                Some(f) => format!("pixel size (typed; the file says {:.2} pm/px)", f * 1000.0),
                                None => "pixel size (typed)".to_string(),
                            }
                        } else if let Some(l) = lattice {
                            format!("{:.2} pm/px, estimated from the lattice", l * 1000.0)
                        } else if self.realism.pending(self.generation) {
                            "pixel size: estimating from the lattice…".to_string()
                        } else {
                            "pixel size: not in the file, no lattice found".to_string()
                        });
                        if changed {
                            if v > 0.0 {
                                self.settings.pixel_sizes.insert(key.clone(), v);
                            } else {
                                self.settings.pixel_sizes.remove(&key);
                            }
                            remeasure = true;
                        }
                    });
                }
            }
            if remeasure {
                self.request_realism();
            }
        }
        egui::CollapsingHeader::new("Realism")
            .default_open(false)
            .show(ui, |ui| {
                ui.horizontal(|ui| {
                    ui.label("crystal");
                    let before = self.settings.crystal;
                    egui::ComboBox::from_id_salt("viewer-crystal")
                        .selected_text(self.settings.crystal.label())
                        .show_ui(ui, |ui| {
                            for p in defect_detector::synth::crystal::Preset::ALL {
                                if p != defect_detector::synth::crystal::Preset::Custom {
                                    ui.selectable_value(&mut self.settings.crystal, p, p.label());
                                }
                            }
                        });
                    if before != self.settings.crystal {
                        self.request_realism();
                        // Point boxes snap to the crystal's sites.
                        self.cell_fits.clear();
                        self.filtered_for = None;
                    }
                });
                let path = self.current.as_ref().map(|c| c.path.clone());
                self.realism
                    .ui(ui, self.generation, path.as_deref(), self.settings.crystal);
            });
        egui::CollapsingHeader::new("Contrast")
            .default_open(true)
            .show(ui, |ui| self.contrast_ui(ui));
        // Labels before Detection: short when off, and the detection table below can be long.
        egui::CollapsingHeader::new("Labels")
            .default_open(true)
            .show(ui, |ui| self.labels_ui(ui));
        egui::CollapsingHeader::new("Detection")
            .default_open(true)
            .show(ui, |ui| self.detection_ui(ui));
        self.watch_ui(ui);
        if let Some(e) = &self.error {
            ui.colored_label(Color32::from_rgb(213, 94, 0), e);
        }
        if !self.status.is_empty() {
            ui.label(&self.status);
        }
    }

    fn contrast_ui(&mut self, ui: &mut egui::Ui) {
        let s = &mut self.settings;
        ui.checkbox(&mut s.auto_contrast, "auto (percentiles)");
        if s.auto_contrast {
            let mut changed = ui
                .add(Slider::new(&mut s.p_lo, 0.0..=10.0).text("low %"))
                .changed();
            changed |= ui
                .add(Slider::new(&mut s.p_hi, 90.0..=100.0).text("high %"))
                .changed();
            if changed && let Some(cur) = &self.current {
                let (lo, hi) = disp::auto_contrast(&cur.image, s.p_lo, s.p_hi);
                self.display.lo = lo;
                self.display.hi = hi;
            }
        }
        if let Some(h) = &self.histogram {
            let bars: Vec<egui_plot::Bar> = h
                .counts
                .iter()
                .enumerate()
                .map(|(i, &c)| {
                    egui_plot::Bar::new(h.bin_center(i) as f64, ((c + 1) as f64).log10())
                        .width(((h.hi - h.lo) / h.counts.len() as f32) as f64)
                })
                .collect();
            let (lo, hi) = (self.display.lo as f64, self.display.hi as f64);
            egui_plot::Plot::new("histogram")
                .height(90.0)
                .show_axes([true, false])
                .allow_zoom(false)
                .allow_drag(false)
                .allow_scroll(false)
                .show(ui, |p| {
                    p.bar_chart(
                        egui_plot::BarChart::new("counts (log)", bars).color(Color32::GRAY),
                    );
                    p.vline(
                        egui_plot::VLine::new("min", lo).color(Color32::from_rgb(86, 180, 233)),
                    );
                    p.vline(egui_plot::VLine::new("max", hi).color(Color32::from_rgb(230, 159, 0)));
                });
        }
        ui.horizontal(|ui| {
            let speed = ((self.display.hi - self.display.lo).abs() / 200.0).max(1e-6) as f64;
            let a = ui.add(
                egui::DragValue::new(&mut self.display.lo)
                    .speed(speed)
                    .prefix("min "),
            );
            let b = ui.add(
                egui::DragValue::new(&mut self.display.hi)
                    .speed(speed)
                    .prefix("max "),
            );
            if a.changed() || b.changed() {
                self.settings.auto_contrast = false;
            }
        });
        let s = &mut self.settings;
        ui.add(Slider::new(&mut s.gamma, 0.2..=3.0).text("gamma"));
        egui::ComboBox::from_label("colour map")
            .selected_text(s.colormap.name())
            .show_ui(ui, |ui| {
                for c in Colormap::ALL {
                    ui.selectable_value(&mut s.colormap, c, c.name());
                }
            });
        ui.checkbox(&mut s.invert, "invert");
        self.display.gamma = s.gamma;
        self.display.colormap = s.colormap;
        self.display.invert = s.invert;
        ui.horizontal(|ui| {
            super::widgets::zoom_buttons(ui, &mut self.canvas, "image");
            if ui
                .add_enabled(self.current.is_some(), egui::Button::new("Power spectrum"))
                .clicked()
            {
                self.spectrum_panel.open = true;
                self.request_spectrum();
            }
        });
    }

    fn request_spectrum(&mut self) {
        let Some(cur) = &self.current else { return };
        // The part of the image in view (the whole image when it all fits).
        let region = self
            .canvas
            .visible_region()
            .unwrap_or([0, 0, cur.width(), cur.height()]);
        self.spectrum.request(cur.image.clone(), region);
        self.spectrum_for = self.generation;
    }

    /// The spectrum panel (docked right or floating) and what it asks for.
    fn spectrum_ui(&mut self, ui: &mut egui::Ui) {
        use super::spectrum_panel::{SpectrumAction, SpectrumInputs};
        if self.spectrum_panel.open
            && self.current.is_some()
            && self.spectrum_for != self.generation
        {
            self.request_spectrum();
        }
        let inputs = SpectrumInputs {
            spectrum: self.spectrum.shown.as_ref(),
            busy: self.spectrum.is_busy(),
            nm_per_px: self.pixel_size().map(|p| p.nm_per_px),
            crystal: self.settings.crystal,
        };
        for action in self.spectrum_panel.show(ui, &inputs) {
            match action {
                SpectrumAction::Recompute => self.request_spectrum(),
                SpectrumAction::SetPixelSize {
                    nm_per_px,
                    reflection,
                } => {
                    self.set_pixel_size(nm_per_px);
                    self.status = format!(
                        "Pixel size {:.2} pm/px from the {} spacing",
                        nm_per_px * 1000.0,
                        reflection.label()
                    );
                }
            }
        }
    }

    /// Sets the current file's pixel size as the user's (0 forgets it), and re-reads the
    /// frame's statistics at it.
    pub fn set_pixel_size(&mut self, nm_per_px: f64) {
        let Some(cur) = &self.current else { return };
        let key = cur.path.display().to_string();
        if nm_per_px > 0.0 {
            self.settings.pixel_sizes.insert(key, nm_per_px);
        } else {
            self.settings.pixel_sizes.remove(&key);
        }
        self.request_realism();
    }

    fn detection_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.add(
                egui::TextEdit::singleline(&mut self.settings.model_path)
                    .desired_width(200.0)
                    .hint_text("model.onnx"),
            )
            .on_hover_text("YOLO-OBB ONNX model");
            let can = self.current.is_some()
                && (!self.settings.model_path.is_empty()
                    || self.settings.method
                        == defect_detector::detect::combine::DetectMethod::Lattice);
            if ui.add_enabled(can, egui::Button::new("Detect")).clicked() {
                self.run_detection();
            }
        });
        if self.settings.model_path.is_empty() {
            ui.label("No model in models/: type the path of a YOLO-OBB .onnx");
        } else if let Some(t) = self.realism.trained_on() {
            ui.small(t)
                .on_hover_text("From the model card (training_realism): frames outside these ranges get a warning above the image");
        }
        ui.checkbox(&mut self.settings.auto_detect, "detect on every image");
        ui.horizontal(|ui| {
            let before = self.settings.method;
            ui.label("detector");
            for m in defect_detector::detect::combine::DetectMethod::ALL {
                ui.selectable_value(&mut self.settings.method, m, m.label())
                    .on_hover_text(
                        "model: the trained network; lattice: boundaries and point defects read \
                         from the crystal itself (no training); both: the model's point defects \
                         and the boundaries of both (agreement raises the confidence; a boundary \
                         only the lattice sees enters at half its score where the model drew at \
                         least a faint box along it, and not at all where it drew none)",
                    );
            }
            if before != self.settings.method && self.current.is_some() {
                self.run_detection();
            }
        });
        ui.horizontal(|ui| {
            use defect_detector::lattice::render::MapKind;
            let before = self.settings.lattice_map;
            egui::ComboBox::new("lattice-map", "lattice map")
                .selected_text(self.settings.lattice_map.map_or("none", MapKind::label))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.settings.lattice_map, None, "none");
                    for k in MapKind::ALL {
                        ui.selectable_value(&mut self.settings.lattice_map, Some(k), k.label())
                            .on_hover_text(k.legend());
                    }
                })
                .response
                .on_hover_text(
                    "Overlay a map of the local lattice (read from the crystal, no training)",
                );
            if before != self.settings.lattice_map
                && self.settings.lattice_map.is_some()
                && self.lattice.result.is_none()
            {
                self.request_lattice();
            }
        });
        if self.contradicted_boundaries > 0 {
            ui.small(frame::contradicted_boundaries_note(
                self.contradicted_boundaries,
            ))
            .on_hover_text(
                "A grain boundary separates two orientations of the crystal. Where the lattice \
                 maps read the same orientation (within 3°) on both sides of a box the model \
                 drew, and no ridge of discontinuity along it, the box enters at half its \
                 confidence, as a boundary only the lattice sees does. Detector \"model\" shows \
                 it as the model drew it.",
            );
        }
        if let Some(l) = &self.lattice.result {
            ui.small(lattice_summary(l)).on_hover_text(
                "Lattice visibility: the median {111} peak-to-mean power of the analysis windows. \
                 Below 5 the lattice is buried in noise: the maps use 6-period windows instead \
                 of 4 (more signal, coarser maps) and boundaries are found less often. The real \
                 [110] frames in the samples lie at 10-16.",
            );
        }
        if let Some(k) = self.settings.lattice_map {
            ui.add(
                Slider::new(&mut self.settings.lattice_map_opacity, 0.0..=1.0).text("map opacity"),
            );
            ui.small(k.legend());
            if self.lattice.is_busy() {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.small("reading the lattice…");
                });
            } else if !self.canvas.has_layer() && self.current.is_some() {
                ui.small(
                    "no lattice map: the analysis found no lattice here (see the status line)",
                );
            }
        }
        ui.checkbox(&mut self.settings.show_boxes, "show boxes");
        ui.checkbox(
            &mut self.settings.fit_cells,
            "fit point boxes to the lattice",
        )
        .on_hover_text(
            "Align each vacancy and interstitial box with the lattice around it: its angle \
                 and size from the local {111} reflections, its centre moved to the nearest \
                 site of its class (a column or dumbbell centre for a vacancy, a channel for \
                 an interstitial). Boxes where the lattice is too faint stay as drawn.",
        );
        ui.checkbox(
            &mut self.settings.points_off_boundaries,
            "no point boxes on boundaries",
        )
        .on_hover_text(
            "Drop vacancy and interstitial boxes centred inside a grain-boundary box: a \
             boundary's disordered core shows gaps and extra spots of its own, and a defect on \
             a boundary is neither bulk nor boundary (as the training labels have it). On the \
             realistic synthetic test set vacancy false positives fell by a third.",
        );
        ui.checkbox(
            &mut self.settings.points_inside_frame,
            "no point boxes across the frame's edge",
        )
        .on_hover_text(
            "Drop vacancy and interstitial boxes that reach past the edge of the image: a \
             column is judged missing or extra against the columns around it, and at the edge \
             half of them are outside the field (the training labels place no point defect \
             there). On the synthetic validation frames every such box was a false positive.",
        );
        if self.settings.points_inside_frame && self.points_at_edges > 0 {
            ui.small(frame::points_at_edges_note(self.points_at_edges));
        }
        if ui
            .checkbox(
                &mut self.settings.tta,
                "test-time augmentation (8 model runs)",
            )
            .on_hover_text(
                "Run the model on the image, its mirror image and their quarter turns, and fuse \
                 the boxes: steadier angles and positions, and a box only some copies see \
                 ranks low. On the realistic synthetic test set mAP50-95 0.80 -> 0.84; eight \
                 times the model's time.",
            )
            .changed()
        {
            self.run_detection();
        }
        if ui
            .checkbox(
                &mut self.settings.hedge_own_sampling,
                "also run the frame as sampled",
            )
            .on_hover_text(
                "A calibrated frame is brought to the model's pixel size. Where its own pixel \
                 size lies in the span the model was trained on, run the model on it as \
                 sampled too (twice the model runs) and fuse the boxes: brought to the model's \
                 size, coarse frames lose boundaries and fine ones detail; the two runs \
                 together find more than either.",
            )
            .changed()
        {
            self.run_detection();
        }
        if ui
            .checkbox(
                &mut self.settings.hedge_lattice_scale,
                "lattice scale: fuse all crystals' readings",
            )
            .on_hover_text(
                "Where the pixel size is read from the lattice (a file without one, or one the \
                 lattice contradicts), it is only as right as the crystal chosen: Si read as \
                 CdTe comes out 19 % coarse. Run the model at the scale each preset crystal \
                 would give too (3 model runs) and fuse the boxes, so a box seen at one \
                 reading only ranks low.",
            )
            .changed()
        {
            self.run_detection();
        }
        ui.add(Slider::new(&mut self.settings.conf, 0.01..=1.0).text("confidence"));
        ui.add(Slider::new(&mut self.settings.iou, 0.05..=0.95).text("NMS IoU"));
        if self.detection.is_busy() || self.model.is_loading() {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("detecting…");
            });
        }
        if self.current.is_some() {
            ui.toggle_value(&mut self.settings.show_detections_panel, "Detections panel")
                .on_hover_text(
                    "Counts, timings and the table of detections, right of the image (D)",
                );
        }
    }

    /// Class names of the result, else of the loaded model, else the built-in classes; the
    /// class filter grows to match.
    fn result_class_names(&mut self) -> Vec<String> {
        let names: Vec<String> = self
            .result
            .as_ref()
            .map(|r| r.class_names.clone())
            .or_else(|| self.model.loaded().map(|d| d.class_names().to_vec()))
            .unwrap_or_else(defect_detector::classes::default_class_names);
        if self.settings.show_class.len() < names.len() {
            self.settings.show_class.resize(names.len(), true);
        }
        names
    }

    /// The docked detections panel: per-class filter with counts, timings, the chart, saving
    /// and the table, which takes the rest of the panel's height.
    fn detections_panel_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("Detections");
            if self.detection.is_busy() || self.model.is_loading() {
                ui.spinner();
            }
        });
        let names = self.result_class_names();
        let mut counts = vec![0usize; names.len()];
        for d in &self.filtered {
            if d.class < counts.len() {
                counts[d.class] += 1;
            }
        }
        ui.horizontal_wrapped(|ui| {
            for (i, n) in names.iter().enumerate() {
                let [r, g, b] = class_color(i);
                ui.checkbox(
                    &mut self.settings.show_class[i],
                    egui::RichText::new(format!("{n} ({})", counts[i]))
                        .color(Color32::from_rgb(r, g, b)),
                );
            }
        });
        let Some(res) = &self.result else {
            ui.label(if self.settings.model_path.is_empty()
                && self.settings.method != defect_detector::detect::combine::DetectMethod::Lattice
            {
                "No detections yet: choose a model on the left, or the lattice detector."
            } else {
                "No detections yet: press Detect on the left (or tick \"detect on every image\")."
            });
            return;
        };
        if res.tiles == 0 {
            ui.label(&res.provider);
        } else {
            let lattice_scales = self.lattice_scale_count();
            let as_sampled = self.model_scales().len() > lattice_scales;
            ui.label(format!(
                "{} · pre {:.1} ms · inference {:.1} ms · post {:.1} ms · {} model run{}{}{}{}",
                res.provider,
                res.timings.preprocess_ms,
                res.timings.inference_ms,
                res.timings.postprocess_ms,
                res.tiles,
                if res.tiles == 1 { "" } else { "s" },
                if (res.scale - 1.0).abs() > 1e-3 {
                    format!(" · resampled ×{:.2}", res.scale)
                } else {
                    String::new()
                },
                match lattice_scales {
                    n if n > 1 => format!(" · fused over {n} crystals' lattice scales"),
                    _ => String::new(),
                },
                if as_sampled { " · and as sampled" } else { "" }
            ));
        }
        let bars: Vec<egui_plot::Bar> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let [r, g, b] = class_color(i);
                egui_plot::Bar::new(i as f64, c as f64)
                    .name(&names[i])
                    .fill(Color32::from_rgb(r, g, b))
                    .width(0.7)
            })
            .collect();
        egui_plot::Plot::new("class-counts")
            .height(80.0)
            .allow_zoom(false)
            .allow_drag(false)
            .allow_scroll(false)
            .show_axes([false, true])
            .show(ui, |p| {
                p.bar_chart(egui_plot::BarChart::new("detections per class", bars))
            });
        if ui
            .add_enabled(
                !self.save.is_running(),
                egui::Button::new("Save detections"),
            )
            .on_hover_text("JSON, CSV and YOLO-OBB text beside the image (<name>_detections.*)")
            .clicked()
        {
            self.save_detections();
        }
        if self.filtered.is_empty() {
            ui.label("Nothing above the confidence threshold.");
        } else {
            self.table_ui(ui, &names);
        }
    }

    fn save_detections(&mut self) {
        let (Some(res), Some(cur)) = (self.result.clone(), &self.current) else {
            return;
        };
        let dets = self.filtered.clone();
        let stem = cur
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let base = cur.path.with_file_name(format!("{stem}_detections"));
        let image = cur.path.clone();
        let model = PathBuf::from(&self.settings.model_path);
        let (conf, iou) = (self.settings.conf, self.settings.iou);
        self.save.start(self.notify.clone(), move || {
            let meta = detect::export::ExportMeta {
                image: Some(&image),
                model: Some(&model),
                conf,
                iou,
            };
            detect::export::write_all(&base, &res, &dets, &meta)
        });
    }

    fn table_ui(&mut self, ui: &mut egui::Ui, names: &[String]) {
        ui.separator();
        ui.horizontal(|ui| {
            ui.label("sort by");
            for (s, label) in [
                (SortBy::Confidence, "conf"),
                (SortBy::Class, "class"),
                (SortBy::X, "x"),
                (SortBy::Y, "y"),
            ] {
                if ui.selectable_label(self.sort == s, label).clicked() {
                    self.sort = s;
                    self.sort_table();
                }
            }
        });
        let px = self.pixel_size();
        let mut focus = None;
        egui::ScrollArea::vertical()
            .id_salt("det-table")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                egui::Grid::new("detections").striped(true).show(ui, |ui| {
                    ui.strong("class");
                    ui.strong("conf");
                    ui.strong(if px.is_some() {
                        "x, y (nm)"
                    } else {
                        "x, y (px)"
                    });
                    ui.strong("angle");
                    ui.end_row();
                    for (i, d) in self.filtered.iter().enumerate() {
                        if !self
                            .settings
                            .show_class
                            .get(d.class)
                            .copied()
                            .unwrap_or(true)
                        {
                            continue;
                        }
                        let [r, g, b] = class_color(d.class);
                        let name = names
                            .get(d.class)
                            .cloned()
                            .unwrap_or_else(|| d.class.to_string());
                        if ui
                            .link(egui::RichText::new(name).color(Color32::from_rgb(r, g, b)))
                            .clicked()
                        {
                            focus = Some(i);
                        }
                        ui.label(format!("{:.2}", d.confidence));
                        match px {
                            Some(p) => ui.label(format!(
                                "{:.2}, {:.2}",
                                d.obb.cx * p.nm_per_px,
                                d.obb.cy * p.nm_per_px
                            )),
                            None => ui.label(format!("{:.0}, {:.0}", d.obb.cx, d.obb.cy)),
                        };
                        ui.label(format!("{:.0}°", d.obb.angle.to_degrees()));
                        ui.end_row();
                    }
                });
            });
        if let Some(i) = focus {
            let b = self.filtered[i].obb;
            self.canvas.focus_on(&b);
        }
    }

    /// Class names of the model's result, else the built-in defect classes.
    fn class_names(&self) -> Vec<String> {
        match &self.result {
            Some(r) if !r.class_names.is_empty() => r.class_names.clone(),
            _ => DefectClass::ALL
                .iter()
                .map(|c| c.name().to_string())
                .collect(),
        }
    }

    /// How many [`Self::class_names`] there are, without building them (called every frame).
    fn class_count(&self) -> usize {
        match &self.result {
            Some(r) if !r.class_names.is_empty() => r.class_names.len(),
            _ => DefectClass::ALL.len(),
        }
    }

    /// Keeps the label editor on the image shown (flushing edits of the previous image).
    fn sync_labels(&mut self) {
        let names = self.class_count();
        let image = self
            .current
            .as_ref()
            .map(|c| (c.path.as_path(), self.generation, [c.width(), c.height()]));
        self.labels.sync(image, &self.settings.labels_dir, names);
    }

    /// The detections drawn: above the confidence, of the classes switched on.
    fn shown_detections(&self) -> Vec<Detection> {
        self.filtered
            .iter()
            .filter(|d| {
                self.settings
                    .show_class
                    .get(d.class)
                    .copied()
                    .unwrap_or(true)
            })
            .cloned()
            .collect()
    }

    fn labels_ui(&mut self, ui: &mut egui::Ui) {
        let names = self.class_names();
        let shown = self.shown_detections();
        self.labels
            .ui(ui, &mut self.settings.labels_dir, &names, &shown);
        if self.labels.enabled && self.current.is_some() {
            let busy = self.lattice.is_busy() && self.label_with_lattice;
            if ui
                .add_enabled(
                    !busy && !self.labels.annot.read_only,
                    egui::Button::new("Label with lattice analysis"),
                )
                .on_hover_text(
                    "Propose boundaries, vacancies and interstitials read from the crystal \
                     lattice (no model) as labels, one undo step; then accept or correct each",
                )
                .clicked()
            {
                self.label_with_lattice = true;
                if self.lattice.result.is_none() {
                    self.request_lattice_now();
                }
            }
            if busy {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.small("reading the lattice…");
                });
            }
        }
        if self.label_with_lattice
            && let Some(l) = self.lattice.result.clone()
        {
            self.label_with_lattice = false;
            self.labels
                .accept_lattice(&l.detections(), self.settings.conf);
        }
    }

    /// Runs the lattice analysis of the current image whatever the method and map settings.
    fn request_lattice_now(&mut self) {
        let Some(cur) = self.current.as_ref() else {
            return;
        };
        let spec = self.settings.crystal.spec();
        let img = cur.image.clone();
        let px = self.pixel_size();
        self.lattice.request(self.generation, img, spec, px);
    }

    fn overlay(&self) -> Vec<OverlayBox> {
        if !self.settings.show_boxes {
            return vec![];
        }
        let names = self
            .result
            .as_ref()
            .map(|r| r.class_names.clone())
            .unwrap_or_default();
        let px = self.pixel_size();
        self.shown_detections()
            .iter()
            .map(|d| {
                let name = names
                    .get(d.class)
                    .cloned()
                    .unwrap_or_else(|| d.class.to_string());
                let size = match px {
                    Some(p) => format!(
                        "{:.2} × {:.2} nm",
                        d.obb.w * p.nm_per_px,
                        d.obb.h * p.nm_per_px
                    ),
                    None => format!("{:.1} × {:.1} px", d.obb.w, d.obb.h),
                };
                let lattice_note = if d.class_name.as_ref() == "grain_boundary" {
                    self.lattice_boundary_of(&d.obb)
                        .map(|lb| {
                            let kind = match lb.kind {
                                defect_detector::lattice::BoundaryKindGuess::Twin => {
                                    "Σ3 twin".to_string()
                                }
                                defect_detector::lattice::BoundaryKindGuess::Tilt { angle_deg } => {
                                    format!("tilt {angle_deg:.1}°")
                                }
                                defect_detector::lattice::BoundaryKindGuess::Unknown => {
                                    "kind unknown".to_string()
                                }
                            };
                            match lb.misorientation_deg {
                                Some(m) => format!("\nmisorientation {m:.1}° ({kind})"),
                                None => format!("\nmisorientation not measurable ({kind})"),
                            }
                        })
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                OverlayBox {
                    obb: d.obb,
                    class: d.class,
                    caption: Some(format!("{name} {:.2}", d.confidence)),
                    tooltip: format!(
                        "{name} {:.3}\ncentre ({:.1}, {:.1}) px\n{size}\nangle {:.1}°\nfound by: {}{lattice_note}",
                        d.confidence,
                        d.obb.cx,
                        d.obb.cy,
                        d.obb.angle.to_degrees(),
                        match d.source {
                            defect_detector::detect::DetectionSource::Model => "the model",
                            defect_detector::detect::DetectionSource::Lattice =>
                                "the lattice analysis",
                            defect_detector::detect::DetectionSource::Both =>
                                "the model and the lattice analysis",
                        }
                    ),
                }
            })
            .collect()
    }

    fn central_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            if let Some(cur) = &self.current {
                ui.strong(cur.path.file_name().unwrap_or_default().to_string_lossy());
                ui.separator();
            }
            if self.load.is_busy() {
                ui.spinner();
                ui.label("loading…");
            }
            ui.toggle_value(&mut self.labels.enabled, "Edit labels")
                .on_hover_text("L: edit oriented boxes on this image (saved as YOLO-OBB text)");
            ui.separator();
            ui.label(&self.readout);
        });
        if let Some(c) = self.file_conflict() {
            ui.colored_label(
                Color32::from_rgb(230, 159, 0),
                format!(
                    "Calibration: {}. Detecting at the lattice's pixel size (File, left: \
                     untick to use the file's){}.",
                    c.describe(self.settings.crystal.label()),
                    if self.lattice_scale_count() > 1 {
                        format!(
                            ", and at the other crystals' readings of it, fused (the crystal, \
                             {}, is set under Realism)",
                            self.settings.crystal.label()
                        )
                    } else {
                        String::new()
                    }
                ),
            );
        }
        if let Some(m) = defect_detector::realism::not_the_crystal(self.lattice_match()) {
            ui.colored_label(
                Color32::from_rgb(213, 94, 0),
                format!(
                    "{}. The crystal is set under Realism.",
                    defect_detector::realism::not_the_crystal_message(
                        self.settings.crystal.label(),
                        m
                    )
                ),
            );
        }
        let unlike = self.unlike_training();
        super::viewer_realism::RealismPanel::banner(ui, &unlike);
        let r = if self.labels.enabled && self.current.is_some() {
            let names = self.class_names();
            self.labels.annot.show(ui, &mut self.canvas, &names)
        } else {
            let boxes = self.overlay();
            self.canvas.show(ui, &boxes, true)
        };
        let rect = r.response.as_ref().map(|r| r.rect);
        // Scale bar in the lower left, in calibrated units.
        if let (Some(rect), Some(px), Some(_)) = (rect, self.pixel_size(), &self.current) {
            super::widgets::scale_bar(ui, rect, self.canvas.zoom(), px.nm_per_px);
        }
        self.readout = match (r.pointer_image_pos, &self.current) {
            (Some(p), Some(cur)) => {
                let v = cur.image.get(p[0] as usize, p[1] as usize);
                match self.pixel_size() {
                    Some(px) => format!(
                        "x {:.0} y {:.0} px · ({:.3}, {:.3}) nm · value {v}",
                        p[0],
                        p[1],
                        p[0] * px.nm_per_px,
                        p[1] * px.nm_per_px
                    ),
                    None => format!("x {:.0} y {:.0} px · value {v}", p[0], p[1]),
                }
            }
            _ => String::new(),
        };
    }
}

/// The typed pixel size of an uncalibrated file (nm/px); 0, shown as "auto", leaves it to the
/// file or the lattice ("0.0000 nm/px" read as a calibration of zero).
fn pixel_size_field(v: &mut f64) -> egui::DragValue<'_> {
    egui::DragValue::new(v)
        .range(0.0..=100.0)
        .speed(0.0005)
        .custom_formatter(|n, _| {
            if n == 0.0 {
                "auto".to_string()
            } else {
                format!("{n:.5} nm/px")
            }
        })
        .custom_parser(|s| {
            let t = s.trim().trim_end_matches("nm/px").trim();
            if t.is_empty() || t.eq_ignore_ascii_case("auto") {
                Some(0.0)
            } else {
                t.parse().ok()
            }
        })
}

/// One line on what the lattice analysis saw: the {111} period it used and how clearly the
/// lattice shows (a frame without detections may simply be too noisy).
pub(crate) fn lattice_summary(l: &defect_detector::lattice::LatticeResult) -> String {
    format!(
        "lattice: {{111}} period {:.1} px · {}",
        l.d111_px,
        l.visibility_label()
    )
}
