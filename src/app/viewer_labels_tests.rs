//! The label editor on plain Viewer images: draw, autosave beside the image, undo/redo reach
//! the file, reload on return, unreadable files left alone, detections accepted, labels folder.

use super::label_path_for;
use crate::app::review_tab::tests::drag;
use crate::app::{DefectApp, Persisted, Tab};
use defect_detector::dataset::yolo::{ObbLabel, write_labels};
use defect_detector::detect::Detection;
use defect_detector::geometry::OrientedBox;
use egui::{Key, Modifiers, Pos2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use std::path::{Path, PathBuf};
use std::time::Duration;

const W: usize = 160;
const H: usize = 120;

/// Two synthetic 8-bit PNGs in a fresh folder.
fn images() -> (tempfile::TempDir, PathBuf, PathBuf) {
    use defect_detector::synth::{self, ImageFormat, SynthParams};
    let dir = tempfile::tempdir().unwrap();
    let p = SynthParams {
        width: W,
        height: H,
        ..Default::default()
    };
    let s = synth::generate(&p).unwrap();
    let a = synth::write_outputs(&s, dir.path(), "a", ImageFormat::Png)
        .unwrap()
        .image;
    let b = synth::write_outputs(&s, dir.path(), "b", ImageFormat::Png)
        .unwrap()
        .image;
    // The synthesizer writes its own labels beside the images; start unlabelled.
    for img in [&a, &b] {
        let _ = std::fs::remove_file(img.with_extension("txt"));
    }
    (dir, a, b)
}

fn harness() -> Harness<'static, DefectApp> {
    harness_sized(900.0)
}

/// Tall enough that the side panel's Labels section is on screen without scrolling.
fn harness_sized(height: f32) -> Harness<'static, DefectApp> {
    let ctx = egui::Context::default();
    let mut app = DefectApp::new(&ctx, Persisted::default());
    app.tab = Tab::Viewer;
    app.viewer.settings.model_path.clear();
    Harness::builder()
        .with_size(egui::vec2(1300.0, height))
        .build_ui_state(|ui, app: &mut DefectApp| app.show(ui), app)
}

fn settle(h: &mut Harness<'static, DefectApp>) {
    for _ in 0..500 {
        h.step();
        if !h.state().viewer.is_busy() && h.state().viewer.current.is_some() {
            h.run_steps(3);
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("viewer never settled");
}

fn open(h: &mut Harness<'static, DefectApp>, p: &Path) {
    h.state_mut().viewer.open(p);
    settle(h);
}

fn screen(h: &Harness<'static, DefectApp>, p: [f64; 2]) -> Pos2 {
    let v = &h.state().viewer;
    v.canvas
        .image_to_screen(v.labels.annot.last_rect.expect("editor drawn"), p)
}

/// Lets the autosave delay pass and the save happen (polled: a loaded machine is slow).
fn wait_autosave(h: &mut Harness<'static, DefectApp>) {
    std::thread::sleep(super::AUTOSAVE_DELAY + Duration::from_millis(100));
    h.run_steps(2);
    for _ in 0..100 {
        if h.state().viewer.labels.annot.dirty_since.is_none() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
        h.run_steps(1);
    }
}

fn file_boxes(label: &Path) -> Vec<String> {
    std::fs::read_to_string(label)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn drawn_box_is_saved_beside_the_image_and_undo_reaches_the_file() {
    let (_dir, a, b) = images();
    let mut h = harness();
    open(&mut h, &a);
    h.key_press(Key::L);
    h.run_steps(3);
    assert!(h.state().viewer.labels.enabled, "L turns editing on");
    let label = a.with_extension("txt");
    assert!(!label.exists());

    let (p, q) = (screen(&h, [40.0, 30.0]), screen(&h, [100.0, 70.0]));
    drag(&mut h, p, q);
    let boxes = h.state().viewer.labels.annot.boxes.clone();
    assert_eq!(boxes.len(), 1, "a drag on empty image draws a box");
    let obb = boxes[0].obb;
    assert!(
        (obb.cx - 70.0).abs() < 2.0 && (obb.cy - 50.0).abs() < 2.0,
        "{obb:?}"
    );
    wait_autosave(&mut h);
    let lines = file_boxes(&label);
    assert_eq!(lines.len(), 1, "autosaved: {lines:?}");
    // The file holds the box in normalised YOLO-OBB corners.
    let v: Vec<f64> = lines[0]
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap())
        .collect();
    let xs: Vec<f64> = v.iter().step_by(2).map(|x| x * W as f64).collect();
    let cx = xs.iter().sum::<f64>() / 4.0;
    assert!((cx - obb.cx).abs() < 1e-3, "{cx} vs {}", obb.cx);

    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run_steps(2);
    wait_autosave(&mut h);
    assert!(file_boxes(&label).is_empty(), "undo is saved too");
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    h.run_steps(2);
    wait_autosave(&mut h);
    assert_eq!(file_boxes(&label).len(), 1, "and redo");

    // Away to the other image and back: the box comes back from the file.
    open(&mut h, &b);
    assert!(h.state().viewer.labels.annot.boxes.is_empty());
    open(&mut h, &a);
    let back = &h.state().viewer.labels.annot.boxes;
    assert_eq!(back.len(), 1);
    assert!((back[0].obb.cx - obb.cx).abs() < 1e-4);
}

#[test]
fn edits_are_flushed_when_the_image_changes_before_the_autosave() {
    let (_dir, a, b) = images();
    let mut h = harness();
    open(&mut h, &a);
    h.state_mut().viewer.labels.enabled = true;
    h.run_steps(2);
    h.state_mut()
        .viewer
        .labels
        .annot
        .add_box(OrientedBox::new(50.0, 40.0, 20.0, 10.0, 0.3));
    // Straight to the next image: no time for the autosave.
    open(&mut h, &b);
    assert_eq!(file_boxes(&a.with_extension("txt")).len(), 1);
}

#[test]
fn an_unreadable_label_file_opens_read_only_and_is_left_alone() {
    let (_dir, a, _b) = images();
    let label = a.with_extension("txt");
    std::fs::write(&label, "1 0.1 0.1 0.2 oops\n").unwrap();
    let mut h = harness();
    h.state_mut().viewer.labels.enabled = true;
    open(&mut h, &a);
    let l = &h.state().viewer.labels;
    assert!(l.annot.read_only);
    assert!(
        l.status.contains("read-only") && l.status.contains(":1"),
        "{}",
        l.status
    );
    let (p, q) = (screen(&h, [40.0, 30.0]), screen(&h, [100.0, 70.0]));
    drag(&mut h, p, q);
    wait_autosave(&mut h);
    assert!(h.state().viewer.labels.annot.boxes.is_empty());
    assert_eq!(
        std::fs::read_to_string(&label).unwrap(),
        "1 0.1 0.1 0.2 oops\n"
    );
}

#[test]
fn accepted_detections_become_labels_in_the_chosen_folder() {
    let (dir, a, _b) = images();
    let labels_dir = dir.path().join("labels");
    let mut h = harness_sized(1800.0);
    h.state_mut().viewer.settings.labels_dir = labels_dir.display().to_string();
    open(&mut h, &a);
    // Existing labels in that folder are loaded.
    let pre = OrientedBox::new(20.0, 20.0, 10.0, 10.0, 0.0);
    std::fs::create_dir_all(&labels_dir).unwrap();
    write_labels(
        &labels_dir.join("a.txt"),
        &[ObbLabel::from_box_px(2, &pre, W as f64, H as f64)],
    )
    .unwrap();
    h.state_mut().viewer.labels.enabled = true;
    h.run_steps(2);
    assert_eq!(h.state().viewer.labels.annot.boxes.len(), 1);
    let det = |class: usize, conf: f32, cx: f64| Detection {
        class,
        class_name: "x".into(),
        confidence: conf,
        obb: OrientedBox::new(cx, 60.0, 16.0, 12.0, 0.2),
        source: Default::default(),
    };
    // Two shown detections; a third of a class switched off is not taken.
    h.state_mut().viewer.filtered = vec![det(1, 0.9, 60.0), det(2, 0.8, 100.0), det(0, 0.7, 130.0)];
    h.state_mut().viewer.settings.show_class = vec![false, true, true];
    h.run_steps(2);
    use egui_kittest::kittest::Queryable;
    h.get_by_label("Accept 2 detection(s)").click();
    h.run_steps(2);
    let boxes = h.state().viewer.labels.annot.boxes.clone();
    assert_eq!(boxes.len(), 3);
    assert_eq!(boxes[1].class, 1);
    assert_eq!(boxes[2].class, 2);
    wait_autosave(&mut h);
    let l = &h.state().viewer.labels;
    assert_eq!(
        file_boxes(&labels_dir.join("a.txt")).len(),
        3,
        "{} {:?}",
        l.status,
        l.annot.dirty_since
    );
    assert!(
        !a.with_extension("txt").exists(),
        "nothing written beside the image"
    );
    assert_eq!(
        label_path_for(&a, &labels_dir.display().to_string()),
        labels_dir.join("a.txt")
    );
}

#[test]
fn failed_saves_keep_the_edits_across_an_image_change_until_saved() {
    let (dir, a, b) = images();
    // The labels folder is a link to a folder that is gone: reading finds no labels (a new,
    // editable document), writing fails as on a share that went read-only.
    let gone = dir.path().join("gone");
    let labels_dir = dir.path().join("labels");
    std::os::unix::fs::symlink(&gone, &labels_dir).unwrap();
    let mut h = harness();
    h.state_mut().viewer.settings.labels_dir = labels_dir.display().to_string();
    open(&mut h, &a);
    h.state_mut().viewer.labels.enabled = true;
    h.run_steps(2);
    h.state_mut()
        .viewer
        .labels
        .annot
        .add_box(OrientedBox::new(50.0, 40.0, 20.0, 10.0, 0.3));
    // The image changes before the autosave: the save fails, the editor moves on.
    open(&mut h, &b);
    h.run_steps(2);
    let pending = &h.state().viewer.labels.unsaved.docs;
    assert_eq!(pending.len(), 1, "the failed edits are kept");
    assert_eq!(pending[0].doc.label_path, labels_dir.join("a.txt"));
    assert_eq!(pending[0].doc.boxes.len(), 1);
    assert!(
        h.query_by_label("Labels could not be saved").is_some(),
        "a modal says so"
    );
    // Retrying while the cause is there keeps them; once it is gone, they are written.
    h.get_by_label("Retry").click();
    h.run_steps(2);
    assert_eq!(h.state().viewer.labels.unsaved.docs.len(), 1);
    std::fs::create_dir(&gone).unwrap();
    h.get_by_label("Retry").click();
    h.run_steps(2);
    assert!(h.state().viewer.labels.unsaved.is_empty());
    assert_eq!(file_boxes(&labels_dir.join("a.txt")).len(), 1);
    h.run_steps(2);
    assert!(h.query_by_label("Labels could not be saved").is_none());
}

#[test]
fn failed_saves_can_be_saved_elsewhere() {
    let (dir, a, _b) = images();
    let label = dir.path().join("a.txt");
    let mut doc = defect_detector::dataset::review::LabelDoc::open(&label, W, H, 3);
    doc.boxes
        .push(defect_detector::dataset::review::LabeledBox {
            class: 1,
            obb: OrientedBox::new(50.0, 40.0, 20.0, 10.0, 0.3),
        });
    let mut u = super::UnsavedLabels::default();
    u.failed(&doc, "read-only file system".into());
    u.failed(&doc, "still read-only".into());
    assert_eq!(u.docs.len(), 1, "one entry per label file");
    let elsewhere = dir.path().join("elsewhere/a.txt");
    u.save_first(Some(elsewhere.clone())).unwrap();
    assert!(u.is_empty());
    assert_eq!(file_boxes(&elsewhere).len(), 1);
    assert!(!label.exists(), "{}", a.display());
}

#[test]
fn images_sharing_a_stem_get_their_own_label_files() {
    let (dir, a, _b) = images();
    let twin = dir.path().join("a.tif");
    std::fs::copy(&a, &twin).unwrap();
    let a_txt = label_path_for(&a, "");
    let twin_txt = label_path_for(&twin, "");
    assert_ne!(
        a_txt, twin_txt,
        "frame.png and frame.tif must not share frame.txt"
    );
    assert_eq!(a_txt, dir.path().join("a.png.txt"));
    assert_eq!(twin_txt, dir.path().join("a.tif.txt"));
    assert_eq!(label_path_for(&twin, "/l"), Path::new("/l/a.tif.txt"));
    // Alone, an image keeps the usual <stem>.txt.
    std::fs::remove_file(&twin).unwrap();
    assert_eq!(label_path_for(&a, ""), dir.path().join("a.txt"));
}
