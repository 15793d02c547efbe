//! egui_kittest tests of the app shell and its tabs, driven by label as a user would.

use super::*;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

fn harness() -> Harness<'static, DefectApp> {
    let ctx = egui::Context::default();
    let mut persisted = Persisted::default();
    persisted.synth.params.width = 256;
    persisted.synth.params.height = 256;
    let app = DefectApp::new(&ctx, persisted);
    Harness::builder()
        .with_size(egui::vec2(1300.0, 1000.0))
        .build_ui_state(|ui, app: &mut DefectApp| app.show(ui), app)
}

/// Steps until background jobs finish (bounded).
fn settle(h: &mut Harness<'static, DefectApp>) {
    for _ in 0..400 {
        h.step();
        if !h.state().synth.is_busy() && h.state().synth.current.is_some() {
            h.step();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("preview never arrived");
}

#[test]
fn preview_appears_with_labels() {
    let mut h = harness();
    settle(&mut h);
    let cur = h.state().synth.current.as_ref().unwrap();
    assert_eq!(cur.synth.image.width, 256);
    assert!(!cur.synth.labels.is_empty());
}

#[test]
fn low_dose_preview_says_which_point_defects_the_noise_hides() {
    let mut h = harness();
    h.state_mut().synth.settings.params.noise.dose_e_per_a2 = 150.0;
    settle(&mut h);
    let s = &h.state().synth;
    let labels = &s.current.as_ref().unwrap().synth.labels;
    let snr = s
        .current_snr
        .as_ref()
        .expect("d′ measured after the preview");
    assert_eq!(snr.len(), labels.len());
    for (l, d) in labels.iter().zip(snr) {
        let boundary = l.class == defect_detector::classes::DefectClass::GrainBoundary;
        assert_eq!(d.is_none(), boundary);
    }
    let hidden = snr.iter().flatten().filter(|&&d| d < 5.0).count();
    assert!(
        hidden > 0,
        "at 150 e/Å² some defect should be below d′ 5: {snr:?}"
    );
    h.get_by_label_contains(&format!("{hidden} point defect(s) below SNR d' 5"));
}

#[test]
fn dice_changes_the_seed_and_regenerates() {
    let mut h = harness();
    settle(&mut h);
    let seed0 = h.state().synth.settings.params.seed;
    h.get_by_label("Random seed").click();
    h.step();
    settle(&mut h);
    let s = &h.state().synth;
    assert_ne!(s.settings.params.seed, seed0);
    assert_eq!(
        s.current.as_ref().unwrap().synth.params.seed,
        s.settings.params.seed
    );
}

/// Box outlines drawn last frame in the colour of `class` (the canvas draws each box as one
/// closed four-point path in its class colour).
fn drawn_boxes(h: &Harness<'static, DefectApp>, class: usize) -> usize {
    let [r, g, b] = defect_detector::classes::class_color(class);
    let col = egui::epaint::ColorMode::Solid(egui::Color32::from_rgb(r, g, b));
    h.output()
        .shapes
        .iter()
        .filter(|c| {
            matches!(&c.shape, egui::Shape::Path(p)
                if p.closed && p.points.len() == 4 && p.stroke.color == col)
        })
        .count()
}

#[test]
fn class_toggle_hides_boxes() {
    let mut h = harness();
    settle(&mut h);
    let labels = &h.state().synth.current.as_ref().unwrap().synth.labels;
    let vacancies = labels.iter().filter(|l| l.class.id() == 1).count();
    let others = drawn_boxes(&h, 0) + drawn_boxes(&h, 2);
    assert!(vacancies > 0, "the preview has no vacancy to hide");
    assert_eq!(drawn_boxes(&h, 1), vacancies, "every vacancy box is drawn");
    h.get_by_label_contains("vacancy (").click();
    h.run_steps(2);
    assert_eq!(drawn_boxes(&h, 1), 0, "hidden vacancies are not drawn");
    assert_eq!(
        drawn_boxes(&h, 0) + drawn_boxes(&h, 2),
        others,
        "the others still are"
    );
    h.get_by_label_contains("vacancy (").click();
    h.run_steps(2);
    assert_eq!(drawn_boxes(&h, 1), vacancies);
}

#[test]
fn preset_change_regenerates_with_new_crystal() {
    let mut h = harness();
    settle(&mut h);
    h.state_mut().synth.settings.params.crystal.preset =
        defect_detector::synth::crystal::Preset::Si110;
    h.step();
    settle(&mut h);
    let cur = h.state().synth.current.as_ref().unwrap();
    assert_eq!(
        cur.synth.params.crystal.preset,
        defect_detector::synth::crystal::Preset::Si110
    );
}

fn settle_viewer(h: &mut Harness<'static, DefectApp>) {
    for _ in 0..500 {
        h.step();
        if !h.state().viewer.is_busy() {
            h.step();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("viewer never settled");
}

/// Writes two synthetic images (16-bit TIFF with calibration, 8-bit PNG) into a folder.
fn two_images() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    use defect_detector::synth::{self, ImageFormat, SynthParams};
    let dir = tempfile::tempdir().unwrap();
    let p = SynthParams {
        width: 128,
        height: 96,
        ..Default::default()
    };
    let s = synth::generate(&p).unwrap();
    let a = synth::write_outputs(&s, dir.path(), "a", ImageFormat::Tiff16)
        .unwrap()
        .image;
    let b = synth::write_outputs(&s, dir.path(), "b", ImageFormat::Png)
        .unwrap()
        .image;
    (dir, a, b)
}

#[test]
fn viewer_opens_a_file_with_calibration_and_flips_through_the_folder() {
    let (_dir, tif, png) = two_images();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.model_path.clear();
    h.step();
    h.state_mut().viewer.path_input = tif.display().to_string();
    h.get_by_label("Open").click();
    h.step();
    settle_viewer(&mut h);
    let v = &h.state().viewer;
    let cur = v.current.as_ref().expect("image loaded");
    assert_eq!((cur.width(), cur.height()), (128, 96));
    let px = v
        .pixel_size()
        .expect("TIFF carries the pixel size")
        .nm_per_px;
    assert!((px - 0.015).abs() < 1e-5, "{px}");
    // Arrow right goes to the next image of the folder (the PNG).
    h.key_press(egui::Key::ArrowRight);
    h.step();
    settle_viewer(&mut h);
    assert_eq!(h.state().viewer.current.as_ref().unwrap().path, png);
    h.key_press(egui::Key::ArrowLeft);
    h.step();
    settle_viewer(&mut h);
    assert_eq!(h.state().viewer.current.as_ref().unwrap().path, tif);
}

#[test]
fn viewer_calibrates_an_uncalibrated_png_from_its_lattice_and_warns_outside_the_training_range() {
    use defect_detector::synth::{self, ImageFormat, SynthParams};
    let dir = tempfile::tempdir().unwrap();
    let p = SynthParams {
        width: 384,
        height: 384,
        pixel_size_pm: 16.0,
        ..Default::default()
    };
    let s = synth::generate(&p).unwrap();
    let png = synth::write_outputs(&s, dir.path(), "frame", ImageFormat::Png)
        .unwrap()
        .image;
    // A model card whose training ranges exclude this frame's background (p1/median).
    let model = dir.path().join("model.onnx");
    let card = serde_json::json!({
        "name": "test",
        "training_realism": {
            "crystal": "cdte110", "images": 30, "source": "test",
            "ranges": [{"name": "pixel_size_pm", "label": "pixel size (pm/px)", "p5": 10.0, "p95": 30.0, "n": 30},
                       {"name": "column_fwhm_a", "label": "column FWHM (Å)", "p5": 0.1, "p95": 0.2, "n": 30}]
        }
    });
    std::fs::write(model.with_extension("json"), card.to_string()).unwrap();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.model_path = model.display().to_string();
    h.state_mut().viewer.settings.auto_detect = false;
    h.state_mut().viewer.open(&png);
    settle_viewer(&mut h);
    let v = &h.state().viewer;
    assert!(
        v.current.as_ref().unwrap().pixel_size.is_none(),
        "PNG has no calibration"
    );
    let est = v.lattice_pixel_size().expect("estimated from the lattice");
    assert!((est / 0.016 - 1.0).abs() < 0.02, "{est}");
    assert_eq!(v.pixel_size().unwrap().nm_per_px, est);
    let out = v.unlike_training();
    assert!(out.iter().any(|o| o.name == "column_fwhm_a"), "{out:?}");
    assert!(!out.iter().any(|o| o.name == "pixel_size_pm"), "{out:?}");
    h.get_by_label_contains("Unlike the model's training data");
    // What the model knows, next to its name.
    h.get_by_label_contains("Trained on synthetic cdte110 frames, 10–30 pm/px");
    // A typed pixel size overrides the estimate.
    let key = png.display().to_string();
    h.state_mut().viewer.settings.pixel_sizes.insert(key, 0.02);
    h.step();
    assert_eq!(h.state().viewer.pixel_size().unwrap().nm_per_px, 0.02);
}

/// A frame of another structure (SrTiO3 [001], a perovskite) gets the "not the crystal"
/// banner; a CdTe [110] frame does not.
#[test]
fn viewer_says_when_a_frame_is_not_the_crystals_lattice() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
    if !dir.is_dir() {
        eprintln!("skipped: {} is absent", dir.display());
        return;
    }
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.auto_detect = false;
    h.state_mut()
        .viewer
        .open(&dir.join("SrTiO3_HAADF_TitanCubed_openNCEM.emi"));
    settle_viewer(&mut h);
    h.get_by_label_contains("Not a CdTe [110] lattice: only 36 %");
    h.state_mut()
        .viewer
        .open(&dir.join("CdTe110_tilt-GB_HAADF149_ingrained.dm3"));
    settle_viewer(&mut h);
    assert!(
        h.query_by_label_contains("Not a CdTe [110] lattice")
            .is_none(),
        "a CdTe frame flagged"
    );
}

/// A TIFF whose calibration is 50 % off its lattice: the Viewer detects at the lattice's pixel
/// size and says so; unticking "use the lattice's pixel size" goes back to the file's.
#[test]
fn viewer_uses_the_lattices_pixel_size_where_the_files_calibration_is_wrong() {
    use defect_detector::synth::{self, ImageFormat, SynthParams};
    let dir = tempfile::tempdir().unwrap();
    let p = SynthParams {
        width: 384,
        height: 384,
        pixel_size_pm: 16.0,
        ..Default::default()
    };
    let mut s = synth::generate(&p).unwrap();
    // The file claims 24 pm/px (the TIFF's calibration comes from the parameters).
    s.params.pixel_size_pm = 24.0;
    let tif = synth::write_outputs(&s, dir.path(), "frame", ImageFormat::Tiff16)
        .unwrap()
        .image;
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.auto_detect = false;
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    let v = &h.state().viewer;
    let file = v.current.as_ref().unwrap().pixel_size.unwrap().nm_per_px;
    assert!((file - 0.024).abs() < 1e-6, "{file}");
    let c = v.file_conflict().expect("the lattice contradicts the file");
    let px = v.pixel_size().unwrap().nm_per_px;
    assert_eq!(px, c.lattice.nm_per_px);
    assert!((px / 0.016 - 1.0).abs() < 0.03, "{px}");
    // A scale read from the lattice rests on the crystal: the model runs at each preset's.
    assert_eq!(v.model_scales().len(), 3);
    h.get_by_label("lattice scale: fuse all crystals' readings")
        .click();
    h.run_steps(2);
    assert_eq!(h.state().viewer.model_scales(), vec![1.0]);
    h.get_by_label("lattice scale: fuse all crystals' readings")
        .click();
    h.run_steps(2);
    assert_eq!(h.state().viewer.model_scales().len(), 3);
    h.get_by_label_contains("Calibration: the file says 24.00 pm/px");
    h.get_by_label_contains("from the lattice: the file's 24.00");
    h.get_by_label("use the lattice's pixel size").click();
    h.run_steps(2);
    let v = &h.state().viewer;
    assert!(!v.settings.check_file_calibration);
    assert!(v.file_conflict().is_none());
    assert_eq!(v.pixel_size().unwrap().nm_per_px, file);
    assert_eq!(v.model_scales(), vec![1.0]);
    assert!(
        h.query_by_label_contains("Calibration: the file says")
            .is_none(),
        "no banner once the file's calibration is chosen"
    );
}

#[test]
fn viewer_contrast_controls_change_the_display() {
    let (_dir, tif, _png) = two_images();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.model_path.clear();
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    let before = h.state().viewer.display;
    assert!(before.hi > before.lo);
    h.get_by_label("invert").click();
    h.step();
    assert!(h.state().viewer.display.invert);
    h.get_by_label("auto (percentiles)").click();
    h.step();
    assert!(!h.state().viewer.settings.auto_contrast);
}

#[test]
fn viewer_reports_a_corrupt_file_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.dm3");
    std::fs::write(&bad, b"not a dm3 file at all").unwrap();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.open(&bad);
    settle_viewer(&mut h);
    let e = h.state().viewer.error.clone().expect("an error message");
    assert!(e.contains("broken.dm3"), "{e}");
    assert!(h.state().viewer.current.is_none());
}

/// A calibrated 384² CdTe frame (16-bit TIFF, 16 pm/px) with one Σ3 twin and the default
/// point defects.
fn twin_frame() -> (tempfile::TempDir, std::path::PathBuf) {
    use defect_detector::synth::{self, ImageFormat, SynthParams, params::CountRange};
    let dir = tempfile::tempdir().unwrap();
    let mut p = SynthParams {
        width: 384,
        height: 384,
        pixel_size_pm: 16.0,
        ..Default::default()
    };
    p.defects.twin_boundaries = CountRange::new(1, 1);
    p.defects.tilt_boundaries = CountRange::new(0, 0);
    let s = synth::generate(&p).unwrap();
    let tif = synth::write_outputs(&s, dir.path(), "twin", ImageFormat::Tiff16)
        .unwrap()
        .image;
    (dir, tif)
}

#[test]
fn viewer_overlays_a_lattice_map_and_names_the_boundary_misorientation() {
    use defect_detector::lattice::render::MapKind;
    let (dir, tif) = twin_frame();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.model_path.clear();
    h.state_mut().viewer.settings.auto_detect = false;
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    assert!(!h.state().viewer.canvas.has_layer());
    h.state_mut().viewer.settings.lattice_map = Some(MapKind::Discontinuity);
    h.state_mut().viewer.request_lattice();
    settle_viewer(&mut h);
    let v = &h.state().viewer;
    let l = v
        .lattice
        .result
        .as_ref()
        .expect("the lattice analysis ran for the map");
    assert!(v.canvas.has_layer(), "the discontinuity map is drawn");
    // What the analysis saw is named beside the map selector.
    let summary = crate::app::viewer_tab::lattice_summary(l);
    assert!(summary.contains("visibility"), "{summary}");
    assert!(
        h.query_by_label(&summary).is_some(),
        "{summary} is not shown"
    );
    // The twin is traced, and hovering its box would name the misorientation.
    let b = l.boundaries.first().expect("the twin boundary");
    assert!(v.lattice_boundary_of(&b.obb).is_some());
    // Choosing no map removes the layer.
    h.state_mut().viewer.settings.lattice_map = None;
    h.step();
    assert!(!h.state().viewer.canvas.has_layer());
    // A new frame without a lattice never shows the previous frame's map.
    h.state_mut().viewer.settings.lattice_map = Some(MapKind::Discontinuity);
    h.step();
    assert!(h.state().viewer.canvas.has_layer());
    let flat = dir.path().join("flat.png");
    image::GrayImage::from_pixel(96, 96, image::Luma([128u8]))
        .save(&flat)
        .unwrap();
    h.state_mut().viewer.open(&flat);
    settle_viewer(&mut h);
    h.step();
    assert!(
        !h.state().viewer.canvas.has_layer(),
        "the previous frame's map stays drawn over a new one"
    );
}

#[test]
fn label_with_lattice_analysis_proposes_editable_boxes_in_one_undo_step() {
    let (dir, tif) = twin_frame();
    let labels = dir.path().join("labels");
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.model_path.clear();
    h.state_mut().viewer.settings.auto_detect = false;
    h.state_mut().viewer.settings.method = defect_detector::detect::combine::DetectMethod::Model;
    h.state_mut().viewer.settings.labels_dir = labels.display().to_string();
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    h.state_mut().viewer.labels.enabled = true;
    h.step();
    assert!(h.state().viewer.labels.annot.boxes.is_empty());
    h.get_by_label("Label with lattice analysis").click();
    h.step();
    settle_viewer(&mut h);
    h.step();
    let boxes = &h.state().viewer.labels.annot.boxes;
    assert!(
        boxes.iter().any(|b| b.class == 0),
        "the twin boundary is proposed: {boxes:?}"
    );
    // One undo takes every proposal back.
    h.state_mut().viewer.labels.annot.undo();
    assert!(h.state().viewer.labels.annot.boxes.is_empty());
}

#[test]
fn the_question_mark_lists_the_shortcuts_of_the_tab() {
    let mut h = harness();
    h.state_mut().tab = Tab::Review;
    h.step();
    h.get_by_label("?").click();
    h.run_steps(2);
    assert!(h.state().show_shortcuts);
    h.get_by_label("mark verified / not verified");
    h.get_by_label("undo / redo (a whole drag is one step)");
    // Every tab has a list.
    for t in Tab::ALL {
        assert!(!shortcuts(t).is_empty());
    }
}

#[test]
fn typing_a_pixel_size_for_an_uncalibrated_file_sets_it() {
    let (_dir, _tif, png) = two_images();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.model_path.clear();
    h.state_mut().viewer.settings.auto_detect = false;
    h.state_mut().viewer.open(&png);
    settle_viewer(&mut h);
    assert!(
        h.state()
            .viewer
            .current
            .as_ref()
            .unwrap()
            .pixel_size
            .is_none()
    );
    // The pixel-size field reads "auto" while nothing is typed (not "0.0000 nm/px"), and is
    // clicked into and typed in as a user would.
    let field = h
        .get_all_by_role(egui::accesskit::Role::SpinButton)
        .find(|n| n.value().is_some_and(|v| v == "auto"))
        .expect("the pixel-size field, reading auto");
    field.click();
    h.run_steps(2);
    let field = h
        .get_all_by_role(egui::accesskit::Role::TextInput)
        .next()
        .expect("the field in edit mode");
    field.type_text("0.0164");
    h.run_steps(1);
    h.key_press(egui::Key::Enter);
    h.run_steps(2);
    let key = png.display().to_string();
    let typed = h.state().viewer.settings.pixel_sizes.get(&key).copied();
    assert_eq!(typed, Some(0.0164));
    assert_eq!(h.state().viewer.pixel_size().unwrap().nm_per_px, 0.0164);
    assert!(
        h.get_all_by_role(egui::accesskit::Role::SpinButton)
            .any(|n| n.value().is_some_and(|v| v == "0.01640 nm/px")),
        "the typed pixel size with its unit"
    );
}

#[test]
fn viewer_docks_the_lattice_detections_without_a_model_and_d_hides_the_panel() {
    let (_dir, tif) = twin_frame();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.model_path.clear();
    h.state_mut().viewer.settings.auto_detect = false;
    h.state_mut().viewer.settings.method = defect_detector::detect::combine::DetectMethod::Lattice;
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    // The panel is docked beside the image, and Detect works with no model for the lattice.
    h.get_by_label("Detections");
    h.get_by_label("Detect").click();
    h.step();
    settle_viewer(&mut h);
    h.step();
    let v = &h.state().viewer;
    assert!(
        v.filtered.iter().any(|d| d.class == 0),
        "the twin boundary is listed: {:?}",
        v.filtered
    );
    h.get_by_label("Save detections");
    assert!(
        h.query_by_label_contains("lattice analysis").is_some(),
        "the panel names the detector"
    );
    // D (no text field focused) hides the panel; the setting is remembered.
    h.key_press(egui::Key::D);
    h.step();
    assert!(!h.state().viewer.settings.show_detections_panel);
    assert!(h.query_by_label("Save detections").is_none());
}

#[test]
fn fitting_point_boxes_to_the_lattice_can_be_switched_off() {
    let (_dir, tif) = twin_frame();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.auto_detect = false;
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    h.step();
    assert!(h.state().viewer.settings.fit_cells, "on by default");
    h.get_by_label("fit point boxes to the lattice").click();
    h.step();
    assert!(!h.state().viewer.settings.fit_cells);
}

#[test]
fn test_time_augmentation_can_be_switched_on_and_reruns_the_model() {
    let (_dir, tif) = twin_frame();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    let once = h
        .state()
        .viewer
        .result
        .as_ref()
        .map(|r| r.tiles)
        .expect("detected");
    assert!(!h.state().viewer.settings.tta, "off by default");
    h.get_by_label("test-time augmentation (8 model runs)")
        .click();
    h.step();
    assert!(h.state().viewer.settings.tta);
    settle_viewer(&mut h);
    let r = h.state().viewer.result.as_ref().expect("detected again");
    // Eight copies ran; the sliders fuse their boxes again at each step.
    assert_eq!(r.tiles, 8 * once);
    // The panel counts model runs, not tiles: the frame ran whole, eight times.
    h.step();
    let runs = format!("· {} model runs", 8 * once);
    assert!(h.query_by_label_contains(&runs).is_some(), "{runs}");
}

/// Adds a model candidate to the Viewer's current result, as if the model had drawn it, and
/// lets the Viewer filter again.
fn add_model_candidate(
    h: &mut Harness<'static, DefectApp>,
    class: usize,
    confidence: f32,
    obb: defect_detector::geometry::OrientedBox,
) {
    let name = defect_detector::classes::DefectClass::from_id(class).expect("a class id");
    let result = h.state_mut().viewer.result.as_mut().expect("a result");
    result.candidates.push(defect_detector::detect::Detection {
        class,
        class_name: name.name().into(),
        confidence,
        obb,
        source: defect_detector::detect::DetectionSource::Model,
    });
    h.step();
}

/// Whether the Viewer lists a box of `class` at exactly `confidence`.
fn listed(h: &Harness<'static, DefectApp>, class: usize, confidence: f32) -> bool {
    h.state()
        .viewer
        .filtered
        .iter()
        .any(|d| d.class == class && d.confidence == confidence)
}

#[test]
fn point_boxes_on_a_boundary_are_dropped_unless_asked_to_keep_them() {
    let (_dir, tif) = twin_frame();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    let gb = h
        .state()
        .viewer
        .filtered
        .iter()
        .find(|d| d.class == 0)
        .cloned()
        .expect("the twin boundary is found");
    // A vacancy candidate on the boundary's centre line, as a disordered core can draw one.
    let on_core = defect_detector::geometry::OrientedBox::new(gb.obb.cx, gb.obb.cy, 12.0, 8.0, 0.0);
    add_model_candidate(&mut h, 1, 0.95, on_core);
    assert!(
        h.state().viewer.settings.points_off_boundaries,
        "on by default"
    );
    assert!(
        !listed(&h, 1, 0.95),
        "a point box on the boundary is not a point defect"
    );
    h.get_by_label("no point boxes on boundaries").click();
    h.run_steps(2);
    assert!(!h.state().viewer.settings.points_off_boundaries);
    assert!(listed(&h, 1, 0.95), "kept when asked");
    h.get_by_label("no point boxes on boundaries").click();
    h.run_steps(2);
    assert!(!listed(&h, 1, 0.95), "dropped again");
}

#[test]
fn point_boxes_across_the_frames_edge_are_dropped_unless_asked_to_keep_them() {
    let (_dir, tif) = twin_frame();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    // Judge the box as placed: no fit to the lattice, no boundary rule.
    h.state_mut().viewer.settings.fit_cells = false;
    h.state_mut().viewer.settings.points_off_boundaries = false;
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    let height = h.state().viewer.current.as_ref().unwrap().image.height as f64;
    // An interstitial candidate whose box overhangs the left edge by 2 px.
    let at_edge = defect_detector::geometry::OrientedBox::new(4.0, height / 2.0, 12.0, 8.0, 0.0);
    add_model_candidate(&mut h, 2, 0.93, at_edge);
    assert!(
        h.state().viewer.settings.points_inside_frame,
        "on by default"
    );
    assert!(
        !listed(&h, 2, 0.93),
        "half its neighbours are outside the field"
    );
    // Said, not hidden silently.
    h.get_by_label_contains("1 point box reaching past the frame's edge not shown");
    h.get_by_label("no point boxes across the frame's edge")
        .click();
    h.run_steps(2);
    assert!(!h.state().viewer.settings.points_inside_frame);
    assert!(listed(&h, 2, 0.93), "kept when asked");
    assert!(
        h.query_by_label_contains("reaching past the frame's edge not shown")
            .is_none()
    );
}

/// The Dataset tab's "as the model is fed" is `export --resample-to-pm`: ticked, the export it
/// starts resamples every frame to the model pixel size shown beside it.
#[test]
fn dataset_tab_exports_frames_as_the_model_is_fed_them() {
    let mut h = harness();
    h.state_mut().tab = Tab::Dataset;
    // The examples render in the background (a spinner): step, do not wait for calm.
    h.run_steps(3);
    assert_eq!(h.state().dataset.settings.config().resample_to_pm, None);
    h.get_by_label("as the model is fed").click();
    h.run_steps(3);
    let cfg = h.state().dataset.settings.config();
    assert_eq!(cfg.resample_to_pm, Some(16.0));
    cfg.validate().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        h.query_all_by_label_contains("model pm/px")
            .next()
            .is_some()
    );
}

/// A 256² TIFF calibrated at 24 pm/px, inside the shipped model's 6-30 pm training span.
fn frame_at_24_pm() -> (tempfile::TempDir, std::path::PathBuf) {
    use defect_detector::synth::{self, ImageFormat, SynthParams};
    let dir = tempfile::tempdir().unwrap();
    let p = SynthParams {
        width: 256,
        height: 256,
        pixel_size_pm: 24.0,
        ..Default::default()
    };
    let s = synth::generate(&p).unwrap();
    let tif = synth::write_outputs(&s, dir.path(), "frame", ImageFormat::Tiff16)
        .unwrap()
        .image;
    (dir, tif)
}

/// A frame calibrated at 24 pm/px, inside the shipped model's 6-30 pm training span: the
/// Viewer runs the model at its 16 pm/px and on the frame as sampled, fuses the two and says
/// so; unticking the hedge runs it once.
#[test]
fn viewer_also_runs_a_frame_as_sampled_where_the_model_trained_at_its_pixel_size() {
    let (_dir, tif) = frame_at_24_pm();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    let tiles = |h: &Harness<'static, DefectApp>| {
        h.state()
            .viewer
            .result
            .as_ref()
            .map(|r| r.tiles)
            .expect("detected")
    };
    assert!(
        h.state().viewer.settings.hedge_own_sampling,
        "on by default"
    );
    assert_eq!(h.state().viewer.model_scales().len(), 2);
    assert_eq!(tiles(&h), 2);
    h.step();
    assert!(h.query_by_label_contains("· and as sampled").is_some());
    h.get_by_label("also run the frame as sampled").click();
    h.step();
    assert!(!h.state().viewer.settings.hedge_own_sampling);
    settle_viewer(&mut h);
    assert_eq!(tiles(&h), 1);
    assert_eq!(h.state().viewer.model_scales(), vec![1.0]);
}

/// Under TTA and the as-sampled hedge the Viewer draws the boxes `detect` writes for the same
/// frame and settings: both fuse every copy's boxes at the shown threshold
/// (`FrameRuns::boxes`), the Viewer again at each slider step.
#[test]
fn viewer_fuses_copies_as_detect_does() {
    use defect_detector::detect::combine::DetectMethod;
    use defect_detector::frame::{LatticeUse, detect_frame};
    let (_dir, tif) = frame_at_24_pm();
    let mut h = harness();
    h.state_mut().tab = Tab::Viewer;
    h.state_mut().viewer.settings.method = DetectMethod::Model;
    h.state_mut().viewer.settings.tta = true;
    h.state_mut().viewer.open(&tif);
    settle_viewer(&mut h);
    let det = defect_detector::detect::Detector::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cdte-yolo11n-obb.onnx"),
        &defect_detector::detect::DetectorOptions {
            device: defect_detector::detect::Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap();
    let stem = defect_detector::formats::load(&tif).unwrap();
    let crystal = h.state().viewer.settings.crystal.spec();
    let lattice = LatticeUse {
        method: DetectMethod::Model,
        fit_cells: Some(defect_detector::lattice::cells::CellFitParams::for_crystal(
            &crystal,
        )),
        crystal,
        tta: Some(defect_detector::detect::tta::default_transforms()),
        ..Default::default()
    };
    // Class, confidence and centre, in a fixed order: what the two lists must share.
    let keys = |dets: &[defect_detector::detect::Detection]| {
        let mut v: Vec<(usize, i64, i64, i64)> = dets
            .iter()
            .map(|d| {
                (
                    d.class,
                    (d.confidence * 1e4).round() as i64,
                    d.obb.cx.round() as i64,
                    d.obb.cy.round() as i64,
                )
            })
            .collect();
        v.sort();
        v
    };
    for conf in [0.25f32, 0.5, 0.1] {
        h.state_mut().viewer.settings.conf = conf;
        h.step();
        h.step();
        let f = detect_frame(
            &det,
            &stem.image,
            stem.pixel_size,
            &lattice,
            &defect_detector::detect::DetectOptions::default(),
            conf,
            h.state().viewer.settings.iou,
        )
        .unwrap();
        assert_eq!(f.result.tiles, 16, "8 copies at 2 scales");
        let cli = keys(&f.detections);
        assert!(!cli.is_empty(), "the frame's defects are found at {conf}");
        assert_eq!(
            keys(&h.state().viewer.filtered),
            cli,
            "at confidence {conf}"
        );
    }
}
