//! Point-defect boxes fitted to the crystal around them.
//!
//! A point-defect label is one projected cell of its grain, grown by the label margin,
//! centred on the defect's site and aligned with the lattice
//! ([`crate::synth::scene::point_defect_box_specimen`]). A detector estimates that box from a
//! few cells of a noisy frame; on the realistic synthetic test set the shipped model's matched
//! boxes are off by a median 2–3° in angle, 3–4 % in size and 0.9 px across the rows of
//! columns. The lattice around the detection (hundreds of columns) fixes all three better:
//! - The two {111} reflections are looked for near where the detector's box puts them, in
//!   the spectrum of a Hann-windowed disc [`CellFitParams::radius_boxes`] box lengths wide.
//!   Their dual basis gives the local cell vectors `U` (along [1̄10]) and `V` (along [001]) as
//!   the frame shows them, drift shear and stretch included: the box is `|U| × |V|` grown by
//!   the margin, with its `w` side along `U`, as the labels are.
//! - The two reflections' phases place the net of dumbbell centres (for a dumbbell of two
//!   equal columns exactly; CdTe's Te column, (52/48)^1.7 brighter in HAADF, moves the
//!   measured centre 0.011 cell along the dumbbell, about 0.4 px at the training scale).
//!   A label sits on a site of its class: a vacancy on a column or a dumbbell centre, an
//!   interstitial in a channel ([`SiteSets`]). With [`SiteSets`] the centre moves to the
//!   nearest site of its class; without, only across, onto the nearest row `u ∈ ½ℤ` on which
//!   every site lies (the sum of the phases, free of the motif).
//!
//! Where the lattice is too faint for this (either reflection within
//! [`CellFitParams::min_snr`] of the spectrum's noise floor) or the reflections are not where
//! a cell of about the box's size would put them, the box is left as it was.

use crate::geometry::OrientedBox;
use crate::raster::ImageF32;
use crate::synth::crystal::CrystalSpec;
use std::f64::consts::TAU;

/// How [`fit_point_box`] looks at the lattice.
#[derive(Clone, Debug, PartialEq)]
pub struct CellFitParams {
    /// The label margin of the training data: a box is one cell grown by this fraction.
    pub cell_margin: f64,
    /// Radius of the analysed disc, in lengths of the box's long side. Large enough to
    /// average the scan's line jitter, small enough to stay in the defect's grain.
    pub radius_boxes: f64,
    /// Both {111} reflections must stand this many times above the median amplitude at
    /// frequencies where the lattice has none.
    pub min_snr: f64,
    /// Where each class sits in the cell: the centre moves to the nearest such site. `None`:
    /// only across the rows of columns.
    pub sites: Option<SiteSets>,
}

impl Default for CellFitParams {
    fn default() -> Self {
        Self::for_crystal(&crate::synth::crystal::Preset::Cdte110.spec())
    }
}

impl CellFitParams {
    /// The defaults with the sites of `crystal`.
    pub fn for_crystal(crystal: &CrystalSpec) -> Self {
        Self {
            cell_margin: crate::synth::params::LabelParams::default().cell_margin,
            radius_boxes: 2.0,
            min_snr: 3.0,
            sites: Some(SiteSets::of(crystal)),
        }
    }
}

/// Where the label of each point-defect class sits in the projected cell: fractional
/// `(u, v)` offsets from the centre of the crystal's first dumbbell (the point the two
/// reflections' phases locate). The fit cannot tell `V` from `−V` (nor `U` from `−U`), so
/// every set holds each offset's negative too; for zinc blende [110] that adds nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteSets {
    /// Single columns and whole dumbbells (their centres).
    pub vacancy: Vec<[f64; 2]>,
    /// The open channels.
    pub interstitial: Vec<[f64; 2]>,
}

impl SiteSets {
    pub fn of(spec: &CrystalSpec) -> Self {
        let site = |i: usize| spec.sites.get(i).map(|s| [s.u, s.v]);
        let mid = |d: &[usize; 2]| match (site(d[0]), site(d[1])) {
            (Some(a), Some(b)) => Some([(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0]),
            _ => None,
        };
        let origin = spec
            .dumbbells
            .first()
            .and_then(mid)
            .or_else(|| site(0))
            .unwrap_or([0.0, 0.0]);
        let centred = |pts: Vec<[f64; 2]>| {
            let mut out: Vec<[f64; 2]> = Vec::new();
            for p in pts {
                let d = [p[0] - origin[0], p[1] - origin[1]];
                for q in [d, [-d[0], -d[1]]] {
                    let q = [q[0] - q[0].round(), q[1] - q[1].round()];
                    let same = |o: &[f64; 2]| {
                        let (a, b) = (q[0] - o[0], q[1] - o[1]);
                        (a - a.round()).abs() < 1e-9 && (b - b.round()).abs() < 1e-9
                    };
                    if !out.iter().any(same) {
                        out.push(q);
                    }
                }
            }
            out
        };
        let mut vac: Vec<[f64; 2]> = spec.sites.iter().map(|s| [s.u, s.v]).collect();
        vac.extend(spec.dumbbells.iter().filter_map(mid));
        Self {
            vacancy: centred(vac),
            interstitial: centred(spec.interstitial_sites.clone()),
        }
    }

    /// The set of a class named as the detector names it.
    pub fn for_class(&self, name: &str) -> Option<&[[f64; 2]]> {
        match name {
            "vacancy" => Some(&self.vacancy),
            "interstitial" => Some(&self.interstitial),
            _ => None,
        }
    }
}

/// A box fitted to its lattice.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CellFit {
    pub obb: OrientedBox,
    /// How far the centre moved (px).
    pub shift_px: f64,
    /// The weaker reflection over the noise floor.
    pub snr: f64,
}

/// Relative range of the reciprocal-vector length searched around the box's prediction.
const SEARCH_SCALE: f64 = 0.10;
/// Angular range searched (radians, either side).
const SEARCH_ANGLE: f64 = 8.0 * std::f64::consts::PI / 180.0;
/// Coarse grid points per axis; then [`REFINE_STEPS`] halvings of a 3x3 grid.
const COARSE: usize = 5;
const REFINE_STEPS: usize = 6;

/// The windowed, mean-free disc around the box centre, with pixel-centre offsets from it.
struct Patch {
    w: usize,
    h: usize,
    /// Offset of the first column's / row's pixel centre from the disc centre.
    dx0: f64,
    dy0: f64,
    v: Vec<f64>,
}

impl Patch {
    fn cut(img: &ImageF32, c: [f64; 2], r: f64) -> Option<Patch> {
        let x0 = (c[0] - r).floor().max(0.0) as usize;
        let y0 = (c[1] - r).floor().max(0.0) as usize;
        let x1 = ((c[0] + r).ceil() as usize).min(img.width);
        let y1 = ((c[1] + r).ceil() as usize).min(img.height);
        if x1 <= x0 + 8 || y1 <= y0 + 8 {
            return None;
        }
        let (w, h) = (x1 - x0, y1 - y0);
        let dx0 = x0 as f64 + 0.5 - c[0];
        let dy0 = y0 as f64 + 0.5 - c[1];
        let mut wts = vec![0.0; w * h];
        let mut v = vec![0.0; w * h];
        let (mut sw, mut swv) = (0.0, 0.0);
        for y in 0..h {
            for x in 0..w {
                let d = ((dx0 + x as f64).powi(2) + (dy0 + y as f64).powi(2)).sqrt() / r;
                if d < 1.0 {
                    let k = 0.5 + 0.5 * (std::f64::consts::PI * d).cos();
                    let val = img.data[(y0 + y) * img.width + x0 + x] as f64;
                    wts[y * w + x] = k;
                    v[y * w + x] = val;
                    sw += k;
                    swv += k * val;
                }
            }
        }
        if sw <= 0.0 {
            return None;
        }
        let mean = swv / sw;
        for (val, k) in v.iter_mut().zip(&wts) {
            *val = (*val - mean) * k;
        }
        Some(Patch { w, h, dx0, dy0, v })
    }

    /// `Σ P(d) exp(−2πi g·d)`, separably: a row sum per row, then the column phase.
    fn dft(&self, g: [f64; 2]) -> (f64, f64) {
        let ex: Vec<(f64, f64)> = (0..self.w)
            .map(|x| {
                let (s, c) = (-TAU * g[0] * (self.dx0 + x as f64)).sin_cos();
                (c, s)
            })
            .collect();
        let (mut re, mut im) = (0.0, 0.0);
        for y in 0..self.h {
            let row = &self.v[y * self.w..(y + 1) * self.w];
            let (mut rr, mut ri) = (0.0, 0.0);
            for (p, (c, s)) in row.iter().zip(&ex) {
                rr += p * c;
                ri += p * s;
            }
            let (s, c) = (-TAU * g[1] * (self.dy0 + y as f64)).sin_cos();
            re += rr * c - ri * s;
            im += rr * s + ri * c;
        }
        (re, im)
    }

    fn amplitude(&self, g: [f64; 2]) -> f64 {
        let (re, im) = self.dft(g);
        re.hypot(im)
    }
}

fn scaled_rotated(g: [f64; 2], s: f64, t: f64) -> [f64; 2] {
    let (sn, cs) = t.sin_cos();
    [s * (cs * g[0] - sn * g[1]), s * (sn * g[0] + cs * g[1])]
}

/// The strongest reflection within the search range around `g0`: `None` when the best of
/// the coarse grid lies on its edge (the lattice there is not the one the box implies).
fn find_peak(p: &Patch, g0: [f64; 2]) -> Option<([f64; 2], f64)> {
    let step_s = 2.0 * SEARCH_SCALE / (COARSE - 1) as f64;
    let step_t = 2.0 * SEARCH_ANGLE / (COARSE - 1) as f64;
    let (mut best, mut best_ij) = (f64::NEG_INFINITY, (0, 0));
    for i in 0..COARSE {
        for j in 0..COARSE {
            let s = 1.0 - SEARCH_SCALE + i as f64 * step_s;
            let t = -SEARCH_ANGLE + j as f64 * step_t;
            let a = p.amplitude(scaled_rotated(g0, s, t));
            if a > best {
                (best, best_ij) = (a, (i, j));
            }
        }
    }
    let edge = |k: usize| k == 0 || k == COARSE - 1;
    if edge(best_ij.0) || edge(best_ij.1) {
        return None;
    }
    let mut s = 1.0 - SEARCH_SCALE + best_ij.0 as f64 * step_s;
    let mut t = -SEARCH_ANGLE + best_ij.1 as f64 * step_t;
    let (mut ds, mut dt) = (step_s, step_t);
    for _ in 0..REFINE_STEPS {
        ds *= 0.5;
        dt *= 0.5;
        let (mut bs, mut bt) = (s, t);
        for i in -1i32..=1 {
            for j in -1i32..=1 {
                if (i, j) == (0, 0) {
                    continue;
                }
                let (cs, ct) = (s + i as f64 * ds, t + j as f64 * dt);
                let a = p.amplitude(scaled_rotated(g0, cs, ct));
                if a > best {
                    (best, bs, bt) = (a, cs, ct);
                }
            }
        }
        (s, t) = (bs, bt);
    }
    Some((scaled_rotated(g0, s, t), best))
}

/// Fits a point-defect box to the lattice around it; `None` leaves the box as it is.
/// `sites`: where its class sits in the cell ([`SiteSets`]); `None` moves the centre only
/// across the rows.
pub fn fit_point_box(
    img: &ImageF32,
    b: &OrientedBox,
    params: &CellFitParams,
    sites: Option<&[[f64; 2]]>,
) -> Option<CellFit> {
    let g = 1.0 + params.cell_margin;
    // Long side along V ([001], the dumbbell axis), short side along U.
    let (long, short, along) = if b.h >= b.w {
        (b.h, b.w, b.angle + std::f64::consts::FRAC_PI_2)
    } else {
        (b.w, b.h, b.angle)
    };
    if !(long.is_finite() && short > 2.0 && b.cx.is_finite() && b.cy.is_finite()) {
        return None;
    }
    let (au, bv) = (short / g, long / g);
    let ev = [along.cos(), along.sin()];
    let eu = [-ev[1], ev[0]];
    let patch = Patch::cut(img, [b.cx, b.cy], params.radius_boxes * long)?;
    let g1_0 = [eu[0] / au + ev[0] / bv, eu[1] / au + ev[1] / bv];
    let g2_0 = [eu[0] / au - ev[0] / bv, eu[1] / au - ev[1] / bv];
    let (g1, a1) = find_peak(&patch, g1_0)?;
    let (g2, a2) = find_peak(&patch, g2_0)?;
    let mut off: Vec<f64> = [0.6, 0.75, 1.35, 1.5]
        .iter()
        .flat_map(|&f| {
            [
                patch.amplitude([g1[0] * f, g1[1] * f]),
                patch.amplitude([g2[0] * f, g2[1] * f]),
            ]
        })
        .collect();
    off.sort_by(f64::total_cmp);
    let noise = 0.5 * (off[3] + off[4]);
    let snr = a1.min(a2) / noise.max(f64::MIN_POSITIVE);
    // NaN (a flat patch) fails too.
    if snr.is_nan() || snr < params.min_snr {
        return None;
    }
    // Real-space primitive vectors of the centred net: the dual basis of (g1, g2).
    let det = g1[0] * g2[1] - g1[1] * g2[0];
    if det.abs() < 1e-12 {
        return None;
    }
    let t1 = [g2[1] / det, -g2[0] / det];
    let t2 = [-g1[1] / det, g1[0] / det];
    let u = [t1[0] + t2[0], t1[1] + t2[1]];
    let v = [t1[0] - t2[0], t1[1] - t2[1]];
    let (r1, i1) = patch.dft(g1);
    let (r2, i2) = patch.dft(g2);
    let (p1, p2) = (i1.atan2(r1) / TAU, i2.atan2(r2) / TAU);
    let shift = match sites.filter(|s| !s.is_empty()) {
        Some(sites) => {
            // A centrosymmetric motif centred at `m` puts the phase −2π g·(m − c) on each
            // reflection: `m − c` in the dual basis, up to a translation of the net.
            let m = [-p1 * t1[0] - p2 * t2[0], -p1 * t1[1] - p2 * t2[1]];
            nearest_site(m, u, v, sites)?
        }
        None => {
            // Rows of sites: gu·(r − r0) ∈ ℤ with gu = g1 + g2.
            let gu = [g1[0] + g2[0], g1[1] + g2[1]];
            let s = p1 + p2;
            let frac = s - s.round();
            let gu2 = gu[0] * gu[0] + gu[1] * gu[1];
            [-frac * gu[0] / gu2, -frac * gu[1] / gu2]
        }
    };
    let obb = OrientedBox::new(
        b.cx + shift[0],
        b.cy + shift[1],
        u[0].hypot(u[1]) * g,
        v[0].hypot(v[1]) * g,
        u[1].atan2(u[0]),
    );
    Some(CellFit {
        obb,
        shift_px: shift[0].hypot(shift[1]),
        snr,
    })
}

/// The offset from the box centre (the origin) to the nearest of `sites` (fractional
/// `(u, v)` offsets from the motif centre `m`) in the cell `u × v`, over all translations.
fn nearest_site(m: [f64; 2], u: [f64; 2], v: [f64; 2], sites: &[[f64; 2]]) -> Option<[f64; 2]> {
    let det = u[0] * v[1] - u[1] * v[0];
    if det.abs() < 1e-12 {
        return None;
    }
    let mut best: Option<([f64; 2], f64)> = None;
    for s in sites {
        let q = [
            m[0] + s[0] * u[0] + s[1] * v[0],
            m[1] + s[0] * u[1] + s[1] * v[1],
        ];
        // Fractional coordinates of the origin relative to q, rounded to a translation.
        let fu = (-q[0] * v[1] + q[1] * v[0]) / det;
        let fv = (-u[0] * q[1] + u[1] * q[0]) / det;
        for du in [fu.floor(), fu.ceil()] {
            for dv in [fv.floor(), fv.ceil()] {
                let r = [q[0] + du * u[0] + dv * v[0], q[1] + du * u[1] + dv * v[1]];
                let d2 = r[0] * r[0] + r[1] * r[1];
                if best.is_none_or(|(_, b)| d2 < b) {
                    best = Some((r, d2));
                }
            }
        }
    }
    best.map(|(r, _)| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthParams, generate};

    /// Frames of the synthesizer at a high dose: every point-defect label, displaced and
    /// distorted as a detector might get it (`along` px along the dumbbell axis too), fitted
    /// with or without its class's sites. Returns the mean IoU before and after.
    fn perturb_and_fit(along: f64, with_sites: bool) -> (f64, f64) {
        let mut n = 0;
        let (mut before, mut after) = (0.0, 0.0);
        let params = CellFitParams::default();
        for seed in 0..6u64 {
            let mut p = SynthParams {
                seed,
                ..Default::default()
            };
            p.defects.vacancies = crate::synth::params::CountRange::new(3, 3);
            p.defects.interstitials = crate::synth::params::CountRange::new(3, 3);
            let s = generate(&p).unwrap();
            let img = &s.image;
            for l in &s.labels {
                if l.class == crate::classes::DefectClass::GrainBoundary {
                    continue;
                }
                let t = l.obb;
                // A detector's typical error: 1.2 px across the rows (along `w`, i.e. U),
                // `along` px along V, 3 % too large, 3° off.
                let (sn, cs) = t.angle.sin_cos();
                let wrong = OrientedBox::new(
                    t.cx + 1.2 * cs - along * sn,
                    t.cy + 1.2 * sn + along * cs,
                    t.w * 1.03,
                    t.h * 1.03,
                    t.angle + 3f64.to_radians(),
                );
                let sites = if with_sites {
                    params
                        .sites
                        .as_ref()
                        .and_then(|s| s.for_class(l.class.name()))
                } else {
                    None
                };
                let f =
                    fit_point_box(img, &wrong, &params, sites).expect("a clean lattice is fitted");
                before += crate::geometry::polygon_iou(&t, &wrong);
                after += crate::geometry::polygon_iou(&t, &f.obb);
                n += 1;
                assert!(
                    crate::geometry::polygon_iou(&t, &f.obb) > 0.9,
                    "seed {seed}: {t:?} fitted to {:?}",
                    f.obb
                );
            }
        }
        assert!(n >= 20, "{n} labels");
        (before / n as f64, after / n as f64)
    }

    #[test]
    fn perturbed_labels_are_fitted_back_to_their_cells() {
        let (before, after) = perturb_and_fit(0.0, false);
        eprintln!("mean IoU {before:.3} as perturbed, {after:.3} fitted");
        assert!(
            after > 0.97 && after > before + 0.05,
            "{before:.3} -> {after:.3}"
        );
    }

    /// With the sites of each class the centre also comes back along the dumbbell axis,
    /// where the rows alone leave it.
    #[test]
    fn perturbed_labels_are_fitted_back_to_their_sites() {
        let (before, rows_only) = perturb_and_fit(1.5, false);
        let (_, sites) = perturb_and_fit(1.5, true);
        eprintln!("mean IoU {before:.3} as perturbed, {rows_only:.3} rows only, {sites:.3} sites");
        assert!(
            sites > 0.975 && sites > rows_only + 0.02,
            "{before:.3} -> {rows_only:.3} (rows) / {sites:.3} (sites)"
        );
    }

    #[test]
    fn site_sets_of_zinc_blende_110() {
        let s = SiteSets::of(&crate::synth::crystal::Preset::Cdte110.spec());
        // Relative to the dumbbell centre: Cd and Te at ∓⅛ along V, the centre itself, and
        // their copies on the centred net's second point (½, ½).
        let has = |set: &[[f64; 2]], p: [f64; 2]| {
            set.iter().any(|q| {
                let (a, b) = (q[0] - p[0], q[1] - p[1]);
                (a - a.round()).abs() < 1e-9 && (b - b.round()).abs() < 1e-9
            })
        };
        assert_eq!(s.vacancy.len(), 6, "{:?}", s.vacancy);
        for p in [
            [0.0, -0.125],
            [0.0, 0.125],
            [0.0, 0.0],
            [0.5, 0.5],
            [0.5, 0.375],
            [0.5, 0.625],
        ] {
            assert!(has(&s.vacancy, p), "{p:?} in {:?}", s.vacancy);
        }
        assert_eq!(s.interstitial.len(), 4, "{:?}", s.interstitial);
        for p in [[0.0, 0.375], [0.0, -0.375], [0.5, 0.125], [0.5, -0.125]] {
            assert!(has(&s.interstitial, p), "{p:?} in {:?}", s.interstitial);
        }
        assert_eq!(s.for_class("grain_boundary"), None);
    }

    #[test]
    fn noise_without_a_lattice_leaves_the_box_alone() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let mut img = ImageF32::new(200, 200);
        for v in &mut img.data {
            *v = rng.random::<f32>();
        }
        let b = OrientedBox::new(100.0, 100.0, 27.0, 39.0, 0.3);
        assert_eq!(
            fit_point_box(&img, &b, &CellFitParams::default(), None),
            None
        );
    }

    #[test]
    fn degenerate_boxes_and_edges_are_refused_without_panics() {
        let img = ImageF32::new(64, 64);
        let p = CellFitParams::default();
        for b in [
            OrientedBox::new(f64::NAN, 10.0, 20.0, 30.0, 0.0),
            OrientedBox::new(10.0, 10.0, 0.0, 0.0, 0.0),
            OrientedBox::new(-500.0, 10.0, 20.0, 30.0, 0.0),
            OrientedBox::new(32.0, 32.0, 20.0, 30.0, 0.0),
        ] {
            assert_eq!(fit_point_box(&img, &b, &p, None), None);
        }
    }
}
