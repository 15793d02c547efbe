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
}

impl Boundary {
    pub fn distance(&self, p: Pt) -> f64 {
        let d = [p[0] - self.point[0], p[1] - self.point[1]];
        (d[0] * self.direction[1] - d[1] * self.direction[0]).abs()
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
        },
        noise_seed: 0,
        unplaced: vec![],
    };

    // Boundaries first: they decide which lattice every point belongs to.
    let n_twin = count(&mut rng, p.defects.twin_boundaries) as usize;
    let n_tilt = count(&mut rng, p.defects.tilt_boundaries) as usize;
    let kinds = std::iter::repeat_n(false, n_twin).chain(std::iter::repeat_n(true, n_tilt));
    for is_tilt in kinds {
        if !place_boundary(&ctx, &mut rng, &mut scene, is_tilt) {
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
    scene
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

/// The part of the line `point + t·dir` inside `[lo, hi]`, as its two end points.
fn clip_line(point: Pt, dir: Pt, lo: Pt, hi: Pt) -> Option<(Pt, Pt)> {
    let (t0, t1) = crate::geometry::clip_line(point, dir, lo, hi)?;
    Some((
        [point[0] + t0 * dir[0], point[1] + t0 * dir[1]],
        [point[0] + t1 * dir[0], point[1] + t1 * dir[1]],
    ))
}

/// The label of a boundary: a true rectangle along the line (image frame), `width_px` wide,
/// shortened so that all four corners lie inside the image.
pub fn boundary_box(
    b: &Boundary,
    dist: &ScanDistortion,
    width_px: f64,
    w: f64,
    h: f64,
) -> Option<OrientedBox> {
    let p0 = dist.to_image(b.point);
    let p1 = dist.to_image([b.point[0] + b.direction[0], b.point[1] + b.direction[1]]);
    let d = [p1[0] - p0[0], p1[1] - p0[1]];
    let len = (d[0] * d[0] + d[1] * d[1]).sqrt();
    let d = [d[0] / len, d[1] / len];
    let n = [-d[1], d[0]];
    let hx = width_px / 2.0 * n[0].abs();
    let hy = width_px / 2.0 * n[1].abs();
    let (a, bb) = clip_line(p0, d, [hx, hy], [w - hx, h - hy])?;
    let length = ((bb[0] - a[0]).powi(2) + (bb[1] - a[1]).powi(2)).sqrt();
    Some(OrientedBox::new(
        (a[0] + bb[0]) / 2.0,
        (a[1] + bb[1]) / 2.0,
        length,
        width_px,
        d[1].atan2(d[0]),
    ))
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

fn place_boundary(ctx: &Ctx, rng: &mut Rng, scene: &mut Scene, is_tilt: bool) -> bool {
    let p = ctx.p;
    let width_px = p.labels.boundary_width_a / ctx.px_a;
    let min_len = p.defects.min_boundary_length_frac * ctx.w.min(ctx.h);
    // Boundaries keep apart by a few cells so their labels and grains stay distinct.
    let min_gap = width_px + 3.0 * ctx.spec.b_v / ctx.px_a;
    for _ in 0..200 {
        let q = [
            rng.random_range(0.2 * ctx.w..=0.8 * ctx.w),
            rng.random_range(0.2 * ctx.h..=0.8 * ctx.h),
        ];
        let Some(gi) = scene.grains.iter().position(|g| g.contains(q)) else {
            continue;
        };
        let frame = scene.grains[gi].frame;
        let (point, direction, kind) = if is_tilt {
            let psi = rng.random_range(0.0..PI);
            let mis = uniform(rng, p.defects.tilt_misorientation_deg);
            let mis = if rng.random::<bool>() { mis } else { -mis };
            (
                q,
                [psi.cos(), psi.sin()],
                BoundaryKind::Tilt {
                    misorientation_deg: mis,
                },
            )
        } else {
            if ctx.spec.twin_traces.is_empty() {
                return false;
            }
            let tr = ctx.spec.twin_traces[rng.random_range(0..ctx.spec.twin_traces.len())];
            let d = [
                frame.m[0][0] * tr[0] + frame.m[0][1] * tr[1],
                frame.m[1][0] * tr[0] + frame.m[1][1] * tr[1],
            ];
            let l = (d[0] * d[0] + d[1] * d[1]).sqrt();
            // The mirror plane passes through a lattice column (coherent twin).
            let f = frame.to_frac(q);
            let p0 = frame.to_px([f[0].round(), f[1].round()]);
            (p0, [d[0] / l, d[1] / l], BoundaryKind::Twin)
        };
        let candidate = Boundary {
            kind,
            point,
            direction,
            parent_grain: gi,
            child_grain: scene.grains.len(),
        };
        let Some(bx) = boundary_box(&candidate, &scene.distortion, width_px, ctx.w, ctx.h) else {
            continue;
        };
        if bx.w < min_len {
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
        let clash = scene.boundaries.iter().any(|other| {
            boundary_box(other, &scene.distortion, width_px, ctx.w, ctx.h).is_none_or(|ob| {
                let (b0, b1) = seg(&ob);
                segments_min_distance(a0, a1, b0, b1) < min_gap
            })
        });
        if clash {
            continue;
        }
        // Which side becomes the new grain is itself a draw.
        let n = [-direction[1], direction[0]];
        let n = if rng.random::<bool>() {
            n
        } else {
            [-n[0], -n[1]]
        };
        let child_frame = match kind {
            BoundaryKind::Twin => {
                // Reflection across the line: R = 2 d dᵀ − I.
                let (dx, dy) = (direction[0], direction[1]);
                frame.transformed(
                    [
                        [2.0 * dx * dx - 1.0, 2.0 * dx * dy],
                        [2.0 * dx * dy, 2.0 * dy * dy - 1.0],
                    ],
                    point,
                )
            }
            BoundaryKind::Tilt { misorientation_deg } => {
                let (s, c) = misorientation_deg.to_radians().sin_cos();
                frame.transformed([[c, -s], [s, c]], point)
            }
        };
        let mut child_region = scene.grains[gi].region.clone();
        child_region.push(HalfPlane {
            point,
            normal: [-n[0], -n[1]],
        });
        scene.grains[gi].region.push(HalfPlane { point, normal: n });
        scene.grains.push(Grain {
            frame: child_frame,
            region: child_region,
        });
        scene.boundaries.push(candidate);
        return true;
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
    // Drift shears x and stretches y by up to 5% of the height (see `ScanParams` ranges).
    let slack = 0.06 * p.height as f64;
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
    cols
}

/// Labels in the image frame, grain boundaries first, then point defects in placement order.
pub fn scene_labels(spec: &CrystalSpec, scene: &Scene, p: &SynthParams) -> Vec<DefectLabel> {
    let (w, h) = (p.width as f64, p.height as f64);
    let width_px = p.labels.boundary_width_a / p.pixel_size_a();
    let mut out = Vec::new();
    for b in &scene.boundaries {
        if let Some(obb) = boundary_box(b, &scene.distortion, width_px, w, h) {
            out.push(DefectLabel {
                class: DefectClass::GrainBoundary,
                obb,
            });
        }
    }
    for d in &scene.defects {
        let frame = &scene.grains[d.grain].frame;
        let bx = point_defect_box_specimen(spec, p, frame, d.position);
        out.push(DefectLabel {
            class: d.class(),
            obb: bx.map(|q| scene.distortion.to_image(q)),
        });
    }
    out
}
