//! `defect-detector bench detect`: how much the pipeline adds to bare inference.

use super::{DEFAULT_CONF, DEFAULT_IOU, DetectOptions, Detector, DetectorOptions, filter};
use crate::raster::ImageF32;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

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
    let s = det.info().imgsz;
    // The bare run uses the exact input the pipeline builds for this image.
    let tile = super::pre::plan_tiles(image_size.min(s), image_size.min(s), s, 0.0)[0];
    let q = super::pre::Quantizer::for_image(&img, opts.intensity);
    let mut prepared = vec![0f32; 3 * s * s];
    super::pre::fill_input(&mut prepared, s, &img, &tile, &q);

    let warmup = 3;
    let (mut e2e, mut bare, mut pre, mut inf, mut post, mut filt) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut n_cands = 0;
    let mut n_final = 0;
    let mut tiles = 0;
    for i in 0..warmup + runs {
        let ((), bare_run) = det.run_with(|buf| buf.copy_from_slice(&prepared), |_| ())?;
        let t0 = Instant::now();
        let r = det.detect(&img, None, &opts)?;
        let t1 = Instant::now();
        let fin = filter(&r.candidates, DEFAULT_CONF, DEFAULT_IOU);
        let total = t0.elapsed().as_secs_f64() * 1e3;
        let filter_ms = t1.elapsed().as_secs_f64() * 1e3;
        if i >= warmup {
            bare.push(bare_run.as_secs_f64() * 1e3);
            e2e.push(total);
            pre.push(r.timings.preprocess_ms);
            inf.push(r.timings.inference_ms);
            post.push(r.timings.postprocess_ms + filter_ms);
            filt.push(filter_ms);
            n_cands = r.candidates.len();
            n_final = fin.len();
            tiles = r.tiles;
        }
    }
    let e2e_m = median(&mut e2e);
    let bare_m = median(&mut bare);
    Ok(json!({
        "job": "detect",
        "model": model.display().to_string(),
        "image_size": image_size,
        "model_imgsz": s,
        "runs": runs,
        "tiles": tiles,
        "provider": det.provider(),
        "threads": det_opts.threads,
        "end_to_end_ms": e2e_m,
        "session_run_ms": bare_m,
        "ratio": e2e_m / bare_m,
        "stages_ms": {
            "preprocess": median(&mut pre),
            "inference": median(&mut inf),
            "postprocess": median(&mut post),
            "filter": median(&mut filt),
        },
        "candidates": n_cands,
        "detections": n_final,
    }))
}
