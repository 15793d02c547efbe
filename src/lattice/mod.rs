//! Training-free defect detection that reads the crystal directly.
//!
//! [`analyse`] computes local lattice maps from windowed spectra ([`maps`]), traces the
//! ridges of the discontinuity map into grain boundaries with their misorientation
//! ([`boundaries`]), and finds point defects against the local lattice ([`points`]).
//! Everything it returns is in image pixels (y down) and serialisable, and the boxes use the
//! same shapes and classes as the synthesizer's labels, so the results can be drawn and
//! scored beside a model's detections.
//!
//! ```no_run
//! use defect_detector::lattice::{LatticeParams, analyse};
//! use defect_detector::synth::crystal::Preset;
//! let img = defect_detector::formats::load("frame.dm3".as_ref())?;
//! let nm = img.pixel_size.map(|p| p.nm_per_px);
//! let r = analyse(&img.image, &LatticeParams::new(Preset::Cdte110.spec(), nm))?;
//! for b in &r.boundaries {
//!     println!("{:?} {:?}", b.kind, b.obb);
//! }
//! # anyhow::Ok(())
//! ```

pub mod boundaries;
pub mod cells;
pub mod maps;
pub mod points;
pub mod render;
#[cfg(test)]
mod tests;

use crate::classes::DefectClass;
use crate::geometry::OrientedBox;
use crate::raster::ImageF32;
use crate::synth::crystal::CrystalSpec;
use serde::{Deserialize, Serialize};
use std::time::Instant;

pub use boundaries::TWIN_DEG;
pub use maps::{LatticeMaps, WindowSpan, estimate_d111_px};

/// What [`analyse`] needs to know, with defaults for every threshold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatticeParams {
    pub crystal: CrystalSpec,
    /// Pixel size; `None`: the {111} period is estimated from the global power spectrum.
    pub nm_per_px: Option<f64>,
    /// Highest ridge threshold on the discontinuity map (0..1): the level a ridge cell must
    /// reach is `boundary_noise_sigmas` robust σ above the map's median, clamped to
    /// `[boundary_threshold_floor, boundary_threshold]`.
    pub boundary_threshold: f32,
    /// Lowest ridge threshold (0..1).
    pub boundary_threshold_floor: f32,
    /// Ridge threshold above the map's median, in robust standard deviations.
    pub boundary_noise_sigmas: f32,
    /// Second pass over the map at a threshold set by its background alone: the cells farther
    /// than this many windows from the segments of the first pass (0: no second pass). A
    /// strong boundary that covers a tenth of the map raises the map's spread, and with it
    /// the first threshold, above the ridges of fainter ones: a lamella beside a twin stayed
    /// unseen on maps that showed both its planes clearly. Five 200-frame benchmark sets:
    /// 1830 of 1924 boundaries found instead of 1817 (recall 0.951, was 0.944), precision
    /// 0.916 instead of 0.927.
    pub second_pass_exclusion_windows: f64,
    /// Contrast a second-pass line needs against its flank (the faint-but-clear rule does not
    /// apply there): 0.05 / 0.058 / 0.065 / 0.08 found 1830 / 1830 / 1828 / 1823 at precision
    /// 0.901 / 0.912 / 0.915 / 0.923.
    pub second_pass_min_contrast: f32,
    /// The same for a second-pass line with only one flank on the map (within a window of its
    /// edge, where the outer cells compare fewer windows): on the benchmark 9 of 32 such lines
    /// were true, at contrasts 0.067–0.164 against 0.059–0.112 for the false ones. Without them
    /// 1825 were found; at 0.07 1830 (precision 0.916). On the real Si tilt frame one such line,
    /// 70 px from the bottom edge at contrast 0.063, was the only extra boundary box.
    pub second_pass_one_flank_min_contrast: f32,
    /// A boundary's mean discontinuity must exceed that of lines one window to either side
    /// by this much (0..1).
    pub min_ridge_contrast: f32,
    /// A fainter ridge passes too when its contrast is at least `min_ridge_contrast_floor`
    /// and its line stands at least this many times its flank: on clear frames the map's
    /// background is low (0.03–0.05) and a thin lamella's planes reach about twice that.
    /// 1.7 and 0.03 on five 200-frame benchmark sets: 1817 of 1924 boundaries found instead
    /// of 1811, precision 0.927 instead of 0.930 (the boxes it adds score ≈ 0.3–0.45); 2.0
    /// found 3 more on three of the sets, 1.5 no more than 1.7 at precision −0.02.
    pub min_ridge_contrast_ratio: f32,
    pub min_ridge_contrast_floor: f32,
    /// Cells down to this fraction of the threshold extend a ridge (hysteresis).
    pub boundary_low_fraction: f32,
    /// Shortest boundary segment (Å).
    pub min_boundary_len_a: f64,
    /// The shortest segment is at most this fraction of the map's smaller extent: at 6–9 pm/px
    /// 25 Å is 280–420 px, more than half of what the maps of a 768² frame cover, and the
    /// ridge of a boundary that crosses the frame was often cut shorter than that by a
    /// junction or the map's edge.
    pub min_boundary_len_map_fraction: f64,
    /// Cells of one ridge line further apart than this (windows, at least 2.6 map steps) split
    /// it into pieces. 1.5 or 2 joined pieces of different boundaries: 3–4 fewer found on
    /// benchmark seeds 1000.
    pub ridge_max_gap_windows: f64,
    /// Width of the boundary boxes (Å), as the synthesizer's labels (10 Å).
    pub boundary_width_a: f64,
    /// Misorientations within this of 70.53° are Σ3 twins.
    pub twin_tolerance_deg: f64,
    /// Smaller misorientations give an `Unknown` boundary kind.
    pub min_misorientation_deg: f64,
    /// Windows with a weaker {111} peak-to-mean power ratio count as "no lattice".
    pub min_strength: f32,
    /// Frames whose median {111} strength (at the standard 4-period window) is below this are
    /// analysed with 6-period windows ([`WindowSpan::Wide`]): on the 200-frame benchmark the
    /// frames below 5 gave 5 of their 20 boundaries at 4 periods, 9 at 6.
    pub wide_window_below_strength: f32,
    /// Frames whose smaller side spans fewer {111} periods than this, and whose median {111}
    /// strength is at least `narrow_window_min_strength`, are analysed with 3-period windows
    /// ([`WindowSpan::Narrow`]). Together with `min_boundary_len_map_fraction`, on five
    /// 200-frame benchmark seed sets (1000–5000): 1811 of 1924 boundaries found instead of
    /// 1796 (recall 0.941, was 0.933), precision 0.930 instead of 0.933. On noisy frames
    /// (strength 5–8) the narrow windows lost boundaries.
    pub narrow_window_below_periods: f64,
    pub narrow_window_min_strength: f32,
    /// A line at least as high as both its flanks is a ridge of its own, and its contrast is
    /// taken against the lower flank (the other plane of a thin lamella, or a boundary a window
    /// away, lights the higher one); a line lower than a flank sits on the shoulder of another
    /// ridge and is measured against the higher flank. Only on frames with at least this median
    /// {111} strength: on noisier ones the flanks' noise lets ghost lines through. 6 rather
    /// than 7: 1, 2 and 2 more boundaries on benchmark seeds 1000, 2000 and 3000, precision
    /// −0.011, −0.002, −0.004 (5 finds one more on seeds 1000 only).
    pub ridge_lower_flank_min_strength: f32,
    /// Lines within this many map steps of a map border, and along it, are dropped as the
    /// border's artefact (`boundaries::along_map_edge`). 1.5 kept one more true boundary in
    /// 600 benchmark frames and 40 false ones.
    pub map_edge_line_steps: f64,
    /// Two parallel boundaries at most this far apart (nm) are reported as a lamella.
    pub lamella_max_nm: f64,
    /// Look for vacancies and interstitials.
    pub point_defects: bool,
    /// A site dimmer than this fraction of its same-species neighbours' median (above the
    /// local background) is a vacancy.
    pub vacancy_fraction: f64,
    /// An off-lattice column brighter than this fraction of the median column is an
    /// interstitial.
    pub interstitial_fraction: f64,
}

impl LatticeParams {
    pub fn new(crystal: CrystalSpec, nm_per_px: Option<f64>) -> Self {
        Self {
            crystal,
            nm_per_px,
            boundary_threshold: 0.35,
            boundary_threshold_floor: 0.12,
            boundary_noise_sigmas: 4.0,
            second_pass_exclusion_windows: 1.0,
            second_pass_min_contrast: 0.058,
            second_pass_one_flank_min_contrast: 0.07,
            min_ridge_contrast: 0.05,
            min_ridge_contrast_ratio: 1.7,
            min_ridge_contrast_floor: 0.03,
            boundary_low_fraction: 0.6,
            min_boundary_len_a: 25.0,
            ridge_max_gap_windows: 1.0,
            min_boundary_len_map_fraction: 0.3,
            boundary_width_a: 10.0,
            twin_tolerance_deg: 4.0,
            min_misorientation_deg: 3.0,
            min_strength: 3.0,
            wide_window_below_strength: 5.0,
            ridge_lower_flank_min_strength: 6.0,
            narrow_window_below_periods: 20.0,
            narrow_window_min_strength: 8.0,
            map_edge_line_steps: 2.5,
            lamella_max_nm: 6.0,
            point_defects: true,
            vacancy_fraction: 0.5,
            interstitial_fraction: 0.45,
        }
    }

    /// The nominal {111} spacing d = a/√3 (Å), with `a = b_v` of the [110] projection.
    pub fn d111_a(&self) -> f64 {
        self.crystal.b_v / 3f64.sqrt()
    }
}

/// The kind of boundary, from its measured misorientation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BoundaryKindGuess {
    /// Σ3 twin: the `u` axes differ by ≈ 70.5°.
    Twin,
    /// Tilt boundary with the measured angle (degrees, in [0°, 90°]).
    Tilt { angle_deg: f64 },
    /// No reliable orientation on one side, or no measurable misorientation.
    Unknown,
}

/// One straight boundary segment (class `grain_boundary`).
#[derive(Clone, Debug, Serialize)]
pub struct LatticeBoundary {
    /// Box along the segment: `w` its length, `h` [`LatticeParams::boundary_width_a`].
    pub obb: OrientedBox,
    /// Confidence (0..1) from the ridge contrast, calibrated as precision on synthetic frames
    /// ([`boundaries::confidence`]).
    pub score: f32,
    /// Misorientation of the lattice across the segment, folded into [0°, 90°].
    pub misorientation_deg: Option<f64>,
    /// Mean lattice rotation on the two sides (degrees mod 180, `LatticeMaps::rotation_deg`).
    pub orientation_sides_deg: Option<[f64; 2]>,
    pub kind: BoundaryKindGuess,
    /// Index of the parallel boundary that bounds a lamella together with this one.
    pub lamella_with: Option<usize>,
    /// Mean discontinuity on the centre line minus that of the flanks a window away.
    pub contrast: f32,
}

impl LatticeBoundary {
    pub fn class(&self) -> DefectClass {
        DefectClass::GrainBoundary
    }
}

/// A vacancy or interstitial with a one-cell box aligned with the local lattice.
#[derive(Clone, Debug, Serialize)]
pub struct LatticePointDefect {
    pub class: DefectClass,
    pub obb: OrientedBox,
    /// Confidence in (0, 1): the precision measured at this significance and departure
    /// ([`points::confidence`]).
    pub score: f32,
    /// How many robust standard deviations of the residual map the site's residual stands
    /// out (at least `RESIDUAL_SIGMAS`).
    pub sigmas: f32,
    /// The departure itself: the missing fraction of the expected column (vacancy) or the
    /// height over the median column height (interstitial), capped at 1.
    pub departure: f32,
}

/// Wall-clock times of the stages (ms).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatticeTimings {
    pub scale: f64,
    pub maps: f64,
    pub boundaries: f64,
    pub point_defects: f64,
    pub total: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatticeResult {
    /// Pixel size used (given, or estimated from the spectrum).
    pub nm_per_px: f64,
    /// True when `nm_per_px` was estimated from the {111} ring of the power spectrum.
    pub scale_estimated: bool,
    /// The {111} period (px) the analysis used: the nominal one from the pixel size, unless
    /// the spectrum disagrees by more than 15 % (then the measured one).
    pub d111_px: f64,
    /// The {111} period expected from the pixel size and crystal.
    pub d111_nominal_px: f64,
    /// The {111} period measured from the global power spectrum, if a ring was found.
    pub d111_measured_px: Option<f64>,
    /// Median {111} strength of the frame at the standard window (lattice visibility; below
    /// [`LatticeParams::wide_window_below_strength`] the maps use wide windows).
    pub visibility: f32,
    pub maps: LatticeMaps,
    pub boundaries: Vec<LatticeBoundary>,
    pub point_defects: Vec<LatticePointDefect>,
    pub timings_ms: LatticeTimings,
    /// The settings it ran with, so that lines another detector drew can be judged by the
    /// same thresholds ([`LatticeResult::line_evidence`]).
    #[serde(skip)]
    pub params: LatticeParams,
    /// The discontinuity map as the boundary tracing read it (smoothed), for the same reading
    /// of other detectors' lines.
    #[serde(skip)]
    pub smoothed_discontinuity: Vec<f32>,
}

impl LatticeResult {
    /// "visibility 12.1", with "(low: 6-period windows)" when the maps had to widen, or the
    /// narrow windows of fine sampling: why a frame may give few boundaries. The CLI and the
    /// Viewer print it.
    pub fn visibility_label(&self) -> String {
        let span = match self.maps.window_span {
            WindowSpan::Standard => "",
            WindowSpan::Wide => " (low: 6-period windows)",
            WindowSpan::Narrow => " (fine sampling: 3-period windows)",
        };
        format!("visibility {:.1}{span}", self.visibility)
    }

    /// What the maps show along the long axis of `obb` (a model's boundary box): the
    /// misorientation across it and its ridge contrast, measured as a traced boundary's.
    pub fn line_evidence(&self, obb: &OrientedBox) -> Option<boundaries::LineEvidence> {
        boundaries::line_evidence(
            &self.maps,
            &self.smoothed_discontinuity,
            &self.params,
            self.visibility,
            obb,
        )
    }

    /// All detections as `(class, box, score)`, boundaries first, for drawing or scoring
    /// beside a model's detections.
    pub fn detections(&self) -> Vec<(DefectClass, OrientedBox, f32)> {
        self.boundaries
            .iter()
            .map(|b| (DefectClass::GrainBoundary, b.obb, b.score))
            .chain(self.point_defects.iter().map(|d| (d.class, d.obb, d.score)))
            .collect()
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Local lattice maps, boundaries and point defects of one frame.
pub fn analyse(img: &ImageF32, params: &LatticeParams) -> anyhow::Result<LatticeResult> {
    let t_all = Instant::now();
    anyhow::ensure!(
        img.width * img.height == img.data.len() && img.width >= 32 && img.height >= 32,
        "image {}x{} is too small for a lattice analysis",
        img.width,
        img.height
    );
    anyhow::ensure!(
        img.data.iter().all(|v| v.is_finite()),
        "image holds non-finite values"
    );
    let t = Instant::now();
    let d111_a = params.d111_a();
    // The {111} period seen in the frame's power spectrum. It sets the analysis scale when
    // there is no calibration, or when the calibration disagrees with the lattice by more
    // than 15 % (wrong crystal preset, mis-calibrated file): the windows must follow the
    // lattice that is actually there.
    let measured = estimate_d111_px(img);
    let (nm_per_px, estimated) = match params.nm_per_px {
        Some(nm) => {
            anyhow::ensure!(
                nm.is_finite() && nm > 0.0,
                "pixel size {nm} nm/px is invalid"
            );
            (nm, false)
        }
        None => {
            let d = measured.ok_or_else(|| {
                anyhow::anyhow!(
                    "no pixel size given and no lattice ring found in the power spectrum \
                     (pass --nm-per-px)"
                )
            })?;
            (d111_a / d / 10.0, true)
        }
    };
    let px_per_a = 1.0 / (nm_per_px * 10.0);
    let d111_nominal = d111_a * px_per_a;
    // A ring more than twice or less than half the calibrated period is no mis-calibration
    // but a false ring (a background texture, the second order of a broad-column lattice):
    // the calibration stands.
    let d111_px = match measured {
        Some(m)
            if !estimated
                && (m / d111_nominal - 1.0).abs() > 0.15
                && (0.5..=2.0).contains(&(m / d111_nominal)) =>
        {
            m
        }
        _ => d111_nominal,
    };
    anyhow::ensure!(
        d111_px >= 2.5,
        "the {{111}} period is {d111_px:.2} px: the lattice is not resolved at {nm_per_px} nm/px"
    );
    let t_scale = ms(t);
    let t = Instant::now();
    let mut maps = maps::compute_maps(img, d111_px, WindowSpan::Standard)?;
    // Visibility is judged at the standard span, whatever span the maps end up with.
    let visibility = maps.median_strength();
    if visibility < params.wide_window_below_strength
        && let Ok(wide) = maps::compute_maps(img, d111_px, WindowSpan::Wide)
    {
        maps = wide;
    } else if visibility >= params.narrow_window_min_strength
        && (img.width.min(img.height) as f64) < params.narrow_window_below_periods * d111_px
        && let Ok(narrow) = maps::compute_maps(img, d111_px, WindowSpan::Narrow)
    {
        maps = narrow;
    }
    let t_maps = ms(t);
    let t = Instant::now();
    let smoothed_discontinuity = boundaries::smoothed_discontinuity(&maps);
    let boundaries = boundaries::trace(
        &maps,
        &smoothed_discontinuity,
        params,
        img.width,
        img.height,
        px_per_a,
        visibility,
    );
    let t_bound = ms(t);
    let t = Instant::now();
    let point_defects = if params.point_defects {
        points::find(img, &maps, &boundaries, params, px_per_a)
    } else {
        Vec::new()
    };
    let t_points = ms(t);
    Ok(LatticeResult {
        nm_per_px,
        scale_estimated: estimated,
        d111_px,
        d111_nominal_px: d111_nominal,
        d111_measured_px: measured,
        visibility,
        maps,
        boundaries,
        point_defects,
        timings_ms: LatticeTimings {
            scale: t_scale,
            maps: t_maps,
            boundaries: t_bound,
            point_defects: t_points,
            total: ms(t_all),
        },
        params: params.clone(),
        smoothed_discontinuity,
    })
}
