//! Label editing on any image open in the Viewer (not only dataset folders): the box editor of
//! the Review tab on the Viewer's canvas, with YOLO-OBB labels kept next to the image
//! (`image.tif` -> `image.txt`, as X-AnyLabeling and Ultralytics expect) or in a chosen labels
//! folder. Saved atomically half a second after each change, when the image changes and on
//! exit; a label file that does not parse opens read-only and is never overwritten unasked.

use super::annotate::{AUTOSAVE_DELAY, Annotator, UnsavedLabels};
use defect_detector::dataset::review::{LabelDoc, LabeledBox, box_flags};
use defect_detector::detect::Detection;
use std::path::{Path, PathBuf};

/// Where the labels of `image` live: `<labels_dir>/<stem>.txt`, or beside the image when no
/// folder is chosen. When another image beside it has the same stem (`frame.dm4` and
/// `frame.tif`), `<stem>.txt` would hold the boxes of both: each then gets its own
/// `<file name>.txt` (`frame.dm4.txt`).
pub fn label_path_for(image: &Path, labels_dir: &str) -> PathBuf {
    let dir = labels_dir.trim();
    let folder = image.parent().filter(|d| !d.as_os_str().is_empty());
    let shares_stem = defect_detector::formats::list_images(folder.unwrap_or(Path::new(".")))
        .iter()
        .any(|other| {
            other.file_name() != image.file_name() && other.file_stem() == image.file_stem()
        });
    let mut name = if shares_stem {
        image.file_name()
    } else {
        image.file_stem()
    }
    .unwrap_or_default()
    .to_os_string();
    name.push(".txt");
    if dir.is_empty() {
        image.with_file_name(name)
    } else {
        Path::new(dir).join(name)
    }
}

#[derive(Default)]
pub struct ViewerLabels {
    /// Edit mode: the canvas edits labels instead of showing detections.
    pub enabled: bool,
    pub annot: Annotator,
    pub doc: Option<LabelDoc>,
    /// The image (path, viewer generation) the document belongs to.
    opened_for: Option<(PathBuf, usize)>,
    /// [`label_path_for`] of the image and labels folder last asked: it lists the folder, too
    /// slow for every frame.
    label_path: Option<(PathBuf, String, PathBuf)>,
    pub status: String,
    /// Edits whose save failed, kept (and shown in a modal) until saved or discarded.
    pub unsaved: UnsavedLabels,
}

impl ViewerLabels {
    /// Opens the labels of the image shown (writing pending edits of the previous one first).
    /// Cheap when nothing changed; call every frame.
    pub fn sync(
        &mut self,
        image: Option<(&Path, usize, [usize; 2])>,
        labels_dir: &str,
        num_classes: usize,
    ) {
        let Some((path, generation, size)) = image else {
            self.flush();
            self.doc = None;
            self.opened_for = None;
            return;
        };
        let want = match &self.label_path {
            Some((p, d, want)) if p == path && d == labels_dir => want.clone(),
            _ => {
                let want = label_path_for(path, labels_dir);
                self.label_path = Some((path.to_path_buf(), labels_dir.to_string(), want.clone()));
                want
            }
        };
        let same_image = self
            .opened_for
            .as_ref()
            .is_some_and(|(p, g)| p == path && *g == generation);
        let same_file = self.doc.as_ref().is_some_and(|d| d.label_path == want);
        if !self.enabled || (same_image && same_file) {
            return;
        }
        self.flush();
        let doc = self.annot.open_doc(&want, size, num_classes);
        self.status = match &doc.load_error {
            Some(e) => format!("read-only: {e}"),
            None if want.exists() => format!("{} box(es) from {}", doc.boxes.len(), want.display()),
            None => format!("new labels: {}", want.display()),
        };
        self.doc = Some(doc);
        self.opened_for = Some((path.to_path_buf(), generation));
    }

    /// Writes pending edits now (no-op when there are none).
    pub fn flush(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        match self.annot.save_into(doc) {
            Ok(true) => {
                self.unsaved.saved(&doc.label_path);
                self.status = format!(
                    "saved {} box(es) to {}",
                    doc.boxes.len(),
                    doc.label_path.display()
                )
            }
            Ok(false) => {}
            Err(e) => {
                // Kept with the edits: opening the next image resets the editor, and a
                // status line is overwritten at once.
                self.unsaved.failed(doc, e.clone());
                self.annot.dirty_since = None;
                self.status = format!("not saved: {e}");
            }
        }
    }

    /// Saves once the last change is [`AUTOSAVE_DELAY`] old; asks for a repaint until then.
    /// Also shows the failed saves, whichever panel is open.
    pub fn autosave(&mut self, ctx: &egui::Context) {
        self.unsaved.modal(ctx, "viewer-unsaved-labels");
        if let Some(t) = self.annot.dirty_since {
            if t.elapsed() >= AUTOSAVE_DELAY {
                self.flush();
            } else {
                ctx.request_repaint_after(AUTOSAVE_DELAY - t.elapsed());
            }
        }
    }

    /// Detections (already filtered by the Viewer's confidence and class toggles) become
    /// editable labels, as one undo step.
    pub fn accept(&mut self, detections: &[Detection]) -> usize {
        if self.annot.read_only {
            self.status = "the label file is read-only (see above); nothing added".into();
            return 0;
        }
        let boxes: Vec<LabeledBox> = detections
            .iter()
            .filter(|d| d.class < self.annot.num_classes)
            .map(|d| LabeledBox {
                class: d.class,
                obb: d.obb,
            })
            .collect();
        self.annot.add_labeled(&boxes);
        self.status = format!("{} detection(s) added as labels", boxes.len());
        boxes.len()
    }

    /// Boxes proposed by the lattice analysis (at or above `conf`) become editable labels, as
    /// one undo step, for a person to accept or correct.
    pub fn accept_lattice(
        &mut self,
        proposals: &[defect_detector::detect::combine::OtherBox],
        conf: f32,
    ) -> usize {
        if self.annot.read_only {
            self.status = "the label file is read-only (see above); nothing added".into();
            return 0;
        }
        let boxes = LabeledBox::proposals(proposals, conf, self.annot.num_classes);
        self.annot.add_labeled(&boxes);
        self.status = format!(
            "{} box(es) proposed by the lattice analysis added: check each one",
            boxes.len()
        );
        boxes.len()
    }

    /// Replace an unreadable label file: editable and empty (saved on the next change).
    pub fn discard_unreadable(&mut self) {
        if let Some(doc) = &mut self.doc {
            self.annot.discard_unreadable(doc);
            self.status = format!("{}: starting empty", doc.label_path.display());
        }
    }

    /// The side-panel section: mode, file, editor controls, accept detections.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        labels_dir: &mut String,
        names: &[String],
        detections: &[Detection],
    ) {
        ui.horizontal(|ui| {
            ui.label("Labels folder");
            ui.add(
                egui::TextEdit::singleline(labels_dir)
                    .hint_text("beside the image")
                    .desired_width(170.0),
            );
        });
        if !self.enabled {
            ui.small("\"Edit labels\" above the image (or L) edits boxes on it.");
            return;
        }
        if let Some(doc) = &self.doc {
            ui.small(doc.label_path.display().to_string());
        }
        let saved = if self.annot.dirty_since.is_some() {
            "unsaved changes"
        } else {
            "all changes saved"
        };
        ui.label(format!("{} box(es), {saved}", self.annot.boxes.len()));
        if !self.status.is_empty() {
            ui.small(&self.status);
        }
        if self.annot.read_only {
            ui.colored_label(
                egui::Color32::from_rgb(230, 120, 60),
                "The label file could not be read; it is left untouched.",
            );
            if ui
                .button("Discard it and start empty")
                .on_hover_text("Overwrites the file at the next change")
                .clicked()
            {
                self.discard_unreadable();
            }
        }
        self.annot.controls(ui, names);
        let flagged = self
            .annot
            .boxes
            .iter()
            .filter(|b| {
                !box_flags(&b.obb, self.annot.image_size[0], self.annot.image_size[1]).is_empty()
            })
            .count();
        if flagged > 0 {
            ui.colored_label(
                egui::Color32::from_rgb(230, 120, 60),
                format!("{flagged} box(es) outside the image or degenerate"),
            );
        }
        let n = detections.len();
        if ui
            .add_enabled(
                n > 0 && !self.annot.read_only,
                egui::Button::new(format!("Accept {n} detection(s)")),
            )
            .on_hover_text("Add the detections shown (current confidence and classes) as labels")
            .clicked()
        {
            self.accept(detections);
        }
    }
}

#[cfg(test)]
#[path = "viewer_labels_tests.rs"]
mod tests;
