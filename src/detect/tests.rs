//! Tests that run real ONNX models (the tiny ones in `tests/data`, built by
//! `tests/data/make_test_models.py`). They need the ONNX Runtime library; when it cannot be
//! found they fail with the loader's message, which says how to install it.

use super::*;
use serde_json::json;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn tiny() -> Detector {
    let opts = DetectorOptions {
        device: Device::Cpu,
        threads: 1,
        runtime_library: None,
        ..Default::default()
    };
    Detector::load(&data("tiny_obb.onnx"), &opts).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A dark image with bright square blocks `[x0, x1) x [y0, y1)`.
fn blocks(w: usize, h: usize, rects: &[[usize; 4]]) -> ImageF32 {
    let mut img = ImageF32::new(w, h);
    for r in rects {
        for y in r[2]..r[3] {
            for x in r[0]..r[1] {
                img.data[y * w + x] = 1000.0;
            }
        }
    }
    img
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-3
}

#[test]
fn tiny_model_metadata_and_provider() {
    let d = tiny();
    let i = d.info();
    assert_eq!(i.names, vec!["grain_boundary", "vacancy", "interstitial"]);
    assert_eq!((i.imgsz, i.num_anchors), (64, 84));
    assert_eq!(i.strides, vec![8, 16, 32]);
    assert_eq!(i.nm_per_px, Some(0.05));
    assert_eq!(i.task.as_deref(), Some("obb"));
    assert_eq!(d.provider(), model::CPU_PROVIDER);
}

#[test]
fn auto_device_reports_the_provider_that_ran() {
    let auto = Detector::load(&data("tiny_obb.onnx"), &DetectorOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Auto runs on CUDA exactly when a CUDA session can start here; otherwise on the CPU.
    let cuda = Detector::load(
        &data("tiny_obb.onnx"),
        &DetectorOptions {
            device: Device::Cuda,
            ..Default::default()
        },
    );
    let expected = match &cuda {
        Ok(d) => {
            assert_eq!(d.provider(), model::CUDA_PROVIDER);
            model::CUDA_PROVIDER
        }
        Err(e) => {
            assert!(format!("{e:#}").contains("CUDA"), "{e:#}");
            model::CPU_PROVIDER
        }
    };
    assert_eq!(auto.provider(), expected);
    // And whichever it is, it runs the model.
    let img = blocks(64, 64, &[[40, 48, 24, 32]]);
    let r = auto.detect(&img, None, &DetectOptions::default()).unwrap();
    assert_eq!(r.provider, expected);
}

#[test]
fn bad_models_are_refused_with_reasons() {
    let opts = DetectorOptions {
        device: Device::Cpu,
        ..Default::default()
    };
    let err = |p: &std::path::Path| match Detector::load(p, &opts) {
        Ok(_) => panic!("{} was accepted", p.display()),
        Err(e) => format!("{e:#}"),
    };
    let e = err(&data("end2end_1x300x7.onnx"));
    assert!(
        e.contains("end-to-end") && e.contains("end2end_1x300x7.onnx"),
        "{e}"
    );
    let e = err(&data("no_angle.onnx"));
    assert!(
        e.contains("'detect' model") || e.contains("no angle"),
        "{e}"
    );
    let e = err(&data("does_not_exist.onnx"));
    assert!(
        e.contains("not found") && e.contains("does_not_exist.onnx"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is not a protobuf").unwrap();
    let e = err(&junk);
    assert!(e.contains("junk.onnx") && e.contains("ONNX"), "{e}");
}

#[test]
fn one_block_gives_one_detection_at_the_right_place() {
    let d = tiny();
    let img = blocks(64, 64, &[[40, 48, 24, 32]]);
    let r = d.detect(&img, None, &DetectOptions::default()).unwrap();
    assert_eq!(r.tiles, 1);
    assert!(
        r.candidates
            .windows(2)
            .all(|w| w[0].confidence >= w[1].confidence)
    );
    let f = filter(&r.candidates, 0.3, 0.7);
    assert_eq!(f.len(), 1, "{f:?}");
    let det = &f[0];
    assert_eq!(&*det.class_name, "interstitial");
    assert!(det.confidence > 0.99);
    assert!(close(det.obb.cx, 44.0) && close(det.obb.cy, 28.0));
    assert!(close(det.obb.w, 6.0) && close(det.obb.h, 4.0), "{det:?}");
    // The vacancy-level cell covering a quarter of the block is a candidate at 0.25.
    assert!(
        r.candidates
            .iter()
            .any(|c| c.class == 1 && (c.confidence - 0.25).abs() < 1e-6)
    );
}

#[test]
fn a_block_on_a_tile_seam_is_found_once() {
    let d = tiny();
    // 96 px wide: tiles at x = 0 and 32 overlap on [32, 64); the block sits in the overlap.
    for x0 in [40usize, 48] {
        let img = blocks(96, 64, &[[x0, x0 + 8, 24, 32]]);
        let r = d.detect(&img, None, &DetectOptions::default()).unwrap();
        assert_eq!(r.tiles, 2);
        let strong: Vec<&Detection> = r
            .candidates
            .iter()
            .filter(|c| c.class == 2 && c.confidence > 0.9)
            .collect();
        assert_eq!(strong.len(), 1, "x0 {x0}: {strong:?}");
        let f = filter(&r.candidates, 0.3, 0.7);
        assert_eq!(f.len(), 1);
        assert!(close(f[0].obb.cx, x0 as f64 + 4.0) && close(f[0].obb.cy, 28.0));
    }
}

#[test]
fn small_images_are_letterboxed_and_mapped_back() {
    let d = tiny();
    // 40 x 40 padded to 64: 12 pixels each side, so image [4, 12) lands on model cell [16, 24).
    let img = blocks(40, 40, &[[4, 12, 4, 12]]);
    let r = d.detect(&img, None, &DetectOptions::default()).unwrap();
    // The transparent model scores the grey padding (114/255) too, so filter above it.
    let f = filter(&r.candidates, 0.5, 0.7);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        close(f[0].obb.cx, 8.0) && close(f[0].obb.cy, 8.0),
        "{:?}",
        f[0]
    );
    // The padding (114/255) itself is not a detection above 0.5.
    assert!(r.candidates.iter().filter(|c| c.confidence > 0.5).count() == 1);
}

#[test]
fn calibrated_images_are_resampled_to_the_model_pixel_size() {
    let d = tiny();
    // 0.025 nm/px against the model's 0.05: halved to 64 x 64.
    let img = blocks(128, 128, &[[80, 96, 48, 64]]);
    let px = Some(PixelSize { nm_per_px: 0.025 });
    let r = d.detect(&img, px, &DetectOptions::default()).unwrap();
    assert!((r.scale - 0.5).abs() < 1e-12);
    let f = filter(&r.candidates, 0.3, 0.7);
    assert_eq!(f.len(), 1, "{f:?}");
    let b = f[0].obb;
    assert!(close(b.cx, 88.0) && close(b.cy, 56.0), "{b:?}");
    assert!(
        close(b.w.max(b.h), 12.0) && close(b.w.min(b.h), 8.0),
        "{b:?}"
    );
    // Without calibration the same image is tiled at its own scale instead.
    let r = d.detect(&img, None, &DetectOptions::default()).unwrap();
    assert_eq!((r.scale, r.tiles), (1.0, 9));
}

#[test]
fn ultralytics_val_mode_resizes_the_long_side() {
    let d = tiny();
    let mut img = blocks(128, 128, &[[80, 96, 48, 64]]);
    for v in &mut img.data {
        *v = if *v > 0.0 { 255.0 } else { 0.0 };
    }
    let r = d
        .detect(&img, None, &DetectOptions::ultralytics_val())
        .unwrap();
    assert_eq!(r.tiles, 1);
    let f = filter(&r.candidates, 0.3, 0.7);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(close(f[0].obb.cx, 88.0) && close(f[0].obb.cy, 56.0));
}

#[test]
fn empty_images_and_cancellation_are_errors_not_panics() {
    let d = tiny();
    assert!(
        d.detect(&ImageF32::new(0, 0), None, &DetectOptions::default())
            .is_err()
    );
    let ctl = crate::jobs::JobControl::detached();
    ctl.cancel();
    let e = d
        .detect_with_control(
            &ImageF32::new(64, 64),
            None,
            &DetectOptions::default(),
            Some(&ctl),
        )
        .unwrap_err();
    assert!(crate::jobs::is_cancelled(&e));
}

#[test]
fn bench_reports_medians_and_ratio() {
    let v = bench::bench_detect(&data("tiny_obb.onnx"), 64, 3).unwrap();
    assert_eq!(v["job"], "detect");
    assert!(v["session_run_ms"].as_f64().unwrap() > 0.0);
    assert!(v["ratio"].as_f64().unwrap().is_finite());
    assert!(v["ratio_paired_median"].as_f64().unwrap() > 0.0);
    assert_eq!(v["tiles"], 1);
    // The two parts of pre-processing are reported on their own.
    let st = &v["stages_ms"];
    let (w, f) = (
        st["preprocess_window"].as_f64().unwrap(),
        st["preprocess_fill"].as_f64().unwrap(),
    );
    assert!(w > 0.0 && f > 0.0, "{st}");
    assert_eq!(v["ort_spinning"], true);
    // Test-time augmentation: eight copies, timed against the one pass.
    assert_eq!(v["tta"]["copies"], 8);
    assert!(v["tta"]["end_to_end_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["tta"]["over_one_pass_paired_median"].as_f64().unwrap() > 1.0,
        "{v}"
    );
    // A lattice-scaled frame: three readings, timed against the one pass.
    assert_eq!(
        v["lattice_scale_hedge"]["scales"].as_array().unwrap().len(),
        3
    );
    assert!(
        v["lattice_scale_hedge"]["over_one_pass_paired_median"]
            .as_f64()
            .unwrap()
            > 1.0,
        "{v}"
    );
    assert!(
        v["tiled"].is_null(),
        "a fixed-size model has no one-pass comparison"
    );
    // A dynamic-input model: one pass over a 160 px frame against its tiles of 64.
    let v = bench::bench_detect(&data("tiny_dynamic.onnx"), 160, 3).unwrap();
    assert_eq!(
        (v["tiles"].clone(), v["input"].clone()),
        (1.into(), json!([160, 160]))
    );
    assert!(v["tiled"]["tiles"].as_u64().unwrap() > 1, "{v}");
    assert!(
        v["tiled"]["speedup_one_pass"].as_f64().unwrap() > 0.0,
        "{v}"
    );
}

#[test]
fn overview_images_are_refused_not_resampled_without_bound() {
    let d = tiny();
    let img = blocks(64, 64, &[[40, 48, 24, 32]]);
    // 5 nm/px against the model's 0.05: a 100x enlargement (6400x6400 here, 65 GB for a
    // 512 px frame against a 0.02 nm/px model) used to be attempted and abort the process.
    for nm in [5.0, 0.5, 1e300] {
        let e = d
            .detect(
                &img,
                Some(PixelSize { nm_per_px: nm }),
                &DetectOptions::default(),
            )
            .expect_err("a coarse image was accepted");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("too coarse")
                && msg.contains(&format!("{nm} nm"))
                && msg.contains("0.05 nm"),
            "{msg}"
        );
    }
    // Within the bound the image is still resampled and detected.
    let r = d
        .detect(
            &img,
            Some(PixelSize { nm_per_px: 0.1 }),
            &DetectOptions::default(),
        )
        .unwrap();
    assert!(
        (r.scale - 2.0).abs() < 1e-9 && r.tiles > 1,
        "{} {}",
        r.scale,
        r.tiles
    );
}

#[test]
fn resampling_refuses_absurd_working_sizes() {
    let big = ImageF32::new(8192, 8192);
    assert!(matches!(
        check_scale(&big, 0.2, 0.1),
        Err(ScaleError::TooLarge { .. })
    ));
    // Shrinking is always fine, whatever the size.
    assert_eq!(check_scale(&big, 0.05, 0.1), Ok(0.5));
    let small = ImageF32::new(512, 512);
    assert_eq!(check_scale(&small, 0.16, 0.02).map(|f| f.round()), Ok(8.0));
    assert!(matches!(
        check_scale(&small, 5.0, 0.02),
        Err(ScaleError::TooCoarse { .. })
    ));
}

#[test]
fn a_model_emitting_nan_boxes_fails_instead_of_giving_nan_detections() {
    let opts = DetectorOptions {
        device: Device::Cpu,
        threads: 1,
        ..Default::default()
    };
    let d = Detector::load(&data("nan_boxes.onnx"), &opts).unwrap_or_else(|e| panic!("{e:#}"));
    let img = blocks(64, 64, &[[40, 48, 24, 32]]);
    let e = d
        .detect(&img, None, &DetectOptions::default())
        .expect_err("NaN boxes were accepted");
    assert!(format!("{e:#}").contains("non-finite"), "{e:#}");
}

#[test]
fn a_model_with_a_uint8_input_is_refused_at_load() {
    let opts = DetectorOptions {
        device: Device::Cpu,
        ..Default::default()
    };
    let e = match Detector::load(&data("uint8_input.onnx"), &opts) {
        Ok(_) => panic!("a uint8 input was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("not float32") && e.contains("uint8_input.onnx"),
        "{e}"
    );
}

fn tiny_dynamic() -> Detector {
    let opts = DetectorOptions {
        device: Device::Cpu,
        threads: 1,
        ..Default::default()
    };
    Detector::load(&data("tiny_dynamic.onnx"), &opts).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn a_dynamic_input_model_sees_the_whole_frame_in_one_pass() {
    let d = tiny_dynamic();
    assert!(d.info().dynamic_input);
    assert!(!tiny().info().dynamic_input);
    // 150 x 100 runs as one 160 x 128 input with (5, 14) px of centred padding; the block
    // fills input cell (2, 1) exactly, whose anchor sits at (80, 48) in the input.
    let img = blocks(150, 100, &[[59, 91, 18, 50]]);
    let opts = DetectOptions {
        match_model_scale: false,
        ..Default::default()
    };
    let r = d.detect(&img, None, &opts).unwrap();
    assert_eq!(r.tiles, 1);
    let best = &r.candidates[0];
    assert_eq!(best.class_name.as_ref(), "grain_boundary");
    assert!(best.confidence > 0.99, "{}", best.confidence);
    assert!(
        close(best.obb.cx, 75.0) && close(best.obb.cy, 34.0),
        "{:?}",
        best.obb
    );
    // Asked to tile, the same model runs tiles of its training size (64) instead, and the
    // block is still found where it is.
    let tiled = d
        .detect(
            &img,
            None,
            &DetectOptions {
                one_pass: false,
                ..opts
            },
        )
        .unwrap();
    assert!(tiled.tiles > 1, "{}", tiled.tiles);
    // (Cells of 32 then straddle the block: weaker scores, centres off by up to 16 px.)
    let b = &tiled.candidates[0];
    assert!(
        (b.obb.cx - 75.0).abs() <= 16.0 && (b.obb.cy - 34.0).abs() <= 16.0,
        "{:?}",
        b.obb
    );
    // Beyond the one-pass limit the frame is tiled.
    let wide = blocks(pre::MAX_ONE_PASS + 1, 40, &[]);
    assert!(d.detect(&wide, None, &opts).unwrap().tiles > 1);
}

#[test]
fn a_fixed_size_model_refuses_other_input_sizes() {
    let e = tiny()
        .run_sized(96, 64, |_| (), |_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit this model (64x64)"), "{e}");
    let e = tiny_dynamic()
        .run_sized(100, 64, |_| (), |_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("any multiple of 32"), "{e}");
}

/// The test model, a frame with one bright block centred at (75, 34), options that run the
/// frame at its own scale, and the model's class names: what the TTA mapping tests share.
fn one_block_frame() -> (Detector, ImageF32, DetectOptions, Vec<String>) {
    let d = tiny_dynamic();
    let img = blocks(150, 100, &[[59, 91, 18, 50]]);
    let opts = DetectOptions {
        match_model_scale: false,
        ..Default::default()
    };
    let names = d.class_names().to_vec();
    (d, img, opts, names)
}

#[test]
fn copies_run_at_other_scales_map_back_to_the_frame() {
    let (d, img, opts, names) = one_block_frame();
    let one = [crate::geometry::Dihedral::IDENTITY];
    for scales in [&[2.0][..], &[1.0, 2.0], &[0.5, 1.0, 2.0]] {
        let plan = tta::TtaPlan {
            scales,
            ..tta::TtaPlan::at_threshold(&one, 0.25, DEFAULT_IOU, &names)
        };
        let f = tta::detect_tta(&d, &img, None, &opts, &plan, None).unwrap();
        let best = &f.detections[0];
        // The block's centre, wherever the copy's pixels were.
        assert!(
            (best.obb.cx - 75.0).abs() <= 2.0 && (best.obb.cy - 34.0).abs() <= 2.0,
            "{scales:?}: {:?}",
            f.detections
        );
    }
    // A calibrated frame is scaled through its pixel size, in one resampling; boxes come back
    // in the frame's pixels all the same.
    let model_nm = d.info().nm_per_px;
    let plan = tta::TtaPlan {
        scales: &[1.0, 2.0],
        ..tta::TtaPlan::at_threshold(&one, 0.25, DEFAULT_IOU, &names)
    };
    let px = model_nm.map(|nm_per_px| crate::raster::PixelSize { nm_per_px });
    let f = tta::detect_tta(&d, &img, px, &DetectOptions::default(), &plan, None).unwrap();
    let best = &f.detections[0];
    assert!(
        (best.obb.cx - 75.0).abs() <= 2.0 && (best.obb.cy - 34.0).abs() <= 2.0,
        "{:?}",
        f.detections
    );
    // Scales outside 1/4..4 are refused.
    let bad = tta::TtaPlan {
        scales: &[8.0],
        ..tta::TtaPlan::at_threshold(&one, 0.25, DEFAULT_IOU, &names)
    };
    let e = tta::detect_tta(&d, &img, None, &opts, &bad, None).unwrap_err();
    assert!(e.to_string().contains("between 0.25 and 4"), "{e}");
}

#[test]
fn copies_run_on_cut_frames_map_back_to_the_frame() {
    let (d, img, opts, names) = one_block_frame();
    // The test model is no crystal detector: its boxes are not symmetric under turns.
    let one = [crate::geometry::Dihedral::IDENTITY];
    let plan = tta::TtaPlan {
        cuts: &[8],
        ..tta::TtaPlan::at_threshold(&one, 0.25, DEFAULT_IOU, &names)
    };
    let f = tta::detect_tta(&d, &img, None, &opts, &plan, None).unwrap();
    // The same boxes as the model draws on the cut frame itself, moved back by the cut.
    let cut = img.crop(8, 8, 142, 92);
    let own = d.detect(&cut, None, &opts).unwrap();
    let mut want = post::filter_with(&own.candidates, &plan.filter);
    want.retain(|x| x.confidence > 0.25);
    assert!(!want.is_empty());
    assert_eq!(f.detections.len(), want.len(), "{:?}", f.detections);
    for w in &want {
        assert!(
            f.detections.iter().any(|x| x.class == w.class
                && (x.confidence - w.confidence).abs() < 1e-6
                && (x.obb.cx - (w.obb.cx + 8.0)).abs() < 1e-6
                && (x.obb.cy - (w.obb.cy + 8.0)).abs() < 1e-6),
            "{w:?} not in {:?}",
            f.detections
        );
    }
    // A cut that leaves less than half the frame is refused.
    let bad = tta::TtaPlan {
        cuts: &[60],
        ..plan.clone()
    };
    let e = tta::detect_tta(&d, &img, None, &opts, &bad, None).unwrap_err();
    assert!(e.to_string().contains("leaves too little"), "{e}");
}
