//! The specimen: grains, boundaries and point defects, drawn once from the seed.
//!
//! A [`Scene`] holds every random draw of an image (so the JSON sidecar can regenerate it
//! without the random number generator); the atom columns and the labels are derived from it
//! deterministically.
//!
//! Frames: the *specimen frame* is in pixels at the nominal pixel size, with the same origin
//! and axes as the image. The *image frame* differs from it by the slow-scan drift (an affine
//! map, [`ScanDistortion::to_image`]) and by per-line jitter (which labels ignore: it is
//! zero-mean and sub-pixel to a few pixels).

use super::crystal::CrystalSpec;
use super::params::{CountRange, Span, SynthParams};
use crate::classes::DefectClass;
use crate::geometry::{OrientedBox, Pt, intersection_area};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

pub type Rng = Xoshiro256PlusPlus;

pub fn rng_from_seed(seed: u64) -> Rng {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// Maps fractional cell coordinates to specimen pixels: `p = o + M (u, v)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatticeFrame {
    /// Columns are the cell vectors `a_u` and `b_v` in specimen pixels.
    pub m: [[f64; 2]; 2],
    pub origin: Pt,
}

impl LatticeFrame {
    pub fn to_px(&self, f: Pt) -> Pt {
        [
            self.origin[0] + self.m[0][0] * f[0] + self.m[0][1] * f[1],
            self.origin[1] + self.m[1][0] * f[0] + self.m[1][1] * f[1],
        ]
    }

    pub fn to_frac(&self, p: Pt) -> Pt {
        let det = self.m[0][0] * self.m[1][1] - self.m[0][1] * self.m[1][0];
        let (dx, dy) = (p[0] - self.origin[0], p[1] - self.origin[1]);
        [
            (self.m[1][1] * dx - self.m[0][1] * dy) / det,
            (-self.m[1][0] * dx + self.m[0][0] * dy) / det,
        ]
    }

    /// Direction of the lattice `u` axis in the specimen frame (radians).
    pub fn u_angle(&self) -> f64 {
        self.m[1][0].atan2(self.m[0][0])
    }

    /// Direction of the lattice `v` axis in the specimen frame (radians).
    pub fn v_angle(&self) -> f64 {
        self.m[1][1].atan2(self.m[0][1])
    }

    /// Applies a linear map `L` about a fixed point `p0`: `x -> p0 + L (x - p0)`.
    fn transformed(&self, l: [[f64; 2]; 2], p0: Pt) -> Self {
        let mul = |a: [[f64; 2]; 2], b: [[f64; 2]; 2]| {
            [
                [
                    a[0][0] * b[0][0] + a[0][1] * b[1][0],
                    a[0][0] * b[0][1] + a[0][1] * b[1][1],
                ],
                [
                    a[1][0] * b[0][0] + a[1][1] * b[1][0],
                    a[1][0] * b[0][1] + a[1][1] * b[1][1],
                ],
            ]
        };
        let d = [self.origin[0] - p0[0], self.origin[1] - p0[1]];
        Self {
            m: mul(l, self.m),
            origin: [
                p0[0] + l[0][0] * d[0] + l[0][1] * d[1],
                p0[1] + l[1][0] * d[0] + l[1][1] * d[1],
            ],
        }
    }
}

/// `{x : (x − point) · normal ≥ 0}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HalfPlane {
    pub point: Pt,
    pub normal: Pt,
}

impl HalfPlane {
    pub fn contains(&self, p: Pt) -> bool {
        (p[0] - self.point[0]) * self.normal[0] + (p[1] - self.point[1]) * self.normal[1] >= 0.0
    }
}

/// A crystal grain: one lattice frame, inside an intersection of half-planes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grain {
    pub frame: LatticeFrame,
    pub region: Vec<HalfPlane>,
}

impl Grain {
    pub fn contains(&self, p: Pt) -> bool {
        self.region.iter().all(|h| h.contains(p))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BoundaryKind {
    /// Σ3 twin: the child grain is the parent mirrored across a {111} trace (positions and
    /// dumbbell polarity).
    Twin,
    /// Tilt boundary: the child grain is the parent rotated about the beam axis.
    Tilt { misorientation_deg: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Boundary {
    pub kind: BoundaryKind,
    /// A point on the boundary line and its unit direction (specimen frame).
    pub point: Pt,
    pub direction: Pt,
    pub parent_grain: usize,
    pub child_grain: usize,
    /// The part of the line that exists, as a range of `t` in `point + t·direction`
    /// (specimen px); `None` = the whole line. A boundary placed inside a grain stops where
    /// that grain does (a lamella ending on a tilt boundary).
    #[serde(default)]
    pub extent: Option<[f64; 2]>,
    /// For the second plane of a twin lamella: the index of the first.
    #[serde(default)]
    pub lamella_of: Option<usize>,
    /// Seed of the random column displacements in the core.
    #[serde(default)]
    pub disorder_seed: u64,
}

impl Boundary {
    pub fn distance(&self, p: Pt) -> f64 {
        self.signed_distance(p).abs()
    }

    /// Unit normal of the line (the direction turned by +90°).
    pub fn normal(&self) -> Pt {
        [-self.direction[1], self.direction[0]]
    }

    /// Distance from the line along [`Self::normal`].
    pub fn signed_distance(&self, p: Pt) -> f64 {
        let n = self.normal();
        (p[0] - self.point[0]) * n[0] + (p[1] - self.point[1]) * n[1]
    }

    /// Position along the line, the `t` of `point + t·direction`.
    pub fn along(&self, p: Pt) -> f64 {
        (p[0] - self.point[0]) * self.direction[0] + (p[1] - self.point[1]) * self.direction[1]
    }
}

/// Identifies a lattice column: grain, cell indices and basis site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ColumnKey {
    pub grain: u16,
    pub i: i32,
    pub j: i32,
    pub site: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PointDefectKind {
    /// Columns emptied (or left partly occupied).
    Vacancy {
        columns: Vec<ColumnKey>,
        occupancy: f64,
    },
    /// An extra column in an empty channel of the structure.
    Interstitial { species: usize, occupancy: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointDefect {
    pub kind: PointDefectKind,
    pub grain: usize,
    /// Centre (the empty site, dumbbell centre or interstitial site), specimen frame.
    pub position: Pt,
}

impl PointDefect {
    pub fn class(&self) -> DefectClass {
        match self.kind {
            PointDefectKind::Vacancy { .. } => DefectClass::Vacancy,
            PointDefectKind::Interstitial { .. } => DefectClass::Interstitial,
        }
    }
}

/// Scan distortions drawn for this frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanDistortion {
    /// Horizontal offset of each scan line (px), from the jitter model.
    pub line_offsets: Vec<f64>,
    /// Specimen x displacement per scan line (px/line).
    pub shear: f64,
    /// Specimen y displacement per scan line (px/line): the slow axis samples `y (1 + stretch)`.
    pub stretch: f64,
    pub wobble_px: f64,
    pub wobble_period_lines: f64,
    pub wobble_phase: f64,
}

impl ScanDistortion {
    pub fn none(height: usize) -> Self {
        Self {
            line_offsets: vec![0.0; height],
            shear: 0.0,
            stretch: 0.0,
            wobble_px: 0.0,
            wobble_period_lines: 1.0,
            wobble_phase: 0.0,
        }
    }

    /// The smooth (affine) part of the specimen → image map, used for labels.
    pub fn to_image(&self, p: Pt) -> Pt {
        let y = p[1] / (1.0 + self.stretch);
        [p[0] - self.shear * y, y]
    }

    /// The inverse of [`Self::to_image`]: where in the specimen an image point was seen.
    pub fn to_specimen(&self, p: Pt) -> Pt {
        [p[0] + self.shear * p[1], p[1] * (1.0 + self.stretch)]
    }

    /// Where scan line `row` (centre `row + 0.5`) sees specimen x = `x_spec`.
    #[inline]
    pub fn line_x(&self, x_spec: f64, row: usize) -> f64 {
        let yc = row as f64 + 0.5;
        let wobble = if self.wobble_px > 0.0 {
            self.wobble_px * (2.0 * PI * yc / self.wobble_period_lines + self.wobble_phase).sin()
        } else {
            0.0
        };
        x_spec - self.shear * yc - self.line_offsets[row] - wobble
    }
}

/// A slow multiplicative field (thickness-like variation) as a few plane waves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    /// Wave vector (radians per px).
    pub k: Pt,
    pub phase: f64,
    pub amplitude: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpecimenField {
    pub waves: Vec<Wave>,
    /// Direction of the background gradient (radians).
    pub gradient_angle: f64,
    /// Seed of the amorphous-layer texture.
    #[serde(default)]
    pub texture_seed: u64,
}

impl SpecimenField {
    pub fn factor(&self, p: Pt) -> f64 {
        1.0 + self
            .waves
            .iter()
            .map(|w| w.amplitude * (w.k[0] * p[0] + w.k[1] * p[1] + w.phase).cos())
            .sum::<f64>()
    }
}

/// All random draws of one image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub rotation_deg: f64,
    pub grains: Vec<Grain>,
    pub boundaries: Vec<Boundary>,
    pub defects: Vec<PointDefect>,
    pub distortion: ScanDistortion,
    pub field: SpecimenField,
    /// Seed of the shot and read noise (per-line streams derive from it).
    pub noise_seed: u64,
    /// Requested counts that could not be placed (e.g. no room left).
    pub unplaced: Vec<String>,
}

/// One projected atom column to render.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Column {
    /// Specimen frame, px.
    pub pos: Pt,
    /// Relative intensity: occupancy × (Z / Z_max)ⁿ × thickness factor.
    pub weight: f32,
    pub species: u16,
    pub key: Option<ColumnKey>,
}

/// A label in the image frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DefectLabel {
    pub class: DefectClass,
    pub obb: OrientedBox,
    /// The ideal observer's signal-to-noise ratio of a point defect at the frame's dose
    /// ([`super::detectability`]); measured only on request (`export --min-detectability`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detectability: Option<f64>,
}

impl DefectLabel {
    /// True for a point defect whose measured `detectability` is below `min` (`None`: no
    /// minimum): left out of the labels by `export --min-detectability`.
    pub fn hidden_by_noise(&self, min: Option<f64>) -> bool {
        min.is_some_and(|m| self.detectability.is_some_and(|d| d < m))
    }
}

/// The fixed geometry every draw needs.
struct Ctx<'a> {
    p: &'a SynthParams,
    spec: CrystalSpec,
    px_a: f64,
    w: f64,
    h: f64,
}

impl Ctx<'_> {
    fn inside_inset(&self, q: Pt, inset: f64) -> bool {
        q[0] >= inset && q[1] >= inset && q[0] <= self.w - inset && q[1] <= self.h - inset
    }
}

/// A uniform draw from a closed interval (its lower end when the interval is a point).
pub fn uniform(rng: &mut Rng, s: Span) -> f64 {
    if s.max > s.min {
        rng.random_range(s.min..=s.max)
    } else {
        s.min
    }
}

/// A uniform draw from an inclusive count range.
pub fn count(rng: &mut Rng, c: CountRange) -> u32 {
    rng.random_range(c.min..=c.max)
}

/// Draws a complete scene. Every draw happens here, in a fixed order, from one generator.
pub fn draw_scene(p: &SynthParams) -> Scene {
    let mut rng = rng_from_seed(p.seed);
    let ctx = Ctx {
        p,
        spec: p.crystal.spec(),
        px_a: p.pixel_size_a(),
        w: p.width as f64,
        h: p.height as f64,
    };
    let rotation_deg = p
        .rotation_deg
        .unwrap_or_else(|| rng.random_range(0.0..360.0));
    let t = rotation_deg.to_radians();
    let (s, c) = t.sin_cos();
    let (au, bv) = (ctx.spec.a_u / ctx.px_a, ctx.spec.b_v / ctx.px_a);
    let frame0 = LatticeFrame {
        m: [[au * c, -bv * s], [au * s, bv * c]],
        origin: [0.0, 0.0],
    };
    // A random lattice offset so columns do not always sit on the same pixel phase.
    let off = [rng.random::<f64>(), rng.random::<f64>()];
    let centre = [ctx.w / 2.0, ctx.h / 2.0];
    let o = frame0.to_px(off);
    let frame0 = LatticeFrame {
        m: frame0.m,
        origin: [centre[0] + o[0], centre[1] + o[1]],
    };

    let distortion = draw_distortion(&mut rng, p);
    let mut scene = Scene {
        rotation_deg,
        grains: vec![Grain {
            frame: frame0,
            region: vec![],
        }],
        boundaries: vec![],
        defects: vec![],
        distortion,
        field: SpecimenField {
            waves: vec![],
            gradient_angle: 0.0,
            texture_seed: 0,
        },
        noise_seed: 0,
        unplaced: vec![],
    };

    // Boundaries first: they decide which lattice every point belongs to.
    let n_twin = count(&mut rng, p.defects.twin_boundaries) as usize;
    let n_tilt = count(&mut rng, p.defects.tilt_boundaries) as usize;
    let kinds = std::iter::repeat_n(false, n_twin).chain(std::iter::repeat_n(true, n_tilt));
    for is_tilt in kinds {
        let kind = if is_tilt {
            Placement::Tilt
        } else {
            Placement::Twin
        };
        if !place_boundary(&ctx, &mut rng, &mut scene, kind) {
            scene.unplaced.push(
                if is_tilt {
                    "tilt boundary"
                } else {
                    "twin boundary"
                }
                .into(),
            );
        }
    }
    // Lamellae last, so that one can stop at a boundary placed above.
    let n_lamellae = count(&mut rng, p.defects.twin_lamellae);
    for _ in 0..n_lamellae {
        if !place_lamella(&ctx, &mut rng, &mut scene) {
            scene.unplaced.push("twin lamella".into());
        }
    }

    // Point defects, placed on the columns of the (multi-grain) perfect crystal.
    let columns = perfect_columns(&ctx.spec, &scene, p);
    let mut boxes: Vec<OrientedBox> = Vec::new();
    let n_vac = count(&mut rng, p.defects.vacancies);
    for _ in 0..n_vac {
        if !place_vacancy(&ctx, &mut rng, &mut scene, &columns, &mut boxes) {
            scene.unplaced.push("vacancy".into());
        }
    }
    let n_int = count(&mut rng, p.defects.interstitials);
    for _ in 0..n_int {
        if !place_interstitial(&ctx, &mut rng, &mut scene, &columns, &mut boxes) {
            scene.unplaced.push("interstitial".into());
        }
    }

    // Slow specimen field and background direction.
    let lam_px = p.specimen.thickness_wavelength_nm * 10.0 / ctx.px_a;
    let amp = p.specimen.thickness_variation / 3f64.sqrt();
    for _ in 0..3 {
        let dir = rng.random_range(0.0..2.0 * PI);
        let lam = lam_px * rng.random_range(0.7..1.5);
        let kk = 2.0 * PI / lam;
        scene.field.waves.push(Wave {
            k: [kk * dir.cos(), kk * dir.sin()],
            phase: rng.random_range(0.0..2.0 * PI),
            amplitude: amp * rng.random_range(0.5..1.0),
        });
    }
    scene.field.gradient_angle = rng.random_range(0.0..2.0 * PI);
    scene.noise_seed = rng.random::<u64>();
    scene.field.texture_seed = rng.random::<u64>();
    add_jitter_bursts(&mut rng, p, &mut scene.distortion);
    scene
}

/// Bursts of strong line jitter: a few consecutive lines torn sideways, the horizontal streaks
/// of real frames (stray fields, mechanical shocks).
fn add_jitter_bursts(rng: &mut Rng, p: &SynthParams, dist: &mut ScanDistortion) {
    let sc = &p.scan;
    if sc.jitter_bursts_per_kline <= 0.0 || sc.jitter_burst_px <= 0.0 {
        return;
    }
    let h = dist.line_offsets.len();
    let mean = sc.jitter_bursts_per_kline * h as f64 / 1000.0;
    let n = rand_distr::Poisson::new(mean)
        .map(|d| d.sample(rng) as usize)
        .unwrap_or(0);
    let length = rand_distr::Exp::new(1.0 / sc.jitter_burst_lines).ok();
    for _ in 0..n.min(h) {
        let start = rng.random_range(0..h);
        let len = 1 + length.map_or(0.0, |d| d.sample(rng)).round() as usize;
        for off in dist.line_offsets[start..(start + len).min(h)].iter_mut() {
            let z: f64 = StandardNormal.sample(rng);
            *off += sc.jitter_burst_px * z;
        }
    }
}

fn draw_distortion(rng: &mut Rng, p: &SynthParams) -> ScanDistortion {
    let sc = &p.scan;
    let rho = sc.line_jitter_correlation;
    let innov = sc.line_jitter_px * (1.0 - rho * rho).sqrt();
    let mut offsets = Vec::with_capacity(p.height);
    let mut prev = 0.0f64;
    for r in 0..p.height {
        let z: f64 = StandardNormal.sample(rng);
        prev = if r == 0 {
            sc.line_jitter_px * z
        } else {
            rho * prev + innov * z
        };
        offsets.push(prev);
    }
    ScanDistortion {
        line_offsets: offsets,
        shear: sc.drift_x_px_per_kline / 1000.0,
        stretch: sc.drift_y_px_per_kline / 1000.0,
        wobble_px: sc.wobble_px,
        wobble_period_lines: sc.wobble_period_lines,
        wobble_phase: rng.random_range(0.0..2.0 * PI),
    }
}

/// The label of a boundary: a true rectangle along the line (image frame), `width_px` wide,
/// shortened so that all four corners lie inside the image and ending where the boundary
/// ends.
pub fn boundary_box(
    b: &Boundary,
    dist: &ScanDistortion,
    width_px: f64,
    w: f64,
    h: f64,
) -> Option<OrientedBox> {
    segment_box(b.point, b.direction, b.extent, dist, width_px, w, h)
}

/// A `width_px` wide rectangle along `point + t·direction` (specimen frame) for `t` in
/// `extent`, mapped to the image and cut to lie inside it.
fn segment_box(
    point: Pt,
    direction: Pt,
    extent: Option<[f64; 2]>,
    dist: &ScanDistortion,
    width_px: f64,
    w: f64,
    h: f64,
) -> Option<OrientedBox> {
    // The drift map is affine, so `t` parameterises the image line too.
    let p0 = dist.to_image(point);
    let p1 = dist.to_image([point[0] + direction[0], point[1] + direction[1]]);
    let d = [p1[0] - p0[0], p1[1] - p0[1]];
    let len = (d[0] * d[0] + d[1] * d[1]).sqrt();
    let u = [d[0] / len, d[1] / len];
    let hx = width_px / 2.0 * u[1].abs();
    let hy = width_px / 2.0 * u[0].abs();
    let (mut t0, mut t1) = crate::geometry::clip_line(p0, d, [hx, hy], [w - hx, h - hy])?;
    if let Some([e0, e1]) = extent {
        t0 = t0.max(e0);
        t1 = t1.min(e1);
    }
    if t1 <= t0 {
        return None;
    }
    let tm = (t0 + t1) / 2.0;
    Some(OrientedBox::new(
        p0[0] + tm * d[0],
        p0[1] + tm * d[1],
        (t1 - t0) * len,
        width_px,
        u[1].atan2(u[0]),
    ))
}

/// One box for a thin lamella (planes closer than two box widths): centred between its
/// planes, as wide as the lamella plus one boundary width, and as long as both planes
/// together.
fn lamella_box(
    a: &Boundary,
    b: &Boundary,
    dist: &ScanDistortion,
    width_px: f64,
    w: f64,
    h: f64,
) -> Option<OrientedBox> {
    let sep = a.signed_distance(b.point);
    let n = a.normal();
    let mid = [a.point[0] + 0.5 * sep * n[0], a.point[1] + 0.5 * sep * n[1]];
    // Both planes' extents measured along the first plane from `mid`.
    let shift = a.along(mid);
    let ta = a.extent.map(|[t0, t1]| [t0 - shift, t1 - shift]);
    let tb = b.extent.map(|[t0, t1]| {
        let (e0, e1) = (
            [
                b.point[0] + t0 * b.direction[0],
                b.point[1] + t0 * b.direction[1],
            ],
            [
                b.point[0] + t1 * b.direction[0],
                b.point[1] + t1 * b.direction[1],
            ],
        );
        let (u0, u1) = (a.along(e0) - shift, a.along(e1) - shift);
        [u0.min(u1), u0.max(u1)]
    });
    let extent = match (ta, tb) {
        (Some(x), Some(y)) => Some([x[0].min(y[0]), x[1].max(y[1])]),
        _ => None,
    };
    segment_box(mid, a.direction, extent, dist, width_px + sep.abs(), w, h)
}

fn segments_min_distance(a0: Pt, a1: Pt, b0: Pt, b1: Pt) -> f64 {
    let seg_point = |p: Pt, s0: Pt, s1: Pt| {
        let d = [s1[0] - s0[0], s1[1] - s0[1]];
        let l2 = d[0] * d[0] + d[1] * d[1];
        let t = if l2 > 0.0 {
            (((p[0] - s0[0]) * d[0] + (p[1] - s0[1]) * d[1]) / l2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        ((p[0] - s0[0] - t * d[0]).powi(2) + (p[1] - s0[1] - t * d[1]).powi(2)).sqrt()
    };
    let cr = |o: Pt, a: Pt, b: Pt| (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
    let crosses = cr(a0, a1, b0).signum() != cr(a0, a1, b1).signum()
        && cr(b0, b1, a0).signum() != cr(b0, b1, a1).signum();
    if crosses {
        return 0.0;
    }
    seg_point(a0, b0, b1)
        .min(seg_point(a1, b0, b1))
        .min(seg_point(b0, a0, a1))
        .min(seg_point(b1, a0, a1))
}

/// What `place_boundary` is asked to place.
#[derive(Clone, Copy, Debug)]
enum Placement {
    Tilt,
    Twin,
    /// The second plane of a twin lamella: parallel to boundary `first`, `thickness_px` into
    /// its child grain.
    LamellaSecond {
        first: usize,
        thickness_px: f64,
    },
}

/// A coherent Σ3 twin plane near a point.
struct TwinPlane {
    /// A point on the boundary line and its unit direction.
    point: Pt,
    direction: Pt,
    /// Unit normal pointing into the parent grain.
    parent_normal: Pt,
    /// The twin operation's fixed point: a column of the parent's layer next to the plane.
    centre: Pt,
}

/// Finds the coherent twin plane along the {111} trace `trace` (fractional lattice vector of
/// `frame`) nearest to `q`.
///
/// Along [110] the edge-on {111} planes come in double layers (the two columns of a dumbbell
/// lie in one double layer) separated by wide gaps. A coherent twin lies in such a gap, so no
/// dumbbell is cut. The twin operation is a 180° rotation about the plane normal: in
/// projection a mirror across the line along the *normal*, which keeps every layer's distance
/// from the plane and the polarity along the normal (no wrong bonds). Its fixed point is a
/// column of the parent's layer next to the gap, so that layer is shared and the bonds across
/// the gap keep their bulk geometry.
fn twin_plane(
    spec: &CrystalSpec,
    frame: &LatticeFrame,
    trace: [f64; 2],
    q: Pt,
    parent_positive: bool,
) -> Option<TwinPlane> {
    let d = [
        frame.m[0][0] * trace[0] + frame.m[0][1] * trace[1],
        frame.m[1][0] * trace[0] + frame.m[1][1] * trace[1],
    ];
    let l = (d[0] * d[0] + d[1] * d[1]).sqrt();
    if l == 0.0 || !l.is_finite() {
        return None;
    }
    let t = [d[0] / l, d[1] / l];
    let n = [-t[1], t[0]];
    let f = frame.to_frac(q);
    let (fi, fj) = (f[0].floor() as i32, f[1].floor() as i32);
    // (distance from q along n, distance along t, position) of nearby columns.
    let mut cols: Vec<(f64, f64, Pt)> = Vec::new();
    for j in fj - 4..=fj + 4 {
        for i in fi - 4..=fi + 4 {
            for s in &spec.sites {
                let c = frame.to_px([i as f64 + s.u, j as f64 + s.v]);
                let (dx, dy) = (c[0] - q[0], c[1] - q[1]);
                cols.push((dx * n[0] + dy * n[1], dx * t[0] + dy * t[1], c));
            }
        }
    }
    cols.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Layers: columns at (numerically) the same distance along n.
    let tol = 1e-6 * l.max(1.0);
    let mut layers: Vec<(f64, Pt, f64)> = Vec::new(); // (s, column nearest q along t, |t|)
    for (s, along, c) in cols {
        match layers.last_mut() {
            Some(last) if (s - last.0).abs() <= tol => {
                if along.abs() < last.2 {
                    last.1 = c;
                    last.2 = along.abs();
                }
            }
            _ => layers.push((s, c, along.abs())),
        }
    }
    // Ignore the outermost layers: the window may have cut them short.
    let inner = layers.get(2..layers.len().saturating_sub(2))?;
    let widest = inner
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(0.0f64, f64::max);
    if widest <= tol {
        return None;
    }
    let (lo, hi) = inner
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 >= 0.95 * widest)
        .map(|w| (w[0], w[1]))
        .min_by(|a, b| {
            let ma = (a.0.0 + a.1.0).abs();
            let mb = (b.0.0 + b.1.0).abs();
            ma.total_cmp(&mb)
        })?;
    let mid = (lo.0 + hi.0) / 2.0;
    let point = [q[0] + mid * n[0], q[1] + mid * n[1]];
    let (parent_normal, centre) = if parent_positive {
        (n, hi.1)
    } else {
        ([-n[0], -n[1]], lo.1)
    };
    Some(TwinPlane {
        point,
        direction: t,
        parent_normal,
        centre,
    })
}

/// The range of `t` for which `point + t·dir` lies in every half-plane (`None`: unbounded
/// both ways; an empty range gives `Some` with `t1 <= t0`).
fn extent_in_region(point: Pt, dir: Pt, region: &[HalfPlane]) -> Option<[f64; 2]> {
    let (mut t0, mut t1) = (f64::NEG_INFINITY, f64::INFINITY);
    for h in region {
        let a = dir[0] * h.normal[0] + dir[1] * h.normal[1];
        let b = (point[0] - h.point[0]) * h.normal[0] + (point[1] - h.point[1]) * h.normal[1];
        // Inside: b + t a >= 0.
        if a.abs() < 1e-12 {
            if b < 0.0 {
                return Some([0.0, 0.0]);
            }
        } else if a > 0.0 {
            t0 = t0.max(-b / a);
        } else {
            t1 = t1.min(-b / a);
        }
    }
    if t0 == f64::NEG_INFINITY && t1 == f64::INFINITY {
        None
    } else {
        Some([t0.max(-1e9), t1.min(1e9)])
    }
}

fn place_boundary(ctx: &Ctx, rng: &mut Rng, scene: &mut Scene, kind: Placement) -> bool {
    let p = ctx.p;
    let width_px = p.labels.boundary_width_a / ctx.px_a;
    let min_len = p.defects.min_boundary_length_frac * ctx.w.min(ctx.h);
    // Boundaries keep apart by a few cells so their labels and grains stay distinct.
    let min_gap = width_px + 3.0 * ctx.spec.b_v / ctx.px_a;
    let tries = if matches!(kind, Placement::LamellaSecond { .. }) {
        1
    } else {
        200
    };
    for _ in 0..tries {
        let q = match kind {
            Placement::LamellaSecond {
                first,
                thickness_px,
            } => {
                let b = &scene.boundaries[first];
                let into_child = scene.grains[b.parent_grain]
                    .region
                    .last()
                    .map_or([0.0, 0.0], |h| [-h.normal[0], -h.normal[1]]);
                [
                    b.point[0] + thickness_px * into_child[0],
                    b.point[1] + thickness_px * into_child[1],
                ]
            }
            _ => [
                rng.random_range(0.2 * ctx.w..=0.8 * ctx.w),
                rng.random_range(0.2 * ctx.h..=0.8 * ctx.h),
            ],
        };
        let Some(gi) = scene.grains.iter().position(|g| g.contains(q)) else {
            continue;
        };
        if let Placement::LamellaSecond { first, .. } = kind
            && scene.boundaries[first].child_grain != gi
        {
            return false;
        }
        let frame = scene.grains[gi].frame;
        let parent_positive = rng.random::<bool>();
        let (point, direction, parent_normal, child_frame, bkind) = match kind {
            Placement::Tilt => {
                let psi = if rng.random::<f64>() < p.defects.axis_aligned_boundary_fraction {
                    let axis = if rng.random::<bool>() { 0.0 } else { 0.5 * PI };
                    axis + rng.random_range(-8f64..=8.0).to_radians()
                } else {
                    rng.random_range(0.0..PI)
                };
                let mis = uniform(rng, p.defects.tilt_misorientation_deg);
                let mis = if rng.random::<bool>() { mis } else { -mis };
                let direction = [psi.cos(), psi.sin()];
                let n = [-direction[1], direction[0]];
                let n = if parent_positive { n } else { [-n[0], -n[1]] };
                let (s, c) = mis.to_radians().sin_cos();
                (
                    q,
                    direction,
                    n,
                    frame.transformed([[c, -s], [s, c]], q),
                    BoundaryKind::Tilt {
                        misorientation_deg: mis,
                    },
                )
            }
            Placement::Twin | Placement::LamellaSecond { .. } => {
                if ctx.spec.twin_traces.is_empty() {
                    return false;
                }
                let tr = ctx.spec.twin_traces[rng.random_range(0..ctx.spec.twin_traces.len())];
                let (trace, parent_positive) = match kind {
                    Placement::LamellaSecond { first, .. } => {
                        // The trace of the child lattice parallel to the first plane, with
                        // the parent (the lamella) on the first plane's side.
                        let b = &scene.boundaries[first];
                        let Some(tr) = ctx.spec.twin_traces.iter().copied().find(|tr| {
                            let d = [
                                frame.m[0][0] * tr[0] + frame.m[0][1] * tr[1],
                                frame.m[1][0] * tr[0] + frame.m[1][1] * tr[1],
                            ];
                            let l = (d[0] * d[0] + d[1] * d[1]).sqrt();
                            (d[0] * b.direction[1] - d[1] * b.direction[0]).abs() < 1e-6 * l
                        }) else {
                            return false;
                        };
                        let d = [
                            frame.m[0][0] * tr[0] + frame.m[0][1] * tr[1],
                            frame.m[1][0] * tr[0] + frame.m[1][1] * tr[1],
                        ];
                        let n = [-d[1], d[0]];
                        let back = [b.point[0] - q[0], b.point[1] - q[1]];
                        (tr, n[0] * back[0] + n[1] * back[1] > 0.0)
                    }
                    _ => (tr, parent_positive),
                };
                let Some(tp) = twin_plane(&ctx.spec, &frame, trace, q, parent_positive) else {
                    continue;
                };
                let (nx, ny) = (tp.parent_normal[0], tp.parent_normal[1]);
                // Mirror across the line along the normal through the centre: R = 2 n nᵀ − I.
                let child = frame.transformed(
                    [
                        [2.0 * nx * nx - 1.0, 2.0 * nx * ny],
                        [2.0 * nx * ny, 2.0 * ny * ny - 1.0],
                    ],
                    tp.centre,
                );
                (
                    tp.point,
                    tp.direction,
                    tp.parent_normal,
                    child,
                    BoundaryKind::Twin,
                )
            }
        };
        let extent = extent_in_region(point, direction, &scene.grains[gi].region);
        let candidate = Boundary {
            kind: bkind,
            point,
            direction,
            parent_grain: gi,
            child_grain: scene.grains.len(),
            extent,
            lamella_of: match kind {
                Placement::LamellaSecond { first, .. } => Some(first),
                _ => None,
            },
            disorder_seed: rng.random::<u64>(),
        };
        let Some(bx) = boundary_box(&candidate, &scene.distortion, width_px, ctx.w, ctx.h) else {
            continue;
        };
        let lamella_first = match kind {
            Placement::LamellaSecond { first, .. } => Some(first),
            _ => None,
        };
        // One that ends on another boundary is seen whole even when shorter; the second plane
        // of a lamella only needs to be visible.
        let ends_on_another = extent.is_some_and(|e| {
            e.iter().any(|&t| {
                let q = [point[0] + t * direction[0], point[1] + t * direction[1]];
                ctx.inside_inset(q, 0.0) && scene.boundaries.iter().any(|o| o.distance(q) < 1e-3)
            })
        });
        let needed = if ends_on_another {
            0.5 * min_len
        } else {
            min_len
        };
        if bx.w < needed && lamella_first.is_none() {
            continue;
        }
        if bx.w < 4.0 * width_px {
            continue;
        }
        let seg = |b: &OrientedBox| {
            let (c, s) = (b.angle.cos(), b.angle.sin());
            (
                [b.cx - c * b.w / 2.0, b.cy - s * b.w / 2.0],
                [b.cx + c * b.w / 2.0, b.cy + s * b.w / 2.0],
            )
        };
        let (a0, a1) = seg(&bx);
        let clash = scene.boundaries.iter().enumerate().any(|(k, other)| {
            // A lamella's planes may be close to each other, and a boundary may stop on the
            // boundary that bounds its grain.
            if Some(k) == lamella_first {
                return false;
            }
            let ends_on_it = extent.is_some_and(|[t0, t1]| {
                let e0 = [point[0] + t0 * direction[0], point[1] + t0 * direction[1]];
                let e1 = [point[0] + t1 * direction[0], point[1] + t1 * direction[1]];
                other.distance(e0) < 1e-3 || other.distance(e1) < 1e-3
            });
            if ends_on_it {
                let sin =
                    (direction[0] * other.direction[1] - direction[1] * other.direction[0]).abs();
                // Meeting at a shallow angle would merge the two labels.
                return sin < 0.5;
            }
            boundary_box(other, &scene.distortion, width_px, ctx.w, ctx.h).is_none_or(|ob| {
                let (b0, b1) = seg(&ob);
                segments_min_distance(a0, a1, b0, b1) < min_gap
            })
        });
        if clash {
            continue;
        }
        let mut child_region = scene.grains[gi].region.clone();
        child_region.push(HalfPlane {
            point,
            normal: [-parent_normal[0], -parent_normal[1]],
        });
        scene.grains[gi].region.push(HalfPlane {
            point,
            normal: parent_normal,
        });
        scene.grains.push(Grain {
            frame: child_frame,
            region: child_region,
        });
        scene.boundaries.push(candidate);
        return true;
    }
    false
}

/// A twin lamella: a twin boundary, then a second one parallel to it inside the twinned
/// grain, which turns the lattice back. Both or neither are placed.
fn place_lamella(ctx: &Ctx, rng: &mut Rng, scene: &mut Scene) -> bool {
    let thickness_px = uniform(rng, ctx.p.defects.lamella_thickness_nm) * 10.0 / ctx.px_a;
    for _ in 0..20 {
        let saved = (scene.grains.clone(), scene.boundaries.len());
        if !place_boundary(ctx, rng, scene, Placement::Twin) {
            return false;
        }
        let first = scene.boundaries.len() - 1;
        let second = Placement::LamellaSecond {
            first,
            thickness_px,
        };
        if place_boundary(ctx, rng, scene, second) {
            return true;
        }
        scene.grains = saved.0;
        scene.boundaries.truncate(saved.1);
    }
    false
}

/// Which grain owns a point (the first whose region contains it).
pub fn grain_at(scene: &Scene, p: Pt) -> Option<usize> {
    scene.grains.iter().position(|g| g.contains(p))
}

/// Columns of the perfect multi-grain crystal (no point defects), in a deterministic order.
/// Columns of different grains that crowd each other at a boundary are resolved in favour of
/// the older grain, as a real boundary cannot hold two columns closer than a bond.
pub fn perfect_columns(spec: &CrystalSpec, scene: &Scene, p: &SynthParams) -> Vec<Column> {
    let px_a = p.pixel_size_a();
    // Columns outside the image still blur into it: keep a margin of a few Å.
    let margin = 8.0 / px_a;
    // Drift shears x and stretches y by up to 12 % of the height (see `ScanParams` ranges).
    let slack = (super::params::MAX_DRIFT_PX_PER_KLINE / 1000.0 + 0.01) * p.height as f64;
    let (lo, hi) = (
        [-margin - slack, -margin],
        [
            p.width as f64 + margin + slack,
            p.height as f64 + margin + slack,
        ],
    );
    let zmax = spec.z_max();
    let n = p.crystal.z_exponent;
    let zw: Vec<f32> = spec
        .species
        .iter()
        .map(|s| (s.z / zmax).powf(n) as f32)
        .collect();
    let mut cols: Vec<Column> = Vec::new();
    for (gi, g) in scene.grains.iter().enumerate() {
        let corners = [lo, [hi[0], lo[1]], hi, [lo[0], hi[1]]].map(|c| g.frame.to_frac(c));
        let (mut i0, mut i1, mut j0, mut j1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for c in corners {
            i0 = i0.min(c[0]);
            i1 = i1.max(c[0]);
            j0 = j0.min(c[1]);
            j1 = j1.max(c[1]);
        }
        for j in (j0.floor() as i32 - 1)..=(j1.ceil() as i32) {
            for i in (i0.floor() as i32 - 1)..=(i1.ceil() as i32) {
                for (si, s) in spec.sites.iter().enumerate() {
                    let q = g.frame.to_px([i as f64 + s.u, j as f64 + s.v]);
                    if q[0] < lo[0] || q[1] < lo[1] || q[0] > hi[0] || q[1] > hi[1] {
                        continue;
                    }
                    if !g.contains(q) {
                        continue;
                    }
                    cols.push(Column {
                        pos: q,
                        weight: zw[s.species],
                        species: s.species as u16,
                        key: Some(ColumnKey {
                            grain: gi as u16,
                            i,
                            j,
                            site: si as u16,
                        }),
                    });
                }
            }
        }
    }
    if !scene.boundaries.is_empty() {
        resolve_boundary_crowding(&mut cols, scene, spec.min_column_distance() * 0.75 / px_a);
    }
    cols
}

fn resolve_boundary_crowding(cols: &mut Vec<Column>, scene: &Scene, min_d: f64) {
    let near: Vec<usize> = (0..cols.len())
        .filter(|&k| {
            scene
                .boundaries
                .iter()
                .any(|b| b.distance(cols[k].pos) < min_d * 1.5)
        })
        .collect();
    let mut drop = vec![false; cols.len()];
    for (a_i, &a) in near.iter().enumerate() {
        for &b in &near[a_i + 1..] {
            let (ka, kb) = (cols[a].key.unwrap(), cols[b].key.unwrap());
            if ka.grain == kb.grain || drop[a] || drop[b] {
                continue;
            }
            let d = ((cols[a].pos[0] - cols[b].pos[0]).powi(2)
                + (cols[a].pos[1] - cols[b].pos[1]).powi(2))
            .sqrt();
            if d < min_d {
                if ka.grain > kb.grain {
                    drop[a] = true;
                } else {
                    drop[b] = true;
                }
            }
        }
    }
    let mut k = 0;
    cols.retain(|_| {
        let keep = !drop[k];
        k += 1;
        keep
    });
}

/// The box of a point defect in the specimen frame: one projected cell of its grain, grown by
/// the configured margin, aligned with the grain's lattice.
pub fn point_defect_box_specimen(
    spec: &CrystalSpec,
    p: &SynthParams,
    frame: &LatticeFrame,
    at: Pt,
) -> OrientedBox {
    let px_a = p.pixel_size_a();
    let g = 1.0 + p.labels.cell_margin;
    OrientedBox::new(
        at[0],
        at[1],
        spec.a_u * g / px_a,
        spec.b_v * g / px_a,
        frame.u_angle(),
    )
}

fn point_defect_ok(
    ctx: &Ctx,
    scene: &Scene,
    at: Pt,
    bx: &OrientedBox,
    boxes: &[OrientedBox],
) -> bool {
    // In the image frame the box must sit inside the edge margin.
    let ib = bx.map(|q| scene.distortion.to_image(q));
    let [x0, y0, x1, y1] = ib.aabb();
    let m = ctx.p.defects.edge_margin_px;
    if !(ctx.inside_inset([x0, y0], m) && ctx.inside_inset([x1, y1], m)) {
        return false;
    }
    // Clear of boundaries: a defect on a boundary is neither bulk nor boundary.
    let half_diag = 0.5 * (bx.w * bx.w + bx.h * bx.h).sqrt();
    let clearance = half_diag + 0.5 * ctx.p.labels.boundary_width_a / ctx.px_a;
    if scene.boundaries.iter().any(|b| b.distance(at) < clearance) {
        return false;
    }
    // Not on another defect: boxes may not overlap.
    !boxes.iter().any(|o| intersection_area(o, bx) > 0.0)
}

fn place_vacancy(
    ctx: &Ctx,
    rng: &mut Rng,
    scene: &mut Scene,
    columns: &[Column],
    boxes: &mut Vec<OrientedBox>,
) -> bool {
    if columns.is_empty() {
        return false;
    }
    let d = &ctx.p.defects;
    for _ in 0..300 {
        let c = columns[rng.random_range(0..columns.len())];
        let Some(key) = c.key else { continue };
        let whole = rng.random::<f64>() < d.dumbbell_vacancy_prob;
        let occupancy = if rng.random::<f64>() < d.partial_occupancy_prob {
            uniform(rng, d.partial_occupancy)
        } else {
            0.0
        };
        let grain = &scene.grains[key.grain as usize];
        let mut keys = vec![key];
        let mut at = c.pos;
        if whole {
            let Some(pair) = ctx
                .spec
                .dumbbells
                .iter()
                .find(|p| p.contains(&(key.site as usize)))
            else {
                continue;
            };
            let other = if pair[0] == key.site as usize {
                pair[1]
            } else {
                pair[0]
            };
            let ok = ColumnKey {
                site: other as u16,
                ..key
            };
            let Some(oc) = columns.iter().find(|c| c.key == Some(ok)) else {
                continue;
            };
            keys.push(ok);
            keys.sort_by_key(|k| k.site);
            at = [(c.pos[0] + oc.pos[0]) / 2.0, (c.pos[1] + oc.pos[1]) / 2.0];
        }
        let bx = point_defect_box_specimen(&ctx.spec, ctx.p, &grain.frame, at);
        if !point_defect_ok(ctx, scene, at, &bx, boxes) {
            continue;
        }
        boxes.push(bx);
        scene.defects.push(PointDefect {
            kind: PointDefectKind::Vacancy {
                columns: keys,
                occupancy,
            },
            grain: key.grain as usize,
            position: at,
        });
        return true;
    }
    false
}

fn place_interstitial(
    ctx: &Ctx,
    rng: &mut Rng,
    scene: &mut Scene,
    columns: &[Column],
    boxes: &mut Vec<OrientedBox>,
) -> bool {
    if ctx.spec.interstitial_sites.is_empty() {
        return false;
    }
    let d = &ctx.p.defects;
    let min_sep = 0.8 * ctx.spec.min_column_distance() / ctx.px_a;
    for _ in 0..300 {
        let q = [rng.random_range(0.0..ctx.w), rng.random_range(0.0..ctx.h)];
        let site =
            ctx.spec.interstitial_sites[rng.random_range(0..ctx.spec.interstitial_sites.len())];
        let species = rng.random_range(0..ctx.spec.species.len());
        let occupancy = uniform(rng, d.interstitial_occupancy);
        let Some(gi) = grain_at(scene, q) else {
            continue;
        };
        let frame = scene.grains[gi].frame;
        let f = frame.to_frac(q);
        let at = frame.to_px([f[0].floor() + site[0], f[1].floor() + site[1]]);
        if grain_at(scene, at) != Some(gi) {
            continue;
        }
        // A real channel: no column may already sit there (boundary regions can differ).
        if columns
            .iter()
            .any(|c| (c.pos[0] - at[0]).powi(2) + (c.pos[1] - at[1]).powi(2) < min_sep * min_sep)
        {
            continue;
        }
        let bx = point_defect_box_specimen(&ctx.spec, ctx.p, &frame, at);
        if !point_defect_ok(ctx, scene, at, &bx, boxes) {
            continue;
        }
        boxes.push(bx);
        scene.defects.push(PointDefect {
            kind: PointDefectKind::Interstitial { species, occupancy },
            grain: gi,
            position: at,
        });
        return true;
    }
    false
}

/// The columns to render: the perfect crystal with vacancies applied, interstitials added and
/// the thickness-like field folded into the weights.
pub fn scene_columns(spec: &CrystalSpec, scene: &Scene, p: &SynthParams) -> Vec<Column> {
    let mut cols = perfect_columns(spec, scene, p);
    let zmax = spec.z_max();
    for d in &scene.defects {
        match &d.kind {
            PointDefectKind::Vacancy { columns, occupancy } => {
                for c in cols.iter_mut() {
                    if c.key.is_some_and(|k| columns.contains(&k)) {
                        c.weight *= *occupancy as f32;
                    }
                }
            }
            PointDefectKind::Interstitial { species, occupancy } => {
                let z = spec.species[*species].z;
                cols.push(Column {
                    pos: d.position,
                    weight: ((z / zmax).powf(p.crystal.z_exponent) * occupancy) as f32,
                    species: *species as u16,
                    key: None,
                });
            }
        }
    }
    cols.retain(|c| c.weight > 0.0);
    for c in cols.iter_mut() {
        c.weight *= scene.field.factor(c.pos) as f32;
    }
    apply_boundary_structure(&mut cols, scene, p);
    cols
}

/// Bends the lattice near each boundary, shakes the columns of its core and changes their
/// intensity in a band along it (see [`super::params::BoundaryStructure`]). Deterministic:
/// the random displacements are hashed from the boundary's seed and the column's position.
fn apply_boundary_structure(cols: &mut [Column], scene: &Scene, p: &SynthParams) {
    let field = BoundaryStructureField::new(scene, p);
    if field.is_empty() {
        return;
    }
    for c in cols.iter_mut() {
        c.pos = field.at(c.pos, &mut c.weight);
    }
}

/// One boundary's structure, in pixels.
struct BoundaryEffect<'a> {
    b: &'a Boundary,
    strain: f64,
    disorder: f64,
    dech: f64,
    decay: f64,
    core: f64,
    band: f64,
    reach: f64,
    fade: f64,
    sense: f64,
}

/// The displacement and intensity field of every boundary's structure.
struct BoundaryStructureField<'a> {
    effects: Vec<BoundaryEffect<'a>>,
}

impl<'a> BoundaryStructureField<'a> {
    fn new(scene: &'a Scene, p: &SynthParams) -> Self {
        let bs = &p.defects.boundary_structure;
        let px = p.pixel_size_a();
        let effects = scene
            .boundaries
            .iter()
            .filter_map(|b| {
                let f = match b.kind {
                    BoundaryKind::Twin => bs.twin_factor,
                    BoundaryKind::Tilt { .. } => 1.0,
                };
                let strain = bs.strain_a * f / px;
                let disorder = bs.core_disorder_a * f / px;
                let dech = bs.dechannelling * f;
                if strain == 0.0 && disorder == 0.0 && dech == 0.0 {
                    return None;
                }
                let decay = (bs.strain_decay_nm * 10.0 / px).max(1e-6);
                let core = (bs.core_width_a / px).max(1e-6);
                let band = (bs.dechannelling_width_a / px).max(1e-6);
                Some(BoundaryEffect {
                    b,
                    strain,
                    disorder,
                    dech,
                    decay,
                    core,
                    band,
                    reach: (6.0 * decay).max(4.0 * core).max(4.0 * band),
                    fade: decay.max(band),
                    // The bending's sense along the line is part of the draw.
                    sense: if b.disorder_seed & 1 == 0 { 1.0 } else { -1.0 },
                })
            })
            .collect();
        Self { effects }
    }

    fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }

    /// Where a column at `pos` is drawn; its intensity `weight` changes in the band.
    fn at(&self, mut pos: Pt, weight: &mut f32) -> Pt {
        for e in &self.effects {
            let b = e.b;
            let s = b.signed_distance(pos);
            if s.abs() > e.reach {
                continue;
            }
            // Effects fade out beyond the ends of a boundary that stops in the field.
            let taper = b.extent.map_or(1.0, |[t0, t1]| {
                let a = b.along(pos);
                let out = (t0 - a).max(a - t1).max(0.0) / e.fade;
                (-out * out).exp()
            });
            if taper < 1e-4 {
                continue;
            }
            let (t, n) = (b.direction, b.normal());
            let k = e.strain * (-s.abs() / e.decay).exp() * taper;
            // Shear along the line plus a slight opening across it at the core.
            let mut dx = [
                e.sense * k * t[0] + 0.3 * k * s.signum() * n[0],
                e.sense * k * t[1] + 0.3 * k * s.signum() * n[1],
            ];
            if e.disorder > 0.0 {
                let g = e.disorder * (-(s * s) / (2.0 * e.core * e.core)).exp() * taper;
                let z = gaussian_pair(
                    b.disorder_seed ^ pos[0].to_bits().rotate_left(17) ^ pos[1].to_bits(),
                );
                dx[0] += g * z[0];
                dx[1] += g * z[1];
            }
            pos = [pos[0] + dx[0], pos[1] + dx[1]];
            if e.dech != 0.0 {
                let loss = e.dech * (-(s * s) / (2.0 * e.band * e.band)).exp() * taper;
                *weight *= (1.0 - loss).max(0.0) as f32;
            }
        }
        pos
    }
}

/// SplitMix64 finaliser: turns structured inputs (seed, index) into well-mixed seeds.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Two independent standard normal values from a hash of `key` (Box–Muller).
fn gaussian_pair(key: u64) -> [f64; 2] {
    let a = mix64(key);
    let b = mix64(a ^ 0xA5A5_5A5A_D00D_F00D);
    let u1 = ((a >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (b >> 11) as f64 / (1u64 << 53) as f64;
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (2.0 * PI * u2).sin_cos();
    [r * c, r * s]
}

/// Labels in the image frame, grain boundaries first, then point defects in placement order.
pub fn scene_labels(spec: &CrystalSpec, scene: &Scene, p: &SynthParams) -> Vec<DefectLabel> {
    let (w, h) = (p.width as f64, p.height as f64);
    let width_px = p.labels.boundary_width_a / p.pixel_size_a();
    let mut out = Vec::new();
    for (k, b) in scene.boundaries.iter().enumerate() {
        let second = scene
            .boundaries
            .iter()
            .find(|o| o.lamella_of == Some(k))
            .filter(|o| o.distance(b.point) < 2.0 * width_px);
        if b.lamella_of
            .is_some_and(|first| scene.boundaries[first].distance(b.point) < 2.0 * width_px)
        {
            // Labelled together with the first plane of its lamella.
            continue;
        }
        let obb = match second {
            Some(o) => lamella_box(b, o, &scene.distortion, width_px, w, h),
            None => boundary_box(b, &scene.distortion, width_px, w, h),
        };
        if let Some(obb) = obb {
            out.push(DefectLabel {
                class: DefectClass::GrainBoundary,
                obb,
                detectability: None,
            });
        }
    }
    // A point defect is labelled where it is seen: its site moved as its column is (or, for
    // a vacancy, as the missing column would be) by the boundaries' strain and core disorder.
    let field = BoundaryStructureField::new(scene, p);
    for d in &scene.defects {
        let frame = &scene.grains[d.grain].frame;
        let seen = field.at(d.position, &mut 1.0);
        let bx = point_defect_box_specimen(spec, p, frame, seen);
        out.push(DefectLabel {
            class: d.class(),
            obb: bx.map(|q| scene.distortion.to_image(q)),
            detectability: None,
        });
    }
    out
}
