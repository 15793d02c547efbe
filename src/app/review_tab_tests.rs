//! egui_kittest tests of the Review tab: opening a dataset, stepping, editing and saving labels.

use crate::app::annotate::angle_deg;
use crate::app::{DefectApp, Persisted, Tab};
use defect_detector::dataset::export::{DatasetConfig, ExportTarget, export};
use defect_detector::dataset::review::{LabeledBox, REVIEW_FILE, ReviewState};
use defect_detector::dataset::yolo::{ObbLabel, write_labels};
use defect_detector::geometry::OrientedBox;
use defect_detector::jobs::JobControl;
use egui::{Event, Key, Modifiers, PointerButton, Pos2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use std::path::Path;

const SIZE: usize = 128;

/// A small exported dataset (3 images) in a tempdir.
fn dataset() -> tempfile::TempDir {
    dataset_of(SIZE)
}

fn dataset_of(size: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DatasetConfig {
        n: 3,
        seed: 5,
        size,
        augment: vec!["r0".into()],
        ..Default::default()
    };
    let out = dir.path().join("ds");
    export(
        &cfg,
        &out,
        &ExportTarget::default(),
        &JobControl::detached(),
    )
    .unwrap();
    dir
}

fn root(d: &tempfile::TempDir) -> std::path::PathBuf {
    d.path().join("ds")
}

fn harness(dir: &Path) -> Harness<'static, DefectApp> {
    let ctx = egui::Context::default();
    let mut app = DefectApp::new(&ctx, Persisted::default());
    app.tab = Tab::Review;
    let mut h = Harness::builder()
        .with_size(egui::vec2(1200.0, 800.0))
        .build_ui_state(|ui, app: &mut DefectApp| app.show(ui), app);
    let ctx = h.ctx.clone();
    h.state_mut().review.open(&ctx, dir);
    h.run_steps(3);
    h
}

/// Replaces the first image's labels with one known box and reopens the dataset.
fn with_known_box(dir: &Path) -> Harness<'static, DefectApp> {
    let h0 = harness(dir);
    let label = h0.state().review.listing.as_ref().unwrap().items[0]
        .label
        .clone();
    drop(h0);
    let b = OrientedBox::new(64.0, 64.0, 30.0, 16.0, 0.0);
    write_labels(
        &label,
        &[ObbLabel::from_box_px(1, &b, SIZE as f64, SIZE as f64)],
    )
    .unwrap();
    harness(dir)
}

fn screen(h: &Harness<'static, DefectApp>, p: [f64; 2]) -> Pos2 {
    let r = &h.state().review;
    r.canvas.image_to_screen(r.annot.last_rect.unwrap(), p)
}

fn zoom(h: &Harness<'static, DefectApp>) -> f64 {
    h.state().review.canvas.zoom() as f64
}

fn click(h: &mut Harness<'static, DefectApp>, pos: Pos2, modifiers: Modifiers) {
    h.event(Event::ModifiersChanged(modifiers));
    h.hover_at(pos);
    for pressed in [true, false] {
        h.event(Event::PointerButton {
            pos,
            button: PointerButton::Primary,
            pressed,
            modifiers,
        });
    }
    h.event(Event::ModifiersChanged(Modifiers::NONE));
    h.run_steps(2);
}

/// A pointer drag across several frames (egui needs movement between frames to see a drag).
pub(crate) fn drag(h: &mut Harness<'static, DefectApp>, from: Pos2, to: Pos2) {
    h.hover_at(from);
    h.step();
    h.drag_at(from);
    h.step();
    for k in 1..=4 {
        let t = k as f32 / 4.0;
        h.hover_at(from + (to - from) * t);
        h.step();
    }
    h.drop_at(to);
    h.run_steps(2);
}

fn key(h: &mut Harness<'static, DefectApp>, k: Key) {
    h.key_press(k);
    h.run_steps(2);
}

fn boxes(h: &Harness<'static, DefectApp>) -> Vec<LabeledBox> {
    h.state().review.annot.boxes.clone()
}

#[test]
fn click_selects_and_drag_moves_as_one_undo_step() {
    let d = dataset();
    let mut h = with_known_box(&root(&d));
    assert_eq!(boxes(&h).len(), 1);
    let c = screen(&h, [64.0, 64.0]);
    click(&mut h, c, Modifiers::NONE);
    assert_eq!(h.state().review.annot.primary(), Some(0));
    let z = zoom(&h);
    drag(&mut h, c, c + egui::vec2(20.0, 10.0));
    let b = boxes(&h)[0].obb;
    assert!((b.cx - (64.0 + 20.0 / z)).abs() < 0.05, "{b:?} zoom {z}");
    assert!((b.cy - (64.0 + 10.0 / z)).abs() < 0.05, "{b:?}");
    // Loaded from a 6-decimal normalised file: 128 px × 1e-6 rounding.
    assert!((b.w - 30.0).abs() < 1e-3 && (b.h - 16.0).abs() < 1e-3);
    // The whole drag is one step.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run_steps(2);
    let b = boxes(&h)[0].obb;
    assert!(
        (b.cx - 64.0).abs() < 1e-3 && (b.cy - 64.0).abs() < 1e-3,
        "{b:?}"
    );
    assert!(!h.state().review.annot.history.can_undo());
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    h.run_steps(2);
    assert!((boxes(&h)[0].obb.cx - (64.0 + 20.0 / z)).abs() < 0.05);
}

#[test]
fn rotate_keys_class_duplicate_delete_and_autosave() {
    let d = dataset();
    let mut h = with_known_box(&root(&d));
    let c = screen(&h, [64.0, 64.0]);
    click(&mut h, c, Modifiers::NONE);
    let deg = |h: &Harness<'static, DefectApp>| boxes(h)[0].obb.angle.to_degrees();
    h.key_press_modifiers(Modifiers::SHIFT, Key::ArrowRight);
    h.run_steps(2);
    assert!((boxes(&h)[0].obb.cx - 65.0).abs() < 1e-3);
    assert_eq!(
        h.state().review.current,
        Some(0),
        "Shift+arrow nudges, not flips"
    );
    key(&mut h, Key::V);
    assert!((deg(&h) - 5.0).abs() < 1e-4);
    key(&mut h, Key::C);
    assert!((deg(&h) - 5.5).abs() < 1e-4);
    key(&mut h, Key::X);
    assert!((deg(&h) - 5.0).abs() < 1e-4);
    key(&mut h, Key::Z);
    assert!(deg(&h).abs() < 1e-4);
    key(&mut h, Key::Num2);
    assert_eq!(boxes(&h)[0].class, 2);
    h.key_press_modifiers(Modifiers::COMMAND, Key::D);
    h.run_steps(2);
    assert_eq!(boxes(&h).len(), 2);
    assert_eq!(boxes(&h)[1].class, 2);
    assert_eq!(h.state().review.annot.primary(), Some(1));
    key(&mut h, Key::Delete);
    assert_eq!(boxes(&h).len(), 1);
    // Saved within the debounce delay, without any navigation.
    std::thread::sleep(std::time::Duration::from_millis(600));
    h.run_steps(2);
    let label = h.state().review.doc.as_ref().unwrap().label_path.clone();
    let text = std::fs::read_to_string(label).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("2 "), "{text}");
}

#[test]
fn shift_click_multi_select_and_draw_new_box() {
    let d = dataset();
    let mut h = with_known_box(&root(&d));
    h.state_mut().review.annot.boxes = vec![
        LabeledBox {
            class: 0,
            obb: OrientedBox::new(30.0, 30.0, 12.0, 12.0, 0.0),
        },
        LabeledBox {
            class: 1,
            obb: OrientedBox::new(90.0, 90.0, 12.0, 12.0, 0.3),
        },
    ];
    let (p, q) = (screen(&h, [30.0, 30.0]), screen(&h, [90.0, 90.0]));
    click(&mut h, p, Modifiers::NONE);
    click(&mut h, q, Modifiers::SHIFT);
    assert_eq!(h.state().review.annot.selected.len(), 2);
    key(&mut h, Key::V);
    assert!(boxes(&h).iter().all(|b| b.obb.angle > 0.0));
    // Drag on empty image draws an axis-aligned box.
    let (a, b) = (screen(&h, [60.0, 20.0]), screen(&h, [100.0, 50.0]));
    drag(&mut h, a, b);
    let all = boxes(&h);
    assert_eq!(all.len(), 3);
    let n = all[2].obb;
    assert!(
        (n.w - 40.0).abs() < 0.5 && (n.h - 30.0).abs() < 0.5,
        "{n:?}"
    );
    assert_eq!(n.angle, 0.0);
}

#[test]
fn navigation_and_verify_persist() {
    let d = dataset();
    let dir = root(&d);
    let mut h = harness(&dir);
    assert_eq!(h.state().review.current, Some(0));
    key(&mut h, Key::D);
    assert_eq!(h.state().review.current, Some(1));
    key(&mut h, Key::ArrowRight);
    assert_eq!(h.state().review.current, Some(2));
    key(&mut h, Key::ArrowRight);
    assert_eq!(h.state().review.current, Some(2), "stays on the last image");
    key(&mut h, Key::A);
    assert_eq!(h.state().review.current, Some(1));
    key(&mut h, Key::Space);
    let rel = h.state().review.listing.as_ref().unwrap().items[1]
        .rel
        .clone();
    assert!(dir.join(REVIEW_FILE).is_file());
    assert!(ReviewState::load(&dir).unwrap().is_verified(&rel));
    assert_eq!(
        h.state().review.current,
        Some(2),
        "verifying moves on to the next image"
    );
    // "Not yet reviewed" skips it.
    h.state_mut().review.settings.only_unreviewed = true;
    key(&mut h, Key::ArrowLeft);
    assert_eq!(h.state().review.current, Some(0));
    key(&mut h, Key::ArrowRight);
    assert_eq!(h.state().review.current, Some(2));
}

#[test]
fn malformed_labels_are_reported_and_never_overwritten() {
    let d = dataset();
    let dir = root(&d);
    let h0 = harness(&dir);
    let label = h0.state().review.listing.as_ref().unwrap().items[0]
        .label
        .clone();
    drop(h0);
    let bad = "0 0.4 0.4 0.6 0.4 0.6 0.6 0.4 0.6\n0 0.1 0.1 0.2\n";
    std::fs::write(&label, bad).unwrap();
    let mut h = harness(&dir);
    let status = h.state().review.status.clone();
    let want = format!("{}:2", label.display());
    assert!(status.contains(&want), "{status}");
    assert!(h.state().review.annot.read_only);
    // Editing attempts change nothing and nothing gets written.
    let c = screen(&h, [64.0, 64.0]);
    drag(&mut h, c, c + egui::vec2(30.0, 30.0));
    key(&mut h, Key::Num1);
    key(&mut h, Key::D);
    key(&mut h, Key::A);
    assert_eq!(h.state().review.current, Some(0));
    assert_eq!(std::fs::read_to_string(&label).unwrap(), bad);
    // Discarding is an explicit choice; then edits are saved.
    h.state_mut().review.discard_unreadable();
    let b = OrientedBox::new(50.0, 50.0, 10.0, 10.0, 0.0);
    h.state_mut().review.annot.add_box(b);
    h.state_mut().review.flush();
    let text = std::fs::read_to_string(&label).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn corner_handle_resizes_and_rotation_handle_rotates() {
    let d = dataset();
    let mut h = with_known_box(&root(&d));
    let c = screen(&h, [64.0, 64.0]);
    click(&mut h, c, Modifiers::NONE);
    let z = zoom(&h);
    // Bottom-right corner (+w/2, +h/2) dragged 10 points right and 6 down: the opposite
    // corner stays, so the box grows by that much and its centre moves half as far.
    let corner = screen(&h, [79.0, 72.0]);
    drag(&mut h, corner, corner + egui::vec2(10.0, 6.0));
    let b = boxes(&h)[0].obb;
    assert!((b.w - (30.0 + 10.0 / z)).abs() < 0.05, "{b:?}");
    assert!((b.h - (16.0 + 6.0 / z)).abs() < 0.05, "{b:?}");
    assert!((b.cx - (64.0 + 5.0 / z)).abs() < 0.05, "{b:?}");
    assert!(h.state().review.annot.history.can_undo());
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run_steps(2);
    // The rotation handle sits 22 points above the top edge's midpoint; dragging it to the
    // right of the centre turns the box 90° clockwise.
    let top = screen(&h, [64.0, 56.0]) - egui::vec2(0.0, 22.0);
    let right = screen(&h, [64.0, 64.0]) + egui::vec2(60.0, 0.0);
    drag(&mut h, top, right);
    let b = boxes(&h)[0].obb;
    assert!((angle_deg(&b) - 90.0).abs() < 0.5, "{b:?}");
    assert!((b.cx - 64.0).abs() < 1e-3 && (b.w - 30.0).abs() < 1e-3);
}

#[test]
fn accept_detections_adds_them_as_one_undo_step() {
    // The repository ships a model: not finding it is a failure, not a reason to skip.
    let model = crate::app::viewer_tab::default_model()
        .expect("no model found, though models/cdte-yolo11n-obb.onnx is in the repository");
    // Large enough for the model to find defects in.
    let d = dataset_of(640);
    let mut h = harness(&root(&d));
    h.state_mut().review.annot.selected.clear();
    let before = boxes(&h);
    let ctx = h.ctx.clone();
    h.state_mut().review.accept_detections(&ctx);
    for _ in 0..600 {
        h.step();
        if !h.state().review.is_detecting() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!h.state().review.is_detecting(), "detector never finished");
    // The same detections, computed independently.
    let det = defect_detector::detect::Detector::load(&model, &Default::default()).unwrap();
    let img = h.state().review.image.clone().unwrap();
    let want = det
        .detect(&img, None, &Default::default())
        .unwrap()
        .filtered(0.25, defect_detector::detect::DEFAULT_IOU);
    let after = boxes(&h);
    assert!(
        !want.is_empty(),
        "nothing detected: the comparison below would be empty"
    );
    assert_eq!(after.len(), before.len() + want.len());
    for (b, w) in after[before.len()..].iter().zip(&want) {
        assert_eq!(b.class, w.class);
        assert!((b.obb.cx - w.obb.cx).abs() < 1e-9);
    }
    assert!(
        !want.is_empty(),
        "the model found nothing on a synthetic image"
    );
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run_steps(2);
    assert_eq!(boxes(&h), before);
}

#[test]
fn export_verified_button_writes_a_dataset() {
    let d = dataset();
    let mut h = harness(&root(&d));
    key(&mut h, Key::Space);
    key(&mut h, Key::D);
    key(&mut h, Key::Space);
    let out = d.path().join("reviewed");
    h.state_mut().review.settings.export_dir = out.display().to_string();
    h.state_mut().review.settings.val_fraction = 0.5;
    h.get_by_label("Export verified").click();
    h.run_steps(2);
    let status = h.state().review.status.clone();
    assert!(status.contains("exported 1 train and 1 val"), "{status}");
    let r = defect_detector::dataset::validate_dataset(&out).unwrap();
    assert!(r.is_ok(), "{}", r.table());
}

#[test]
fn label_with_lattice_analysis_adds_the_proposals_as_one_undo_step() {
    let d = dataset_of(640);
    let mut h = harness(&root(&d));
    let before = boxes(&h);
    h.get_by_label("Label with lattice analysis").click();
    for _ in 0..600 {
        h.step();
        if !h.state().review.is_reading_lattice() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !h.state().review.is_reading_lattice(),
        "the analysis never finished"
    );
    // The same proposals, computed independently (CdTe, scale from the lattice).
    let img = h.state().review.image.clone().unwrap();
    let want: Vec<_> = defect_detector::lattice::analyse(
        &img,
        &defect_detector::lattice::LatticeParams::new(
            defect_detector::synth::crystal::Preset::Cdte110.spec(),
            None,
        ),
    )
    .unwrap()
    .detections()
    .into_iter()
    .filter(|d| d.2 >= defect_detector::detect::DEFAULT_CONF)
    .collect();
    assert!(
        !want.is_empty(),
        "nothing proposed: the comparison would be empty"
    );
    let after = boxes(&h);
    assert_eq!(after.len(), before.len() + want.len());
    h.state_mut().review.annot.undo();
    assert_eq!(boxes(&h).len(), before.len());
}

#[test]
fn new_boxes_take_the_last_class_used() {
    let d = dataset_of(128);
    let mut h = harness(&root(&d));
    assert!(!boxes(&h).is_empty());
    h.state_mut().review.annot.selected = [0].into();
    h.state_mut().review.annot.set_class(1);
    assert_eq!(boxes(&h)[0].class, 1);
    assert_eq!(
        h.state().review.annot.new_class,
        1,
        "the next new box is a vacancy too"
    );
}

#[test]
fn a_small_box_has_its_handles_outside_and_resizes_without_a_jump() {
    let d = dataset();
    let mut h = with_known_box(&root(&d));
    let z = zoom(&h);
    // A vacancy-sized box, a few screen points across at this zoom.
    let (w, hh) = (20.0 / z, 16.0 / z);
    h.state_mut().review.annot.boxes[0].obb = OrientedBox::new(64.0, 64.0, w, hh, 0.0);
    h.state_mut().review.annot.selected = [0].into();
    h.run_steps(2);
    // The bottom-right handle sits 8 points out along the diagonal, off the box's columns.
    let corner = screen(&h, [64.0 + w / 2.0, 64.0 + hh / 2.0]);
    let centre = screen(&h, [64.0, 64.0]);
    let handle = corner + (corner - centre).normalized() * 8.0;
    drag(&mut h, handle, handle + egui::vec2(10.0, 6.0));
    let b = boxes(&h)[0].obb;
    assert!((b.w - (w + 10.0 / z)).abs() < 0.05, "{b:?}");
    assert!((b.h - (hh + 6.0 / z)).abs() < 0.05, "{b:?}");
}
