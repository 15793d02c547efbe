//! `defect-detector bench detect`: how much the pipeline adds to bare inference.

use super::tta::FrameRuns;
use super::{DEFAULT_CONF, DEFAULT_IOU, DetectOptions, Detector, DetectorOptions};
use crate::raster::ImageF32;
use crate::raster::median;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Instant;

/// A deterministic lattice-like test image (bright columns on a dark background, a missing
/// column as a vacancy) so the model produces realistic candidate counts.
pub fn bench_image(size: usize) -> ImageF32 {
    let mut img = ImageF32::new(size, size);
    let pitch = 12.0f32;
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 / pitch, y as f32 / pitch);
            let dx = fx - fx.round();
            let dy = fy - fy.round();
            let mut v = 1000.0 * (-(dx * dx + dy * dy) * 18.0).exp();
            if (fx.round() as i32, fy.round() as i32) == (20, 20) {
                v = 0.0;
            }
            // Deterministic "noise" so the histogram window is not degenerate.
            let h = ((x * 7919 + y * 104_729) % 97) as f32;
            img.data[y * size + x] = v + h;
        }
    }
    img
}

/// Medians over `runs` of: the end-to-end pipeline (image in memory -> final detections at the
/// default conf/IoU) and bare `session.run` on the same input, measured interleaved in the
/// same process; plus per-stage medians and the execution provider.
pub fn bench_detect(model: &Path, image_size: usize, runs: usize) -> anyhow::Result<Value> {
    bench_detect_with(model, image_size, runs, &DetectorOptions::default())
}

pub fn bench_detect_with(
    model: &Path,
    image_size: usize,
    runs: usize,
    det_opts: &DetectorOptions,
) -> anyhow::Result<Value> {
    let runs = runs.max(1);
    let det = Detector::load(model, det_opts)?;
    let img = bench_image(image_size);
    let opts = DetectOptions::default();
    let tiled_opts = DetectOptions {
        one_pass: false,
        ..opts
    };
    let s = det.info().imgsz;
    // The bare run uses the exact input the pipeline builds for this image: the whole frame
    // for a dynamic-input model, else its first tile.
    let tile = match super::pre::plan_one_pass(image_size, image_size, det.info().max_stride()) {
        Some(t) if det.info().dynamic_input => t,
        _ => super::pre::plan_tiles(image_size.min(s), image_size.min(s), s, 0.0)[0],
    };
    let q = super::pre::Quantizer::for_image(&img, opts.intensity);
    let n_in = 3 * tile.in_w * tile.in_h;
    let mut prepared = vec![0f32; n_in];
    super::pre::fill_input(&mut prepared, &img, &tile, &q);

    let warmup = 3;
    let (mut e2e, mut bare, mut pre, mut inf, mut post, mut filt) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    // The two parts of pre-processing on their own, outside the end-to-end timing.
    let (mut window, mut fill, mut paired) = (vec![], vec![], vec![]);
    // The same frame cut into tiles of the training size, as a fixed-size export must be.
    let (mut tiled, mut tiled_paired) = (vec![], vec![]);
    let mut tiled_count = 0;
    // The model on the frame's 8 dihedral copies, boxes fused (`detect --tta`).
    let copies = super::tta::default_transforms();
    let (mut tta, mut tta_paired, mut tta_refuse) = (vec![], vec![], vec![]);
    // A frame whose pixel size was read from its lattice as CdTe: the model at the CdTe, Si
    // and GaAs readings, boxes fused (`frame::LatticeUse::hedge_lattice_scale`).
    let hedge_scales = crate::synth::crystal::Preset::Cdte110
        .spec()
        .preset_scales();
    let identity = [crate::geometry::Dihedral::IDENTITY];
    let (mut hedge, mut hedge_paired) = (vec![], vec![]);
    let mut scratch = vec![0f32; n_in];
    let mut n_cands = 0;
    let mut n_final = 0;
    let mut tiles = 0;
    for i in 0..warmup + runs {
        let ((), bare_run) = det.run_sized(
            tile.in_w,
            tile.in_h,
            |buf| buf.copy_from_slice(&prepared),
            |_| (),
        )?;
        let t0 = Instant::now();
        let r = det.detect(&img, None, &opts)?;
        let t1 = Instant::now();
        let fin = r.filtered(DEFAULT_CONF, DEFAULT_IOU);
        let total = t0.elapsed().as_secs_f64() * 1e3;
        let filter_ms = t1.elapsed().as_secs_f64() * 1e3;
        let tiled_ms = if det.info().dynamic_input {
            let tt = Instant::now();
            let rt = det.detect(&img, None, &tiled_opts)?;
            let _ = rt.filtered(DEFAULT_CONF, DEFAULT_IOU);
            tiled_count = rt.tiles;
            Some(tt.elapsed().as_secs_f64() * 1e3)
        } else {
            None
        };
        let ta = Instant::now();
        let fr = FrameRuns::run(&det, &img, None, &opts, &copies, &[1.0], None)?;
        let _ = fr.boxes(DEFAULT_CONF, DEFAULT_IOU);
        let tta_ms = ta.elapsed().as_secs_f64() * 1e3;
        // What one step of the Viewer's confidence slider costs under TTA: the copies fused
        // again, no model run (on the UI thread, so it must stay well under a frame's time).
        let tr = Instant::now();
        let _ = fr.boxes(DEFAULT_CONF * 0.8, DEFAULT_IOU);
        let refuse_ms = tr.elapsed().as_secs_f64() * 1e3;
        let th = Instant::now();
        let _ = FrameRuns::run(&det, &img, None, &opts, &identity, &hedge_scales, None)?
            .boxes(DEFAULT_CONF, DEFAULT_IOU);
        let hedge_ms = th.elapsed().as_secs_f64() * 1e3;
        let tw = Instant::now();
        let qw = super::pre::Quantizer::for_image(&img, opts.intensity);
        let window_ms = tw.elapsed().as_secs_f64() * 1e3;
        let tf = Instant::now();
        super::pre::fill_input(&mut scratch, &img, &tile, &qw);
        let fill_ms = tf.elapsed().as_secs_f64() * 1e3;
        if i >= warmup {
            window.push(window_ms);
            paired.push(total / (bare_run.as_secs_f64() * 1e3));
            fill.push(fill_ms);
            bare.push(bare_run.as_secs_f64() * 1e3);
            e2e.push(total);
            pre.push(r.timings.preprocess_ms);
            inf.push(r.timings.inference_ms);
            post.push(r.timings.postprocess_ms + filter_ms);
            filt.push(filter_ms);
            if let Some(t) = tiled_ms {
                tiled.push(t);
                tiled_paired.push(t / total);
            }
            tta.push(tta_ms);
            tta_refuse.push(refuse_ms);
            tta_paired.push(tta_ms / total);
            hedge.push(hedge_ms);
            hedge_paired.push(hedge_ms / total);
            n_cands = r.candidates.len();
            n_final = fin.len();
            tiles = r.tiles;
        }
    }
    let e2e_m = median(e2e);
    let bare_m = median(bare);
    let tiled_m = median(tiled.clone());
    Ok(json!({
        "job": "detect",
        "model": model.display().to_string(),
        "image_size": image_size,
        "model_imgsz": s,
        "dynamic_input": det.info().dynamic_input,
        "input": [tile.in_w, tile.in_h],
        "runs": runs,
        "tiles": tiles,
        "provider": det.provider(),
        "threads": det_opts.threads,
        "ort_spinning": det_opts.spinning,
        "end_to_end_ms": e2e_m,
        "session_run_ms": bare_m,
        "ratio": e2e_m / bare_m,
        // Each end-to-end run over the bare run just before it: less sensitive to drifts in
        // machine load than the ratio of the two medians.
        "ratio_paired_median": median(paired),
        // Only for a dynamic-input model: the same frame in tiles of the training size.
        "tiled": if tiled.is_empty() { Value::Null } else { json!({
            "tiles": tiled_count,
            "end_to_end_ms": tiled_m,
            "speedup_one_pass": tiled_m / e2e_m,
            "speedup_paired_median": median(tiled_paired),
        })},
        // The frame, its mirror image and their quarter turns, boxes fused.
        "tta": {
            "copies": copies.len(),
            "end_to_end_ms": median(tta),
            "over_one_pass_paired_median": median(tta_paired),
            "refuse_ms": median(tta_refuse),
        },
        // A frame scaled by its lattice: one run per preset crystal's reading, fused.
        "lattice_scale_hedge": {
            "scales": hedge_scales,
            "end_to_end_ms": median(hedge),
            "over_one_pass_paired_median": median(hedge_paired),
        },
        "stages_ms": {
            "preprocess": median(pre),
            "preprocess_window": median(window),
            "preprocess_fill": median(fill),
            "inference": median(inf),
            "postprocess": median(post),
            "filter": median(filt),
        },
        "candidates": n_cands,
        "detections": n_final,
    }))
}

/// Batch throughput as a cluster job sees it (device and threads from `det_opts`): `n_images` PNGs of `size` x `size`
/// already on disk in a temporary folder, each loaded, detected, filtered and written as
/// JSON/CSV/TXT, one after another with one detector (loaded outside the timing). Median of
/// 3 passes over the folder; plus per-image medians of the load, detect and write stages.
pub fn bench_throughput(
    model: &Path,
    n_images: usize,
    size: usize,
    det_opts: &DetectorOptions,
) -> anyhow::Result<Value> {
    let n_images = n_images.max(1);
    let det = Detector::load(model, det_opts)?;
    let tmp = TempDir::new("throughput")?;
    let input = tmp.0.join("in");
    std::fs::create_dir_all(&input)?;
    let img = bench_image(size);
    let (lo, hi) = img.model_window();
    let gray = image::GrayImage::from_raw(size as u32, size as u32, img.to_u8(lo, hi))
        .ok_or_else(|| anyhow::anyhow!("bench image of {size} px does not fit a PNG"))?;
    for i in 0..n_images {
        let p = input.join(format!("img{i:05}.png"));
        gray.save(&p)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    let files = crate::formats::list_images(&input);
    let opts = DetectOptions::default();
    let passes = 3;
    let (mut rates, mut load, mut detect, mut write) = (vec![], vec![], vec![], vec![]);
    let mut n_dets = 0;
    for pass in 0..passes {
        let out = tmp.0.join(format!("out{pass}"));
        let t_pass = Instant::now();
        for f in &files {
            let t0 = Instant::now();
            let s = crate::formats::load(f)?;
            let t1 = Instant::now();
            let r = det.detect(&s.image, s.pixel_size, &opts)?;
            let dets = r.filtered(DEFAULT_CONF, DEFAULT_IOU);
            let t2 = Instant::now();
            let meta = super::export::ExportMeta {
                image: Some(f),
                model: Some(model),
                conf: DEFAULT_CONF,
                iou: DEFAULT_IOU,
            };
            super::export::write_all(
                &out.join(f.file_stem().unwrap_or_default()),
                &r,
                &dets,
                &meta,
            )?;
            let t3 = Instant::now();
            load.push((t1 - t0).as_secs_f64() * 1e3);
            detect.push((t2 - t1).as_secs_f64() * 1e3);
            write.push((t3 - t2).as_secs_f64() * 1e3);
            n_dets = dets.len();
        }
        rates.push(files.len() as f64 / t_pass.elapsed().as_secs_f64());
    }
    let ips = median(rates);
    Ok(json!({
        "job": "throughput",
        "model": model.display().to_string(),
        "provider": det.provider(),
        "ort_spinning": det_opts.spinning,
        "images": files.len(),
        "image_size": size,
        "passes": passes,
        "images_per_s": ips,
        "ms_per_image": 1e3 / ips,
        "per_image_ms": {
            "load": median(load),
            "detect": median(detect),
            "write": median(write),
        },
        "detections_per_image": n_dets,
    }))
}

/// A scratch folder removed on drop (tempfile is only a dev-dependency).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "defect-detector-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn throughput_reports_a_rate() {
        let model =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_obb.onnx");
        let v = super::bench_throughput(&model, 3, 64, &super::DetectorOptions::default())
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(v["images"], 3);
        assert!(v["images_per_s"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["per_image_ms"]["detect"].as_f64().unwrap() > 0.0, "{v}");
    }
}
