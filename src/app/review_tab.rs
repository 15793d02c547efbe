//! The Review tab: open a dataset folder (as written by `defect-detector export`, or any folder
//! of images with YOLO-OBB labels), flip through it with a/d or the arrow keys, fix the labels
//! with the box editor, and mark each image verified with Space (kept in `review.json` in the
//! dataset root). Labels are saved automatically, at most half a second after a change, and
//! when leaving the image. A label file that does not parse opens read-only until discarded.

use super::annotate::{AUTOSAVE_DELAY, Annotator, UnsavedLabels};
use super::canvas::ImageCanvas;
use super::widgets::folder_picker;
use defect_detector::classes::class_color;
use defect_detector::dataset::review::{
    DatasetListing, LabelDoc, LabeledBox, ReviewState, box_flags, class_counts, export_reviewed,
};
use defect_detector::detect::{
    DEFAULT_CONF, DEFAULT_IOU, DetectOptions, Detector, DetectorOptions,
};
use defect_detector::jobs::Job;
use defect_detector::raster::ImageF32;
use egui::{Color32, Key, Modifiers, RichText};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReviewSettings {
    pub dir: String,
    /// Show only images with at least one box of this class.
    pub filter_class: Option<usize>,
    pub only_unreviewed: bool,
    /// Space (verify) also moves on to the next image.
    pub advance_on_verify: bool,
    /// Where "Export verified" writes the reviewed dataset.
    pub export_dir: String,
    pub val_fraction: f64,
    /// Crystal whose lattice "Label with lattice analysis" reads.
    pub crystal: defect_detector::synth::crystal::Preset,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            dir: String::new(),
            filter_class: None,
            only_unreviewed: false,
            advance_on_verify: true,
            export_dir: String::new(),
            val_fraction: 0.2,
            crystal: defect_detector::synth::crystal::Preset::Cdte110,
        }
    }
}

/// Boxes per class of one image's labels; `None` when its file could not be read.
type ItemCounts = Option<Vec<usize>>;

pub struct ReviewTab {
    pub settings: ReviewSettings,
    pub listing: Option<DatasetListing>,
    pub review: ReviewState,
    /// `review.json` exists but could not be read: never overwrite it.
    pub review_error: Option<String>,
    /// Index into `listing.items` of the image shown.
    pub current: Option<usize>,
    pub doc: Option<LabelDoc>,
    pub annot: Annotator,
    pub status: String,
    /// Edits whose save failed, kept (and shown in a modal) until saved or discarded.
    pub unsaved: UnsavedLabels,
    counts: Vec<ItemCounts>,
    canvas: ImageCanvas,
    pick_job: Option<Job<Option<PathBuf>>>,
    /// The image shown, for running the detector on it.
    image: Option<Arc<ImageF32>>,
    detector: Option<Arc<Detector>>,
    /// Running "Accept detections": the item index it was started for, and the job.
    detect_job: Option<(usize, Job<DetectOutcome>)>,
    /// "Label with lattice analysis" running for image `.0`.
    lattice_job: Option<(usize, Job<Vec<LabeledBox>>)>,
}

/// What "Accept detections" brings back: the loaded model (kept for the next image) and the
/// detections above the default confidence, as labels.
struct DetectOutcome {
    detector: Arc<Detector>,
    boxes: Vec<LabeledBox>,
}

impl ReviewTab {
    pub fn new(settings: ReviewSettings) -> Self {
        Self {
            settings,
            listing: None,
            review: ReviewState::default(),
            review_error: None,
            current: None,
            doc: None,
            annot: Annotator::default(),
            status: String::new(),
            unsaved: UnsavedLabels::default(),
            counts: Vec::new(),
            canvas: ImageCanvas::new("review-canvas"),
            pick_job: None,
            image: None,
            detector: None,
            detect_job: None,
            lattice_job: None,
        }
    }

    fn names(&self) -> Vec<String> {
        self.listing
            .as_ref()
            .map(|l| l.names.clone())
            .unwrap_or_default()
    }

    /// Opens a dataset folder and shows its first image (respecting the filters).
    pub fn open(&mut self, ctx: &egui::Context, dir: &Path) {
        self.flush();
        self.settings.dir = dir.display().to_string();
        let listing = match DatasetListing::open(dir) {
            Ok(l) => l,
            Err(e) => {
                self.status = format!("{e:#}");
                return;
            }
        };
        (self.review, self.review_error) = match ReviewState::load(&listing.root) {
            Ok(r) => (r, None),
            Err(e) => (ReviewState::default(), Some(format!("{e:#}"))),
        };
        let n = listing.names.len();
        self.counts = listing
            .items
            .iter()
            .map(|it| {
                // Size only matters for pixel boxes; counting needs the classes alone.
                let d = LabelDoc::open(&it.label, 1, 1, n);
                (!d.is_read_only()).then(|| class_counts([d.boxes.as_slice()], n))
            })
            .collect();
        self.status = format!(
            "{} images in {}",
            listing.items.len(),
            listing.root.display()
        );
        self.listing = Some(listing);
        self.current = None;
        self.doc = None;
        self.annot.load(Vec::new(), [0, 0], true);
        if let Some(i) = self.visible().first().copied() {
            self.show_item(ctx, i);
        }
    }

    fn passes(&self, i: usize) -> bool {
        let Some(l) = &self.listing else { return false };
        if self.settings.only_unreviewed && self.review.is_verified(&l.items[i].rel) {
            return false;
        }
        match self.settings.filter_class {
            None => true,
            Some(c) => self.counts[i]
                .as_ref()
                .is_none_or(|v| v.get(c).copied().unwrap_or(0) > 0),
        }
    }

    /// Indices of the images passing the filters.
    pub fn visible(&self) -> Vec<usize> {
        let n = self.listing.as_ref().map_or(0, |l| l.items.len());
        (0..n).filter(|&i| self.passes(i)).collect()
    }

    /// Moves to the next (`forward`) or previous image passing the filters.
    pub fn step(&mut self, ctx: &egui::Context, forward: bool) {
        let vis = self.visible();
        let next = match self.current {
            None => vis.first().copied(),
            Some(c) if forward => vis.iter().copied().find(|&i| i > c),
            Some(c) => vis.iter().rev().copied().find(|&i| i < c),
        };
        if let Some(i) = next {
            self.show_item(ctx, i);
        }
    }

    fn show_item(&mut self, ctx: &egui::Context, i: usize) {
        self.flush();
        let Some(l) = &self.listing else { return };
        let item = l.items[i].clone();
        let n = l.names.len();
        self.current = Some(i);
        let img = match defect_detector::formats::load(&item.image) {
            Ok(s) => s.image,
            Err(e) => {
                self.status = format!("{e:#}");
                self.doc = None;
                self.annot.load(Vec::new(), [0, 0], true);
                return;
            }
        };
        let (lo, hi) = img.model_window();
        let img = Arc::new(img);
        self.image = Some(img.clone());
        self.canvas
            .set_gray(ctx, img.width, img.height, &img.to_u8(lo, hi));
        let doc = self.annot.open_doc(&item.label, [img.width, img.height], n);
        self.status = match &doc.load_error {
            Some(e) => format!("read-only: {e}"),
            None => item.rel.clone(),
        };
        self.doc = Some(doc);
    }

    /// Writes pending label changes now.
    pub fn flush(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        match self.annot.save_into(doc) {
            Ok(true) => {
                self.unsaved.saved(&doc.label_path);
                if let Some(i) = self.current
                    && let Some(c) = self.counts.get_mut(i)
                {
                    *c = Some(class_counts([doc.boxes.as_slice()], self.annot.num_classes));
                }
            }
            Ok(false) => {}
            Err(e) => {
                // Kept with the edits: the next image resets the editor, and the status
                // line is overwritten at once.
                self.unsaved.failed(doc, e.clone());
                self.annot.dirty_since = None;
                self.status = format!("not saved: {e}");
            }
        }
    }

    fn current_is_verified(&self) -> bool {
        match (&self.listing, self.current) {
            (Some(l), Some(i)) => self.review.is_verified(&l.items[i].rel),
            _ => false,
        }
    }

    /// Marks (or unmarks) the current image verified and writes `review.json`.
    pub fn toggle_verified(&mut self) {
        let (Some(l), Some(i)) = (&self.listing, self.current) else {
            return;
        };
        if let Some(e) = &self.review_error {
            self.status = format!("not changing the review file: {e}");
            return;
        }
        let rel = l.items[i].rel.clone();
        let root = l.root.clone();
        self.review.toggle(&rel);
        if let Err(e) = self.review.save(&root) {
            self.review.toggle(&rel);
            self.status = format!("{e:#}");
        }
    }

    fn set_counts(&self) -> Vec<usize> {
        let n = self.names().len();
        let mut total = vec![0; n];
        for c in self
            .visible()
            .iter()
            .filter_map(|&i| self.counts[i].as_ref())
        {
            for (t, k) in total.iter_mut().zip(c) {
                *t += k;
            }
        }
        total
    }

    fn handle_keys(&mut self, ui: &egui::Ui) {
        self.annot.handle_keys(ui);
        if ui.memory(|m| m.focused().is_some()) || self.listing.is_none() {
            return;
        }
        let pressed = |k: Key| ui.input_mut(|i| i.consume_key(Modifiers::NONE, k));
        if pressed(Key::D) || pressed(Key::ArrowRight) {
            self.step(ui.ctx(), true);
        }
        if pressed(Key::A) || pressed(Key::ArrowLeft) {
            self.step(ui.ctx(), false);
        }
        if pressed(Key::Space) {
            let was = self.current_is_verified();
            self.toggle_verified();
            if self.settings.advance_on_verify && !was && self.current_is_verified() {
                self.step(ui.ctx(), true);
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        if let Some(job) = self.pick_job.take() {
            match job.try_take() {
                Ok(Ok(Some(dir))) => {
                    let ctx = ui.ctx().clone();
                    self.open(&ctx, &dir);
                }
                Ok(_) => {}
                Err(job) => self.pick_job = Some(job),
            }
        }
        self.poll_detections();
        self.poll_lattice();
        self.handle_keys(ui);
        self.unsaved.modal(ui.ctx(), "review-unsaved-labels");
        if let Some(t) = self.annot.dirty_since {
            if t.elapsed() >= AUTOSAVE_DELAY {
                self.flush();
            } else {
                ui.ctx().request_repaint_after(AUTOSAVE_DELAY - t.elapsed());
            }
        }
        egui::Panel::left("review-side")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| self.side_ui(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| {
            let names = self.names();
            self.annot.show(ui, &mut self.canvas, &names);
        });
    }

    fn side_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Review");
        ui.label("Dataset folder");
        if let Some(j) = folder_picker(ui, &mut self.settings.dir, self.pick_job.is_some()) {
            self.pick_job = Some(j);
        }
        if ui
            .button("Open dataset")
            .on_hover_text("Folder with data.yaml (or any folder of images)")
            .clicked()
        {
            let dir = PathBuf::from(&self.settings.dir);
            let ctx = ui.ctx().clone();
            self.open(&ctx, &dir);
        }
        let names = self.names();
        ui.separator();
        let before = self.settings.clone();
        ui.checkbox(&mut self.settings.only_unreviewed, "Only not yet reviewed");
        ui.checkbox(
            &mut self.settings.advance_on_verify,
            "Next image after verifying (Space)",
        );
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("Class filter")
                .selected_text(
                    self.settings
                        .filter_class
                        .and_then(|c| names.get(c).cloned())
                        .unwrap_or_else(|| "all".into()),
                )
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut self.settings.filter_class, None, "all");
                    for (i, n) in names.iter().enumerate() {
                        ui.selectable_value(&mut self.settings.filter_class, Some(i), n);
                    }
                });
        });
        if before != self.settings
            && let Some(c) = self.current
            && !self.passes(c)
        {
            let ctx = ui.ctx().clone();
            self.step(&ctx, true);
        }
        let vis = self.visible();
        if let Some(l) = &self.listing {
            let done = l
                .items
                .iter()
                .filter(|it| self.review.is_verified(&it.rel))
                .count();
            ui.label(format!(
                "{} of {} images shown, {done} verified",
                vis.len(),
                l.items.len()
            ));
            let counts = self.set_counts();
            for (i, n) in names.iter().enumerate() {
                let [r, g, b] = class_color(i);
                ui.label(
                    RichText::new(format!("{n}: {}", counts.get(i).copied().unwrap_or(0)))
                        .color(Color32::from_rgb(r, g, b)),
                );
            }
        }
        ui.horizontal(|ui| {
            if ui.button("Previous").on_hover_text("a or Left").clicked() {
                let ctx = ui.ctx().clone();
                self.step(&ctx, false);
            }
            if ui.button("Next").on_hover_text("d or Right").clicked() {
                let ctx = ui.ctx().clone();
                self.step(&ctx, true);
            }
        });
        if let (Some(l), Some(i)) = (&self.listing, self.current) {
            let it = &l.items[i];
            let pos = vis
                .iter()
                .position(|&v| v == i)
                .map_or("-".into(), |p| (p + 1).to_string());
            ui.label(format!("{pos}/{}: {}", vis.len(), it.rel));
            let verified = self.review.is_verified(&it.rel);
            let text = if verified {
                RichText::new("Verified").color(Color32::LIGHT_GREEN)
            } else {
                RichText::new("Not reviewed")
            };
            if ui
                .button(text)
                .on_hover_text("Space toggles the verified mark")
                .clicked()
            {
                self.toggle_verified();
            }
        }
        if let Some(e) = &self.review_error {
            ui.colored_label(Color32::LIGHT_RED, e);
        }
        ui.separator();
        if let Some(doc) = &self.doc
            && let Some(e) = &doc.load_error
        {
            ui.colored_label(Color32::LIGHT_RED, format!("Labels not editable: {e}"));
            if ui
                .button("Discard labels and start empty")
                .on_hover_text("Replaces the unreadable file at the next change")
                .clicked()
            {
                self.discard_unreadable();
            }
        }
        ui.horizontal(|ui| {
            let can = self.doc.as_ref().is_some_and(|d| !d.is_read_only()) && !self.is_detecting();
            if ui
                .add_enabled(can, egui::Button::new("Accept detections"))
                .on_hover_text("Run the default model on this image; detections with confidence >= 0.25 become labels")
                .clicked()
            {
                let ctx = ui.ctx().clone();
                self.accept_detections(&ctx);
            }
            if self.is_detecting() {
                ui.spinner();
            }
        });
        ui.horizontal(|ui| {
            let can =
                self.doc.as_ref().is_some_and(|d| !d.is_read_only()) && self.lattice_job.is_none();
            if ui
                .add_enabled(can, egui::Button::new("Label with lattice analysis"))
                .on_hover_text(
                    "Propose boundaries, vacancies and interstitials read from the crystal \
                     lattice (no model; pixel size from the lattice) as labels, one undo step",
                )
                .clicked()
            {
                let ctx = ui.ctx().clone();
                self.label_with_lattice(&ctx);
            }
            egui::ComboBox::new("review-crystal", "crystal")
                .selected_text(self.settings.crystal.label())
                .show_ui(ui, |ui| {
                    for p in defect_detector::synth::crystal::Preset::NAMED {
                        ui.selectable_value(&mut self.settings.crystal, p, p.label());
                    }
                });
            if self.is_reading_lattice() {
                ui.spinner();
            }
        });
        self.annot.controls(ui, &names);
        let flagged: Vec<(usize, String)> = self
            .annot
            .boxes
            .iter()
            .enumerate()
            .filter_map(|(i, b): (usize, &LabeledBox)| {
                let f = box_flags(&b.obb, self.annot.image_size[0], self.annot.image_size[1]);
                (!f.is_empty()).then(|| {
                    let d: Vec<&str> = f.iter().map(|x| x.describe()).collect();
                    (i, d.join(", "))
                })
            })
            .collect();
        if !flagged.is_empty() {
            ui.separator();
            ui.label(format!("{} flagged box(es)", flagged.len()));
            for (i, d) in flagged {
                if ui.link(format!("box {}: {d}", i + 1)).clicked() {
                    self.annot.selected = [i].into();
                    self.canvas.focus_on(&self.annot.boxes[i].obb);
                }
            }
        }
        if self.listing.is_some() {
            ui.separator();
            self.export_ui(ui);
        }
        if !self.status.is_empty() {
            ui.separator();
            ui.label(&self.status);
        }
    }

    fn export_ui(&mut self, ui: &mut egui::Ui) {
        ui.label("Export verified images");
        ui.horizontal(|ui| {
            let l = ui.label("To");
            ui.add(
                egui::TextEdit::singleline(&mut self.settings.export_dir)
                    .desired_width(200.0)
                    .hint_text("new folder"),
            )
            .labelled_by(l.id);
        });
        ui.add(
            egui::Slider::new(&mut self.settings.val_fraction, 0.0..=0.5)
                .text("validation fraction"),
        );
        if ui
            .button("Export verified")
            .on_hover_text(
                "Copies the verified images and their labels into a new train/val dataset",
            )
            .clicked()
        {
            self.export_verified();
        }
    }

    /// Writes the verified images as a new dataset (see [`export_reviewed`]).
    pub fn export_verified(&mut self) {
        self.flush();
        let Some(l) = &self.listing else { return };
        let out = PathBuf::from(&self.settings.export_dir);
        if self.settings.export_dir.trim().is_empty() {
            self.status = "choose a folder to export to".into();
            return;
        }
        self.status = match export_reviewed(l, &self.review, &out, self.settings.val_fraction, 1) {
            Ok(n) => format!(
                "exported {} train and {} val images to {}",
                n.train,
                n.val,
                out.display()
            ),
            Err(e) => format!("export failed: {e:#}"),
        };
    }

    pub fn is_detecting(&self) -> bool {
        self.detect_job.is_some()
    }

    /// Runs the default model on the current image in the background; its detections above
    /// the default confidence become editable labels (one undo step) when it finishes.
    pub fn accept_detections(&mut self, ctx: &egui::Context) {
        let (Some(i), Some(img)) = (self.current, self.image.clone()) else {
            return;
        };
        if self.detect_job.is_some() || self.annot.read_only {
            return;
        }
        let cached = self.detector.clone();
        // A loaded model is reused; the path only matters for the first run.
        let model = match (&cached, super::viewer_tab::default_model()) {
            (Some(_), _) => PathBuf::new(),
            (None, Some(p)) => p,
            (None, None) => {
                self.status = "no model found in models/ (put an .onnx model there)".into();
                return;
            }
        };
        let num_classes = self.annot.num_classes;
        let job = Job::spawn(
            "review-detect",
            Some(super::synth_tab::repaint_notify(ctx)),
            move |_| {
                let detector = match cached {
                    Some(d) => d,
                    None => Arc::new(Detector::load(&model, &DetectorOptions::default())?),
                };
                let res = detector.detect(&img, None, &DetectOptions::default())?;
                let boxes = res
                    .filtered(DEFAULT_CONF, DEFAULT_IOU)
                    .into_iter()
                    .filter(|d| d.class < num_classes)
                    .map(|d| LabeledBox {
                        class: d.class,
                        obb: d.obb,
                    })
                    .collect();
                Ok(DetectOutcome { detector, boxes })
            },
        );
        self.detect_job = Some((i, job));
        self.status = "running the detector".into();
    }

    fn poll_detections(&mut self) {
        let Some((i, job)) = self.detect_job.take() else {
            return;
        };
        match job.try_take() {
            Err(job) => self.detect_job = Some((i, job)),
            Ok(Err(e)) => self.status = format!("detection failed: {e:#}"),
            Ok(Ok(out)) => {
                self.detector = Some(out.detector);
                // The user may have moved on: detections belong to the image they came from.
                if self.current == Some(i) {
                    self.annot.add_labeled(&out.boxes);
                    self.status = format!("{} detection(s) added as labels", out.boxes.len());
                } else {
                    self.status = "detections dropped: the image changed meanwhile".into();
                }
            }
        }
    }

    /// Reads the lattice of the current image in the background; its boundaries and point
    /// defects above the default confidence become editable labels (one undo step).
    pub fn label_with_lattice(&mut self, ctx: &egui::Context) {
        let (Some(i), Some(img)) = (self.current, self.image.clone()) else {
            return;
        };
        if self.lattice_job.is_some() || self.annot.read_only {
            return;
        }
        let spec = self.settings.crystal.spec();
        let num_classes = self.annot.num_classes;
        let job = Job::spawn(
            "review-lattice",
            Some(super::synth_tab::repaint_notify(ctx)),
            move |_| {
                // Dataset images carry no calibration: the {111} period sets the scale.
                let r = defect_detector::lattice::analyse(
                    &img,
                    &defect_detector::lattice::LatticeParams::new(spec, None),
                )?;
                Ok(LabeledBox::proposals(
                    &r.detections(),
                    DEFAULT_CONF,
                    num_classes,
                ))
            },
        );
        self.lattice_job = Some((i, job));
        self.status = "reading the lattice".into();
    }

    fn poll_lattice(&mut self) {
        let Some((i, job)) = self.lattice_job.take() else {
            return;
        };
        match job.try_take() {
            Err(job) => self.lattice_job = Some((i, job)),
            Ok(Err(e)) => self.status = format!("lattice analysis failed: {e:#}"),
            Ok(Ok(boxes)) => {
                if self.current == Some(i) {
                    self.annot.add_labeled(&boxes);
                    self.status = format!(
                        "{} box(es) proposed by the lattice analysis added: check each one",
                        boxes.len()
                    );
                } else {
                    self.status = "proposals dropped: the image changed meanwhile".into();
                }
            }
        }
    }

    pub fn is_reading_lattice(&self) -> bool {
        self.lattice_job.is_some()
    }

    /// The user chose to replace an unreadable label file: editable, empty.
    pub fn discard_unreadable(&mut self) {
        if let Some(doc) = &mut self.doc {
            self.annot.discard_unreadable(doc);
            self.status = format!("{}: starting empty", doc.label_path.display());
        }
    }
}

#[cfg(test)]
#[path = "review_tab_tests.rs"]
pub(crate) mod tests;
