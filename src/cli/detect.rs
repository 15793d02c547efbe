//! `detect`: batch detection over images and folders (model, lattice analysis or both) and
//! the per-image JSON/CSV/YOLO-OBB results. Argument parsing and reporting only: the work is
//! `defect_detector::frame::detect_frame`.

use super::runtime_args::RuntimeArgs;
use anyhow::Context;
use clap::Args;
use defect_detector::detect::export::{ExportMeta, class_counts, write_all};
use defect_detector::detect::merge::{BatchSummary, ImageEntry, SUMMARY_JSON, Shard, merge_shards};
use defect_detector::detect::{
    DEFAULT_CONF, DEFAULT_IOU, DEFAULT_TILE_OVERLAP, DetectOptions, Detector, Fit,
    load_image_for_detection,
};
use defect_detector::formats;
use defect_detector::frame::{Calibration, detect_frame};
use defect_detector::raster::PixelSize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct DetectArgs {
    /// YOLO-OBB model exported to ONNX (default: the first model in `models/`, the shipped one).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Images or folders of images.
    #[arg(required_unless_present = "merge")]
    inputs: Vec<PathBuf>,
    /// Process only part i of n of the sorted inputs (index % n == i), e.g. one task of a
    /// SLURM array; needs --out. Join the parts with --merge.
    #[arg(long, requires = "out")]
    shard: Option<Shard>,
    /// Join the --out folders of all shards: --merge OUT SHARD_DIR...
    #[arg(long, num_args = 2.., value_name = "DIR", conflicts_with_all = ["model", "shard", "out"])]
    merge: Option<Vec<PathBuf>>,
    /// Write results here instead of next to each image.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Confidence threshold.
    #[arg(long, default_value_t = DEFAULT_CONF)]
    conf: f32,
    /// ProbIoU threshold of the rotated NMS.
    #[arg(long, default_value_t = DEFAULT_IOU)]
    iou: f64,
    /// Tile overlap, as a fraction of the model input, for images larger than it.
    #[arg(long, default_value_t = DEFAULT_TILE_OVERLAP)]
    overlap: f64,
    /// Cut frames into tiles of the model's training size even when the model takes whole
    /// frames (a dynamic-input export runs frames up to 1024 px in one pass otherwise).
    #[arg(long)]
    tiles: bool,
    /// Pixel size of the images in nm (resamples to the model's pixel size when it has one).
    #[arg(long)]
    nm_per_px: Option<f64>,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    calibration: super::calibration_args::CalibrationArgs,
    /// Which detector: the trained model, the training-free lattice analysis (grain
    /// boundaries and point defects from the crystal itself, `--crystal`), or both: the
    /// model's point defects and the boundaries of both (agreement raises the confidence; a
    /// boundary only the lattice sees enters at half its score where the model drew at least a
    /// faint box along it, of 0.03 or more, and not at all where it drew none; each detection
    /// records its source).
    #[arg(long, value_enum, default_value_t = Method::Both)]
    method: Method,
    /// Skip the check of each frame against what the model was trained on (the `realism`
    /// statistics against the model card's `training_realism` ranges, as the Viewer's warning;
    /// one measurement per frame, which also gives the crystal check's lattice match).
    #[arg(long)]
    no_realism_check: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Model,
    Lattice,
    Both,
}

impl From<Method> for defect_detector::detect::combine::DetectMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Model => Self::Model,
            Method::Lattice => Self::Lattice,
            Method::Both => Self::Both,
        }
    }
}

/// Added to each image's name for its result files (`frame.detections.json/.csv/.txt`).
const RESULT_SUFFIX: &str = ".detections";

fn expand(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            // The formats module's list, as `watch` and the Viewer use: DM3/4, SER, EMD and
            // MRC as well as the raster formats.
            std::fs::read_dir(p).with_context(|| format!("cannot list {}", p.display()))?;
            out.extend(formats::list_images(p));
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            anyhow::bail!("{} does not exist", p.display());
        }
    }
    if out.is_empty() {
        anyhow::bail!("no images found in the given inputs");
    }
    // One global order, so every shard of a cluster array splits the same list.
    out.sort();
    out.dedup();
    Ok(out)
}

/// Output base path per image: `<dir>/<stem>.detections`, or `<dir>/<file name>.detections`
/// when two images would share a stem in the same folder. Never `<dir>/<stem>`: `<stem>.txt`
/// beside an image is its hand-made label file (the label editor's and Ultralytics'
/// convention), which results must not overwrite.
fn output_bases(images: &[PathBuf], out: Option<&Path>) -> Vec<PathBuf> {
    let dir_of = |p: &Path| {
        out.map(Path::to_path_buf)
            .unwrap_or_else(|| p.parent().map(Path::to_path_buf).unwrap_or_default())
    };
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    for p in images {
        let stem = p.file_stem().unwrap_or_default();
        *seen.entry(dir_of(p).join(stem)).or_default() += 1;
    }
    images
        .iter()
        .map(|p| {
            let stem = dir_of(p).join(p.file_stem().unwrap_or_default());
            let mut name = if seen[&stem] > 1 {
                p.file_name()
            } else {
                p.file_stem()
            }
            .unwrap_or_default()
            .to_os_string();
            name.push(RESULT_SUFFIX);
            dir_of(p).join(name)
        })
        .collect()
}

pub fn run(a: DetectArgs) -> anyhow::Result<()> {
    if let Some(list) = &a.merge {
        let m = merge_shards(&list[0], &list[1..])?;
        println!(
            "merged {} shard(s): {} image(s), {} failed, {} detection(s) -> {}",
            list.len() - 1,
            m.n_images,
            m.n_failed,
            m.totals.iter().sum::<usize>(),
            list[0].join(SUMMARY_JSON).display()
        );
        return Ok(());
    }
    let model = match a.model.clone() {
        Some(m) => m,
        None => defect_detector::detect::default_model()
            .context("no --model given and no .onnx model in models/")?,
    };
    if !(0.0..=1.0).contains(&a.conf) || !(0.0..=1.0).contains(&a.iou) {
        anyhow::bail!("--conf and --iou must be between 0 and 1");
    }
    if let Some(s) = a.nm_per_px
        && !(s.is_finite() && s > 0.0)
    {
        anyhow::bail!("--nm-per-px must be a positive number");
    }
    let all_images = expand(&a.inputs)?;
    // Output names are decided over all inputs, so a shard names its files as one run would.
    let all_bases = output_bases(&all_images, a.out.as_deref());
    let (images, bases) = match a.shard {
        Some(s) => (s.select(&all_images), s.select(&all_bases)),
        None => (all_images, all_bases),
    };
    if let Some(s) = a.shard {
        eprintln!("shard {s}: {} image(s)", images.len());
    }
    let det = Detector::load(&model, &a.runtime.detector_options())?;
    eprintln!(
        "model {} ({} classes, input {}{}, {}), runtime {}",
        model.display(),
        det.class_names().len(),
        det.info().imgsz,
        if det.info().dynamic_input {
            " or whole frames"
        } else {
            ""
        },
        det.provider(),
        det.runtime().library.display()
    );
    let opts = DetectOptions {
        fit: Fit::Tile { overlap: a.overlap },
        one_pass: !a.tiles,
        ..Default::default()
    };
    let names = det.class_names().to_vec();
    let mut lattice = a.calibration.lattice_use(a.method.into())?;
    // A pixel size the user typed is what they mean.
    lattice.check_file_calibration &= a.nm_per_px.is_none();
    // What the model was trained on, from its card: frames unlike it are said to be.
    if !a.no_realism_check {
        lattice.training =
            defect_detector::realism::model_training_realism(&model).unwrap_or_else(|e| {
                eprintln!("warning: no realism check: {e:#}");
                None
            });
    }
    let mut summary = BatchSummary::new(&model, a.conf, a.iou, &names, a.shard);
    let mut totals = vec![0usize; names.len()];
    let mut failures = 0usize;
    let name_w = names.iter().map(|n| n.len()).max().unwrap_or(8).max(8);
    for (img_path, base) in images.iter().zip(&bases) {
        let result = (|| -> anyhow::Result<(Vec<usize>, Option<f64>, Vec<String>)> {
            let (img, px) = load_image_for_detection(img_path)?;
            let given = a.nm_per_px.map(|nm_per_px| PixelSize { nm_per_px }).or(px);
            let frame = detect_frame(&det, &img, given, &lattice, &opts, a.conf, a.iou)?;
            let hedge = if lattice.model_scales(frame.calibration, None).len() > 1 {
                format!(
                    "; the model ran at the scales of {} and fused them (a lattice gives the \
                     period, not the crystal: --crystal names it, --single-lattice-scale runs one)",
                    lattice.crystal.preset_scale_names()
                )
            } else {
                String::new()
            };
            match frame.calibration {
                Calibration::Lattice(p) => eprintln!(
                    "{}: no calibration in the file; {:.2} pm/px estimated from the {} lattice{hedge}",
                    img_path.display(),
                    p.nm_per_px * 1000.0,
                    lattice.crystal.name
                ),
                Calibration::Corrected(c) => eprintln!(
                    "{}: {}: detected at the lattice's scale (--trust-file-calibration keeps the \
                     file's, --nm-per-px sets one){hedge}",
                    img_path.display(),
                    c.describe(&lattice.crystal.name)
                ),
                Calibration::None if given.is_none() && lattice.calibrate => eprintln!(
                    "{}: no calibration in the file and no clear {} lattice: used at its own scale",
                    img_path.display(),
                    lattice.crystal.name
                ),
                _ => {}
            }
            if let (Some(s), Some(p)) = (frame.as_sampled, frame.calibration.pixel_size()) {
                eprintln!(
                    "{}: {:.2} pm/px, inside the model's training span: run at the model's {:.2} \
                     pm/px and as sampled, boxes fused (--model-scale-only runs the model's alone)",
                    img_path.display(),
                    p.nm_per_px * 1000.0,
                    p.nm_per_px * s * 1000.0
                );
            }
            if let Some(e) = &frame.lattice_error {
                eprintln!("{}: no lattice analysis: {e}", img_path.display());
            }
            if frame.contradicted_boundaries > 0 {
                eprintln!(
                    "{}: {}",
                    img_path.display(),
                    defect_detector::frame::contradicted_boundaries_note(
                        frame.contradicted_boundaries
                    )
                );
            }
            if frame.points_at_edges > 0 {
                eprintln!(
                    "{}: {} (--keep-points-at-edges shows them)",
                    img_path.display(),
                    defect_detector::frame::points_at_edges_note(frame.points_at_edges)
                );
            }
            if let Some(m) = frame.not_the_crystal() {
                eprintln!(
                    "{}: warning: {} (--crystal names the crystal)",
                    img_path.display(),
                    defect_detector::realism::not_the_crystal_message(&lattice.crystal.name, m)
                );
            }
            let outside = frame.outside_training;
            if !outside.is_empty() {
                eprintln!(
                    "{}: warning: {}",
                    img_path.display(),
                    defect_detector::realism::unlike_training_message(&outside)
                );
            }
            let lattice_match = frame.lattice_match;
            let (r, dets) = (frame.result, frame.detections);
            let meta = ExportMeta {
                image: Some(img_path),
                model: Some(&model),
                conf: a.conf,
                iou: a.iou,
            };
            write_all(base, &r, &dets, &meta)?;
            let counts = class_counts(&dets, names.len());
            let parts: Vec<String> = names
                .iter()
                .zip(&counts)
                .map(|(n, c)| format!("{n} {c}"))
                .collect();
            println!(
                "{}: {} detections ({}) in {:.1} ms, {} model run{} -> {}.{{json,csv,txt}}",
                img_path.display(),
                dets.len(),
                parts.join(", "),
                r.timings.total_ms(),
                r.tiles,
                if r.tiles == 1 { "" } else { "s" },
                base.display()
            );
            Ok((counts, lattice_match, outside))
        })();
        let mut entry = ImageEntry {
            image: img_path.display().to_string(),
            result: None,
            counts: vec![0; names.len()],
            error: None,
            lattice_match: None,
            outside_training: Vec::new(),
        };
        match result {
            Ok((c, lattice_match, outside)) => {
                entry.lattice_match = lattice_match;
                entry.outside_training = outside;
                for (t, v) in totals.iter_mut().zip(&c) {
                    *t += v;
                }
                entry.result = Some(
                    base.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                );
                entry.counts = c;
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {}: {e:#}", img_path.display());
                entry.error = Some(format!("{e:#}"));
            }
        }
        summary.images.push(entry);
    }
    if let Some(out) = &a.out {
        summary.finish();
        summary.write(out)?;
    }
    println!("\n{:<name_w$} {:>10}", "class", "detections");
    for (n, t) in names.iter().zip(&totals) {
        println!("{n:<name_w$} {t:>10}");
    }
    println!(
        "{:<name_w$} {:>10}   ({} image(s), conf > {}, iou {})",
        "all",
        totals.iter().sum::<usize>(),
        images.len() - failures,
        a.conf,
        a.iou
    );
    if failures > 0 {
        anyhow::bail!("{failures} of {} image(s) failed", images.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_avoid_collisions() {
        let imgs = vec![
            PathBuf::from("/d/a.png"),
            PathBuf::from("/d/a.tif"),
            PathBuf::from("/d/b.png"),
        ];
        let b = output_bases(&imgs, None);
        assert_eq!(
            b,
            vec![
                PathBuf::from("/d/a.png.detections"),
                PathBuf::from("/d/a.tif.detections"),
                PathBuf::from("/d/b.detections")
            ]
        );
        let b = output_bases(&imgs[2..], Some(Path::new("/out")));
        assert_eq!(b, vec![PathBuf::from("/out/b.detections")]);
    }

    #[test]
    fn folders_list_every_format_the_viewer_reads() {
        let t = tempfile::tempdir().unwrap();
        let names = [
            "a.dm3", "b.DM4", "c.ser", "d.emd", "e.mrc", "f.png", "g.tif", "notes.md",
        ];
        for n in names {
            std::fs::write(t.path().join(n), b"x").unwrap();
        }
        let listed: Vec<String> = expand(&[t.path().to_path_buf()])
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(listed, names[..7]);
    }

    #[test]
    fn detect_beside_the_image_keeps_hand_labels() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("frame.png");
        image::GrayImage::from_fn(64, 64, |x, y| image::Luma([((x * 7 + y * 3) % 200) as u8]))
            .save(&img)
            .unwrap();
        let hand = "1 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n";
        std::fs::write(t.path().join("frame.txt"), hand).unwrap();
        std::fs::write(t.path().join("frame.json"), "{\"notes\": 1}").unwrap();
        run(args(&[&img.display().to_string()])).unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("frame.txt")).unwrap(),
            hand
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("frame.json")).unwrap(),
            "{\"notes\": 1}"
        );
        for ext in ["json", "csv", "txt"] {
            assert!(
                t.path().join(format!("frame.detections.{ext}")).is_file(),
                "{ext}"
            );
        }
    }

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        a: DetectArgs,
    }

    fn args(v: &[&str]) -> DetectArgs {
        let model = format!("{}/tests/data/tiny_obb.onnx", env!("CARGO_MANIFEST_DIR"));
        args_with_model(&model, v)
    }

    fn args_with_model(model: &str, v: &[&str]) -> DetectArgs {
        use clap::Parser;
        let root = env!("CARGO_MANIFEST_DIR");
        let ort = format!("{root}/.ort/libonnxruntime.so");
        let mut all = vec!["t", "--model", model, "--device", "cpu", "--threads", "1"];
        if Path::new(&ort).exists() {
            all.extend(["--ort-lib", &ort]);
        }
        all.extend(v);
        Wrap::try_parse_from(all)
            .unwrap_or_else(|e| panic!("{e}"))
            .a
    }

    /// A frame of the crystal gets its lattice match recorded in the summary; the check can be
    /// skipped.
    #[test]
    fn the_summary_records_how_well_the_crystal_explains_each_frame() {
        use defect_detector::synth::params::CountRange;
        use defect_detector::synth::{self, ImageFormat, SynthParams};
        let t = tempfile::tempdir().unwrap();
        let mut p = SynthParams {
            width: 384,
            height: 384,
            pixel_size_pm: 16.0,
            seed: 11,
            ..Default::default()
        };
        p.defects.twin_boundaries = CountRange::new(0, 0);
        p.defects.tilt_boundaries = CountRange::new(0, 0);
        p.noise.dose_e_per_a2 = 1e6;
        let s = synth::generate(&p).unwrap();
        let png = synth::write_outputs(&s, t.path(), "frame", ImageFormat::Png)
            .unwrap()
            .image;
        let summary = |extra: &[&str]| -> BatchSummary {
            let out = t.path().join(format!("out{}", extra.len()));
            let (img, o) = (png.display().to_string(), out.display().to_string());
            let mut v = vec![img.as_str(), "--out", o.as_str(), "--method", "model"];
            v.extend(extra);
            run(args(&v)).unwrap();
            serde_json::from_slice(&std::fs::read(out.join(SUMMARY_JSON)).unwrap()).unwrap()
        };
        let m = summary(&[]).images[0].lattice_match;
        // Default scan distortions and point defects: about 0.75, well above the 0.5 floor.
        assert!(m.is_some(), "not judged");
        assert_eq!(defect_detector::realism::not_the_crystal(m), None, "{m:?}");
        assert_eq!(
            summary(&["--no-crystal-check"]).images[0].lattice_match,
            None
        );
        // The tiny model has no card: nothing to compare the frame with.
        assert!(summary(&[]).images[0].outside_training.is_empty());

        // A model whose card says it was trained on 30-40 pm/px frames: this 16 pm/px frame is
        // unlike its training data, and the summary says so, as the Viewer's warning would.
        let model = t.path().join("m.onnx");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_obb.onnx"),
            &model,
        )
        .unwrap();
        let card = serde_json::json!({"training_realism": {"crystal": "cdte110", "images": 10,
            "ranges": [{"name": "pixel_size_pm", "label": "pixel size (pm/px)",
                        "p5": 30.0, "p95": 40.0, "n": 10}]}});
        std::fs::write(t.path().join("m.json"), card.to_string()).unwrap();
        let checked = |extra: &[&str]| -> Vec<String> {
            let out = t.path().join(format!("card{}", extra.len()));
            let (img, o) = (png.display().to_string(), out.display().to_string());
            let mut v = vec![img.as_str(), "--out", o.as_str(), "--method", "model"];
            v.extend(extra);
            run(args_with_model(&model.display().to_string(), &v)).unwrap();
            let s: BatchSummary =
                serde_json::from_slice(&std::fs::read(out.join(SUMMARY_JSON)).unwrap()).unwrap();
            s.images[0].outside_training.clone()
        };
        let out = checked(&[]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].starts_with("pixel size 16.") && out[0].contains("< 30"),
            "{out:?}"
        );
        assert!(checked(&["--no-realism-check"]).is_empty());
    }

    #[test]
    fn without_model_the_shipped_one_is_used() {
        use clap::Parser;
        let a = Wrap::try_parse_from(["t", "frame.png", "--method", "lattice"])
            .unwrap_or_else(|e| panic!("{e}"))
            .a;
        assert!(a.model.is_none());
        let m = defect_detector::detect::default_model().expect("the shipped model in models/");
        assert_eq!(m.extension().unwrap(), "onnx");
        assert!(m.starts_with("models"), "{}", m.display());
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Per-image JSON minus the run's timings, the only field that differs between runs.
    fn without_timings(bytes: &[u8]) -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        v.as_object_mut().unwrap().remove("timings_ms");
        v
    }

    #[test]
    fn shards_merged_equal_one_run() {
        let t = tempfile::tempdir().unwrap();
        let input = t.path().join("in");
        std::fs::create_dir_all(&input).unwrap();
        for i in 0..7u32 {
            let img = image::GrayImage::from_fn(48 + 8 * i, 64, |x, y| {
                let on = (x / 6 + y / 6 + i) % 3 == 0;
                image::Luma([if on { 220 } else { (x * 3 + y) as u8 % 40 }])
            });
            img.save(input.join(format!("img{i}.png"))).unwrap();
        }
        std::fs::write(input.join("broken.png"), b"not a png").unwrap();
        let dir = |n: &str| t.path().join(n).display().to_string();
        let inp = input.display().to_string();
        // The broken image makes each run report a failure, after writing its summary.
        assert!(run(args(&[&inp, "--out", &dir("full")])).is_err());
        for i in 0..3 {
            let shard = format!("{i}/3");
            let _ = run(args(&[
                &inp,
                "--out",
                &dir(&format!("s{i}")),
                "--shard",
                &shard,
            ]));
        }
        let shard_summary: BatchSummary =
            serde_json::from_slice(&std::fs::read(t.path().join("s1").join(SUMMARY_JSON)).unwrap())
                .unwrap();
        assert_eq!(shard_summary.shard, Some(Shard { index: 1, count: 3 }));
        assert_eq!(shard_summary.n_images, 3);
        {
            use clap::Parser;
            let m = Wrap::try_parse_from([
                "t",
                "--merge",
                &dir("merged"),
                &dir("s2"),
                &dir("s0"),
                &dir("s1"),
            ])
            .unwrap()
            .a;
            run(m).unwrap();
        }
        let (full, merged) = (t.path().join("full"), t.path().join("merged"));
        let names = files(&full);
        assert_eq!(names.len(), 7 * 3 + 2, "{names:?}");
        assert_eq!(names, files(&merged));
        for n in &names {
            let (a, b) = (
                std::fs::read(full.join(n)).unwrap(),
                std::fs::read(merged.join(n)).unwrap(),
            );
            if n.ends_with(".json") && !n.starts_with("detect-summary") {
                assert_eq!(without_timings(&a), without_timings(&b), "{n}");
            } else {
                assert_eq!(a, b, "{n}");
            }
        }
        let sum: BatchSummary =
            serde_json::from_slice(&std::fs::read(merged.join(SUMMARY_JSON)).unwrap()).unwrap();
        assert_eq!((sum.n_images, sum.n_failed, sum.shard), (8, 1, None));
        let broken = sum
            .images
            .iter()
            .find(|e| e.image.ends_with("broken.png"))
            .unwrap();
        assert!(broken.error.as_deref().unwrap().contains("broken.png"));
    }
}
