//! One frame to final detections, the way every front end does it (`detect`, `watch`,
//! `eval-real`): the pixel size (the file's, else estimated from the crystal lattice), the
//! model, the training-free lattice analysis, joined by the chosen method. One function, so
//! a score measured by `eval-real` is the score a user gets from `detect`.

use crate::detect::combine::{DetectMethod, SECOND_FLOOR, UNCONFIRMED_BOUNDARY_WEIGHT, join};
use crate::detect::{DetectOptions, Detection, DetectionResult, DetectionSource, Detector};
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
    /// Check a file's calibration against its lattice and use the lattice's when the two
    /// clearly disagree ([`check_file_calibration`]). Off for a pixel size the user gave.
    pub check_file_calibration: bool,
    pub method: DetectMethod,
    /// Fit the model's point-defect boxes to the lattice around them
    /// ([`crate::lattice::cells`]); `None` keeps the boxes as the model drew them.
    pub fit_cells: Option<CellFitParams>,
    /// Run the model on these dihedral copies of the frame too and fuse their boxes
    /// ([`crate::detect::tta`]): steadier boxes and confidences for one model run per copy.
    pub tta: Option<Vec<crate::geometry::Dihedral>>,
    /// Where the pixel size was read from the lattice ([`Calibration::from_lattice`]), run the
    /// model at the scale each preset crystal's lattice would give too and fuse the boxes
    /// ([`CrystalSpec::preset_scales`]): such a scale is only as right as the crystal assumed.
    pub hedge_lattice_scale: bool,
    /// Also run the model on a calibrated frame as it was sampled, where that sampling lies in
    /// the model's training span, and fuse the boxes ([`crate::detect::own_sampling_scale`]).
    pub hedge_own_sampling: bool,
    /// Drop point-defect boxes centred inside a boundary box
    /// ([`crate::detect::post::drop_points_on_lines`]): a defect on a boundary is neither bulk
    /// nor boundary, as the labels have it.
    pub points_off_boundaries: bool,
    /// Drop point-defect boxes that reach past the frame's edge
    /// ([`crate::detect::post::drop_points_across_edges`]): half the columns a site is judged
    /// against are outside the field there.
    pub points_inside_frame: bool,
    /// Measure how much of the frame's spectrum the crystal's lattice explains
    /// ([`crate::realism::lattice_match`]), so a frame of another structure is reported.
    pub check_crystal: bool,
    /// What the model was trained on (its card's `training_realism`): each frame's `realism`
    /// statistics are measured, as the Viewer measures them, and those outside these ranges
    /// reported ([`FrameDetections::outside_training`]). The same measurement gives the
    /// lattice match, so the crystal check then costs nothing more.
    pub training: Option<crate::realism::TrainingRealism>,
}

impl Default for LatticeUse {
    fn default() -> Self {
        Self {
            crystal: Preset::Cdte110.spec(),
            calibrate: true,
            check_file_calibration: true,
            method: Default::default(),
            fit_cells: Some(CellFitParams::default()),
            tta: None,
            hedge_lattice_scale: true,
            hedge_own_sampling: true,
            points_off_boundaries: true,
            points_inside_frame: true,
            check_crystal: true,
            training: None,
        }
    }
}

impl LatticeUse {
    /// The scales the model runs at on a frame of this calibration: the presets' readings of
    /// its lattice ([`CrystalSpec::preset_scales`]) where the pixel size came from the lattice and
    /// hedging is on, else the model's pixel size alone; and `own_sampling`
    /// ([`crate::detect::own_sampling_scale`]) where that hedge is on.
    pub fn model_scales(&self, calibration: Calibration, own_sampling: Option<f64>) -> Vec<f64> {
        model_scales(
            &self.crystal,
            self.hedge_lattice_scale,
            calibration.from_lattice(),
            own_sampling.filter(|_| self.hedge_own_sampling),
        )
    }
}

/// The scales the model runs at: `crystal`'s preset readings
/// ([`CrystalSpec::preset_scales`]) where the pixel size was read from the lattice and
/// `hedge` is on, else the frame's own scale alone; and, for a pixel size the file states or
/// the user typed, `own_sampling`, the scale that runs the frame as sampled
/// ([`crate::detect::own_sampling_scale`]), unless one is that already. A pixel size read
/// from the lattice is not run as sampled: it is hedged over the crystals' readings already,
/// and on the real Si tilt frame (read there) the model at the frame's sampling misses the
/// boundary the three readings find, so a fourth run would halve its fused confidence.
/// One rule for `detect`, `eval` and the Viewer.
pub fn model_scales(
    crystal: &CrystalSpec,
    hedge: bool,
    from_lattice: bool,
    own_sampling: Option<f64>,
) -> Vec<f64> {
    let mut scales = if hedge && from_lattice {
        crystal.preset_scales()
    } else {
        vec![1.0]
    };
    if let Some(own) = own_sampling.filter(|_| !from_lattice) {
        add_scale(&mut scales, own);
    }
    scales
}

/// Appends `scale` unless one of `scales` is that scale already
/// ([`crate::detect::SAME_SCALE`]).
pub fn add_scale(scales: &mut Vec<f64>, scale: f64) {
    if !scales
        .iter()
        .any(|s| (s / scale - 1.0).abs() <= crate::detect::SAME_SCALE)
    {
        scales.push(scale);
    }
}

/// Drops the point-defect boxes that reach past `img`'s edge:
/// [`crate::detect::post::drop_points_across_edges`]. Returns how many.
pub fn drop_points_across_edges(
    img: &ImageF32,
    dets: &mut Vec<Detection>,
    names: &[String],
) -> usize {
    crate::detect::post::drop_points_across_edges(
        dets,
        crate::detect::line_class(names),
        img.width as f64,
        img.height as f64,
    )
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
    /// The file's calibration contradicted by its lattice: the lattice's is used.
    Corrected(CalibrationConflict),
    /// None known: the frame is used at its own scale.
    None,
}

impl Calibration {
    /// Where the pixel size came from, in words for reports.
    pub fn source(self) -> &'static str {
        match self {
            Calibration::Given(_) => "file",
            Calibration::Lattice(_) => "lattice",
            Calibration::Corrected(_) => "lattice, not the file's",
            Calibration::None => "none",
        }
    }

    /// Whether the pixel size was read from the lattice (and so rests on the crystal assumed).
    pub fn from_lattice(self) -> bool {
        matches!(self, Calibration::Lattice(_) | Calibration::Corrected(_))
    }

    pub fn pixel_size(self) -> Option<PixelSize> {
        match self {
            Calibration::Given(p) | Calibration::Lattice(p) => Some(p),
            Calibration::Corrected(c) => Some(c.lattice),
            Calibration::None => None,
        }
    }
}

/// A file's calibration that the frame's own lattice contradicts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CalibrationConflict {
    /// What the file says.
    pub file: PixelSize,
    /// What the lattice of the crystal measures.
    pub lattice: PixelSize,
}

impl CalibrationConflict {
    /// Lattice over file, e.g. 1.45 for a lattice 45 % coarser than the file claims.
    pub fn ratio(&self) -> f64 {
        self.lattice.nm_per_px / self.file.nm_per_px
    }

    /// One line for logs and the Viewer.
    pub fn describe(&self, crystal: &str) -> String {
        format!(
            "the file says {:.2} pm/px, but no {crystal} lattice is near that scale; the lattice \
             measures {:.2} pm/px ({:+.0} %)",
            self.file.nm_per_px * 1e3,
            self.lattice.nm_per_px * 1e3,
            (self.ratio() - 1.0) * 100.0
        )
    }
}

/// How far a lattice must lie from a file's calibration before the file is called wrong. The
/// zinc-blende [110] crystals here differ in scale by at most 19 % (CdTe against Si), so a
/// wrong crystal preset on a correctly calibrated frame is never taken for a wrong file.
pub const CALIBRATION_CONFLICT_RATIO: f64 = 1.25;

/// How closely the two independent lattice measures must agree for a conflict: the crystal
/// fit to the spectrum's peaks and the {111} ring of the radial spectrum.
const LATTICE_MEASURES_AGREE: f64 = 0.05;

/// Checks a file's calibration against the frame's lattice of `crystal`. A conflict needs all
/// of: the {111} ring of the power spectrum ([`crate::lattice::maps::estimate_d111_px`]) and a
/// clear lattice fit without the file's hint ([`crate::realism::estimate_lattice`]) agreeing
/// within 5 %, more than [`CALIBRATION_CONFLICT_RATIO`] from the file's scale; and no lattice
/// within ±15 % of the file's scale scoring as well. A DM calibration taken from the wrong
/// magnification is such a case (the Si tilt frame of `../shared/samples`: 16.4 pm/px in the
/// file, its lattice 24 pm/px, and the model finds its boundary only at the lattice's scale).
pub fn check_file_calibration(
    img: &ImageF32,
    crystal: &CrystalSpec,
    file: PixelSize,
) -> Option<CalibrationConflict> {
    // The ring first: one spectrum, where the crystal fit may try five; most files agree
    // with their lattice and stop here.
    let ring_px = crate::lattice::maps::estimate_d111_px(img)?;
    let d111_a = crate::lattice::LatticeParams::new(crystal.clone(), None).d111_a();
    let ring_nm = d111_a / ring_px / 10.0;
    let agrees = |nm: f64| {
        (1.0 / CALIBRATION_CONFLICT_RATIO..=CALIBRATION_CONFLICT_RATIO)
            .contains(&(nm / file.nm_per_px))
    };
    if agrees(ring_nm) {
        return None;
    }
    let free = crate::realism::estimate_lattice(img, crystal, None).ok()?;
    // The ring is a radial average, so it is compared with the fit's pixel size averaged over
    // directions: a frame with a slow-scan stretch (the Si tilt frame's is 8 %) would otherwise
    // pass or fail by which of its axes is the fast one.
    if agrees(free.nm_per_px)
        || (ring_nm / free.mean_nm_per_px() - 1.0).abs() > LATTICE_MEASURES_AGREE
    {
        return None;
    }
    let conflict = CalibrationConflict {
        file,
        lattice: PixelSize {
            nm_per_px: free.nm_per_px,
        },
    };
    // A search held near the file's scale can still fit something (an alias of the lattice,
    // a texture); it must score below the free fit.
    match crate::realism::estimate_lattice(img, crystal, Some(file.nm_per_px)) {
        Ok(near) if near.score >= free.score => None,
        _ => Some(conflict),
    }
}

/// The calibration of a frame: `given` when known (unless `lattice.check_file_calibration`
/// finds the lattice contradicting it), else (if `lattice.calibrate`) the lattice estimate.
pub fn calibrate(img: &ImageF32, given: Option<PixelSize>, lattice: &LatticeUse) -> Calibration {
    match given {
        Some(p) if lattice.check_file_calibration => {
            match check_file_calibration(img, &lattice.crystal, p) {
                Some(c) => Calibration::Corrected(c),
                None => Calibration::Given(p),
            }
        }
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
    /// Share of the frame's strongest spectrum peaks on the crystal's lattice
    /// ([`crate::realism::RealismStats::lattice_match`]), with `LatticeUse::check_crystal`.
    pub lattice_match: Option<f64>,
    /// Model boundary boxes the lattice contradicts, weighed down under `both`
    /// ([`weigh_contradicted_boundaries`]).
    pub contradicted_boundaries: usize,
    /// Point-defect boxes left out because they reach past the frame's edge
    /// ([`LatticeUse::points_inside_frame`]).
    pub points_at_edges: usize,
    /// With [`LatticeUse::training`]: the frame's statistics outside the model's training
    /// ranges, as the Viewer's warning lists them (e.g. `column FWHM 5.68 Å > 2.79 Å`); empty
    /// when inside or when the frame cannot be measured (no pixel size and no lattice).
    pub outside_training: Vec<String>,
    /// The scale at which the model also ran the frame as sampled, besides at its own pixel
    /// size ([`LatticeUse::hedge_own_sampling`]); `None` where it ran at its own size only.
    pub as_sampled: Option<f64>,
}

impl FrameDetections {
    /// The [`FrameDetections::lattice_match`] of a frame that is not of the crystal (below
    /// [`crate::realism::MIN_LATTICE_MATCH`]): the model's boxes there mean nothing.
    pub fn not_the_crystal(&self) -> Option<f64> {
        crate::realism::not_the_crystal(self.lattice_match)
    }
}

/// A model boundary box is contradicted by the lattice when the crystal on its two sides
/// differs by at most this much (degrees) ...
pub const CONTRADICTED_MAX_MISORIENTATION_DEG: f64 = 3.0;

/// ... and the lattice's discontinuity along it is no higher than on its flanks (ridge
/// contrast at most this): no boundary runs there.
pub const CONTRADICTED_MAX_CONTRAST: f32 = 0.0;

/// Under `both`, a boundary box of the model alone that the lattice contradicts
/// ([`CONTRADICTED_MAX_MISORIENTATION_DEG`], [`CONTRADICTED_MAX_CONTRAST`]) keeps
/// [`UNCONFIRMED_BOUNDARY_WEIGHT`] of its confidence, as a boundary of the lattice alone
/// does; boxes that fall below `conf` are dropped. A grain boundary separates two
/// orientations of the crystal: where the maps read one orientation on both sides and no ridge
/// between them, the box is the model's misreading (on the real Si tilt frame turned by 180°
/// or 270°, a box across the upper grain at 0.33 and 0.45: 1.4° and 2.5°, contrast −0.16 and
/// −0.14). A thin twin lamella reads as one orientation on both sides too, but its planes
/// raise the discontinuity along the line, so it is left alone. Where one side has no
/// reliable orientation (vacuum, an amorphous layer, the frame's edge) nothing is said.
/// Returns how many boxes were weighed down (kept or dropped), for the front ends to say so.
pub fn weigh_contradicted_boundaries(
    dets: &mut Vec<Detection>,
    lattice: &crate::lattice::LatticeResult,
    names: &[String],
    conf: f32,
) -> usize {
    let Some(line) = crate::detect::line_class(names) else {
        return 0;
    };
    let mut weighed = 0;
    for d in dets.iter_mut() {
        if d.class != line || d.source != DetectionSource::Model {
            continue;
        }
        let contradicted = lattice.line_evidence(&d.obb).is_some_and(|ev| {
            ev.misorientation_deg
                .is_some_and(|m| m <= CONTRADICTED_MAX_MISORIENTATION_DEG)
                && ev.contrast <= CONTRADICTED_MAX_CONTRAST
        });
        if contradicted {
            d.confidence *= UNCONFIRMED_BOUNDARY_WEIGHT;
            weighed += 1;
        }
    }
    if weighed > 0 {
        dets.retain(|d| d.class != line || d.confidence >= conf);
    }
    weighed
}

/// What `method` shows of a frame (every front end: `detect`, `eval`, the Viewer): the
/// model's `model` detections joined with the lattice analysis' boundaries
/// ([`crate::detect::combine::join`]), then under `both` the model's boundary boxes the
/// analysis contradicts weighed down ([`weigh_contradicted_boundaries`]). Under `both` the
/// model's boxes below `conf` (the threshold the result is shown at) are not joined and stay
/// as the model drew them, so a list scored below the threshold (`eval`) ranks what `detect`
/// shows at `conf` above the model's weaker boxes. `seconds` are the model's boundary boxes
/// down to [`SECOND_FLOOR`] ([`boundary_seconds`]): under `both` a lattice boundary none of the
/// model's boxes runs along is left out (`None`: every lattice boundary may enter alone).
/// Returns the detections and how many boxes were weighed down.
pub fn join_with_lattice(
    method: DetectMethod,
    model: Vec<Detection>,
    seconds: Option<&[Detection]>,
    lattice: Option<&crate::lattice::LatticeResult>,
    conf: f32,
    names: &[String],
) -> (Vec<Detection>, usize) {
    let other = lattice.map(|l| l.detections()).unwrap_or_default();
    // Only what is shown at `conf` is joined; a weaker model box stays as the model drew it.
    let (shown, weaker): (Vec<_>, Vec<_>) = match method {
        DetectMethod::Both => model.into_iter().partition(|d| d.confidence >= conf),
        _ => (model, Vec::new()),
    };
    let mut dets = join(method, shown, seconds, &other, conf, names);
    let weighed = match (method, lattice) {
        (DetectMethod::Both, Some(l)) => weigh_contradicted_boundaries(&mut dets, l, names, conf),
        _ => 0,
    };
    dets.extend(weaker);
    (dets, weighed)
}

/// What a front end says when [`weigh_contradicted_boundaries`] weighed boxes down.
pub fn contradicted_boundaries_note(n: usize) -> String {
    format!(
        "{n} model boundary box{} where the lattice reads one crystal orientation on both sides \
         and no boundary between: weighed down to half {} confidence",
        if n == 1 { "" } else { "es" },
        if n == 1 { "its" } else { "their" }
    )
}

/// What `detect` and the Viewer say of the point boxes [`drop_points_across_edges`] left out.
pub fn points_at_edges_note(n: usize) -> String {
    format!(
        "{n} point box{} reaching past the frame's edge not shown: half the columns {} judged \
         against are outside the field",
        if n == 1 { "" } else { "es" },
        if n == 1 { "it is" } else { "they are" }
    )
}

/// The steps from a frame's model boxes to the boxes a front end shows, in the one order every
/// front end takes them (`detect`, `watch` and `eval-real` through [`detect_frame`], the
/// Viewer's re-filtering, `eval`): joined with the lattice analysis
/// ([`join_with_lattice`]), boundary boxes cut at the frame and the model's point boxes fitted
/// to the lattice ([`fit_point_cells`]), then point boxes on boundaries and across the frame's
/// edge dropped. One function, so a setting means the same wherever it is scored or shown.
#[derive(Clone, Copy, Debug)]
pub struct Finishing<'a> {
    pub method: DetectMethod,
    /// The threshold the result is shown at: under `both` only the model boxes above it are
    /// joined with the lattice's ([`join_with_lattice`]).
    pub join_conf: f32,
    /// Cut boundary boxes at the frame's edges ([`crate::detect::post::clip_line_boxes`]).
    pub clip_boundaries: bool,
    /// Fit the model's point boxes to the lattice around them ([`fit_point_cells`]).
    pub fit_cells: Option<&'a CellFitParams>,
    /// Drop point boxes centred inside a boundary box of at least this confidence
    /// ([`crate::detect::post::drop_points_on_lines`]); 0 where every box shown is above the
    /// threshold anyway, the scored threshold where `eval` keeps weaker boxes.
    pub points_off_boundaries: Option<f32>,
    /// Drop point boxes reaching past the frame's edge ([`drop_points_across_edges`]).
    pub points_inside_frame: bool,
    /// The rotated NMS IoU of the model boxes that may second a boundary only the lattice sees
    /// under `both` ([`boundary_seconds`]).
    pub iou: f64,
}

impl<'a> Finishing<'a> {
    /// The steps a [`LatticeUse`] asks for, for a result shown at `conf` after NMS at `iou`.
    pub fn of(lattice: &'a LatticeUse, conf: f32, iou: f64) -> Self {
        Self {
            method: lattice.method,
            join_conf: conf,
            clip_boundaries: true,
            fit_cells: lattice.fit_cells.as_ref(),
            points_off_boundaries: lattice.points_off_boundaries.then_some(0.0),
            points_inside_frame: lattice.points_inside_frame,
            iou,
        }
    }
}

/// A frame's boxes after [`finish_frame`], with what its steps weighed down or left out, for
/// the front ends to say so.
#[derive(Clone, Debug, Default)]
pub struct Finished {
    pub detections: Vec<Detection>,
    /// Model boundary boxes the lattice contradicts ([`weigh_contradicted_boundaries`]).
    pub contradicted_boundaries: usize,
    /// Point boxes dropped at the frame's edge ([`drop_points_across_edges`]).
    pub points_at_edges: usize,
}

/// Takes `model`'s boxes of `img` through the steps of `f` ([`Finishing`]); the point fits are
/// kept in `cache` (which must belong to `img`). Under `both`, the boundary boxes of
/// `model_result` (the model run `model` comes from) second the lattice's lone boundaries
/// ([`boundary_seconds`]); without it every lattice boundary may enter alone.
pub fn finish_frame(
    img: &ImageF32,
    model: Vec<Detection>,
    model_result: Option<&DetectionResult>,
    lattice: Option<&crate::lattice::LatticeResult>,
    names: &[String],
    f: &Finishing,
    cache: &mut CellFitCache,
) -> Finished {
    // Only `both` reads them, and the Viewer finishes on every slider step.
    let seconds = model_result
        .filter(|_| f.method == DetectMethod::Both)
        .map(|r| boundary_seconds(r, f.iou));
    let (mut detections, contradicted_boundaries) = join_with_lattice(
        f.method,
        model,
        seconds.as_deref(),
        lattice,
        f.join_conf,
        names,
    );
    // Boundary boxes end inside the frame, as the labels do; whichever detector drew them.
    if let (true, Some(line)) = (f.clip_boundaries, crate::detect::line_class(names)) {
        let (w, h) = (img.width as f64, img.height as f64);
        crate::detect::post::clip_line_boxes(&mut detections, line, w, h);
    }
    if let Some(p) = f.fit_cells {
        fit_point_cells_cached(img, &mut detections, names, p, cache);
    }
    if let (Some(min), Some(line)) = (f.points_off_boundaries, crate::detect::line_class(names)) {
        crate::detect::post::drop_points_on_lines(&mut detections, line, min);
    }
    let points_at_edges = if f.points_inside_frame {
        drop_points_across_edges(img, &mut detections, names)
    } else {
        0
    };
    Finished {
        detections,
        contradicted_boundaries,
        points_at_edges,
    }
}

/// The model's boundary boxes of `result` down to [`SECOND_FLOOR`]: what may second a
/// boundary only the lattice sees ([`crate::detect::combine::join`]).
pub fn boundary_seconds(result: &DetectionResult, iou: f64) -> Vec<Detection> {
    let line = crate::detect::line_class(&result.class_names);
    let mut d = result.filtered(SECOND_FLOOR, iou);
    d.retain(|d| Some(d.class) == line);
    d
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
    let (analysis, lattice_error) = if lattice.method == DetectMethod::Model {
        (None, None)
    } else {
        let params = crate::lattice::LatticeParams {
            point_defects: lattice.method.uses_lattice_points(),
            ..crate::lattice::LatticeParams::new(lattice.crystal.clone(), px.map(|p| p.nm_per_px))
        };
        match crate::lattice::analyse(img, &params) {
            Ok(l) => (Some(l), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        }
    };
    let identity = [crate::geometry::Dihedral::IDENTITY];
    let own = crate::detect::own_sampling_scale(det.info(), px);
    // The lattice analysis alone needs no more than the frame's own run.
    let (copies, scales) = if lattice.method == DetectMethod::Lattice {
        (&identity[..], vec![1.0])
    } else {
        let scales = lattice.model_scales(calibration, own);
        (lattice.tta.as_deref().unwrap_or(&identity[..]), scales)
    };
    // Never 1 (`own_sampling_scale` leaves out the model's own size), so the lattice-only
    // run's single scale never counts.
    let as_sampled = own.filter(|s| scales.contains(s));
    let runs = crate::detect::tta::FrameRuns::run(det, img, px, opts, copies, &scales, None)?;
    let model = runs.boxes(conf, iou);
    let result = runs.result;
    let Finished {
        detections,
        contradicted_boundaries,
        points_at_edges,
    } = finish_frame(
        img,
        model,
        Some(&result),
        analysis.as_ref(),
        &result.class_names,
        &Finishing::of(lattice, conf, iou),
        &mut CellFitCache::default(),
    );
    // With the card's ranges: one measurement at the file's (or the typed) scale, as the
    // Viewer measures it, whose lattice match is the crystal check's (searched near that
    // scale). Without: the crystal check alone, searched near the scale detection used.
    let (lattice_match, outside_training) = match &lattice.training {
        Some(t) => {
            match crate::realism::measure(img, &lattice.crystal, given.map(|p| p.nm_per_px), None) {
                Ok(stats) => (
                    stats.lattice_match.filter(|_| lattice.check_crystal),
                    crate::realism::outside(&stats, &t.ranges)
                        .iter()
                        .map(|o| o.to_string())
                        .collect(),
                ),
                Err(_) => (None, Vec::new()),
            }
        }
        None => (
            lattice
                .check_crystal
                .then(|| {
                    crate::realism::lattice_match(img, &lattice.crystal, px.map(|p| p.nm_per_px))
                })
                .flatten(),
            Vec::new(),
        ),
    };
    Ok(FrameDetections {
        result,
        detections,
        calibration,
        lattice_error,
        lattice_match,
        contradicted_boundaries,
        points_at_edges,
        outside_training,
        as_sampled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::DefectClass;
    use crate::geometry::OrientedBox;
    use crate::synth::{SynthParams, generate};

    /// A calibrated frame whose pixel size the shipped model was trained at (its metadata
    /// `nm_per_px_range`, 6-30 pm) runs at the model's 16 pm/px and as sampled, unless the
    /// hedge is off; one sampled at the model's size, or outside the span, runs once.
    #[test]
    fn frames_sampled_where_the_model_trained_also_run_as_sampled() {
        let det = crate::test_support::cpu_detector("models/cdte-yolo11n-obb.onnx");
        let trained = det
            .info()
            .trained_nm_per_px
            .expect("the shipped model's span");
        assert!(
            (trained.lo - 0.006).abs() < 1e-9 && (trained.hi - 0.03).abs() < 1e-9,
            "{trained:?}"
        );
        let img = generate(&SynthParams {
            width: 192,
            height: 192,
            ..Default::default()
        })
        .unwrap()
        .image;
        let mut lattice = LatticeUse {
            method: DetectMethod::Model,
            check_file_calibration: false,
            check_crystal: false,
            fit_cells: None,
            ..Default::default()
        };
        let runs = |lattice: &LatticeUse, nm_per_px: f64| {
            let f = detect_frame(
                &det,
                &img,
                Some(PixelSize { nm_per_px }),
                lattice,
                &DetectOptions::default(),
                0.25,
                0.7,
            )
            .unwrap();
            assert_eq!(f.calibration, Calibration::Given(PixelSize { nm_per_px }));
            // Said where it ran so (`detect` prints it).
            assert_eq!(f.as_sampled.is_some(), f.result.tiles == 2);
            f.result.tiles
        };
        assert_eq!(runs(&lattice, 0.024), 2);
        assert_eq!(runs(&lattice, 0.0163), 1, "already the model's pixel size");
        assert_eq!(runs(&lattice, 0.04), 1, "coarser than any training frame");
        lattice.hedge_own_sampling = false;
        assert_eq!(runs(&lattice, 0.024), 1);
        // The scale runs the frame as sampled: the detector, told the pixel size times it,
        // resamples by 1.
        let s = crate::detect::own_sampling_scale(det.info(), Some(PixelSize { nm_per_px: 0.024 }))
            .unwrap();
        assert!((0.024 * s / det.info().nm_per_px.unwrap() - 1.0).abs() < 1e-12);
        // It joins a stated pixel size, not one read from the lattice (hedged over the
        // crystals' readings already), and not where a scale is that one already.
        let cdte = Preset::Cdte110.spec();
        let presets = cdte.preset_scales();
        assert_eq!(model_scales(&cdte, true, false, Some(s)), vec![1.0, s]);
        assert_eq!(model_scales(&cdte, true, false, Some(1.02)), vec![1.0]);
        assert_eq!(model_scales(&cdte, true, true, Some(s)), presets);
        assert_eq!(model_scales(&cdte, false, true, Some(s)), vec![1.0]);
        assert_eq!(model_scales(&cdte, false, false, None), vec![1.0]);
    }

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

    /// The lattice analysis of the real Si tilt frame (read as Si), or `None` with a printed
    /// reason where `../shared/samples` is absent.
    fn si_tilt_lattice() -> Option<crate::lattice::LatticeResult> {
        let dir = crate::test_support::samples()?;
        let img = crate::formats::load(&dir.join("Si011_tilt-GB_HAADF85_ingrained.dm3")).unwrap();
        let params = crate::lattice::LatticeParams::new(Preset::Si110.spec(), None);
        Some(crate::lattice::analyse(&img.image, &params).unwrap())
    }

    fn boundary_box(obb: OrientedBox, confidence: f32, source: DetectionSource) -> Detection {
        let line = DefectClass::GrainBoundary;
        Detection {
            class: line.id(),
            class_name: line.name().into(),
            confidence,
            obb,
            source,
        }
    }

    #[test]
    fn a_model_boundary_the_lattice_contradicts_is_weighed_down_and_a_confirmed_one_is_kept() {
        let Some(l) = si_tilt_lattice() else { return };
        let names: Vec<String> = DefectClass::ALL.iter().map(|c| c.name().into()).collect();
        let boundary = l.boundaries[0].obb;
        let gb = |obb: OrientedBox, source: DetectionSource| boundary_box(obb, 0.45, source);
        let in_grain = OrientedBox {
            cy: boundary.cy - 150.0,
            ..boundary
        };
        let mut dets = vec![
            gb(boundary, DetectionSource::Model),
            gb(in_grain, DetectionSource::Model),
            // What another detector drew is not the model's to lose.
            gb(in_grain, DetectionSource::Lattice),
        ];
        assert_eq!(
            weigh_contradicted_boundaries(&mut dets, &l, &names, 0.25),
            1
        );
        assert_eq!(dets.len(), 2, "{dets:?}");
        assert_eq!(dets[0].obb, boundary);
        assert_eq!(dets[0].confidence, 0.45);
        assert_eq!(dets[1].source, DetectionSource::Lattice);
        // Below the threshold a weighed box stays, at half its confidence.
        let mut low = vec![gb(in_grain, DetectionSource::Model)];
        assert_eq!(weigh_contradicted_boundaries(&mut low, &l, &names, 0.1), 1);
        assert_eq!(low.len(), 1);
        assert!((low[0].confidence - 0.225).abs() < 1e-6);
    }

    #[test]
    fn only_the_model_boxes_shown_at_the_threshold_are_joined_with_the_lattice() {
        let Some(l) = si_tilt_lattice() else { return };
        let names: Vec<String> = DefectClass::ALL.iter().map(|c| c.name().into()).collect();
        let weak = boundary_box(l.boundaries[0].obb, 0.1, DetectionSource::Model);
        // Shown at 0.25, the weak box is not: the lattice's boundary stands alone, at half its
        // score, and the model's box is kept as drawn beneath it.
        let (at_default, _) = join_with_lattice(
            DetectMethod::Both,
            vec![weak.clone()],
            None,
            Some(&l),
            0.25,
            &names,
        );
        assert_eq!(at_default.len(), 2, "{at_default:?}");
        assert_eq!(at_default[0].source, DetectionSource::Lattice);
        assert_eq!(at_default[1], weak);
        // Shown at 0.05, it is, and the two join into one box above both scores.
        let (at_low, _) = join_with_lattice(
            DetectMethod::Both,
            vec![weak.clone()],
            None,
            Some(&l),
            0.05,
            &names,
        );
        assert_eq!(at_low.len(), 1, "{at_low:?}");
        assert_eq!(at_low[0].source, DetectionSource::Both);
        assert!(at_low[0].confidence > at_default[0].confidence.max(0.1));
        // The model alone is left as it is.
        let (model, _) = join_with_lattice(
            DetectMethod::Model,
            vec![weak.clone()],
            None,
            Some(&l),
            0.25,
            &names,
        );
        assert_eq!(model, vec![weak]);
    }

    #[test]
    fn finishing_cuts_boundaries_and_drops_points_on_them_and_across_the_edge_as_asked() {
        let img = ImageF32::new(200, 100);
        let names: Vec<String> = DefectClass::ALL.iter().map(|c| c.name().into()).collect();
        let point = |class: DefectClass, cx: f64, cy: f64, confidence: f32| Detection {
            class: class.id(),
            class_name: class.name().into(),
            confidence,
            obb: OrientedBox::new(cx, cy, 12.0, 16.0, 0.0),
            source: DetectionSource::Model,
        };
        let model = vec![
            // A boundary running on past both sides of the frame.
            boundary_box(
                OrientedBox::new(100.0, 50.0, 260.0, 20.0, 0.0),
                0.9,
                DetectionSource::Model,
            ),
            point(DefectClass::Vacancy, 60.0, 52.0, 0.8),
            point(DefectClass::Interstitial, 195.0, 20.0, 0.7),
            point(DefectClass::Vacancy, 100.0, 20.0, 0.6),
        ];
        let lattice = LatticeUse {
            method: DetectMethod::Model,
            fit_cells: None,
            ..Default::default()
        };
        let finish = |f: &Finishing| {
            finish_frame(
                &img,
                model.clone(),
                None,
                None,
                &names,
                f,
                &mut CellFitCache::default(),
            )
        };
        let all = finish(&Finishing::of(&lattice, 0.25, 0.7));
        let classes: Vec<usize> = all.detections.iter().map(|d| d.class).collect();
        assert_eq!(classes, vec![0, DefectClass::Vacancy.id()], "{all:?}");
        assert_eq!(all.points_at_edges, 1);
        let cut = all.detections[0].obb;
        assert!((cut.w - 200.0).abs() < 1e-6 && cut.angle == 0.0, "{cut:?}");
        // Each rule off keeps its boxes; nothing but the join is done without the image steps.
        let kept = finish(&Finishing {
            clip_boundaries: false,
            points_off_boundaries: None,
            points_inside_frame: false,
            ..Finishing::of(&lattice, 0.25, 0.7)
        });
        assert_eq!(kept.detections, model);
        assert_eq!(kept.points_at_edges, 0);
        // Points are dropped only inside a boundary box of at least the given confidence.
        let strong_only = finish(&Finishing {
            points_off_boundaries: Some(0.95),
            ..Finishing::of(&lattice, 0.25, 0.7)
        });
        assert_eq!(strong_only.detections.len(), 3, "{strong_only:?}");
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

    #[test]
    fn lattice_derived_scales_are_hedged_over_the_preset_crystals() {
        let cdte = Preset::Cdte110.spec().preset_scales();
        // CdTe 6.481 Å, Si 5.431 Å, GaAs 5.653 Å.
        assert_eq!(cdte.len(), 3);
        assert_eq!(cdte[0], 1.0);
        assert!((cdte[1] - 5.431 / 6.481).abs() < 2e-3, "{cdte:?}");
        assert!((cdte[2] - 5.653 / 6.481).abs() < 2e-3, "{cdte:?}");
        let si = Preset::Si110.spec().preset_scales();
        assert!((si[1] - 6.481 / 5.431).abs() < 2e-3, "{si:?}");
        assert_eq!(
            Preset::Si110.spec().preset_scale_names(),
            "Si [110], CdTe [110], GaAs [110]"
        );
        let px = PixelSize { nm_per_px: 0.02 };
        let mut use_ = LatticeUse::default();
        assert_eq!(use_.model_scales(Calibration::Lattice(px), None), cdte);
        let c = CalibrationConflict {
            file: px,
            lattice: px,
        };
        assert_eq!(use_.model_scales(Calibration::Corrected(c), None), cdte);
        // A file's own calibration, or none at all, is not a reading of the lattice.
        assert_eq!(use_.model_scales(Calibration::Given(px), None), vec![1.0]);
        assert_eq!(use_.model_scales(Calibration::None, None), vec![1.0]);
        // The frame as sampled joins them, unless that hedge is off.
        assert_eq!(
            use_.model_scales(Calibration::Given(px), Some(0.8)),
            vec![1.0, 0.8]
        );
        use_.hedge_own_sampling = false;
        assert_eq!(
            use_.model_scales(Calibration::Given(px), Some(0.8)),
            vec![1.0]
        );
        use_.hedge_lattice_scale = false;
        assert_eq!(use_.model_scales(Calibration::Lattice(px), None), vec![1.0]);
    }

    /// A file calibration off by 50 % is caught and replaced by the lattice's; one within
    /// the lattice's reach, or off by the scale of another zinc-blende crystal (a wrong
    /// preset, not a wrong file), stands.
    #[test]
    fn file_calibrations_the_lattice_contradicts_are_caught() {
        let p = SynthParams {
            width: 384,
            height: 384,
            pixel_size_pm: 16.0,
            ..Default::default()
        };
        let img = generate(&p).unwrap().image;
        let cdte = Preset::Cdte110.spec();
        let at = |pm: f64| PixelSize {
            nm_per_px: pm / 1000.0,
        };
        let c = check_file_calibration(&img, &cdte, at(24.0)).expect("24 pm/px is wrong");
        assert!((c.lattice.nm_per_px / 0.016 - 1.0).abs() < 0.03, "{c:?}");
        assert!((c.ratio() - 16.0 / 24.0).abs() < 0.03, "{c:?}");
        assert!(
            c.describe("CdTe [110]").contains("24.00 pm/px"),
            "{}",
            c.describe("")
        );
        assert_eq!(check_file_calibration(&img, &cdte, at(16.8)), None);
        assert_eq!(check_file_calibration(&img, &cdte, at(12.0)), None);
        // Read as Si, a correctly calibrated CdTe frame is 19 % off: a wrong preset.
        assert_eq!(
            check_file_calibration(&img, &Preset::Si110.spec(), at(16.0)),
            None
        );
        // `calibrate` uses it unless told not to; a frame without a file calibration is
        // calibrated from its lattice as before.
        let mut use_ = LatticeUse::default();
        let cal = calibrate(&img, Some(at(24.0)), &use_);
        assert!(matches!(cal, Calibration::Corrected(_)), "{cal:?}");
        assert_eq!(cal.pixel_size(), Some(c.lattice));
        use_.check_file_calibration = false;
        assert_eq!(
            calibrate(&img, Some(at(24.0)), &use_),
            Calibration::Given(at(24.0))
        );
        assert!(matches!(
            calibrate(&img, None, &use_),
            Calibration::Lattice(_)
        ));
    }

    /// The real frames: the Si tilt frame's DM calibration (16.4 pm/px) fits no Si lattice,
    /// which both measures put at ~24 pm/px; the CdTe frame's fits its lattice.
    #[test]
    fn the_si_tilt_frames_file_calibration_is_contradicted_by_its_lattice() {
        let Some(samples) = crate::test_support::samples() else {
            return;
        };
        let si =
            crate::formats::load(&samples.join("Si011_tilt-GB_HAADF85_ingrained.dm3")).unwrap();
        let file = si.pixel_size.expect("the DM3 is calibrated");
        let c =
            check_file_calibration(&si.image, &Preset::Si110.spec(), file).expect("contradicted");
        assert!((1.35..1.55).contains(&c.ratio()), "{c:?}");
        // Every quarter turn and mirror of it too: the ring (a radial average) is compared with
        // the fit's direction-averaged scale, so which axis is the fast one does not decide
        // (it did for the quarter turns: the frame's slow axis is stretched by 8 %).
        for d in crate::geometry::Dihedral::all() {
            let (w, h) = d.output_size(si.image.width, si.image.height);
            let turned = ImageF32::from_vec(
                w,
                h,
                d.apply_image(&si.image.data, si.image.width, si.image.height),
            );
            let c = check_file_calibration(&turned, &Preset::Si110.spec(), file)
                .unwrap_or_else(|| panic!("{}: not contradicted", d.name()));
            assert!((1.35..1.65).contains(&c.ratio()), "{}: {c:?}", d.name());
        }
        let cdte =
            crate::formats::load(&samples.join("CdTe110_tilt-GB_HAADF149_ingrained.dm3")).unwrap();
        let file = cdte.pixel_size.expect("the DM3 is calibrated");
        assert_eq!(
            check_file_calibration(&cdte.image, &Preset::Cdte110.spec(), file),
            None
        );
    }
}
