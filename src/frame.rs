//! One frame to final detections, the way every front end does it (`detect`, `watch`,
//! `eval-real`): the pixel size (the file's, else estimated from the crystal lattice), the
//! model, the training-free lattice analysis, joined by the chosen method. One function, so
//! a score measured by `eval-real` is the score a user gets from `detect`.

use crate::detect::combine::{DetectMethod, join};
use crate::detect::{DetectOptions, Detection, DetectionResult, Detector};
use crate::raster::{ImageF32, PixelSize};
use crate::synth::crystal::{CrystalSpec, Preset};

/// How a frame's crystal lattice is used.
#[derive(Clone, Debug)]
pub struct LatticeUse {
    pub crystal: CrystalSpec,
    /// Take the pixel size of files without one from their lattice.
    pub calibrate: bool,
    pub method: DetectMethod,
}

impl Default for LatticeUse {
    fn default() -> Self {
        Self {
            crystal: Preset::Cdte110.spec(),
            calibrate: true,
            method: Default::default(),
        }
    }
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
    let detections = join(
        lattice.method,
        result.filtered(conf, iou),
        &other,
        conf,
        &result.class_names,
    );
    Ok(FrameDetections {
        result,
        detections,
        calibration,
        lattice_error,
    })
}
