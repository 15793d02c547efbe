//! Lattice from the power spectrum: coarse search over rotation and scale, sub-pixel peaks,
//! a least-squares 2×2 lattice matrix, and its split into calibration, rotation and the scan
//! distortion (shear, stretch) in the convention of `synth::scene::ScanDistortion`.

use serde::{Deserialize, Serialize};

use super::spectrum::Spectrum;
use crate::synth::crystal::CrystalSpec;

/// What the spectrum says about the lattice. See [`super::estimate_lattice`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatticeEstimate {
    /// Pixel size from the fast-scan (x) axis of the fitted lattice (nm/px).
    pub nm_per_px: f64,
    /// Direction of the lattice u axis ([1-10]) in the image, as `SynthParams::rotation_deg`
    /// (x right, y down), modulo 180 in `[0, 180)`.
    pub rotation_deg: f64,
    /// Specimen x displacement per scan line (px of x per line), as `ScanDistortion::shear`.
    pub shear: f64,
    /// Relative slow-axis stretch, as `ScanDistortion::stretch`.
    pub stretch: f64,
    /// Mean log-power excess (natural log, i.e. `ln(power / local background)`) of the
    /// low-order reflections at the fitted positions. Pure noise gives about 0.5–1.5; a clear
    /// lattice gives 5–15. Estimates under [`MIN_SCORE`] are refused.
    pub score: f64,
    /// Spectrum peaks in the least-squares fit.
    pub peaks_used: usize,
}

impl LatticeEstimate {
    /// The pixel size averaged over directions (the geometric mean of the fast- and slow-axis
    /// pixel sizes; shear keeps areas): what a radial average of the spectrum measures. Turning
    /// a frame by a quarter turn swaps its axes, so `nm_per_px` then reads the other one, while
    /// this stays.
    pub fn mean_nm_per_px(&self) -> f64 {
        self.nm_per_px * (1.0 + self.stretch).max(1e-6).sqrt()
    }
}

/// Below this [`LatticeEstimate::score`] no lattice is reported.
pub const MIN_SCORE: f64 = 2.5;

/// Reflections `(h, k)` of the centred rectangular cell (h + k even) scored by the coarse
/// search: a fixed list, so a candidate at half or double the true scale loses.
const COARSE: [(i32, i32); 12] = [
    (1, 1),
    (1, -1),
    (2, 0),
    (0, 2),
    (2, 2),
    (2, -2),
    (1, 3),
    (1, -3),
    (3, 1),
    (3, -1),
    (0, 4),
    (4, 0),
];

/// Reflections closer to the centre than this (bins) are not used.
const MIN_RADIUS: f64 = 4.0;
/// Nor those beyond this fraction of the sampling frequency (aliasing near Nyquist).
const MAX_FREQ: f64 = 0.45;
/// Excess (nats) a refined peak needs.
const PEAK_MIN_EXCESS: f32 = 3.0;
/// How far (as a ratio) a candidate's {111} radius may lie from the spectrum's first ring:
/// wide enough for a {002} ring taken for the {111} one (1.15) and a slow-scan stretch, narrow
/// enough to shut out a cell of twice the period, or 1.7 times it.
const RING_TOLERANCE: f64 = 1.2;
/// Share of the best coarse score that a candidate on the ring needs to be preferred.
const RING_MIN_SHARE: f64 = 0.5;

/// A fitted lattice: `q` maps `(h, k)` to spatial frequency (cycles/px, x right, y down);
/// `m = q⁻ᵀ` maps fractional cell coordinates to image pixels.
#[derive(Clone, Debug)]
pub(crate) struct LatticeFit {
    pub est: LatticeEstimate,
    pub q: [[f64; 2]; 2],
    pub m: [[f64; 2]; 2],
}

/// `ln(power)` minus a local background, clipped at 0 (signed-bin layout of `Spectrum`).
pub(crate) struct Excess {
    pub n: usize,
    pub e: Vec<f32>,
    pub logp: Vec<f32>,
}

impl Excess {
    pub fn new(s: &Spectrum) -> Self {
        let n = s.n;
        let h = (n / 2) as i64;
        let floor = s.power.iter().copied().fold(0.0f32, f32::max) * 1e-12 + 1e-30;
        let logp: Vec<f32> = s.power.iter().map(|&p| (p + floor).ln()).collect();
        let band = |k: i64| k.abs() <= 1;
        // Ring medians (radius in whole bins), scan-line bands left out.
        let rmax = (h as f64 * std::f64::consts::SQRT_2).ceil() as usize + 2;
        let mut rings: Vec<Vec<f32>> = vec![Vec::new(); rmax];
        for ky in -h..h {
            for kx in -h..h {
                if band(kx) || band(ky) {
                    continue;
                }
                let r = ((kx * kx + ky * ky) as f64).sqrt().round() as usize;
                rings[r].push(logp[s.idx(kx, ky)]);
            }
        }
        let mut ring_med: Vec<f32> = rings
            .iter_mut()
            .map(|v| {
                if v.is_empty() {
                    f32::NAN
                } else {
                    let k = v.len() / 2;
                    *v.select_nth_unstable_by(k, f32::total_cmp).1
                }
            })
            .collect();
        // fill the empty rings from the nearest outward one
        for r in (0..rmax).rev() {
            if ring_med[r].is_nan() {
                ring_med[r] = if r + 1 < rmax { ring_med[r + 1] } else { 0.0 };
            }
        }
        let mut e = vec![0.0f32; n * n];
        for ky in -h..h {
            for kx in -h..h {
                let r = ((kx * kx + ky * ky) as f64).sqrt().round() as usize;
                let i = s.idx(kx, ky);
                e[i] = (logp[i] - ring_med[r]).max(0.0);
            }
        }
        // Scan-line artefacts put power all along the axes (row offsets: kx = 0; column
        // patterns: ky = 0). There the background is the running median along the band.
        const HW: i64 = 8;
        for b in -1..=1i64 {
            for vertical in [true, false] {
                let line: Vec<f32> = (-h..h)
                    .map(|t| {
                        if vertical {
                            logp[s.idx(b, t)]
                        } else {
                            logp[s.idx(t, b)]
                        }
                    })
                    .collect();
                for t in -h..h {
                    let lo = (t - HW).max(-h);
                    let hi = (t + HW).min(h - 1);
                    let mut win: Vec<f32> = line[(lo + h) as usize..=(hi + h) as usize].to_vec();
                    let k = win.len() / 2;
                    let med = *win.select_nth_unstable_by(k, f32::total_cmp).1;
                    let (kx, ky) = if vertical { (b, t) } else { (t, b) };
                    let r = ((kx * kx + ky * ky) as f64).sqrt().round() as usize;
                    let i = s.idx(kx, ky);
                    e[i] = (logp[i] - med.max(ring_med[r])).max(0.0);
                }
            }
        }
        Self { n, e, logp }
    }

    #[inline]
    fn at(&self, kx: i64, ky: i64) -> f32 {
        let n = self.n as i64;
        self.e[(ky.rem_euclid(n) * n + kx.rem_euclid(n)) as usize]
    }

    #[inline]
    fn logp_at(&self, kx: i64, ky: i64) -> f32 {
        let n = self.n as i64;
        self.logp[(ky.rem_euclid(n) * n + kx.rem_euclid(n)) as usize]
    }

    /// Bilinear interpolation of the excess at a fractional bin.
    fn bilinear(&self, x: f64, y: f64) -> f64 {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (ix, iy) = (x0 as i64, y0 as i64);
        let v = |dx, dy| f64::from(self.at(ix + dx, iy + dy));
        (1.0 - fy) * ((1.0 - fx) * v(0, 0) + fx * v(1, 0))
            + fy * ((1.0 - fx) * v(0, 1) + fx * v(1, 1))
    }

    /// Largest excess within `r` bins (square) of a fractional bin, and where.
    fn max_near(&self, x: f64, y: f64, r: i64) -> (f32, i64, i64) {
        let (cx, cy) = (x.round() as i64, y.round() as i64);
        let mut best = (f32::MIN, cx, cy);
        for dy in -r..=r {
            for dx in -r..=r {
                let v = self.at(cx + dx, cy + dy);
                if v > best.0 {
                    best = (v, cx + dx, cy + dy);
                }
            }
        }
        best
    }

    /// The excess map averaged over 3×3 bins (less noisy; rewards peaks smeared by a finite
    /// grain or scan jitter), then each bin replaced by the maximum over a `(2r+1)²` square.
    fn max_filtered(&self, r: usize) -> Vec<f32> {
        let n = self.n;
        let mut smooth = vec![0.0f32; n * n];
        for y in 0..n {
            for x in 0..n {
                let mut acc = 0.0;
                for dy in [n - 1, 0, 1] {
                    for dx in [n - 1, 0, 1] {
                        acc += self.e[((y + dy) % n) * n + (x + dx) % n];
                    }
                }
                smooth[y * n + x] = acc / 9.0;
            }
        }
        let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
            let mut out = vec![0.0f32; n * n];
            for y in 0..n {
                for x in 0..n {
                    let mut m = f32::MIN;
                    for d in 0..=2 * r {
                        let o = (d + n - r) % n;
                        let v = if horizontal {
                            src[y * n + (x + o) % n]
                        } else {
                            src[((y + o) % n) * n + x]
                        };
                        m = m.max(v);
                    }
                    out[y * n + x] = m;
                }
            }
            out
        };
        let a = pass(&smooth, true);
        pass(&a, false)
    }
}

/// Predicted bin of reflection `(h, k)` for rotation `t` (rad) and cell `au x bv` (px).
#[inline]
fn predict(n: f64, t: f64, au: f64, bv: f64, h: i32, k: i32) -> (f64, f64) {
    let (s, c) = t.sin_cos();
    let (gu, gv) = (f64::from(h) / au, f64::from(k) / bv);
    (n * (c * gu - s * gv), n * (s * gu + c * gv))
}

fn usable(n: f64, fx: f64, fy: f64) -> bool {
    let r = fx.hypot(fy);
    r >= MIN_RADIUS && fx.abs() <= MAX_FREQ * n && fy.abs() <= MAX_FREQ * n
}

/// Coarse search plus refinement on a computed spectrum.
pub(crate) fn fit(
    s: &Spectrum,
    ex: &Excess,
    crystal: &CrystalSpec,
    hint_nm_per_px: Option<f64>,
) -> anyhow::Result<LatticeFit> {
    anyhow::ensure!(
        crystal.a_u > 0.0 && crystal.b_v > 0.0,
        "crystal cell {} x {} Å is not valid",
        crystal.a_u,
        crystal.b_v
    );
    let n = s.n as f64;
    let (a_u, b_v) = (crystal.a_u, crystal.b_v);
    // pixel size range in Å/px
    let (p_lo, p_hi) = match hint_nm_per_px {
        Some(h) if h.is_finite() && h > 0.0 => (h * 10.0 / 1.15, h * 10.0 * 1.15),
        _ => (0.03, 1.0),
    };
    let emax = ex.max_filtered(2);
    let emax_at = |x: f64, y: f64| -> f32 {
        let ni = s.n as i64;
        let (ix, iy) = (x.round() as i64, y.round() as i64);
        emax[(iy.rem_euclid(ni) * ni + ix.rem_euclid(ni)) as usize]
    };
    const COARSE_FLOOR: f32 = 1.2;
    let dlog = 0.004f64;
    let steps = ((p_hi / p_lo).ln() / dlog).ceil() as usize + 1;
    // (score, t, p, dt)
    let per_scale: Vec<(f64, f64, f64, f64)> = {
        use rayon::prelude::*;
        (0..steps)
            .into_par_iter()
            .filter_map(|i| {
                let p = p_lo * (i as f64 * dlog).exp();
                let (au, bv) = (a_u / p, b_v / p);
                let refl: Vec<(i32, i32)> = COARSE
                    .iter()
                    .copied()
                    .filter(|&(h, k)| {
                        let r = n * (f64::from(h) / au).hypot(f64::from(k) / bv);
                        r >= MIN_RADIUS && r <= MAX_FREQ * n
                    })
                    .collect();
                if refl.len() < 3 {
                    return None;
                }
                let rmax = refl
                    .iter()
                    .map(|&(h, k)| n * (f64::from(h) / au).hypot(f64::from(k) / bv))
                    .fold(0.0, f64::max);
                let dt = (1.5 / rmax).clamp(0.1f64.to_radians(), 1.0f64.to_radians());
                let nt = (std::f64::consts::PI / dt).ceil() as usize;
                let dt = std::f64::consts::PI / nt as f64;
                let mut best = (f64::MIN, 0.0, p, dt);
                for j in 0..nt {
                    let t = j as f64 * dt;
                    let sc: f64 = refl
                        .iter()
                        .map(|&(h, k)| {
                            let (x, y) = predict(n, t, au, bv, h, k);
                            f64::from((emax_at(x, y) - COARSE_FLOOR).max(0.0))
                        })
                        .sum();
                    if sc > best.0 {
                        best = (sc, t, p, dt);
                    }
                }
                Some(best)
            })
            .collect()
    };
    let best = per_scale
        .iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .ok_or_else(|| anyhow::anyhow!("no usable reflections at any scale"))?;
    // The coarse score sums twelve reflections, so a much larger cell, whose many reflections
    // fall on the true lattice's higher orders and on noise, can tie with the true cell: above
    // all where the true cell's own reflections lie on the scan-line bands along the axes (the
    // bulk Si frame turned by 15°: its true cell 27.0, a cell 2.4× larger 27.1). The {111}
    // ring of the radial profile measures the scale without a cell to alias: where it stands
    // out, the best candidate whose first orders, the {111} (1,±1), lie within
    // [`RING_TOLERANCE`] of it is taken, if it scores at least [`RING_MIN_SHARE`] of the best.
    let ring_bins = crate::raster::first_ring_period(&s.power, s.n).map(|period| n / period);
    let on_ring = |p: f64| {
        ring_bins.is_some_and(|r| {
            let r11 = n * p * (1.0 / (a_u * a_u) + 1.0 / (b_v * b_v)).sqrt();
            (1.0 / RING_TOLERANCE..=RING_TOLERANCE).contains(&(r11 / r))
        })
    };
    let &(coarse_score, t0, p0, dt0) = per_scale
        .iter()
        .filter(|c| on_ring(c.2) && c.0 >= RING_MIN_SHARE * best.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or(best);
    anyhow::ensure!(
        coarse_score > 0.0,
        "no lattice found: no spectrum peak where {} reflections would be",
        crystal.name
    );
    // A lattice at half the pixel size (twice the period) predicts every true reflection too,
    // as its (2,2), (4,0), … ; where blur has erased the higher orders the two score alike, and
    // noise at the extra positions can tip the coarse search to the wrong one. Its own lowest
    // orders then sit where nothing is: prefer the coarser lattice when its lowest orders are
    // the stronger.
    let low_order = |t: f64, p: f64| -> f64 {
        let (au, bv) = (a_u / p, b_v / p);
        let v: Vec<f64> = COARSE[..4]
            .iter()
            .filter_map(|&(h, k)| {
                let (x, y) = predict(n, t, au, bv, h, k);
                usable(n, x, y).then(|| f64::from(emax_at(x, y)))
            })
            .collect();
        if v.len() < 3 {
            f64::NEG_INFINITY
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let (lo1, lo2) = (low_order(t0, p0), low_order(t0, p0 * 2.0));
    let p0 =
        if p0 * 2.0 <= p_hi && !on_ring(p0) && lo2 >= f64::from(PEAK_MIN_EXCESS) && lo2 > lo1 + 1.0
        {
            p0 * 2.0
        } else {
            p0
        };
    // Fine search on the unfiltered excess.
    let fine_score = |t: f64, p: f64| -> f64 {
        let (au, bv) = (a_u / p, b_v / p);
        COARSE
            .iter()
            .map(|&(h, k)| {
                let (x, y) = predict(n, t, au, bv, h, k);
                if usable(n, x, y) {
                    ex.bilinear(x, y)
                } else {
                    0.0
                }
            })
            .sum()
    };
    let mut best = (fine_score(t0, p0), t0, p0);
    for a in -8..=8 {
        for b in -8..=8 {
            let t = t0 + f64::from(a) * dt0 / 4.0;
            let p = p0 * (f64::from(b) * dlog / 4.0).exp();
            let sc = fine_score(t, p);
            if sc > best.0 {
                best = (sc, t, p);
            }
        }
    }
    let (_, t, p) = best;
    let (au, bv) = (a_u / p, b_v / p);
    let (st, ct) = t.sin_cos();
    // q = R(t) diag(1/au, 1/bv): columns are the (1,0) and (0,1) reciprocal vectors
    let mut q = [[ct / au, -st / bv], [st / au, ct / bv]];

    // Refinement: sub-pixel peaks near every predicted reflection, least-squares q.
    let mut peaks = Vec::new();
    for (iter, radius) in [(0, 3i64), (1, 2), (2, 1)] {
        peaks = find_peaks(ex, &q, n, radius);
        if peaks.len() < 3 {
            anyhow::bail!(
                "lattice search found only {} clear spectrum peak(s) (need 3)",
                peaks.len()
            );
        }
        q = lsq(&peaks, n).ok_or_else(|| anyhow::anyhow!("degenerate lattice fit"))?;
        // drop outliers (> 1 bin) once the fit has settled
        if iter >= 1 {
            let kept: Vec<Peak> = peaks
                .iter()
                .copied()
                .filter(|pk| {
                    let (x, y) = apply(&q, pk.h, pk.k, n);
                    (x - pk.x).hypot(y - pk.y) <= 1.0
                })
                .collect();
            if kept.len() >= 3 && kept.len() < peaks.len() {
                peaks = kept;
                q = lsq(&peaks, n).ok_or_else(|| anyhow::anyhow!("degenerate lattice fit"))?;
            }
        }
    }
    let m = inv_t(&q).ok_or_else(|| anyhow::anyhow!("degenerate lattice fit"))?;
    // The refinement follows the peaks it finds, so it can still leave the ring; a cell whose
    // {111} reflections lie off the frame's strongest ring is not the frame's lattice.
    if let Some(r) = ring_bins {
        let r11 = [(1, 1), (1, -1)]
            .map(|(h, k)| {
                let (x, y) = apply(&q, h, k, n);
                x.hypot(y)
            })
            .iter()
            .sum::<f64>()
            / 2.0;
        anyhow::ensure!(
            (1.0 / RING_TOLERANCE..=RING_TOLERANCE).contains(&(r11 / r)),
            "the fitted {} lattice puts its {{111}} reflections {:.0} % from the spectrum's \
             first ring",
            crystal.name,
            (r11 / r - 1.0) * 100.0
        );
    }
    let (nm_per_px, rot, shear, stretch) = decompose(&m, a_u, b_v)?;
    // score: mean excess of the usable low-order reflections at the fitted positions
    let mut tot = 0.0;
    let mut cnt = 0usize;
    for &(h, k) in &COARSE {
        let (x, y) = apply(&q, h, k, n);
        if usable(n, x, y) {
            tot += f64::from(ex.max_near(x, y, 1).0);
            cnt += 1;
        }
    }
    let score = if cnt > 0 { tot / cnt as f64 } else { 0.0 };
    Ok(LatticeFit {
        est: LatticeEstimate {
            nm_per_px,
            rotation_deg: rot,
            shear,
            stretch,
            score,
            peaks_used: peaks.len(),
        },
        q,
        m,
    })
}

/// How many of the strongest spectrum peaks [`explained_share`] weighs.
const STRONG_PEAKS: usize = 16;

/// A fit on fewer spectrum peaks than this is too loosely held to blame the frame for the
/// peaks it leaves unexplained ([`explained_share`]).
pub const MIN_PEAKS_FOR_MATCH: usize = 10;

/// The share (by excess) of the spectrum's strongest peaks that lie at the radius of a
/// reflection of the fitted lattice, out to twice the radius of its first order: near 1 for a
/// frame of the crystal (a tilted or twinned grain included, whose reflections share the radii
/// but not the directions), well below where the fit found a lattice that is not there, e.g. a
/// perovskite read as [110] zincblende, whose spots fall between the crystal's rings. Peaks
/// next to the axes (scan-line artefacts) are left out. `None` when the fit rests on fewer than
/// [`MIN_PEAKS_FOR_MATCH`] peaks (a weak or crowded frame: the fit may be what is wrong), or the
/// spectrum has no peak above [`PEAK_MIN_EXCESS`] in that band.
pub(crate) fn explained_share(ex: &Excess, fit: &LatticeFit) -> Option<f64> {
    if fit.est.peaks_used < MIN_PEAKS_FOR_MATCH {
        return None;
    }
    let q = &fit.q;
    let n = ex.n as f64;
    let h = (ex.n / 2) as i64;
    let mut radii: Vec<f64> = Vec::new();
    for hh in 0..=6i32 {
        for k in -6..=6i32 {
            if (hh + k) % 2 == 0 && (hh, k) != (0, 0) {
                let (x, y) = apply(q, hh, k, n);
                radii.push(x.hypot(y));
            }
        }
    }
    let first = radii.iter().copied().fold(f64::INFINITY, f64::min);
    let r_max = (2.1 * first).min(MAX_FREQ * n);
    // Local maxima of the excess in the half plane y > 0 (the spectrum is symmetric).
    let mut peaks: Vec<(f32, f64)> = Vec::new();
    for ky in 3..h {
        for kx in -h + 1..h - 1 {
            if kx.abs() <= 2 {
                continue;
            }
            let v = ex.at(kx, ky);
            if v < PEAK_MIN_EXCESS {
                continue;
            }
            let r = ((kx * kx + ky * ky) as f64).sqrt();
            if r < MIN_RADIUS || r > r_max {
                continue;
            }
            let is_max = (-1..=1i64).all(|dy| {
                (-1..=1i64).all(|dx| (dx == 0 && dy == 0) || ex.at(kx + dx, ky + dy) < v)
            });
            if is_max {
                peaks.push((v, r));
            }
        }
    }
    if peaks.is_empty() {
        return None;
    }
    peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
    peaks.truncate(STRONG_PEAKS);
    let on_ring = |r: f64| radii.iter().any(|&a| (r - a).abs() <= (0.03 * a).max(1.0));
    let total: f64 = peaks.iter().map(|p| f64::from(p.0)).sum();
    let explained: f64 = peaks
        .iter()
        .filter(|p| on_ring(p.1))
        .map(|p| f64::from(p.0))
        .sum();
    Some(explained / total)
}

#[derive(Clone, Copy, Debug)]
struct Peak {
    h: i32,
    k: i32,
    x: f64,
    y: f64,
}

/// Bin position of `(h, k)` under `q`.
fn apply(q: &[[f64; 2]; 2], h: i32, k: i32, n: f64) -> (f64, f64) {
    let (h, k) = (f64::from(h), f64::from(k));
    (
        n * (q[0][0] * h + q[0][1] * k),
        n * (q[1][0] * h + q[1][1] * k),
    )
}

/// All reflections (half plane, h + k even) inside the usable band, for the refinement.
pub(crate) fn refine_list(q: &[[f64; 2]; 2], n: f64) -> Vec<(i32, i32, f64, f64)> {
    let mut out = Vec::new();
    for h in 0..=12 {
        for k in -16..=16i32 {
            if (h + k) % 2 != 0 || (h == 0 && k <= 0) {
                continue;
            }
            let (x, y) = apply(q, h, k, n);
            if usable(n, x, y) {
                out.push((h, k, x, y));
            }
        }
    }
    out
}

fn find_peaks(ex: &Excess, q: &[[f64; 2]; 2], n: f64, radius: i64) -> Vec<Peak> {
    let mut out = Vec::new();
    for (h, k, x, y) in refine_list(q, n) {
        // peaks within reach of the axes share them with scan-line artefacts
        if x.abs() < 2.5 + radius as f64 || y.abs() < 2.5 + radius as f64 {
            continue;
        }
        let (v, ix, iy) = ex.max_near(x, y, radius);
        if v < PEAK_MIN_EXCESS {
            continue;
        }
        let l = |dx: i64, dy: i64| f64::from(ex.logp_at(ix + dx, iy + dy));
        let sub = |a: f64, b: f64, c: f64| {
            let d = a - 2.0 * b + c;
            if d < 0.0 {
                (0.5 * (a - c) / d).clamp(-0.5, 0.5)
            } else {
                0.0
            }
        };
        let px = ix as f64 + sub(l(-1, 0), l(0, 0), l(1, 0));
        let py = iy as f64 + sub(l(0, -1), l(0, 0), l(0, 1));
        out.push(Peak { h, k, x: px, y: py });
    }
    out
}

/// Least squares `q` from peaks: `(x, y) / n = q (h, k)`.
fn lsq(peaks: &[Peak], n: f64) -> Option<[[f64; 2]; 2]> {
    let (mut shh, mut shk, mut skk) = (0.0, 0.0, 0.0);
    let (mut xh, mut xk, mut yh, mut yk) = (0.0, 0.0, 0.0, 0.0);
    for p in peaks {
        let (h, k) = (f64::from(p.h), f64::from(p.k));
        shh += h * h;
        shk += h * k;
        skk += k * k;
        xh += p.x * h;
        xk += p.x * k;
        yh += p.y * h;
        yk += p.y * k;
    }
    let det = shh * skk - shk * shk;
    if det.abs() < 1e-9 {
        return None;
    }
    let solve = |bh: f64, bk: f64| ((skk * bh - shk * bk) / det, (shh * bk - shk * bh) / det);
    let (a, b) = solve(xh, xk);
    let (c, d) = solve(yh, yk);
    Some([[a / n, b / n], [c / n, d / n]])
}

/// `(qᵀ)⁻¹`.
fn inv_t(q: &[[f64; 2]; 2]) -> Option<[[f64; 2]; 2]> {
    let det = q[0][0] * q[1][1] - q[0][1] * q[1][0];
    if det.abs() < 1e-15 {
        return None;
    }
    // q⁻¹ = [[d, -b], [-c, a]] / det; transpose it
    Some([
        [q[1][1] / det, -q[1][0] / det],
        [-q[0][1] / det, q[0][0] / det],
    ])
}

/// Splits the image lattice matrix `m` (columns: the u and v cell vectors in px) into the
/// specimen lattice `R(t) diag(A, r A)` (r = b_v / a_u) seen through the scan map
/// `x' = x − shear·y'`, `y' = y / (1 + stretch)`. Returns (nm/px, rotation mod 180, shear,
/// stretch).
pub(crate) fn decompose(
    m: &[[f64; 2]; 2],
    a_u: f64,
    b_v: f64,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let r = b_v / a_u;
    let (m00, m01, m10, m11) = (m[0][0], m[0][1], m[1][0], m[1][1]);
    // With D⁻¹ = [[1, shear], [0, k]], k = 1 + stretch, D⁻¹ m = R(t) diag(A, rA):
    //   (m11 / r) k − m10 shear = m00
    //   r m10 k + m11 shear = −m01
    let det = (m11 / r) * m11 + m10 * r * m10;
    anyhow::ensure!(det.abs() > 1e-12, "degenerate lattice fit");
    let k = (m00 * m11 - m10 * m01) / det;
    let shear = ((m11 / r) * (-m01) - r * m10 * m00) / det;
    anyhow::ensure!(
        k > 0.5 && k < 2.0,
        "lattice fit implies an implausible scan stretch"
    );
    let a = k * (m10 * m10 + m11 * m11 / (r * r)).sqrt();
    let t = (k * m10 / a).atan2(k * m11 / (r * a));
    let nm_per_px = a_u / a / 10.0;
    let rot = t.to_degrees().rem_euclid(180.0);
    let rot = if rot >= 180.0 { 0.0 } else { rot };
    Ok((nm_per_px, rot, shear, k - 1.0))
}
