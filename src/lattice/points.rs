//! Point defects against the local lattice (vacancies and interstitials).
//!
//! The frame, smoothed to about a column's width, is compared with itself translated by the
//! local lattice vectors ([`LatticeMaps::primitive`], the net of dumbbells): the residual
//! R(x) = s(x) − median over the four neighbour vectors t of s(x + t), and the height expected
//! there, E(x) = median s(x + t) − background. A translation by a lattice vector maps every
//! column onto one of its own species, so a perfect lattice gives R ≈ 0 whatever the motif
//! and whether or not the dumbbells are resolved, and the median ignores one defective
//! neighbour.
//! - A deep minimum of R where a column was expected (E high), missing at least
//!   [`LatticeParams::vacancy_fraction`] of it, is a **vacancy** (score: the missing fraction).
//!   Single-column vacancies in merged dumbbells are found as well as whole ones.
//! - A peak of R where the lattice has a channel (E low) is an **interstitial**.
//! - Both must stand [`RESIDUAL_SIGMAS`] robust standard deviations out of the residual's
//!   noise, so shot noise at low dose does not make every dark pixel a vacancy.
//!
//! Sites near the frame's edges, near boundaries (traced, or where the discontinuity map is
//! high) and where the maps found no lattice are not judged: their translates differ by
//! construction.

use super::{LatticeBoundary, LatticeMaps, LatticeParams, LatticePointDefect};
use crate::classes::DefectClass;
use crate::geometry::OrientedBox;
use crate::raster::{ImageF32, median};

/// An interstitial is at least this many times brighter (above background) than the same
/// place one lattice vector away.
const INTERSTITIAL_CONTRAST: f64 = 3.0;

/// A defect's residual must exceed this many robust standard deviations of the residual map.
const RESIDUAL_SIGMAS: f64 = 4.5;

/// Confidence of a point defect from how far its residual stands out of the residual's noise
/// (`sigmas`) and how much of a column it misses or adds (`departure`, in 0..=1): a logistic
/// per class fitted by maximum likelihood to the analysis' findings on 160 synthetic frames of
/// the realistic recipe (`export --n 80 --size 384 --augment none --sampling independent`,
/// seeds 8888 and 7777), a finding true when its centre lies in a label box of its class
/// (`training/fit_lattice_point_confidence.py`; `--check` gives the held-out figures below). Until
/// 2026-12-04 the confidence was the departure itself, 1.0 for most findings, while fewer than
/// two thirds of those were true (vacancies 0.64, interstitials 0.49): ranked above every model
/// box, they cost `--method both` 0.2 of mAP50. On 80 held-out frames (seed 9191) precision was
/// 0.35 / 0.39 / 0.63 / 0.70 for vacancies at confidence 0–0.2 / 0.2–0.4 / 0.4–0.6 / 0.6–0.8, and
/// 0.36 / 0.68 / 0.52 for interstitials at 0.2–0.4 / 0.4–0.6 / 0.6–0.8: the analysis alone seldom
/// tells a true point defect from a noisy site, and its confidence says so. (The fit saw the
/// findings as they were kept then, the larger departure winning a cell; the confidence now
/// decides that, so a refit on today's findings moves the coefficients a little.)
pub fn confidence(class: DefectClass, sigmas: f64, departure: f64) -> f32 {
    let z = match class {
        DefectClass::Vacancy => -7.782 + 0.569 * sigmas.max(1e-6).ln() + 6.937 * departure,
        _ => -3.418 + 1.490 * sigmas.max(1e-6).ln() + 0.624 * departure,
    };
    (1.0 / (1.0 + (-z).exp())) as f32
}

/// Local maxima of `s` at least `min_sep` px apart (the brighter one wins), refined with a
/// quadratic through the 3x3 neighbourhood.
fn local_maxima(s: &ImageF32, min_sep: f64, floor: f32) -> Vec<[f64; 3]> {
    let (w, h) = (s.width, s.height);
    let at = |x: usize, y: usize| s.data[y * w + x];
    let mut peaks = Vec::new();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w - 1 {
            let v = at(x, y);
            if v <= floor {
                continue;
            }
            let mut is_max = true;
            'n: for dy in 0..3 {
                for dx in 0..3 {
                    if (dx, dy) != (1, 1) {
                        let u = at(x + dx - 1, y + dy - 1);
                        // Ties go to the first pixel in scan order.
                        if u > v || (u == v && (dy < 1 || (dy == 1 && dx < 1))) {
                            is_max = false;
                            break 'n;
                        }
                    }
                }
            }
            if !is_max {
                continue;
            }
            let (l, r) = (at(x - 1, y) as f64, at(x + 1, y) as f64);
            let (u, d) = (at(x, y - 1) as f64, at(x, y + 1) as f64);
            let c = v as f64;
            let offset = |a: f64, b: f64| {
                let den = a - 2.0 * c + b;
                if den < 0.0 {
                    (0.5 * (a - b) / den).clamp(-0.5, 0.5)
                } else {
                    0.0
                }
            };
            peaks.push([
                x as f64 + 0.5 + offset(l, r),
                y as f64 + 0.5 + offset(u, d),
                c,
            ]);
        }
    }
    // Brightest first; a peak within `min_sep` of a kept one is a shoulder of the same column.
    peaks.sort_by(|a, b| b[2].total_cmp(&a[2]));
    let cell = min_sep.max(1.0);
    let (gc, gr) = (
        (w as f64 / cell).ceil() as usize + 1,
        (h as f64 / cell).ceil() as usize + 1,
    );
    let mut grid: Vec<Vec<usize>> = vec![Vec::new(); gc * gr];
    let mut kept: Vec<[f64; 3]> = Vec::new();
    for p in peaks {
        let (gx, gy) = ((p[0] / cell) as usize, (p[1] / cell) as usize);
        let mut clash = false;
        for y in gy.saturating_sub(1)..=(gy + 1).min(gr - 1) {
            for x in gx.saturating_sub(1)..=(gx + 1).min(gc - 1) {
                clash |= grid[y * gc + x].iter().any(|&k| {
                    (kept[k][0] - p[0]).powi(2) + (kept[k][1] - p[1]).powi(2) < min_sep * min_sep
                });
            }
        }
        if !clash {
            grid[gy.min(gr - 1) * gc + gx.min(gc - 1)].push(kept.len());
            kept.push(p);
        }
    }
    kept
}

/// A coarse background: the 10th percentile of blocks of `block` px, taken over each block and
/// its 8 neighbours, bilinearly interpolated.
struct Background {
    block: f64,
    cols: usize,
    rows: usize,
    v: Vec<f64>,
}

impl Background {
    fn new(s: &ImageF32, block: usize) -> Self {
        let block = block.max(4);
        let (cols, rows) = (s.width.div_ceil(block), s.height.div_ceil(block));
        let mut v = vec![0.0; cols * rows];
        let mut buf = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                buf.clear();
                let y0 = r.saturating_sub(1) * block;
                let y1 = ((r + 2) * block).min(s.height);
                let x0 = c.saturating_sub(1) * block;
                let x1 = ((c + 2) * block).min(s.width);
                for y in (y0..y1).step_by(2) {
                    buf.extend(s.data[y * s.width + x0..y * s.width + x1].iter().step_by(2));
                }
                let k = buf.len() / 10;
                let (_, q, _) = buf.select_nth_unstable_by(k, f32::total_cmp);
                v[r * cols + c] = *q as f64;
            }
        }
        Self {
            block: block as f64,
            cols,
            rows,
            v,
        }
    }

    fn at(&self, p: [f64; 2]) -> f64 {
        let fx = (p[0] / self.block - 0.5).clamp(0.0, (self.cols - 1) as f64);
        let fy = (p[1] / self.block - 0.5).clamp(0.0, (self.rows - 1) as f64);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.cols - 1), (y0 + 1).min(self.rows - 1));
        let (tx, ty) = (fx - x0 as f64, fy - y0 as f64);
        let g = |x: usize, y: usize| self.v[y * self.cols + x];
        (1.0 - ty) * ((1.0 - tx) * g(x0, y0) + tx * g(x1, y0))
            + ty * ((1.0 - tx) * g(x0, y1) + tx * g(x1, y1))
    }
}

/// The local lattice at a point: the four neighbour vectors and the `u` direction (radians).
fn local_lattice(maps: &LatticeMaps, p: [f64; 2]) -> Option<([[f64; 2]; 4], f64)> {
    let (c, r) = maps.cell_at(p)?;
    let i = r * maps.cols + c;
    let t = maps.primitive[i];
    let u = maps.orientation_deg[i];
    if t.iter().any(|v| !v.is_finite()) || !u.is_finite() {
        return None;
    }
    let (t1, t2) = ([t[0] as f64, t[1] as f64], [t[2] as f64, t[3] as f64]);
    Some((
        [t1, [-t1[0], -t1[1]], t2, [-t2[0], -t2[1]]],
        (u as f64).to_radians(),
    ))
}

pub(crate) fn find(
    img: &ImageF32,
    maps: &LatticeMaps,
    boundaries: &[LatticeBoundary],
    params: &LatticeParams,
    px_per_a: f64,
) -> Vec<LatticePointDefect> {
    let (w, h) = (img.width, img.height);
    if maps.is_empty() || maps.primitive.len() != maps.len() {
        return Vec::new();
    }
    let spec = &params.crystal;
    // About a column's width: averages the shot noise of a column without merging dumbbells.
    let sigma = (0.3 * px_per_a).max(0.7);
    let mut s = img.clone();
    crate::synth::imaging::gaussian_blur(&mut s, sigma);
    let min_sep = (0.6 * spec.min_column_distance() * px_per_a).max(1.5);
    let bg = Background::new(&s, (2.5 * spec.b_v * px_per_a) as usize);
    let floor = {
        let mut v: Vec<f32> = s.data.iter().step_by(7).copied().collect();
        let k = v.len() * 3 / 10;
        *v.select_nth_unstable_by(k, f32::total_cmp).1
    };
    // Column heights above the background: the scale of "a column" in this frame.
    let heights: Vec<f64> = local_maxima(&s, min_sep, floor)
        .into_iter()
        .map(|p| p[2] - bg.at([p[0], p[1]]))
        .collect();
    if heights.len() < 16 {
        return Vec::new();
    }
    let t_len = (0..maps.len())
        .filter_map(|i| {
            let t = maps.primitive[i];
            t.iter().all(|v| v.is_finite()).then(|| {
                (t[0] as f64)
                    .hypot(t[1] as f64)
                    .min((t[2] as f64).hypot(t[3] as f64))
            })
        })
        .collect::<Vec<_>>();
    if t_len.is_empty() {
        return Vec::new();
    }
    let t_min = median(t_len.clone());
    // Judged only well inside the frame and away from boundaries (their translates differ).
    let margin = 1.5 * t_min;
    let near_boundary = |p: [f64; 2]| {
        boundaries.iter().any(|b| {
            let grown = OrientedBox::new(
                b.obb.cx,
                b.obb.cy,
                b.obb.w + 2.0 * t_min,
                b.obb.h + 2.0 * t_min,
                b.obb.angle,
            );
            grown.contains(p)
        })
    };
    // Where the lattice changes (a boundary too faint or short to be traced), translated
    // copies of the frame differ by construction: the map must be calm there.
    let calm_level = params.boundary_low_fraction * params.boundary_threshold;
    let calm = |p: [f64; 2]| {
        let (c, r) = maps.nearest_cell(p);
        maps.discontinuity[r * maps.cols + c] < calm_level
    };
    let judged = |p: [f64; 2]| {
        p[0] >= margin
            && p[1] >= margin
            && p[0] <= w as f64 - margin
            && p[1] <= h as f64 - margin
            && !near_boundary(p)
            && calm(p)
    };
    let median_height = median(heights.clone());
    if median_height.is_nan() || median_height <= 0.0 {
        return Vec::new();
    }
    let cell_box = |p: [f64; 2], u: f64| {
        let g = 1.0 + 0.1; // the synthesizer's default label margin
        OrientedBox::new(
            p[0],
            p[1],
            spec.a_u * g * px_per_a,
            spec.b_v * g * px_per_a,
            u,
        )
    };

    // The residual of the frame against itself translated by one lattice vector: R(x) = s(x)
    // − median over the four neighbour vectors t of s(x + t), and the height expected there,
    // E(x) = median s(x + t) − background. A perfect lattice gives R ≈ 0 everywhere, whatever
    // the motif and whether or not dumbbells are resolved; a missing column is a deep minimum
    // of R where E is high, an extra column a peak of R where E is low.
    let mut residual = vec![f32::NAN; w * h];
    let mut expected = vec![f32::NAN; w * h];
    let mut lattice_at: Vec<Option<([[f64; 2]; 4], f64)>> = vec![None; maps.len()];
    for (i, l) in lattice_at.iter_mut().enumerate() {
        let (c, r) = (i % maps.cols, i / maps.cols);
        *l = local_lattice(maps, maps.cell_center(c, r));
    }
    let x0 = margin.ceil() as usize;
    let x1 = (w as f64 - margin).floor().max(0.0) as usize;
    let y1 = (h as f64 - margin).floor().max(0.0) as usize;
    for y in x0.min(y1)..y1 {
        for x in x0..x1 {
            let p = [x as f64 + 0.5, y as f64 + 0.5];
            let Some((c, r)) = maps.cell_at(p) else {
                continue;
            };
            let Some((ts, _)) = lattice_at[r * maps.cols + c] else {
                continue;
            };
            let mut v = ts.map(|t| s.bilinear([p[0] + t[0], p[1] + t[1]]));
            v.sort_by(f64::total_cmp);
            let e = 0.5 * (v[1] + v[2]);
            residual[y * w + x] = (s.data[y * w + x] as f64 - e) as f32;
            expected[y * w + x] = (e - bg.at(p)) as f32;
        }
    }
    // The noise of the residual (robust: defects are a few pixels among all): a defect must
    // stand out of it, or shot noise at low dose makes every dark channel pixel a "vacancy".
    let sigma_r = {
        let a: Vec<f64> = residual
            .iter()
            .step_by(3)
            .filter(|v| v.is_finite())
            .map(|v| v.abs() as f64)
            .collect();
        1.4826 * median(a)
    };
    let significant = |r: f64| r.abs() >= RESIDUAL_SIGMAS * sigma_r;
    let extremum = |x: usize, y: usize, sign: f32| -> bool {
        let v = sign * residual[y * w + x];
        if !v.is_finite() {
            return false;
        }
        for dy in 0..3 {
            for dx in 0..3 {
                if (dx, dy) == (1, 1) {
                    continue;
                }
                let u = sign * residual[(y + dy - 1) * w + x + dx - 1];
                if u > v || (u == v && (dy < 1 || (dy == 1 && dx < 1))) {
                    return false;
                }
            }
        }
        true
    };
    let mut out: Vec<LatticePointDefect> = Vec::new();
    for y in (x0 + 1).min(y1)..y1.saturating_sub(1) {
        for x in x0 + 1..x1.saturating_sub(1) {
            let i = y * w + x;
            let (r, e) = (residual[i] as f64, expected[i] as f64);
            if !r.is_finite() || !e.is_finite() {
                continue;
            }
            // Missing: a column was expected here (E well above background) and at least the
            // vacancy fraction of it is gone.
            let vacancy_like = r < 0.0
                && e > 0.4 * median_height
                && -r >= params.vacancy_fraction * e
                && significant(r);
            let found = if vacancy_like {
                extremum(x, y, -1.0)
                    .then(|| (DefectClass::Vacancy, (-r / e).clamp(0.0, 1.0) as f32))
            } else if r > params.interstitial_fraction * median_height
                && e * INTERSTITIAL_CONTRAST < r
                && significant(r)
                && extremum(x, y, 1.0)
            {
                Some((
                    DefectClass::Interstitial,
                    (r / median_height).min(1.0) as f32,
                ))
            } else {
                None
            };
            let Some((class, departure)) = found else {
                continue;
            };
            // Checked last: it walks the boundaries, and only candidates need it.
            let p = [x as f64 + 0.5, y as f64 + 0.5];
            if !judged(p) {
                continue;
            }
            let u = maps
                .cell_at(p)
                .and_then(|(c, rr)| lattice_at[rr * maps.cols + c])
                .map_or(0.0, |l| l.1);
            let sigmas = r.abs() / sigma_r;
            out.push(LatticePointDefect {
                class,
                obb: cell_box(p, u),
                score: confidence(class, sigmas, departure as f64),
                sigmas: sigmas as f32,
                departure,
            });
        }
    }
    // One defect per cell: the stronger of overlapping findings.
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<LatticePointDefect> = Vec::new();
    for d in out {
        if !kept
            .iter()
            .any(|k| (k.obb.cx - d.obb.cx).hypot(k.obb.cy - d.obb.cy) < 0.5 * spec.a_u * px_per_a)
        {
            kept.push(d);
        }
    }
    kept
}
