//! Oriented-box defect detection with a YOLO-OBB model exported to ONNX, run by ONNX Runtime.
//!
//! Pipeline: raw f32 image -> the shared model intensity window, quantised to 8 bits exactly as
//! the training PNGs ([`pre`]) -> optional resampling to the model's pixel size -> tiles of the
//! model's input size (letterboxed when smaller; a model exported with a dynamic input takes
//! frames up to 1024 px whole, in one pass) -> ONNX Runtime -> decoding of every candidate
//! above a low floor confidence ([`post`]) -> candidates in original image pixels.
//!
//! The result keeps all candidates (before NMS) so a viewer can re-filter with confidence and
//! IoU sliders instantly through [`filter`], without running the model again.

pub mod bench;
pub mod combine;
pub mod export;
pub mod merge;
pub mod model;
pub mod post;
pub mod pre;
pub mod runtime;
pub mod tta;

pub use model::{Detector, DetectorOptions, Device, ModelInfo};
pub use post::{FilterOptions, filter, filter_with, line_class, merge_line_boxes};
pub use pre::Intensity;

use crate::geometry::{OrientedBox, Pt};
use crate::jobs::JobControl;
use crate::raster::{ImageF32, PixelSize};
use post::{BoxMap, DecodeSpec};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Confidence below which candidates are not even kept for re-filtering.
pub const DEFAULT_FLOOR_CONF: f32 = 0.01;
/// Ultralytics `predict` defaults.
pub const DEFAULT_CONF: f32 = 0.25;
pub const DEFAULT_IOU: f64 = 0.7;
pub const DEFAULT_TILE_OVERLAP: f64 = 0.2;

/// Which detector found a box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectionSource {
    /// The trained model.
    #[default]
    Model,
    /// The training-free lattice analysis.
    Lattice,
    /// Both agreed (its confidence combines the two).
    Both,
}

impl DetectionSource {
    pub fn name(self) -> &'static str {
        match self {
            DetectionSource::Model => "model",
            DetectionSource::Lattice => "lattice",
            DetectionSource::Both => "both",
        }
    }
}

/// One oriented box found by the detector.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub class: usize,
    /// Shared with every other detection of the class (no allocation per candidate).
    pub class_name: Arc<str>,
    pub confidence: f32,
    /// In original image pixels (corner-origin convention of [`crate::geometry`]), regularised
    /// as Ultralytics does: angle in `[0, pi/2)`.
    pub obb: OrientedBox,
    pub source: DetectionSource,
}

impl Detection {
    pub fn corners(&self) -> [Pt; 4] {
        self.obb.corners()
    }
}

/// How the image is brought to the model's input size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fit {
    /// Keep the pixel scale; cut images larger than the model input into overlapping tiles
    /// (`overlap` as a fraction of the tile) and pad smaller ones. For microscope images,
    /// where the size of an atom in pixels is what the model learned.
    Tile { overlap: f64 },
    /// Ultralytics `val`: scale the long side to the model size, then letterbox.
    ResizeLongSide,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectOptions {
    /// Candidates with a class score at or below this are dropped.
    pub floor_conf: f32,
    pub intensity: Intensity,
    pub fit: Fit,
    /// Resample calibrated images to the model's `nm_per_px` (when the model declares one).
    pub match_model_scale: bool,
    /// One candidate per class above the floor (Ultralytics `val`), not just the best class.
    pub multi_label: bool,
    /// Run frames up to [`pre::MAX_ONE_PASS`] whole when the model's input is dynamic; `false`
    /// tiles them at the model's training size like a fixed-size model (for comparison).
    pub one_pass: bool,
}

impl Default for DetectOptions {
    fn default() -> Self {
        Self {
            floor_conf: DEFAULT_FLOOR_CONF,
            intensity: Intensity::ModelWindow,
            fit: Fit::Tile {
                overlap: DEFAULT_TILE_OVERLAP,
            },
            match_model_scale: true,
            multi_label: false,
            one_pass: true,
        }
    }
}

impl DetectOptions {
    /// What Ultralytics `val` does with an 8-bit dataset image.
    pub fn ultralytics_val() -> Self {
        Self {
            floor_conf: 0.0,
            intensity: Intensity::Fixed { lo: 0.0, hi: 255.0 },
            fit: Fit::ResizeLongSide,
            match_model_scale: false,
            multi_label: true,
            one_pass: false,
        }
    }
}

/// Milliseconds per stage of one [`Detector::detect`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageTimings {
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
}

impl StageTimings {
    pub fn total_ms(&self) -> f64 {
        self.preprocess_ms + self.inference_ms + self.postprocess_ms
    }
}

#[derive(Clone, Debug)]
pub struct DetectionResult {
    /// Every candidate above the floor confidence, before NMS, most confident first. Use
    /// [`filter`] (or [`DetectionResult::filtered`]) for final detections.
    pub candidates: Vec<Detection>,
    pub width: usize,
    pub height: usize,
    pub pixel_size: Option<PixelSize>,
    pub class_names: Vec<String>,
    /// Execution provider that ran the model.
    pub provider: String,
    pub timings: StageTimings,
    /// Model inputs run: tiles × test-time copies × lattice scales (1 for a whole frame in one
    /// pass). The Viewer shows it as "model runs"; `detect`'s JSON keeps the key `tiles`.
    pub tiles: usize,
    /// Model pixels per image pixel (1 unless resampled).
    pub scale: f64,
}

impl DetectionResult {
    /// Final detections: confidence threshold, class-wise rotated NMS, then boundary boxes
    /// along one line joined into one ([`merge_line_boxes`]) and cut at the frame's edges
    /// ([`post::clip_line_boxes`]).
    pub fn filtered(&self, conf: f32, iou: f64) -> Vec<Detection> {
        let line = line_class(&self.class_names);
        let mut dets = filter_with(
            &self.candidates,
            &FilterOptions {
                conf,
                iou,
                merge_lines: line,
                ..Default::default()
            },
        );
        if let Some(c) = line {
            post::clip_line_boxes(&mut dets, c, self.width as f64, self.height as f64);
        }
        dets
    }
}

/// How much coarser than the model's an image pixel may be. Beyond 8x an atomic column
/// spacing of 0.3 nm is under two image pixels for a 0.02 nm/px model: the lattice is not
/// resolved, and enlarging only invents a smooth pattern the model mistakes for defects
/// (a 0.5 nm/px frame gave thousands of "detections" on noise). The working image also grows
/// with the square of the factor (a 5 nm/px frame asked for 65 GB).
pub const MAX_UPSAMPLE: f64 = 8.0;
/// Largest resampled working image, in pixels (256 MiB of f32, plus as much again while
/// resampling): far above any atomic-resolution frame after a factor of up to
/// [`MAX_UPSAMPLE`], so only absurd sizes are refused.
pub const MAX_WORK_PIXELS: f64 = (1u64 << 26) as f64;

/// Why an image cannot be brought to the model's pixel size.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScaleError {
    #[error(
        "the image's pixels are {image_nm_per_px} nm, the model's {model_nm_per_px} nm \
         ({factor:.0}x coarser, at most {MAX_UPSAMPLE}x is resampled): too coarse for \
         atomic-resolution detection (an overview image?)"
    )]
    TooCoarse {
        image_nm_per_px: f64,
        model_nm_per_px: f64,
        factor: f64,
    },
    #[error(
        "resampling the {width}x{height} image to the model's pixel size ({factor:.2}x) would \
         make {work_pixels:.0} pixels, more than {MAX_WORK_PIXELS}; crop or bin it first"
    )]
    TooLarge {
        width: usize,
        height: usize,
        factor: f64,
        work_pixels: f64,
    },
}

/// The resampling factor from `image_nm_per_px` to `model_nm_per_px`, or why it is refused.
pub fn check_scale(
    img: &ImageF32,
    image_nm_per_px: f64,
    model_nm_per_px: f64,
) -> Result<f64, ScaleError> {
    let factor = image_nm_per_px / model_nm_per_px;
    if !factor.is_finite() || factor > MAX_UPSAMPLE {
        return Err(ScaleError::TooCoarse {
            image_nm_per_px,
            model_nm_per_px,
            factor,
        });
    }
    let work_pixels = (img.width as f64 * factor).round() * (img.height as f64 * factor).round();
    if factor > 1.0 && work_pixels > MAX_WORK_PIXELS {
        return Err(ScaleError::TooLarge {
            width: img.width,
            height: img.height,
            factor,
            work_pixels,
        });
    }
    Ok(factor)
}

/// Two test-time scales closer than this (as a ratio) are one scale.
pub const SAME_SCALE: f64 = 0.05;

/// The test-time scale (a factor on the pixel size the detector is told,
/// [`tta::TtaPlan::scales`]) that runs the model on a calibrated frame as it was sampled,
/// besides at the model's own pixel size: where the frame's pixel size lies in the span the
/// model was trained on ([`ModelInfo::trained_nm_per_px`]) and differs from the model's.
/// Resampling to the model's size costs coarse frames their boundaries (a lamella's two faces
/// come apart) and fine frames their detail, while the model at the frame's own sampling
/// misses defects the resampled frame shows; the two runs' boxes fused find more than either.
pub fn own_sampling_scale(info: &ModelInfo, pixel_size: Option<PixelSize>) -> Option<f64> {
    let model = info.nm_per_px?;
    let frame = pixel_size?.nm_per_px;
    let trained = info.trained_nm_per_px?;
    (frame > 0.0 && trained.contains(frame) && (frame / model - 1.0).abs() > SAME_SCALE)
        .then_some(model / frame)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Detector {
    /// Runs the detector on one image. `pixel_size` is the image's calibration, if known.
    pub fn detect(
        &self,
        img: &ImageF32,
        pixel_size: Option<PixelSize>,
        opts: &DetectOptions,
    ) -> anyhow::Result<DetectionResult> {
        self.detect_with_control(img, pixel_size, opts, None)
    }

    /// As [`Detector::detect`], reporting progress per tile and honouring cancellation.
    pub fn detect_with_control(
        &self,
        img: &ImageF32,
        pixel_size: Option<PixelSize>,
        opts: &DetectOptions,
        ctl: Option<&JobControl>,
    ) -> anyhow::Result<DetectionResult> {
        if img.width == 0 || img.height == 0 {
            anyhow::bail!("the image is empty ({}x{})", img.width, img.height);
        }
        let info = self.info();
        let s = info.imgsz;
        let t_pre = Instant::now();
        let q = pre::Quantizer::for_image(img, opts.intensity);

        // Working image: the original, or resampled so one pixel is what the model expects.
        let (work, sx, sy): (std::borrow::Cow<ImageF32>, f64, f64) = match opts.fit {
            Fit::Tile { .. } => {
                let f = match (opts.match_model_scale, pixel_size, info.nm_per_px) {
                    (true, Some(p), Some(m)) if p.nm_per_px > 0.0 => {
                        check_scale(img, p.nm_per_px, m)?
                    }
                    _ => 1.0,
                };
                if (f - 1.0).abs() < 1e-3 {
                    (std::borrow::Cow::Borrowed(img), 1.0, 1.0)
                } else {
                    let w = ((img.width as f64 * f).round() as usize).max(1);
                    let h = ((img.height as f64 * f).round() as usize).max(1);
                    (
                        std::borrow::Cow::Owned(pre::resample(img, w, h, f, f)),
                        f,
                        f,
                    )
                }
            }
            Fit::ResizeLongSide => {
                // Ultralytics `load_image`: long side to the model size, sizes rounded up.
                let r = s as f64 / img.width.max(img.height) as f64;
                if r == 1.0 {
                    (std::borrow::Cow::Borrowed(img), 1.0, 1.0)
                } else {
                    let w = ((img.width as f64 * r).ceil() as usize).clamp(1, s);
                    let h = ((img.height as f64 * r).ceil() as usize).clamp(1, s);
                    let (fx, fy) = (w as f64 / img.width as f64, h as f64 / img.height as f64);
                    (
                        std::borrow::Cow::Owned(pre::resample(img, w, h, fx, fy)),
                        fx,
                        fy,
                    )
                }
            }
        };
        let overlap = match opts.fit {
            Fit::Tile { overlap } => overlap,
            Fit::ResizeLongSide => 0.0,
        };
        // A model exported with a dynamic input sees a whole frame (up to
        // `pre::MAX_ONE_PASS`) at once: one run instead of overlapping tiles and no seams.
        let one_pass = match opts.fit {
            Fit::Tile { .. } if info.dynamic_input && opts.one_pass => {
                pre::plan_one_pass(work.width, work.height, info.max_stride())
            }
            _ => None,
        };
        let tiles = match one_pass {
            Some(t) => vec![t],
            None => pre::plan_tiles(work.width, work.height, s, overlap),
        };
        let mut timings = StageTimings {
            preprocess_ms: ms(t_pre.elapsed()),
            ..Default::default()
        };

        let names: Vec<Arc<str>> = info.names.iter().map(|n| Arc::from(n.as_str())).collect();
        let mut candidates = Vec::new();
        let single = tiles.len() == 1;
        for (k, tile) in tiles.iter().enumerate() {
            if let Some(c) = ctl {
                c.check()?;
                c.set_progress(
                    k as f64 / tiles.len() as f64,
                    format!("tile {}/{}", k + 1, tiles.len()),
                );
            }
            let spec = DecodeSpec {
                floor: opts.floor_conf,
                multi_label: opts.multi_label,
                map: BoxMap {
                    pad: [tile.pad_x as f64, tile.pad_y as f64],
                    scale: [1.0 / sx, 1.0 / sy],
                    offset: [tile.x0 as f64 / sx, tile.y0 as f64 / sy],
                },
                tile: if single { None } else { Some(tile) },
            };
            let mut fill_time = Duration::ZERO;
            let mut decode_time = Duration::ZERO;
            let (invalid, run_time) = self.run_sized(
                tile.in_w,
                tile.in_h,
                |buf| {
                    let t = Instant::now();
                    pre::fill_input(buf, &work, tile, &q);
                    fill_time = t.elapsed();
                },
                |out| {
                    let t = Instant::now();
                    let invalid = post::decode(
                        out,
                        out.len() / info.output_rows(),
                        &names,
                        &spec,
                        &mut candidates,
                    );
                    decode_time = t.elapsed();
                    invalid
                },
            )?;
            if invalid > 0 {
                // A model that emits NaN or empty boxes is broken (diverged training, a bad
                // export): thousands of NaN "detections" would hide that.
                anyhow::bail!(
                    "the model output {invalid} candidate box(es) with a non-finite value or a \
                     side that is not positive (tile {}/{}): the model is broken; check its \
                     training and export",
                    k + 1,
                    tiles.len()
                );
            }
            timings.preprocess_ms += ms(fill_time);
            timings.inference_ms += ms(run_time);
            timings.postprocess_ms += ms(decode_time);
        }
        let t_post = Instant::now();
        post::sort_by_confidence(&mut candidates);
        timings.postprocess_ms += ms(t_post.elapsed());
        if let Some(c) = ctl {
            c.set_progress(1.0, "done");
        }
        Ok(DetectionResult {
            candidates,
            width: img.width,
            height: img.height,
            pixel_size,
            class_names: info.names.clone(),
            provider: self.provider().to_string(),
            timings,
            tiles: tiles.len(),
            scale: 0.5 * (sx + sy),
        })
    }
}

/// Loads an image file for detection as raw f32 values with its pixel size when the file
/// records one.
pub fn load_image_for_detection(
    path: &std::path::Path,
) -> anyhow::Result<(ImageF32, Option<PixelSize>)> {
    // Every microscopy format the viewer reads (DM3/4, SER/EMI, EMD, MRC, TIFF incl. float),
    // with its calibration, so resampling to the model's pixel size works from the CLI too.
    let s = crate::formats::load(path)?;
    Ok((s.image, s.pixel_size))
}

#[cfg(test)]
mod tests;

/// The first model in `models/` (beside the working directory or the executable, or two
/// levels up from it as in a cargo build): the shipped detector, for the app and for CLI runs
/// without `--model`.
pub fn default_model() -> Option<std::path::PathBuf> {
    let mut dirs = vec![std::path::PathBuf::from("models")];
    if let Ok(exe) = std::env::current_exe()
        && let Some(d) = exe.parent()
    {
        dirs.push(d.join("models"));
        dirs.push(d.join("../../models"));
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut v: Vec<std::path::PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
                })
                .collect();
            v.sort();
            if let Some(p) = v.into_iter().next() {
                return Some(p);
            }
        }
    }
    None
}
