//! Label review and editing support: the labels of one image as an editable document (pixels,
//! loaded from and saved to YOLO-OBB text), an undo history, the `review.json` sidecar that
//! remembers which images a person has verified, a listing of a dataset's images with their
//! label files, and quality flags for boxes.
//!
//! A label file that does not parse is never overwritten: [`LabelDoc::open`] records the error
//! (file and line) and marks the document read-only until the caller explicitly discards it.

use super::spec::{DatasetSpec, label_path_for};
use super::yolo::{LabelError, ObbLabel, Validation, format_labels, parse_labels, write_labels};
use crate::geometry::OrientedBox;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The sidecar file (in the dataset root) listing verified images.
pub const REVIEW_FILE: &str = "review.json";

/// One box being edited, in image pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LabeledBox {
    pub class: usize,
    pub obb: OrientedBox,
}

impl LabeledBox {
    /// Boxes proposed by another detector (the lattice analysis) as labels: those scoring at
    /// least `conf`, of a class the editor has.
    pub fn proposals(
        boxes: &[crate::detect::combine::OtherBox],
        conf: f32,
        num_classes: usize,
    ) -> Vec<LabeledBox> {
        boxes
            .iter()
            .filter(|(c, _, score)| *score >= conf && c.id() < num_classes)
            .map(|(c, obb, _)| LabeledBox {
                class: c.id(),
                obb: *obb,
            })
            .collect()
    }
}

/// The labels of one image, backed by a YOLO-OBB file.
#[derive(Clone, Debug)]
pub struct LabelDoc {
    pub label_path: PathBuf,
    pub width: usize,
    pub height: usize,
    pub boxes: Vec<LabeledBox>,
    /// Why the file could not be read; while set, the document must not be saved.
    pub load_error: Option<LabelError>,
    /// The boxes as read, each with its line: a box not edited since is written back as that
    /// line, so a quadrilateral from another tool stays one (the editor's boxes are
    /// rectangles, and rewriting every line would reshape labels nobody touched).
    pub loaded: Vec<(LabeledBox, String)>,
}

impl LabelDoc {
    /// Reads `label_path` for an image of `width x height`. A missing file is an empty
    /// document (nothing labelled yet); a malformed one yields a read-only document.
    pub fn open(label_path: &Path, width: usize, height: usize, num_classes: usize) -> Self {
        let mut doc = Self {
            label_path: label_path.to_path_buf(),
            width,
            height,
            boxes: Vec::new(),
            load_error: None,
            loaded: Vec::new(),
        };
        let text = match std::fs::read_to_string(label_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return doc,
            Err(e) => {
                doc.load_error = Some(LabelError {
                    file: label_path.display().to_string(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                });
                return doc;
            }
        };
        // Editing must be able to load what it wrote: boxes dragged slightly past the border
        // are flagged in the UI, not refused, so the coordinate tolerance is generous.
        let v = Validation {
            num_classes,
            tolerance: 0.5,
            min_area: 0.0,
        };
        match parse_labels(&text, &label_path.display().to_string(), &v) {
            Ok(labels) => {
                doc.boxes = labels
                    .iter()
                    .map(|l| LabeledBox {
                        class: l.class,
                        obb: l.to_box_px(width as f64, height as f64),
                    })
                    .collect();
                // parse_labels skips blank lines and nothing else, one label per line.
                let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
                doc.loaded = doc
                    .boxes
                    .iter()
                    .copied()
                    .zip(lines.map(|l| l.trim_start_matches('\u{feff}').to_string()))
                    .collect();
            }
            Err(e) => doc.load_error = Some(e),
        }
        doc
    }

    pub fn is_read_only(&self) -> bool {
        self.load_error.is_some()
    }

    /// The user chose to throw away the unreadable file's content: start empty and writable.
    pub fn discard_unreadable(&mut self) {
        self.load_error = None;
        self.boxes.clear();
    }

    pub fn to_labels(&self) -> Vec<ObbLabel> {
        self.boxes
            .iter()
            .map(|b| ObbLabel::from_box_px(b.class, &b.obb, self.width as f64, self.height as f64))
            .collect()
    }

    /// Writes the labels atomically. Refused while the document is read-only.
    pub fn save(&self) -> anyhow::Result<()> {
        if let Some(e) = &self.load_error {
            anyhow::bail!(
                "not saving {}: the file could not be read ({e})",
                self.label_path.display()
            );
        }
        if let Some(dir) = self.label_path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        crate::fsio::atomic_write(&self.label_path, self.to_text().as_bytes())
    }

    /// The file's text: unedited boxes as their original lines, the others formatted anew.
    pub fn to_text(&self) -> String {
        let mut used = vec![false; self.loaded.len()];
        let mut out = String::new();
        for (b, l) in self.boxes.iter().zip(self.to_labels()) {
            let original = self
                .loaded
                .iter()
                .zip(&used)
                .position(|((lb, _), u)| !u && lb == b);
            match original {
                Some(k) => {
                    used[k] = true;
                    out.push_str(&self.loaded[k].1);
                    out.push('\n');
                }
                None => out.push_str(&format_labels(std::slice::from_ref(&l))),
            }
        }
        out
    }
}

/// Undo/redo of whole label lists. Callers record the state *before* a change (for a drag:
/// the state at drag start, recorded once when the drag ends).
#[derive(Clone, Debug, Default)]
pub struct History {
    undo: Vec<Vec<LabeledBox>>,
    redo: Vec<Vec<LabeledBox>>,
}

impl History {
    /// Most steps kept; older ones are dropped.
    const LIMIT: usize = 500;

    pub fn record(&mut self, before: Vec<LabeledBox>) {
        self.undo.push(before);
        if self.undo.len() > Self::LIMIT {
            self.undo.remove(0);
        }
        self.redo.clear();
    }

    /// Returns the state to restore, taking `current` onto the redo stack.
    pub fn undo(&mut self, current: &[LabeledBox]) -> Option<Vec<LabeledBox>> {
        let prev = self.undo.pop()?;
        self.redo.push(current.to_vec());
        Some(prev)
    }

    pub fn redo(&mut self, current: &[LabeledBox]) -> Option<Vec<LabeledBox>> {
        let next = self.redo.pop()?;
        self.undo.push(current.to_vec());
        Some(next)
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    pub fn clear(&mut self) {
        self.undo.clear();
        self.redo.clear();
    }
}

/// The `review.json` sidecar: images (relative to the dataset root, '/'-separated) a person
/// has verified.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReviewState {
    pub verified: BTreeSet<String>,
}

impl ReviewState {
    /// Reads the sidecar in `root`; missing means nothing verified yet.
    pub fn load(root: &Path) -> anyhow::Result<Self> {
        let p = root.join(REVIEW_FILE);
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t)
                .map_err(|e| anyhow::anyhow!("{}: not a review file: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", p.display())),
        }
    }

    pub fn save(&self, root: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        crate::fsio::atomic_write(&root.join(REVIEW_FILE), text.as_bytes())
    }

    pub fn is_verified(&self, rel: &str) -> bool {
        self.verified.contains(rel)
    }

    /// Flips the mark; returns the new state.
    pub fn toggle(&mut self, rel: &str) -> bool {
        if !self.verified.remove(rel) {
            self.verified.insert(rel.to_string());
            true
        } else {
            false
        }
    }
}

/// One image of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetItem {
    pub image: PathBuf,
    pub label: PathBuf,
    pub split: String,
    /// Path relative to the root, '/'-separated (the key in `review.json`).
    pub rel: String,
}

/// The images of a dataset folder (one with a `data.yaml`, or any folder of images).
#[derive(Clone, Debug, Default)]
pub struct DatasetListing {
    pub root: PathBuf,
    pub names: Vec<String>,
    pub items: Vec<DatasetItem>,
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            // Label folders hold no images; skip them so a plain folder walk stays cheap.
            if p.file_name().is_some_and(|n| n == "labels") {
                continue;
            }
            collect_images(&p, out)?;
        } else if crate::formats::is_supported(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl DatasetListing {
    /// Lists `dir`: through its `data.yaml` when there is one (split folders, images ->
    /// labels), else every image below it with its label next to it.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            anyhow::bail!("{} is not a folder", dir.display());
        }
        let rel_of = |root: &Path, p: &Path| {
            p.strip_prefix(root)
                .unwrap_or(p)
                .to_string_lossy()
                .replace('\\', "/")
        };
        if dir.join("data.yaml").is_file() {
            let spec = DatasetSpec::read(dir)?;
            let mut items = Vec::new();
            for (split, entries) in &spec.splits {
                for e in entries {
                    let d = spec.root.join(e);
                    if !d.is_dir() {
                        continue;
                    }
                    let mut files = Vec::new();
                    collect_images(&d, &mut files)?;
                    files.sort();
                    for f in files {
                        items.push(DatasetItem {
                            label: label_path_for(&f),
                            rel: rel_of(&spec.root, &f),
                            split: split.clone(),
                            image: f,
                        });
                    }
                }
            }
            return Ok(Self {
                root: spec.root,
                names: spec.names,
                items,
            });
        }
        let mut files = Vec::new();
        collect_images(dir, &mut files)?;
        files.sort();
        let items = files
            .into_iter()
            .map(|f| DatasetItem {
                label: label_path_for(&f),
                rel: rel_of(dir, &f),
                split: String::new(),
                image: f,
            })
            .collect();
        Ok(Self {
            root: dir.to_path_buf(),
            names: crate::classes::DefectClass::ALL
                .iter()
                .map(|c| c.name().to_string())
                .collect(),
            items,
        })
    }
}

/// Something a reviewer should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoxFlag {
    /// A corner lies outside the image.
    OutsideImage,
    /// Thinner than one pixel: a slip of the mouse or a broken label.
    Degenerate,
}

impl BoxFlag {
    pub fn describe(self) -> &'static str {
        match self {
            BoxFlag::OutsideImage => "outside the image",
            BoxFlag::Degenerate => "degenerate (side < 1 px)",
        }
    }
}

pub fn box_flags(b: &OrientedBox, width: usize, height: usize) -> Vec<BoxFlag> {
    let mut f = Vec::new();
    // Half a pixel of slack: corner-origin labels that touch the border round to just past it.
    let slack = 0.5;
    if b.corners().iter().any(|p| {
        p[0] < -slack
            || p[1] < -slack
            || p[0] > width as f64 + slack
            || p[1] > height as f64 + slack
    }) {
        f.push(BoxFlag::OutsideImage);
    }
    if b.w.min(b.h) < 1.0 || !b.w.is_finite() || !b.h.is_finite() {
        f.push(BoxFlag::Degenerate);
    }
    f
}

/// Boxes per class over label lists (classes beyond `num_classes` are ignored).
pub fn class_counts<'a>(
    lists: impl IntoIterator<Item = &'a [LabeledBox]>,
    num_classes: usize,
) -> Vec<usize> {
    let mut c = vec![0; num_classes];
    for l in lists {
        for b in l {
            if let Some(n) = c.get_mut(b.class) {
                *n += 1;
            }
        }
    }
    c
}

/// What [`export_reviewed`] wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReviewedExport {
    pub train: usize,
    pub val: usize,
}

/// Writes the verified images and their labels as a new YOLO-OBB dataset in `out` (which
/// must not exist or be empty), split train/val by `val_fraction` with a seeded assignment.
/// Any unreadable label file stops the export before anything is written.
pub fn export_reviewed(
    listing: &DatasetListing,
    review: &ReviewState,
    out: &Path,
    val_fraction: f64,
    seed: u64,
) -> anyhow::Result<ReviewedExport> {
    use super::config::{SplitRatios, assign_splits};
    use super::staging::{absolute_path, target_is_nonempty};
    if !(0.0..1.0).contains(&val_fraction) {
        anyhow::bail!("validation fraction {val_fraction} must be in [0, 1)");
    }
    let out = absolute_path(out)?;
    if target_is_nonempty(&out) {
        anyhow::bail!("{} is not empty; choose a new folder", out.display());
    }
    let v = Validation {
        num_classes: listing.names.len(),
        ..Default::default()
    };
    let chosen: Vec<&DatasetItem> = listing
        .items
        .iter()
        .filter(|it| review.is_verified(&it.rel))
        .collect();
    if chosen.is_empty() {
        anyhow::bail!("no verified images to export");
    }
    let mut labels = Vec::with_capacity(chosen.len());
    for it in &chosen {
        // A verified image without a label file is a verified background image.
        let l = if it.label.is_file() {
            super::yolo::read_labels(&it.label, &v)?
        } else {
            Vec::new()
        };
        labels.push(l);
    }
    let ratios = SplitRatios {
        train: 1.0 - val_fraction,
        val: val_fraction,
        test: 0.0,
    };
    let splits = assign_splits(chosen.len(), seed, &ratios);
    let mut counts = ReviewedExport::default();
    for ((it, l), sp) in chosen.iter().zip(&labels).zip(&splits) {
        let split = sp.name();
        // Flattened relative path: unique even when splits of the source reuse file names.
        let stem = it.rel.replace('/', "__");
        let img_out = out.join("images").join(split).join(&stem);
        let lab_out = out
            .join("labels")
            .join(split)
            .join(Path::new(&stem).with_extension("txt"));
        for d in [img_out.parent(), lab_out.parent()].into_iter().flatten() {
            std::fs::create_dir_all(d)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", d.display()))?;
        }
        let bytes = std::fs::read(&it.image)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", it.image.display()))?;
        crate::fsio::atomic_write(&img_out, &bytes)?;
        write_labels(&lab_out, l)?;
        if split == "val" {
            counts.val += 1;
        } else {
            counts.train += 1;
        }
    }
    let mut yaml = format!(
        "# Reviewed YOLO-OBB dataset (verified images of {}).\npath: '{}'\ntrain: images/train\nval: images/val\nnames:\n",
        listing.root.display(),
        out.to_string_lossy().replace('\'', "''")
    );
    for (i, n) in listing.names.iter().enumerate() {
        yaml += &format!("  {i}: {n}\n");
    }
    crate::fsio::atomic_write(&out.join("data.yaml"), yaml.as_bytes())?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saving_keeps_unedited_lines_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("frame.txt");
        // A quadrilateral from another tool (not a rectangle), then a rectangle in short form.
        let quad = "1 0.1 0.1 0.3 0.12 0.28 0.3 0.12 0.25";
        let rect = "2 0.5 0.5 0.7 0.5 0.7 0.6 0.5 0.6";
        std::fs::write(&p, format!("{quad}\n\n{rect}\n")).unwrap();
        let doc = LabelDoc::open(&p, 200, 100, 3);
        assert!(doc.load_error.is_none(), "{:?}", doc.load_error);
        assert_eq!(doc.boxes.len(), 2);
        doc.save().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{quad}\n{rect}\n"),
            "nothing edited, nothing reshaped"
        );
        let mut doc = LabelDoc::open(&p, 200, 100, 3);
        doc.boxes[1].obb.cx += 10.0;
        doc.boxes.push(doc.boxes[0]);
        doc.save().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0], quad,
            "the untouched quadrilateral stays as it was"
        );
        assert_ne!(lines[1], rect, "the edited box is written anew");
        let back = LabelDoc::open(&p, 200, 100, 3);
        assert!(
            (back.boxes[1].obb.cx - 130.0).abs() < 1e-3,
            "{:?}",
            back.boxes[1]
        );
        // The copy is a new box: written from its rectangle.
        assert_ne!(lines[2], quad);
    }

    #[test]
    fn save_load_round_trip_within_1e6() {
        let dir = tempfile::tempdir().unwrap();
        let lp = dir.path().join("labels/train/a.txt");
        let mut doc = LabelDoc::open(&lp, 640, 480, 3);
        assert!(doc.boxes.is_empty() && !doc.is_read_only());
        let boxes = [
            LabeledBox {
                class: 0,
                obb: OrientedBox::new(100.3, 50.7, 30.0, 12.0, 0.61),
            },
            LabeledBox {
                class: 2,
                obb: OrientedBox::new(320.0, 240.0, 8.25, 7.5, 0.0),
            },
            LabeledBox {
                class: 1,
                obb: OrientedBox::new(500.1, 400.9, 44.4, 3.3, 2.9),
            },
        ];
        doc.boxes = boxes.to_vec();
        doc.save().unwrap();
        let back = LabelDoc::open(&lp, 640, 480, 3);
        assert_eq!(back.boxes.len(), 3);
        for (a, b) in back.boxes.iter().zip(boxes.iter()) {
            assert_eq!(a.class, b.class);
            // The file is normalised with 6 decimals: compare normalised corners.
            let la = ObbLabel::from_box_px(a.class, &a.obb, 640.0, 480.0);
            let lb = ObbLabel::from_box_px(b.class, &b.obb, 640.0, 480.0);
            let mut ok = false;
            // The same rectangle may come back with its corners in another order.
            for shift in 0..4 {
                ok |= (0..4).all(|k| {
                    let p = la.corners[(k + shift) % 4];
                    let q = lb.corners[k];
                    (p[0] - q[0]).abs() <= 1e-6 && (p[1] - q[1]).abs() <= 1e-6
                });
            }
            assert!(ok, "{la:?} vs {lb:?}");
        }
    }

    #[test]
    fn malformed_file_is_read_only_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let lp = dir.path().join("x.txt");
        let text = "0 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n1 0.5 oops 0.6 0.5 0.6 0.6 0.5 0.6\n";
        std::fs::write(&lp, text).unwrap();
        let mut doc = LabelDoc::open(&lp, 100, 100, 3);
        let e = doc.load_error.clone().unwrap();
        assert_eq!(e.line, 2);
        assert!(e.to_string().contains("x.txt:2"), "{e}");
        doc.boxes.push(LabeledBox {
            class: 0,
            obb: OrientedBox::new(5.0, 5.0, 4.0, 4.0, 0.0),
        });
        assert!(doc.save().is_err());
        assert_eq!(std::fs::read_to_string(&lp).unwrap(), text);
        doc.discard_unreadable();
        doc.save().unwrap();
        assert!(std::fs::read_to_string(&lp).unwrap().is_empty());
    }

    #[test]
    fn history_undo_redo() {
        let a = vec![LabeledBox {
            class: 0,
            obb: OrientedBox::new(1.0, 1.0, 2.0, 2.0, 0.0),
        }];
        let b: Vec<LabeledBox> = Vec::new();
        let mut h = History::default();
        h.record(a.clone());
        assert_eq!(h.undo(&b).unwrap(), a);
        assert_eq!(h.redo(&a).unwrap(), b);
        assert!(h.can_undo() && !h.can_redo());
    }

    #[test]
    fn review_state_persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ReviewState::load(dir.path()).unwrap();
        assert!(s.toggle("images/train/a.png"));
        s.save(dir.path()).unwrap();
        let back = ReviewState::load(dir.path()).unwrap();
        assert!(back.is_verified("images/train/a.png"));
        std::fs::write(dir.path().join(REVIEW_FILE), "{").unwrap();
        let e = ReviewState::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("review.json"), "{e}");
    }

    #[test]
    fn export_reviewed_writes_a_valid_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let cfg = crate::dataset::export::DatasetConfig {
            n: 4,
            seed: 3,
            size: 96,
            augment: vec!["r0".into()],
            ..Default::default()
        };
        crate::dataset::export::export(
            &cfg,
            &src,
            &Default::default(),
            &crate::jobs::JobControl::detached(),
        )
        .unwrap();
        let listing = DatasetListing::open(&src).unwrap();
        assert_eq!(listing.items.len(), 4);
        let mut review = ReviewState::default();
        for it in &listing.items[..3] {
            review.toggle(&it.rel);
        }
        let out = dir.path().join("reviewed");
        let n = export_reviewed(&listing, &review, &out, 0.34, 1).unwrap();
        assert_eq!(n.train + n.val, 3);
        assert_eq!(n.val, 1);
        let r = crate::dataset::validate_dataset(&out).unwrap();
        assert!(r.is_ok(), "{}", r.table());
        assert_eq!(r.splits["train"].images + r.splits["val"].images, 3);
        // Refuses to write into a non-empty folder.
        assert!(export_reviewed(&listing, &review, &out, 0.34, 1).is_err());
    }

    #[test]
    fn flags() {
        assert!(box_flags(&OrientedBox::new(50.0, 50.0, 10.0, 10.0, 0.3), 100, 100).is_empty());
        assert_eq!(
            box_flags(&OrientedBox::new(2.0, 50.0, 10.0, 10.0, 0.0), 100, 100),
            vec![BoxFlag::OutsideImage]
        );
        assert_eq!(
            box_flags(&OrientedBox::new(50.0, 50.0, 10.0, 0.2, 0.0), 100, 100),
            vec![BoxFlag::Degenerate]
        );
    }
}
