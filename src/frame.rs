//! One frame to final detections, the way every front end does it (`detect`, `watch`,
//! `eval-real`): the pixel size (the file's, else estimated from the crystal lattice), the
//! model, the training-free lattice analysis, joined by the chosen method. One function, so
//! a score measured by `eval-real` is the score a user gets from `detect`.

use crate::detect::combine::{DetectMethod, join};
use crate::detect::{DetectOptions, Detection, DetectionResult, Detector};
use crate::geometry::OrientedBox;
use crate::lattice::cells::{CellFitParams, fit_point_box};
use crate::raster::{ImageF32, PixelSize};
use crate::synth::crystal::{CrystalSpec, Preset};

/// How a frame becomes detections besides the model's single pass: its crystal lattice, and
/// the model's test-time augmentation.
#[derive(Clone, Debug)]
pub struct LatticeUse {
    pub crystal: CrystalSpec,
    /// Take the pixel size of files without one from their lattice.
    pub calibrate: bool,
    pub method: DetectMethod,
    /// Fit the model's point-defect boxes to the lattice around them
    /// ([`crate::lattice::cells`]); `None` keeps the boxes as the model drew them.
    pub fit_cells: Option<CellFitParams>,
    /// Run the model on these dihedral copies of the frame too and fuse their boxes
    /// ([`crate::detect::tta`]): steadier boxes and confidences for one model run per copy.
    pub tta: Option<Vec<crate::geometry::Dihedral>>,
}

impl Default for LatticeUse {
    fn default() -> Self {
        Self {
            crystal: Preset::Cdte110.spec(),
            calibrate: true,
            method: Default::default(),
            fit_cells: Some(CellFitParams::default()),
            tta: None,
        }
    }
}

/// The geometry every front end gives its final boxes, whichever detector drew them:
/// boundary boxes end inside the frame, as the labels do
/// ([`crate::detect::post::clip_line_boxes`]), and, with `fit`, the model's point-defect boxes
/// are fitted to the lattice around them ([`fit_point_cells`]).
pub fn finish_boxes(
    img: &ImageF32,
    dets: &mut [Detection],
    names: &[String],
    fit: Option<&CellFitParams>,
) {
    finish_boxes_cached(img, dets, names, fit, &mut CellFitCache::default());
}

/// [`finish_boxes`] with the point fits kept in `cache` (see [`CellFitCache`]).
pub fn finish_boxes_cached(
    img: &ImageF32,
    dets: &mut [Detection],
    names: &[String],
    fit: Option<&CellFitParams>,
    cache: &mut CellFitCache,
) {
    if let Some(c) = crate::detect::line_class(names) {
        let (w, h) = (img.width as f64, img.height as f64);
        crate::detect::post::clip_line_boxes(dets, c, w, h);
    }
    if let Some(p) = fit {
        fit_point_cells_cached(img, dets, names, p, cache);
    }
}

/// Fits the model's point-defect boxes (every class but the boundary class of `names`) to
/// the lattice around them; boxes where the lattice is too faint stay as they are. Boxes of
/// the lattice analysis already sit on its sites. Returns how many were fitted.
pub fn fit_point_cells(
    img: &ImageF32,
    dets: &mut [Detection],
    names: &[String],
    params: &CellFitParams,
) -> usize {
    fit_point_cells_cached(img, dets, names, params, &mut CellFitCache::default())
}

/// Fitted boxes of one image, keyed by the box as drawn: a fit costs milliseconds, and the
/// Viewer re-filters the same candidates on every slider step. Clear it when the image changes.
#[derive(Debug, Default)]
pub struct CellFitCache(std::collections::HashMap<([u64; 5], usize), Option<OrientedBox>>);

impl CellFitCache {
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

/// [`fit_point_cells`], reusing the fits in `cache` (which must belong to `img` and `params`).
pub fn fit_point_cells_cached(
    img: &ImageF32,
    dets: &mut [Detection],
    names: &[String],
    params: &CellFitParams,
    cache: &mut CellFitCache,
) -> usize {
    use crate::detect::DetectionSource;
    let line = crate::detect::line_class(names);
    let mut n = 0;
    for d in dets.iter_mut() {
        if Some(d.class) == line || d.source == DetectionSource::Lattice {
            continue;
        }
        let b = d.obb;
        let key = ([b.cx, b.cy, b.w, b.h, b.angle].map(f64::to_bits), d.class);
        let sites = params
            .sites
            .as_ref()
            .and_then(|s| s.for_class(names.get(d.class).map_or("", String::as_str)));
        let fitted = *cache.0.entry(key).or_insert_with(|| {
            fit_point_box(img, &b, params, sites).map(|f| crate::detect::post::regularize(&f.obb))
        });
        if let Some(obb) = fitted {
            d.obb = obb;
            n += 1;
        }
    }
    n
}

/// Where the pixel size used for a frame came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Calibration {
    /// Recorded in the file (or given by the user).
    Given(PixelSize),
    /// Estimated from the lattice of the named crystal (the file had none).
    Lattice(PixelSize),
    /// None known: the frame is used at its own scale.
    None,
}

impl Calibration {
    pub fn pixel_size(self) -> Option<PixelSize> {
        match self {
            Calibration::Given(p) | Calibration::Lattice(p) => Some(p),
            Calibration::None => None,
        }
    }
}

/// The calibration of a frame: `given` when known, else (if `lattice.calibrate`) the lattice
/// estimate.
pub fn calibrate(img: &ImageF32, given: Option<PixelSize>, lattice: &LatticeUse) -> Calibration {
    match given {
        Some(p) => Calibration::Given(p),
        None if lattice.calibrate => {
            match crate::realism::lattice_pixel_size(img, &lattice.crystal) {
                Some(nm_per_px) => Calibration::Lattice(PixelSize { nm_per_px }),
                None => Calibration::None,
            }
        }
        None => Calibration::None,
    }
}

/// Final detections of one frame and how they were made.
#[derive(Clone, Debug)]
pub struct FrameDetections {
    /// The model's raw result (all candidates, timings, tiles).
    pub result: DetectionResult,
    /// What the chosen method shows at `conf`/`iou`.
    pub detections: Vec<Detection>,
    pub calibration: Calibration,
    /// Why the lattice analysis gave nothing, when it was asked for and failed (too small a
    /// frame, no clear lattice); the model's detections stand alone then.
    pub lattice_error: Option<String>,
}

/// Runs `det` and, unless the method is the model alone, the lattice analysis on one frame.
pub fn detect_frame(
    det: &Detector,
    img: &ImageF32,
    given: Option<PixelSize>,
    lattice: &LatticeUse,
    opts: &DetectOptions,
    conf: f32,
    iou: f64,
) -> anyhow::Result<FrameDetections> {
    let calibration = calibrate(img, given, lattice);
    let px = calibration.pixel_size();
    let result = det.detect(img, px, opts)?;
    let (other, lattice_error) = if lattice.method == DetectMethod::Model {
        (Vec::new(), None)
    } else {
        let params =
            crate::lattice::LatticeParams::new(lattice.crystal.clone(), px.map(|p| p.nm_per_px));
        match crate::lattice::analyse(img, &params) {
            Ok(l) => (l.detections(), None),
            Err(e) => (Vec::new(), Some(format!("{e:#}"))),
        }
    };
    let model = match &lattice.tta {
        Some(copies) => {
            let line = crate::detect::line_class(&result.class_names);
            let plan =
                crate::detect::tta::TtaPlan::at_threshold(copies, conf, iou, &result.class_names);
            let mut d = crate::detect::tta::detect_tta(det, img, px, opts, &plan, Some(&result))?
                .detections;
            if let Some(c) = line {
                let (w, h) = (img.width as f64, img.height as f64);
                crate::detect::post::clip_line_boxes(&mut d, c, w, h);
            }
            d
        }
        None => result.filtered(conf, iou),
    };
    let mut detections = join(lattice.method, model, &other, conf, &result.class_names);
    finish_boxes(
        img,
        &mut detections,
        &result.class_names,
        lattice.fit_cells.as_ref(),
    );
    Ok(FrameDetections {
        result,
        detections,
        calibration,
        lattice_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::DefectClass;
    use crate::detect::DetectionSource;
    use crate::geometry::OrientedBox;
    use crate::synth::{SynthParams, generate};

    fn detection(l: &crate::synth::scene::DefectLabel, source: DetectionSource) -> Detection {
        let t = l.obb;
        // Off by a detector's typical error: 1.5 px along the short side, 4 %, 3°.
        let (sn, cs) = t.angle.sin_cos();
        Detection {
            class: l.class.id(),
            class_name: l.class.name().into(),
            confidence: 0.9,
            obb: OrientedBox::new(
                t.cx + 1.5 * cs,
                t.cy + 1.5 * sn,
                t.w * 1.04,
                t.h * 1.04,
                t.angle + 3f64.to_radians(),
            ),
            source,
        }
    }

    #[test]
    fn only_the_models_point_boxes_are_fitted() {
        let s = generate(&SynthParams {
            seed: 11,
            ..Default::default()
        })
        .unwrap();
        let names: Vec<String> = DefectClass::ALL
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let mut dets: Vec<Detection> = s
            .labels
            .iter()
            .map(|l| detection(l, DetectionSource::Model))
            .collect();
        let points = s
            .labels
            .iter()
            .filter(|l| l.class != DefectClass::GrainBoundary)
            .count();
        assert!(points >= 2, "{points} point defects");
        // A box the lattice analysis placed is left where it put it.
        let lattice_box = detection(&s.labels[0], DetectionSource::Lattice);
        dets.push(lattice_box.clone());
        let before = dets.clone();
        let n = fit_point_cells(&s.image, &mut dets, &names, &CellFitParams::default());
        assert_eq!(n, points);
        for ((d, b), l) in dets.iter().zip(&before).zip(&s.labels) {
            let iou = |o: &OrientedBox| crate::geometry::polygon_iou(&l.obb, o);
            if l.class == DefectClass::GrainBoundary {
                assert_eq!(d, b);
            } else {
                assert!(
                    iou(&d.obb) > iou(&b.obb) + 0.05,
                    "{:?}: {:.3} -> {:.3}",
                    l.class,
                    iou(&b.obb),
                    iou(&d.obb)
                );
            }
        }
        assert_eq!(dets.last(), Some(&lattice_box));
        // The Viewer's cache gives the same boxes, the second time from memory.
        let mut cache = CellFitCache::default();
        for _ in 0..2 {
            let mut again = before.clone();
            let m = fit_point_cells_cached(
                &s.image,
                &mut again,
                &names,
                &CellFitParams::default(),
                &mut cache,
            );
            assert_eq!((m, &again), (n, &dets));
        }
        assert_eq!(cache.0.len(), points);
    }
}
