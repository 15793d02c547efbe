use anyhow::Context;
use clap::Args;
use defect_detector::detect::export::{ExportMeta, class_counts, write_all};
use defect_detector::detect::{
    DEFAULT_CONF, DEFAULT_IOU, DEFAULT_TILE_OVERLAP, DetectOptions, Detector, DetectorOptions,
    Device, Fit, filter, load_image_for_detection,
};
use defect_detector::raster::PixelSize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct DetectArgs {
    /// YOLO-OBB model exported to ONNX.
    #[arg(long)]
    model: PathBuf,
    /// Images or folders of images.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Write results here instead of next to each image.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Confidence threshold.
    #[arg(long, default_value_t = DEFAULT_CONF)]
    conf: f32,
    /// ProbIoU threshold of the rotated NMS.
    #[arg(long, default_value_t = DEFAULT_IOU)]
    iou: f64,
    /// auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: Device,
    /// Inference threads (0: ONNX Runtime's choice).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Tile overlap, as a fraction of the model input, for images larger than it.
    #[arg(long, default_value_t = DEFAULT_TILE_OVERLAP)]
    overlap: f64,
    /// Pixel size of the images in nm (resamples to the model's pixel size when it has one).
    #[arg(long)]
    nm_per_px: Option<f64>,
    /// ONNX Runtime library (default: ORT_DYLIB_PATH, .ort/, the project .venv).
    #[arg(long)]
    ort_lib: Option<PathBuf>,
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "tif", "tiff", "jpg", "jpeg"];

fn expand(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list {}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|q| {
                    q.is_file()
                        && q.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                            IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str())
                        })
                })
                .collect();
            v.sort();
            out.extend(v);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            anyhow::bail!("{} does not exist", p.display());
        }
    }
    if out.is_empty() {
        anyhow::bail!("no images found in the given inputs");
    }
    Ok(out)
}

/// Output base path per image: `<dir>/<stem>`, or `<dir>/<file name>` when two images would
/// share a stem in the same folder.
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
            let base = dir_of(p).join(p.file_stem().unwrap_or_default());
            if seen[&base] > 1 {
                dir_of(p).join(p.file_name().unwrap_or_default())
            } else {
                base
            }
        })
        .collect()
}

pub fn run(a: DetectArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&a.conf) || !(0.0..=1.0).contains(&a.iou) {
        anyhow::bail!("--conf and --iou must be between 0 and 1");
    }
    if let Some(s) = a.nm_per_px
        && !(s.is_finite() && s > 0.0)
    {
        anyhow::bail!("--nm-per-px must be a positive number");
    }
    let images = expand(&a.inputs)?;
    let det = Detector::load(
        &a.model,
        &DetectorOptions {
            device: a.device,
            threads: a.threads,
            runtime_library: a.ort_lib.clone(),
        },
    )?;
    eprintln!(
        "model {} ({} classes, input {}, {}), runtime {}",
        a.model.display(),
        det.class_names().len(),
        det.info().imgsz,
        det.provider(),
        det.runtime().library.display()
    );
    let opts = DetectOptions {
        fit: Fit::Tile { overlap: a.overlap },
        ..Default::default()
    };
    let bases = output_bases(&images, a.out.as_deref());
    let names = det.class_names().to_vec();
    let mut totals = vec![0usize; names.len()];
    let mut failures = 0usize;
    let name_w = names.iter().map(|n| n.len()).max().unwrap_or(8).max(8);
    for (img_path, base) in images.iter().zip(&bases) {
        let result = (|| -> anyhow::Result<Vec<usize>> {
            let (img, px) = load_image_for_detection(img_path)?;
            let px = a.nm_per_px.map(|nm_per_px| PixelSize { nm_per_px }).or(px);
            let r = det.detect(&img, px, &opts)?;
            let dets = filter(&r.candidates, a.conf, a.iou);
            let meta = ExportMeta {
                image: Some(img_path),
                model: Some(&a.model),
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
                "{}: {} detections ({}) in {:.1} ms, {} tile(s) -> {}.{{json,csv,txt}}",
                img_path.display(),
                dets.len(),
                parts.join(", "),
                r.timings.total_ms(),
                r.tiles,
                base.display()
            );
            Ok(counts)
        })();
        match result {
            Ok(c) => {
                for (t, v) in totals.iter_mut().zip(c) {
                    *t += v;
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {}: {e:#}", img_path.display());
            }
        }
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
                PathBuf::from("/d/a.png"),
                PathBuf::from("/d/a.tif"),
                PathBuf::from("/d/b")
            ]
        );
        let b = output_bases(&imgs[2..], Some(Path::new("/out")));
        assert_eq!(b, vec![PathBuf::from("/out/b")]);
    }
}
