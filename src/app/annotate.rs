//! Oriented-box editing on an [`ImageCanvas`], as in roLabelImg / X-AnyLabeling:
//! click selects (Shift+click adds), dragging inside moves, corner and edge handles resize in
//! the box's own frame, the handle above the box rotates, dragging on empty image draws an
//! axis-aligned box (then rotate it), or in three-click mode two clicks give one edge and a
//! third the width. Keys: z/x rotate counter-clockwise by 5°/0.5°, c/v clockwise by
//! 0.5°/5°, Delete removes, 0-9 set the class, Ctrl+D duplicates, Ctrl+Z / Ctrl+Shift+Z undo
//! and redo, Shift+arrows nudge by one pixel, Escape clears the selection. Every change is one undo step; a whole drag is one.

use super::canvas::{CanvasResponse, ImageCanvas, OverlayBox};
use defect_detector::classes::DefectClass;
use defect_detector::dataset::review::{History, LabelDoc, LabeledBox, box_flags};
use defect_detector::geometry::{OrientedBox, Pt};
use egui::{Color32, Key, Modifiers, PointerButton, Pos2, Rect, Stroke};
use std::collections::BTreeSet;
use std::time::Instant;

/// Edits are written this long after the last change (and on image change and exit), so a
/// killed app loses at most this much work.
pub const AUTOSAVE_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// Rotation steps of the z/x/c/v keys.
pub const BIG_STEP_DEG: f64 = 5.0;
pub const SMALL_STEP_DEG: f64 = 0.5;
/// Screen radius within which a handle is grabbed.
const HANDLE_RADIUS: f32 = 7.0;
/// Boxes narrower than this on screen (points) get small handles outside their outline.
const SMALL_BOX_SCREEN: f32 = 40.0;
/// How far those handles sit outside the outline (points).
const SMALL_BOX_HANDLE_OUT: f32 = 8.0;
/// Distance of the rotation handle from the box edge, in screen points.
const ROTATE_HANDLE_OFFSET: f32 = 22.0;
/// Boxes smaller than this (px) after drawing are dropped as accidental clicks.
const MIN_DRAWN_SIDE: f64 = 2.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Tool {
    /// Select, move, resize, rotate; drag on empty image draws an axis-aligned box.
    #[default]
    Edit,
    /// Three clicks: two corners of one edge, then a point giving the width.
    ThreeClick,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Grab {
    Move,
    /// Resize: which side moves along the box's u (width) and v (height) axes, -1/0/+1.
    Resize {
        su: f64,
        sv: f64,
    },
    Rotate,
    Draw,
}

#[derive(Clone, Debug)]
struct Drag {
    grab: Grab,
    start: Pt,
    before: Vec<LabeledBox>,
    /// The box being resized/rotated, or the one drawn.
    index: Option<usize>,
}

pub struct Annotator {
    pub boxes: Vec<LabeledBox>,
    pub selected: BTreeSet<usize>,
    pub history: History,
    pub tool: Tool,
    /// Class given to new boxes (the last number key pressed without a selection).
    pub new_class: usize,
    pub num_classes: usize,
    /// While set, nothing can be changed (the label file could not be read).
    pub read_only: bool,
    /// When the boxes last changed and have not been saved since.
    pub dirty_since: Option<Instant>,
    /// Image size, for the quality flags.
    pub image_size: [usize; 2],
    /// Where the canvas was drawn last frame (maps image points to the screen).
    pub last_rect: Option<Rect>,
    drag: Option<Drag>,
    clicks: Vec<Pt>,
}

impl Default for Annotator {
    fn default() -> Self {
        Self {
            boxes: Vec::new(),
            selected: BTreeSet::new(),
            history: History::default(),
            tool: Tool::Edit,
            new_class: 0,
            num_classes: DefectClass::ALL.len(),
            read_only: false,
            dirty_since: None,
            image_size: [0, 0],
            last_rect: None,
            drag: None,
            clicks: Vec::new(),
        }
    }
}

fn axes(b: &OrientedBox) -> (Pt, Pt) {
    let (s, c) = b.angle.sin_cos();
    ([c, s], [-s, c])
}

fn dot(a: Pt, b: Pt) -> f64 {
    a[0] * b[0] + a[1] * b[1]
}

/// Point of a box at frame offsets (su, sv) in half-sides: (±1, ±1) corners, (±1, 0) edges.
fn frame_point(b: &OrientedBox, su: f64, sv: f64) -> Pt {
    let (u, v) = axes(b);
    [
        b.cx + su * b.w / 2.0 * u[0] + sv * b.h / 2.0 * v[0],
        b.cy + su * b.w / 2.0 * u[1] + sv * b.h / 2.0 * v[1],
    ]
}

const HANDLES: [(f64, f64); 8] = [
    (-1.0, -1.0),
    (1.0, -1.0),
    (1.0, 1.0),
    (-1.0, 1.0),
    (0.0, -1.0),
    (1.0, 0.0),
    (0.0, 1.0),
    (-1.0, 0.0),
];

/// The box whose (su, sv) side follows `p` while the opposite side stays put.
pub fn resize_box(b: &OrientedBox, su: f64, sv: f64, p: Pt) -> OrientedBox {
    let (u, v) = axes(b);
    let anchor = frame_point(b, -su, -sv);
    let d = [p[0] - anchor[0], p[1] - anchor[1]];
    let w = if su != 0.0 {
        (su * dot(d, u)).max(1.0)
    } else {
        b.w
    };
    let h = if sv != 0.0 {
        (sv * dot(d, v)).max(1.0)
    } else {
        b.h
    };
    // Along an axis that does not move, the anchor is on the centre line already.
    let cx = anchor[0] + su * w / 2.0 * u[0] + sv * h / 2.0 * v[0];
    let cy = anchor[1] + su * w / 2.0 * u[1] + sv * h / 2.0 * v[1];
    OrientedBox::new(cx, cy, w, h, b.angle)
}

/// A box from two corners of one edge and a point giving the other side's length (signed:
/// the box lies on the side of the third point).
pub fn box_from_three_points(a: Pt, b: Pt, c: Pt) -> Option<OrientedBox> {
    let e = [b[0] - a[0], b[1] - a[1]];
    let w = (e[0] * e[0] + e[1] * e[1]).sqrt();
    if w < 1e-9 {
        return None;
    }
    let angle = e[1].atan2(e[0]);
    let v = [-angle.sin(), angle.cos()];
    let d = dot([c[0] - a[0], c[1] - a[1]], v);
    if d.abs() < 1e-9 {
        return None;
    }
    let mid = [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
    Some(OrientedBox::new(
        mid[0] + v[0] * d / 2.0,
        mid[1] + v[1] * d / 2.0,
        w,
        d.abs(),
        angle,
    ))
}

/// Angle in degrees in (-180, 180], for the readout.
pub fn angle_deg(b: &OrientedBox) -> f64 {
    let d = b.angle.to_degrees().rem_euclid(360.0);
    if d > 180.0 { d - 360.0 } else { d }
}

/// Label edits whose save failed (a read-only share, a full disk), with the error. They are
/// kept past an image change, and a modal asks what to do with them: the editor moves on to
/// the next image, so nothing else would remember them.
#[derive(Clone, Debug, Default)]
pub struct UnsavedLabels {
    /// One document per label file, holding the edits.
    pub docs: Vec<UnsavedDoc>,
}

#[derive(Clone, Debug)]
pub struct UnsavedDoc {
    pub doc: LabelDoc,
    pub error: String,
}

impl UnsavedLabels {
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Records a failed save of `doc` (replacing an older failure of the same file).
    pub fn failed(&mut self, doc: &LabelDoc, error: String) {
        self.saved(&doc.label_path);
        self.docs.push(UnsavedDoc {
            doc: doc.clone(),
            error,
        });
    }

    /// A later save of `path` succeeded: its older edits are on disk now.
    pub fn saved(&mut self, path: &std::path::Path) {
        self.docs.retain(|d| d.doc.label_path != path);
    }

    /// Writes the first pending document to `path` (its own file when `None`).
    pub fn save_first(&mut self, path: Option<std::path::PathBuf>) -> Result<(), String> {
        let Some(first) = self.docs.first_mut() else {
            return Ok(());
        };
        let mut doc = first.doc.clone();
        if let Some(p) = path {
            doc.label_path = p;
        }
        match doc.save() {
            Ok(()) => {
                self.docs.remove(0);
                Ok(())
            }
            Err(e) => {
                first.error = format!("{e:#}");
                Err(first.error.clone())
            }
        }
    }

    /// The modal that keeps failed saves in view until they are saved or discarded.
    pub fn modal(&mut self, ctx: &egui::Context, id: &str) {
        let Some(first) = self.docs.first() else {
            return;
        };
        let path = first.doc.label_path.clone();
        let (n_boxes, error) = (first.doc.boxes.len(), first.error.clone());
        let more = self.docs.len() - 1;
        egui::Modal::new(egui::Id::unique(id)).show(ctx, |ui| {
            ui.set_max_width(520.0);
            ui.heading("Labels could not be saved");
            ui.label(format!(
                "{n_boxes} box(es) for {} were not written:",
                path.display()
            ));
            ui.colored_label(Color32::from_rgb(230, 120, 60), &error);
            if more > 0 {
                ui.label(format!("{more} more label file(s) wait after this one."));
            }
            ui.label("The edits are kept until you save them or discard them.");
            ui.horizontal(|ui| {
                if ui.button("Save elsewhere…").clicked() {
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    let mut dlg = rfd::FileDialog::new().add_filter("YOLO-OBB labels", &["txt"]);
                    if let Some(n) = name {
                        dlg = dlg.set_file_name(n);
                    }
                    if let Some(p) = dlg.save_file() {
                        let _ = self.save_first(Some(p));
                    }
                }
                if ui.button("Retry").clicked() {
                    let _ = self.save_first(None);
                }
                if ui
                    .button("Discard these edits")
                    .on_hover_text("The label file keeps what it held before")
                    .clicked()
                {
                    self.docs.remove(0);
                }
            });
        });
    }
}

impl Annotator {
    /// Opens the label file of an image for editing (read-only when it does not parse).
    pub fn open_doc(
        &mut self,
        label_path: &std::path::Path,
        image_size: [usize; 2],
        num_classes: usize,
    ) -> LabelDoc {
        let doc = LabelDoc::open(label_path, image_size[0], image_size[1], num_classes);
        self.load(doc.boxes.clone(), image_size, doc.is_read_only());
        self.num_classes = num_classes;
        doc
    }

    /// Writes pending edits into `doc` atomically. `Ok(true)` when written now, `Ok(false)`
    /// when there was nothing to write; on error the edits stay pending, so the next call
    /// retries.
    pub fn save_into(&mut self, doc: &mut LabelDoc) -> Result<bool, String> {
        if self.dirty_since.is_none() {
            return Ok(false);
        }
        doc.boxes = self.boxes.clone();
        doc.save().map_err(|e| format!("{e:#}"))?;
        self.dirty_since = None;
        Ok(true)
    }

    /// The user chose to replace an unreadable label file: editable and empty from now on.
    pub fn discard_unreadable(&mut self, doc: &mut LabelDoc) {
        doc.discard_unreadable();
        let size = self.image_size;
        self.load(Vec::new(), size, false);
    }

    /// Replaces the boxes (a new image): selection and history start over.
    pub fn load(&mut self, boxes: Vec<LabeledBox>, image_size: [usize; 2], read_only: bool) {
        self.boxes = boxes;
        self.image_size = image_size;
        self.read_only = read_only;
        self.selected.clear();
        self.history.clear();
        self.drag = None;
        self.clicks.clear();
        self.dirty_since = None;
    }

    fn changed(&mut self, before: Vec<LabeledBox>) {
        if before != self.boxes {
            self.history.record(before);
            self.dirty_since = Some(Instant::now());
        }
    }

    /// Applies `f` to the boxes as one undo step.
    fn edit(&mut self, f: impl FnOnce(&mut Self)) {
        if self.read_only {
            return;
        }
        let before = self.boxes.clone();
        f(self);
        self.changed(before);
    }

    pub fn rotate_selected(&mut self, degrees: f64) {
        self.edit(|a| {
            for &i in &a.selected {
                if let Some(b) = a.boxes.get_mut(i) {
                    b.obb.angle += degrees.to_radians();
                }
            }
        });
    }

    pub fn move_selected(&mut self, dx: f64, dy: f64) {
        self.edit(|a| {
            for &i in &a.selected {
                if let Some(b) = a.boxes.get_mut(i) {
                    b.obb.cx += dx;
                    b.obb.cy += dy;
                }
            }
        });
    }

    pub fn delete_selected(&mut self) {
        self.edit(|a| {
            let sel = std::mem::take(&mut a.selected);
            let mut i = 0;
            a.boxes.retain(|_| {
                let keep = !sel.contains(&i);
                i += 1;
                keep
            });
        });
    }

    /// Sets the class of the selection, or of the next new box when nothing is selected. New
    /// boxes take the last class used either way (a run of vacancies is labelled vacancy after
    /// vacancy), across images.
    pub fn set_class(&mut self, class: usize) {
        if class >= self.num_classes {
            return;
        }
        self.new_class = class;
        if self.selected.is_empty() {
            return;
        }
        self.edit(|a| {
            for &i in &a.selected {
                if let Some(b) = a.boxes.get_mut(i) {
                    b.class = class;
                }
            }
        });
    }

    /// Copies the selection, offset so the copies are visible; the copies become selected.
    pub fn duplicate_selected(&mut self) {
        self.edit(|a| {
            let copies: Vec<LabeledBox> = a
                .selected
                .iter()
                .filter_map(|&i| a.boxes.get(i).copied())
                .map(|mut b| {
                    b.obb.cx += 10.0;
                    b.obb.cy += 10.0;
                    b
                })
                .collect();
            let first = a.boxes.len();
            a.boxes.extend(copies);
            a.selected = (first..a.boxes.len()).collect();
        });
    }

    /// Appends labelled boxes (accepted detections) as one undo step.
    pub fn add_labeled(&mut self, new: &[LabeledBox]) {
        self.edit(|a| {
            let first = a.boxes.len();
            a.boxes.extend_from_slice(new);
            a.selected = (first..a.boxes.len()).collect();
        });
    }

    pub fn add_box(&mut self, obb: OrientedBox) {
        self.edit(|a| {
            a.boxes.push(LabeledBox {
                class: a.new_class,
                obb,
            });
            a.selected = [a.boxes.len() - 1].into();
        });
    }

    pub fn undo(&mut self) {
        if self.read_only || self.drag.is_some() {
            return;
        }
        if let Some(b) = self.history.undo(&self.boxes) {
            self.boxes = b;
            self.after_restore();
        }
    }

    pub fn redo(&mut self) {
        if self.read_only || self.drag.is_some() {
            return;
        }
        if let Some(b) = self.history.redo(&self.boxes) {
            self.boxes = b;
            self.after_restore();
        }
    }

    fn after_restore(&mut self) {
        let n = self.boxes.len();
        self.selected.retain(|&i| i < n);
        self.dirty_since = Some(Instant::now());
    }

    /// Selects the box at image point `p` (smallest first: point defects sit on boundaries);
    /// with `add`, toggles it in the selection. Empty space clears the selection.
    pub fn click_at(&mut self, p: Pt, add: bool) {
        let hit = self.box_at(p);
        match (hit, add) {
            (Some(i), true) => {
                if !self.selected.remove(&i) {
                    self.selected.insert(i);
                }
            }
            (Some(i), false) => self.selected = [i].into(),
            (None, true) => {}
            (None, false) => self.selected.clear(),
        }
    }

    pub fn box_at(&self, p: Pt) -> Option<usize> {
        self.boxes
            .iter()
            .enumerate()
            .filter(|(_, b)| b.obb.contains(p))
            .min_by(|a, b| a.1.obb.area().total_cmp(&b.1.obb.area()))
            .map(|(i, _)| i)
    }

    /// The single selected box, which gets handles.
    pub fn primary(&self) -> Option<usize> {
        (self.selected.len() == 1)
            .then(|| self.selected.first().copied())
            .flatten()
    }

    /// Keyboard shortcuts; ignored while a text field has focus.
    pub fn handle_keys(&mut self, ui: &egui::Ui) {
        if ui.memory(|m| m.focused().is_some()) {
            return;
        }
        let cmd_shift = Modifiers::COMMAND | Modifiers::SHIFT;
        let pressed = |m: Modifiers, k: Key| ui.input_mut(|i| i.consume_key(m, k));
        if pressed(cmd_shift, Key::Z) {
            self.redo();
        }
        if pressed(Modifiers::COMMAND, Key::Z) {
            self.undo();
        }
        if pressed(Modifiers::COMMAND, Key::D) {
            self.duplicate_selected();
        }
        if pressed(Modifiers::NONE, Key::Escape) {
            self.selected.clear();
            self.clicks.clear();
        }
        if !self.selected.is_empty() {
            for (key, deg) in [
                (Key::Z, -BIG_STEP_DEG),
                (Key::X, -SMALL_STEP_DEG),
                (Key::C, SMALL_STEP_DEG),
                (Key::V, BIG_STEP_DEG),
            ] {
                if pressed(Modifiers::NONE, key) {
                    self.rotate_selected(deg);
                }
            }
            // Shift+arrows nudge by one image pixel (plain arrows flip images in Review).
            for (key, dx, dy) in [
                (Key::ArrowLeft, -1.0, 0.0),
                (Key::ArrowRight, 1.0, 0.0),
                (Key::ArrowUp, 0.0, -1.0),
                (Key::ArrowDown, 0.0, 1.0),
            ] {
                if pressed(Modifiers::SHIFT, key) {
                    self.move_selected(dx, dy);
                }
            }
            if pressed(Modifiers::NONE, Key::Delete) || pressed(Modifiers::NONE, Key::Backspace) {
                self.delete_selected();
            }
        }
        let digits = [
            Key::Num0,
            Key::Num1,
            Key::Num2,
            Key::Num3,
            Key::Num4,
            Key::Num5,
            Key::Num6,
            Key::Num7,
            Key::Num8,
            Key::Num9,
        ];
        for (c, k) in digits.into_iter().enumerate() {
            if pressed(Modifiers::NONE, k) {
                self.set_class(c);
            }
        }
    }

    /// What the canvas draws for the boxes.
    pub fn overlays(&self, names: &[String]) -> Vec<OverlayBox> {
        self.boxes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let name = names
                    .get(b.class)
                    .cloned()
                    .unwrap_or_else(|| format!("class {}", b.class));
                let flags = box_flags(&b.obb, self.image_size[0], self.image_size[1]);
                let mut caption = if self.selected.contains(&i) {
                    Some(format!("{name} {:.1}°", angle_deg(&b.obb)))
                } else {
                    None
                };
                if !flags.is_empty() {
                    let f: Vec<&str> = flags.iter().map(|f| f.describe()).collect();
                    caption = Some(format!("{name}: {}", f.join(", ")));
                }
                OverlayBox {
                    obb: b.obb,
                    class: b.class,
                    caption,
                    tooltip: format!(
                        "{name}\ncentre ({:.1}, {:.1}) px\n{:.1} × {:.1} px, {:.1}°",
                        b.obb.cx,
                        b.obb.cy,
                        b.obb.w,
                        b.obb.h,
                        angle_deg(&b.obb)
                    ),
                }
            })
            .collect()
    }

    /// Draws the canvas with the boxes and handles, and applies the pointer actions.
    /// Draws the image with the editable boxes and handles the pointer; returns the canvas
    /// response (readout position, hovered box) for the caller's own overlays.
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        canvas: &mut ImageCanvas,
        names: &[String],
    ) -> CanvasResponse {
        let overlays = self.overlays(names);
        let out = canvas.show(ui, &overlays, false);
        if let Some(resp) = out.response.clone() {
            self.interact(ui, canvas, &resp);
        }
        out
    }

    fn interact(&mut self, ui: &mut egui::Ui, canvas: &mut ImageCanvas, resp: &egui::Response) {
        let rect = resp.rect;
        self.last_rect = Some(rect);
        let zoom = canvas.zoom() as f64;
        let to_img = |s: Pos2| canvas.screen_to_image(rect, s);
        let painter = ui.painter().with_clip_rect(rect);
        self.paint_selection(&painter, canvas, rect, zoom);
        if self.read_only {
            return;
        }
        let shift = ui.input(|i| i.modifiers.shift);
        if resp.drag_started_by(PointerButton::Primary)
            && self.tool == Tool::Edit
            && let Some(origin) = ui.input(|i| i.pointer.press_origin())
        {
            self.start_drag(origin, to_img(origin), canvas, rect, zoom, shift);
        }
        if let Some(d) = self.drag.clone()
            && let Some(pos) = resp.interact_pointer_pos()
        {
            self.update_drag(&d, to_img(pos));
        }
        if resp.drag_stopped() {
            self.finish_drag();
        }
        if resp.clicked_by(PointerButton::Primary)
            && let Some(pos) = resp.interact_pointer_pos()
        {
            let p = to_img(pos);
            match self.tool {
                Tool::Edit => self.click_at(p, shift),
                Tool::ThreeClick => self.three_click(p),
            }
        }
        // Preview of the three-click box under construction.
        if self.tool == Tool::ThreeClick && !self.clicks.is_empty() {
            let hover = resp.hover_pos().map(to_img);
            let mut pts: Vec<Pos2> = self
                .clicks
                .iter()
                .map(|&p| canvas.image_to_screen(rect, p))
                .collect();
            if let (2, Some(h)) = (self.clicks.len(), hover)
                && let Some(b) = box_from_three_points(self.clicks[0], self.clicks[1], h)
            {
                pts = b
                    .corners()
                    .iter()
                    .map(|&c| canvas.image_to_screen(rect, c))
                    .collect();
            } else if let Some(h) = resp.hover_pos() {
                pts.push(h);
            }
            painter.add(egui::Shape::line(pts, Stroke::new(1.5, Color32::YELLOW)));
        }
    }

    fn three_click(&mut self, p: Pt) {
        self.clicks.push(p);
        if self.clicks.len() == 3 {
            let c = std::mem::take(&mut self.clicks);
            if let Some(b) = box_from_three_points(c[0], c[1], c[2]) {
                self.add_box(b);
            }
        }
    }

    fn handle_screen_points(
        &self,
        i: usize,
        canvas: &ImageCanvas,
        rect: Rect,
        zoom: f64,
    ) -> (Vec<(Grab, Pos2)>, Pos2) {
        let b = &self.boxes[i].obb;
        // On a small box (a vacancy is ~20 px) handles on its outline would cover the columns
        // being judged: they move out by a few points, along the line from the centre.
        let small = (b.w.min(b.h) * zoom) < SMALL_BOX_SCREEN as f64;
        let centre = canvas.image_to_screen(rect, [b.cx, b.cy]);
        let mut v: Vec<(Grab, Pos2)> = HANDLES
            .iter()
            .map(|&(su, sv)| {
                let p = canvas.image_to_screen(rect, frame_point(b, su, sv));
                let p = if small {
                    let d = p - centre;
                    p + d.normalized() * SMALL_BOX_HANDLE_OUT
                } else {
                    p
                };
                (Grab::Resize { su, sv }, p)
            })
            .collect();
        let (_, vax) = axes(b);
        let top = frame_point(b, 0.0, -1.0);
        let off = ROTATE_HANDLE_OFFSET as f64 / zoom.max(1e-6);
        let rot = [top[0] - vax[0] * off, top[1] - vax[1] * off];
        let rot_s = canvas.image_to_screen(rect, rot);
        v.push((Grab::Rotate, rot_s));
        (v, canvas.image_to_screen(rect, top))
    }

    fn paint_selection(
        &self,
        painter: &egui::Painter,
        canvas: &ImageCanvas,
        rect: Rect,
        zoom: f64,
    ) {
        for &i in &self.selected {
            let Some(b) = self.boxes.get(i) else { continue };
            let pts: Vec<Pos2> = b
                .obb
                .corners()
                .iter()
                .map(|&c| canvas.image_to_screen(rect, c))
                .collect();
            painter.add(egui::Shape::closed_line(
                pts,
                Stroke::new(1.0, Color32::WHITE),
            ));
        }
        if let Some(i) = self.primary()
            && i < self.boxes.len()
        {
            let (handles, top) = self.handle_screen_points(i, canvas, rect, zoom);
            for (g, p) in handles {
                if g == Grab::Rotate {
                    painter.line_segment([top, p], Stroke::new(1.0, Color32::WHITE));
                    painter.circle(p, 5.0, Color32::YELLOW, Stroke::new(1.0, Color32::BLACK));
                } else {
                    let b = &self.boxes[i].obb;
                    let side = if (b.w.min(b.h) * zoom) < SMALL_BOX_SCREEN as f64 {
                        5.0
                    } else {
                        7.0
                    };
                    painter.rect(
                        Rect::from_center_size(p, egui::vec2(side, side)),
                        0.0,
                        Color32::WHITE,
                        Stroke::new(1.0, Color32::BLACK),
                        egui::StrokeKind::Middle,
                    );
                }
            }
        }
    }

    fn start_drag(
        &mut self,
        origin: Pos2,
        p: Pt,
        canvas: &ImageCanvas,
        rect: Rect,
        zoom: f64,
        shift: bool,
    ) {
        let before = self.boxes.clone();
        if let Some(i) = self.primary()
            && i < self.boxes.len()
        {
            let (handles, _) = self.handle_screen_points(i, canvas, rect, zoom);
            if let Some((g, _)) = handles
                .iter()
                .filter(|(_, s)| s.distance(origin) <= HANDLE_RADIUS)
                .min_by(|a, b| a.1.distance(origin).total_cmp(&b.1.distance(origin)))
            {
                self.drag = Some(Drag {
                    grab: *g,
                    start: p,
                    before,
                    index: Some(i),
                });
                return;
            }
        }
        if let Some(i) = self.box_at(p) {
            if !self.selected.contains(&i) {
                if shift {
                    self.selected.insert(i);
                } else {
                    self.selected = [i].into();
                }
            }
            self.drag = Some(Drag {
                grab: Grab::Move,
                start: p,
                before,
                index: Some(i),
            });
            return;
        }
        // Empty image: draw a new box.
        self.boxes.push(LabeledBox {
            class: self.new_class,
            obb: OrientedBox::new(p[0], p[1], 0.0, 0.0, 0.0),
        });
        let i = self.boxes.len() - 1;
        self.selected = [i].into();
        self.drag = Some(Drag {
            grab: Grab::Draw,
            start: p,
            before,
            index: Some(i),
        });
    }

    /// Recomputes the dragged boxes from the state at drag start and the pointer, so the
    /// result does not depend on how many frames the drag took.
    fn update_drag(&mut self, d: &Drag, p: Pt) {
        let (dx, dy) = (p[0] - d.start[0], p[1] - d.start[1]);
        match d.grab {
            Grab::Move => {
                for &i in &self.selected {
                    if let (Some(b), Some(o)) = (self.boxes.get_mut(i), d.before.get(i)) {
                        b.obb.cx = o.obb.cx + dx;
                        b.obb.cy = o.obb.cy + dy;
                    }
                }
            }
            Grab::Resize { su, sv } => {
                if let Some(i) = d.index
                    && let Some(o) = d.before.get(i)
                {
                    // Relative to where the handle was grabbed: handles drawn outside small
                    // boxes do not make the corner jump to the pointer.
                    let h = frame_point(&o.obb, su, sv);
                    self.boxes[i].obb = resize_box(&o.obb, su, sv, [h[0] + dx, h[1] + dy]);
                }
            }
            Grab::Rotate => {
                if let Some(i) = d.index {
                    let b = &mut self.boxes[i].obb;
                    // The handle sits on the box's -v side, at angle (t - 90°) from the centre.
                    b.angle = (p[1] - b.cy).atan2(p[0] - b.cx) + std::f64::consts::FRAC_PI_2;
                }
            }
            Grab::Draw => {
                if let Some(i) = d.index {
                    let s = d.start;
                    self.boxes[i].obb = OrientedBox::new(
                        (s[0] + p[0]) / 2.0,
                        (s[1] + p[1]) / 2.0,
                        dx.abs(),
                        dy.abs(),
                        0.0,
                    );
                }
            }
        }
    }

    fn finish_drag(&mut self) {
        let Some(d) = self.drag.take() else { return };
        if d.grab == Grab::Draw
            && let Some(i) = d.index
            && self
                .boxes
                .get(i)
                .is_some_and(|b| b.obb.w.min(b.obb.h) < MIN_DRAWN_SIDE)
        {
            self.boxes.remove(i);
            self.selected.clear();
        }
        self.changed(d.before);
    }

    /// The side panel part: tool choice, class for new boxes, readout of the selection.
    pub fn controls(&mut self, ui: &mut egui::Ui, names: &[String]) {
        ui.horizontal(|ui| {
            ui.label("Draw");
            ui.selectable_value(&mut self.tool, Tool::Edit, "Drag box")
                .on_hover_text("Drag on empty image for an axis-aligned box, then rotate it");
            ui.selectable_value(&mut self.tool, Tool::ThreeClick, "3 clicks")
                .on_hover_text("Two corners of one edge, then a point giving the width");
        });
        ui.horizontal(|ui| {
            egui::ComboBox::from_label("New box class")
                .selected_text(names.get(self.new_class).cloned().unwrap_or_default())
                .show_ui(ui, |ui| {
                    for (i, n) in names.iter().enumerate().take(self.num_classes) {
                        ui.selectable_value(&mut self.new_class, i, format!("{i} {n}"));
                    }
                });
        });
        ui.horizontal(|ui| {
            if ui
                .add_enabled(self.history.can_undo(), egui::Button::new("Undo"))
                .on_hover_text("Ctrl+Z")
                .clicked()
            {
                self.undo();
            }
            if ui
                .add_enabled(self.history.can_redo(), egui::Button::new("Redo"))
                .on_hover_text("Ctrl+Shift+Z")
                .clicked()
            {
                self.redo();
            }
        });
        match self.selected.len() {
            0 => {
                ui.label("No box selected");
            }
            1 => {
                if let Some(b) = self.primary().and_then(|i| self.boxes.get(i)) {
                    let name = names.get(b.class).cloned().unwrap_or_default();
                    ui.label(format!("{name}: angle {:.1}°", angle_deg(&b.obb)));
                    ui.label(format!(
                        "centre ({:.1}, {:.1}), {:.1} × {:.1} px",
                        b.obb.cx, b.obb.cy, b.obb.w, b.obb.h
                    ));
                }
            }
            n => {
                ui.label(format!("{n} boxes selected"));
            }
        }
        ui.small("z/x: rotate left 5°/0.5°, c/v: right 0.5°/5°, 0-9: class, Del: delete, Ctrl+D: duplicate");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_opposite_corner() {
        let b = OrientedBox::new(50.0, 50.0, 20.0, 10.0, 0.4);
        let opp = frame_point(&b, -1.0, -1.0);
        // Move the (+,+) corner out by 5 px along u and 3 px along v.
        let (u, v) = axes(&b);
        let c = frame_point(&b, 1.0, 1.0);
        let p = [
            c[0] + 5.0 * u[0] + 3.0 * v[0],
            c[1] + 5.0 * u[1] + 3.0 * v[1],
        ];
        let r = resize_box(&b, 1.0, 1.0, p);
        assert!(
            (r.w - 25.0).abs() < 1e-9 && (r.h - 13.0).abs() < 1e-9,
            "{r:?}"
        );
        let opp2 = frame_point(&r, -1.0, -1.0);
        assert!((opp[0] - opp2[0]).abs() < 1e-9 && (opp[1] - opp2[1]).abs() < 1e-9);
        // An edge handle changes one side only.
        let e = resize_box(&b, 0.0, 1.0, p);
        assert!((e.w - 20.0).abs() < 1e-9 && (e.h - 13.0).abs() < 1e-9);
    }

    #[test]
    fn three_points_make_the_box() {
        let b = box_from_three_points([10.0, 10.0], [30.0, 10.0], [25.0, 18.0]).unwrap();
        assert!((b.w - 20.0).abs() < 1e-9 && (b.h - 8.0).abs() < 1e-9);
        assert!((b.cx - 20.0).abs() < 1e-9 && (b.cy - 14.0).abs() < 1e-9);
        assert!(box_from_three_points([1.0, 1.0], [1.0, 1.0], [2.0, 2.0]).is_none());
    }
}
