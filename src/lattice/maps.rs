//! Local lattice maps from windowed spectra.
//!
//! The frame is box-binned so that the {111} period spans about 8 binned pixels (5.3–10.7), then cut
//! into Hann-windowed square windows (a few unit cells) on a regular grid. Windows stay inside
//! the image: the maps cover the centres that windows can reach, nothing is wrapped or padded.
//! Each window gives
//! - its two {111} reflections `g1 = (1,1)`, `g2 = (1,−1)` (sub-bin, log-parabolic), hence the
//!   local orientation of the lattice `u` axis (along `g1 + g2`), the local spacing and the
//!   real-space primitive vectors of the centred net (the dual basis of `g1, g2`);
//! - a spectral signature (the noise-floor-subtracted amplitude over the annulus of the
//!   lattice reflections). The discontinuity score compares the mean signatures of the two
//!   sides of a would-be boundary a quarter window away, each averaged along it, for normals
//!   every 15°.

use crate::formats::fft::transpose;
use crate::raster::ImageF32;
use rayon::prelude::*;
use rustfft::{Fft, FftPlanner, num_complex::Complex32};
use serde::Serialize;
use std::sync::Arc;

/// Maps on a regular grid of window centres (original pixels).
#[derive(Clone, Debug, Serialize)]
pub struct LatticeMaps {
    /// Distance between neighbouring map cells (original px).
    pub step_px: usize,
    /// Centre of map cell (0, 0) in original pixels `[x, y]`.
    pub origin_px: [usize; 2],
    pub cols: usize,
    pub rows: usize,
    /// Side of the analysis window (original px).
    pub window_px: usize,
    /// The window's span in {111} periods (wide on frames of low lattice visibility).
    pub window_span: WindowSpan,
    /// Box-binning factor applied before the window spectra.
    pub bin: usize,
    /// Local direction of the lattice `u` axis ([1-10]) in degrees, `[0, 180)`, y down
    /// (clockwise on screen). NaN where no lattice was found.
    pub orientation_deg: Vec<f32>,
    /// Rotation of the local lattice against the ideal [110] net with `u` along +x, degrees
    /// `[0, 180)`: the rotation part of the polar decomposition of the map that takes the ideal
    /// {111} pair onto the measured one. Equals `orientation_deg` on an undistorted lattice;
    /// under a frame-wide scan distortion `A = S·U` (shear, stretch) every grain picks up the
    /// same `U`, so differences between grains are the specimen's misorientation, which the
    /// `u` directions alone are not (a 5 % shear turns lattice directions by up to ~3°,
    /// unequally). NaN where no lattice was found.
    pub rotation_deg: Vec<f32>,
    /// Lattice discontinuity score in `[0, 1]`: 1 − cosine similarity of the mean spectral
    /// signatures of the two sides a quarter window away, each averaged ±1 window along the
    /// would-be boundary (the largest over twelve directions).
    pub discontinuity: Vec<f32>,
    /// Direction (degrees, `[0, 180)`) of the comparison that gave the discontinuity score,
    /// i.e. the normal of a boundary there.
    pub discontinuity_normal_deg: Vec<f32>,
    /// Local {111} spacing relative to the nominal one (1.0 = unstrained; NaN: no lattice).
    pub spacing_ratio: Vec<f32>,
    /// Peak-to-mean power ratio of the {111} reflections in the annulus (lattice visibility).
    pub strength: Vec<f32>,
    /// Real-space primitive vectors of the centred net, `[t1x, t1y, t2x, t2y]` (original px),
    /// the dual basis of the local `(1,1)`, `(1,−1)` reflections. NaN: no lattice.
    #[serde(skip)]
    pub primitive: Vec<[f32; 4]>,
}

impl LatticeMaps {
    pub fn len(&self) -> usize {
        self.cols * self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Median {111} strength over the map: how clearly the frame shows its lattice.
    pub fn median_strength(&self) -> f32 {
        let mut v = self.strength.clone();
        if v.is_empty() {
            return 0.0;
        }
        let mid = v.len() / 2;
        *v.select_nth_unstable_by(mid, f32::total_cmp).1
    }

    /// Centre of map cell `(c, r)` in original pixels.
    pub fn cell_center(&self, c: usize, r: usize) -> [f64; 2] {
        [
            (self.origin_px[0] + c * self.step_px) as f64,
            (self.origin_px[1] + r * self.step_px) as f64,
        ]
    }

    /// The map cell nearest to a point, if the point lies within half a step of the map.
    pub fn cell_at(&self, p: [f64; 2]) -> Option<(usize, usize)> {
        let c = ((p[0] - self.origin_px[0] as f64) / self.step_px as f64).round();
        let r = ((p[1] - self.origin_px[1] as f64) / self.step_px as f64).round();
        (c >= 0.0 && r >= 0.0 && (c as usize) < self.cols && (r as usize) < self.rows)
            .then_some((c as usize, r as usize))
    }

    /// The map cell nearest to a point, clamped onto the map.
    pub fn nearest_cell(&self, p: [f64; 2]) -> (usize, usize) {
        let c = ((p[0] - self.origin_px[0] as f64) / self.step_px as f64).round();
        let r = ((p[1] - self.origin_px[1] as f64) / self.step_px as f64).round();
        (
            (c.max(0.0) as usize).min(self.cols.saturating_sub(1)),
            (r.max(0.0) as usize).min(self.rows.saturating_sub(1)),
        )
    }
}

/// Scale of the analysis, derived from the {111} period in pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub bin: usize,
    pub window: usize,
    pub step: usize,
    /// {111} radius in window-spectrum bins.
    pub r111: f64,
}

/// How many {111} periods an analysis window spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSpan {
    /// About 4 periods (2–3 cells along [001]): small enough to follow boundaries in frames of
    /// a few cells, large enough for sub-bin peak positions.
    Standard,
    /// About 6 periods, for frames whose lattice is buried in noise: 2.25× the signal per
    /// window, at the cost of coarser maps (on the 200-frame benchmark 6 periods everywhere
    /// lose 38 boundaries; on the frames below the visibility limit they find 9 of 20 instead
    /// of 5).
    Wide,
    /// About 3 periods, for finely sampled frames with a clear lattice: a frame that spans
    /// only 13–20 periods is 3–5 standard windows wide, and its maps leave out ¾ window at
    /// every edge (a third of the frame). Coarser orientation, but on frames this clear the
    /// misorientation error stays as small (benchmark: p90 1.7–1.9° either way).
    Narrow,
}

impl Geometry {
    pub fn new(d111_px: f64, span: WindowSpan) -> Self {
        // The spectra are taken at about 8 binned px per {111} period.
        let bin = ((d111_px / 8.0).round() as usize).max(1);
        let d = d111_px / bin as f64;
        // The step stays an eighth of the window, so the wide maps keep the standard ones'
        // geometry in periods (and cost about as much: 2.25× the FFT work per window, 1/2.25
        // the windows).
        let (window, step) = match span {
            WindowSpan::Standard => (32usize, 4usize),
            WindowSpan::Wide => (48, 6),
            WindowSpan::Narrow => (24, 3),
        };
        Self {
            bin,
            window,
            step,
            r111: window as f64 / d,
        }
    }
}

/// Box-bins an image by `f` (the remainder rows/columns are dropped).
pub(crate) fn bin_image(img: &ImageF32, f: usize) -> ImageF32 {
    if f == 1 {
        return img.clone();
    }
    let (w, h) = (img.width / f, img.height / f);
    let mut out = vec![0f32; w * h];
    let norm = 1.0 / (f * f) as f32;
    for by in 0..h {
        let orow = &mut out[by * w..(by + 1) * w];
        for dy in 0..f {
            let row = img.row(by * f + dy);
            for (bx, o) in orow.iter_mut().enumerate() {
                *o += row[bx * f..bx * f + f].iter().sum::<f32>();
            }
        }
        for o in orow.iter_mut() {
            *o *= norm;
        }
    }
    ImageF32::from_vec(w, h, out)
}

/// Per-window results.
struct Cell {
    sig: Vec<f32>,
    orientation: f32,
    rotation: f32,
    spacing: f32,
    strength: f32,
    primitive: [f32; 4],
}

struct WindowPlan {
    n: usize,
    fft: Arc<dyn Fft<f32>>,
    hann: Vec<f32>,
    /// Indices into the (unshifted) spectrum of the annulus bins of the half plane, with
    /// their frequency `[kx, ky]` in bins.
    annulus: Vec<(usize, [f32; 2])>,
    r111: f32,
}

impl WindowPlan {
    fn new(n: usize, r111: f64) -> Self {
        let fft = FftPlanner::<f32>::new().plan_fft_forward(n);
        let hann: Vec<f32> = (0..n)
            .map(|i| {
                let s = (std::f32::consts::PI * (i as f32 + 0.5) / n as f32).sin();
                s * s
            })
            .collect();
        let (lo, hi) = (0.55 * r111, 1.95 * r111);
        let mut annulus = Vec::new();
        let half = n as i64 / 2;
        for ky in 0..half {
            for kx in -half + 1..half {
                if ky == 0 && kx <= 0 {
                    continue;
                }
                let r = ((kx * kx + ky * ky) as f64).sqrt();
                if r >= lo && r <= hi {
                    let ix = kx.rem_euclid(n as i64) as usize;
                    annulus.push((ky as usize * n + ix, [kx as f32, ky as f32]));
                }
            }
        }
        Self {
            n,
            fft,
            hann,
            annulus,
            r111: r111 as f32,
        }
    }

    /// Power spectra of two windows at once (real parts / imaginary parts of one complex FFT).
    fn spectra2(
        &self,
        img: &ImageF32,
        a: (usize, usize),
        b: Option<(usize, usize)>,
        buf: &mut Vec<Complex32>,
        scratch: &mut Vec<Complex32>,
    ) -> (Vec<f32>, Option<Vec<f32>>) {
        let n = self.n;
        buf.clear();
        buf.resize(n * n, Complex32::new(0.0, 0.0));
        let mean = |(x0, y0): (usize, usize)| {
            let mut s = 0.0f64;
            for y in 0..n {
                s += img.row(y0 + y)[x0..x0 + n]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>();
            }
            (s / (n * n) as f64) as f32
        };
        let ma = mean(a);
        for y in 0..n {
            let row = &img.row(a.1 + y)[a.0..a.0 + n];
            let hy = self.hann[y];
            for x in 0..n {
                buf[y * n + x].re = (row[x] - ma) * hy * self.hann[x];
            }
        }
        if let Some(b) = b {
            let mb = mean(b);
            for y in 0..n {
                let row = &img.row(b.1 + y)[b.0..b.0 + n];
                let hy = self.hann[y];
                for x in 0..n {
                    buf[y * n + x].im = (row[x] - mb) * hy * self.hann[x];
                }
            }
        }
        scratch.resize(self.fft.get_inplace_scratch_len(), Complex32::new(0.0, 0.0));
        self.fft.process_with_scratch(buf, scratch);
        transpose(buf, n);
        self.fft.process_with_scratch(buf, scratch);
        // buf is now transposed: buf[kx * n + ky].
        let at = |kx: usize, ky: usize| buf[kx * n + ky];
        let mut pa = vec![0f32; n * n];
        let mut pb = b.map(|_| vec![0f32; n * n]);
        for ky in 0..n {
            for kx in 0..n {
                let z = at(kx, ky);
                match pb.as_mut() {
                    None => pa[ky * n + kx] = z.norm_sqr(),
                    Some(pb) => {
                        let zc = at((n - kx) % n, (n - ky) % n).conj();
                        let fa = (z + zc) * 0.5;
                        let fb = (z - zc) * 0.5;
                        pa[ky * n + kx] = fa.norm_sqr();
                        pb[ky * n + kx] = fb.norm_sqr();
                    }
                }
            }
        }
        (pa, pb)
    }

    fn analyse_power(&self, p: &[f32], bin: usize) -> Cell {
        let n = self.n;
        let vals: Vec<f32> = self.annulus.iter().map(|&(i, _)| p[i]).collect();
        let mut sorted = vals.clone();
        let mid = sorted.len() / 2;
        let floor = *sorted.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1;
        let mean = vals.iter().sum::<f32>() / vals.len().max(1) as f32;
        let mut sig: Vec<f32> = vals.iter().map(|&v| (v - floor).max(0.0).sqrt()).collect();
        let norm = sig.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            sig.iter_mut().for_each(|v| *v /= norm);
        }
        // {111} reflections: strongest bin within ±25 % of the nominal radius.
        let r111 = self.r111;
        let in111 = |k: [f32; 2]| {
            let r = (k[0] * k[0] + k[1] * k[1]).sqrt();
            r >= 0.75 * r111 && r <= 1.25 * r111
        };
        let mut best1: Option<(usize, f32)> = None;
        for (j, &(i, k)) in self.annulus.iter().enumerate() {
            if in111(k) && best1.is_none_or(|(_, v)| p[i] > v) {
                best1 = Some((j, p[i]));
            }
        }
        let nan = Cell {
            sig: sig.clone(),
            orientation: f32::NAN,
            rotation: f32::NAN,
            spacing: f32::NAN,
            strength: 0.0,
            primitive: [f32::NAN; 4],
        };
        let Some((j1, p1)) = best1 else { return nan };
        let k1 = self.annulus[j1].1;
        // Partner (1,−1) predicted at ±70.53° from g1 with the same radius; the bisector
        // then carries the (2,0) reflection at 1.633 |g1|. Score both hypotheses on the
        // power there (best bin of a 3×3 neighbourhood) and keep the better one.
        let r1 = k1[0].hypot(k1[1]);
        let a1 = k1[1].atan2(k1[0]);
        let pow_near = |x: f32, y: f32| -> (f32, [f32; 2]) {
            let (xi, yi) = (x.round() as i64, y.round() as i64);
            let mut best = (0f32, [xi as f32, yi as f32]);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (kx, ky) = (xi + dx, yi + dy);
                    if kx.abs() >= n as i64 / 2 || ky.abs() >= n as i64 / 2 {
                        continue;
                    }
                    let i = ky.rem_euclid(n as i64) as usize * n + kx.rem_euclid(n as i64) as usize;
                    if p[i] > best.0 {
                        best = (p[i], [kx as f32, ky as f32]);
                    }
                }
            }
            best
        };
        let twin = 70.528_78f32.to_radians();
        let mut best2: Option<([f32; 2], f32, f32)> = None;
        for sg in [1.0f32, -1.0] {
            let a2 = a1 + sg * twin;
            let (pp, kk) = pow_near(r1 * a2.cos(), r1 * a2.sin());
            let am = a1 + sg * 0.5 * twin;
            let r20 = 1.633 * r1;
            let (p20, _) = pow_near(r20 * am.cos(), r20 * am.sin());
            let score = pp + 0.5 * p20;
            if best2.is_none_or(|(_, _, s)| score > s) {
                best2 = Some((kk, pp, score));
            }
        }
        let best2 = best2.map(|(k, p, _)| (k, p));
        let Some((k2, p2)) = best2 else { return nan };
        let strength = 0.5 * (p1 + p2) / mean.max(1e-20);
        let g1 = refine_peak(p, n, k1);
        let g2 = refine_peak(p, n, k2);
        let sum = [g1[0] + g2[0], g1[1] + g2[1]];
        let mut orientation = sum[1].atan2(sum[0]).to_degrees();
        orientation = orientation.rem_euclid(180.0);
        let spacing = 2.0 * r111 / (g1[0].hypot(g1[1]) + g2[0].hypot(g2[1]));
        // Reciprocal vectors in cycles per original pixel.
        let s = 1.0 / (n * bin) as f32;
        let (a, b, c, d) = (g1[0] * s, g1[1] * s, g2[0] * s, g2[1] * s);
        let det = a * d - b * c;
        // Rows of G are g1, g2; T = G⁻¹ has the primitive vectors as columns.
        let primitive = if det.abs() > 1e-12 {
            [d / det, -c / det, -b / det, a / det]
        } else {
            [f32::NAN; 4]
        };
        let rotation = polar_rotation_deg(g1, g2);
        Cell {
            sig,
            orientation,
            rotation,
            spacing,
            strength,
            primitive,
        }
    }
}

/// Rotation part (degrees, `[0, 180)`) of `N = G·G0⁻¹`, where the columns of `G` are the
/// measured {111} reflections and those of `G0` the ideal pair at ∓35.26° about `u` = +x.
/// Reciprocal vectors transform by `A⁻ᵀ`, and for `A = S·U` (S symmetric) `A⁻ᵀ = S⁻¹·U`, so the
/// rotation part of `N` is `U·R` whatever the stretch and shear. A swapped labelling of the
/// pair shows as `det N < 0` (a mirror) and is undone by swapping.
pub(crate) fn polar_rotation_deg(g1: [f32; 2], g2: [f32; 2]) -> f32 {
    let half = 0.5 * super::boundaries::TWIN_DEG.to_radians();
    let (c, s) = (half.cos(), half.sin());
    // G0 = [[c, c], [-s, s]] (columns (c, −s), (c, s)); its inverse:
    let d0 = 2.0 * c * s;
    let inv0 = [[s / d0, -c / d0], [s / d0, c / d0]];
    let rot = |a: [f32; 2], b: [f32; 2]| -> Option<f64> {
        let g = [[a[0] as f64, b[0] as f64], [a[1] as f64, b[1] as f64]];
        let mut n = [[0f64; 2]; 2];
        for (i, row) in n.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = g[i][0] * inv0[0][j] + g[i][1] * inv0[1][j];
            }
        }
        let det = n[0][0] * n[1][1] - n[0][1] * n[1][0];
        (det > 0.0).then(|| (n[1][0] - n[0][1]).atan2(n[0][0] + n[1][1]))
    };
    match rot(g1, g2).or_else(|| rot(g2, g1)) {
        Some(r) => r.to_degrees().rem_euclid(180.0) as f32,
        None => f32::NAN,
    }
}

/// Log-parabolic sub-bin refinement of a spectral peak at integer frequency `k` (bins).
fn refine_peak(p: &[f32], n: usize, k: [f32; 2]) -> [f32; 2] {
    let get = |kx: i64, ky: i64| {
        let ix = kx.rem_euclid(n as i64) as usize;
        let iy = ky.rem_euclid(n as i64) as usize;
        p[iy * n + ix].max(1e-30).ln()
    };
    let (kx, ky) = (k[0] as i64, k[1] as i64);
    let c = get(kx, ky);
    let off = |m: f32, pl: f32| {
        let den = m - 2.0 * c + pl;
        if den < 0.0 {
            (0.5 * (m - pl) / den).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let dx = off(get(kx - 1, ky), get(kx + 1, ky));
    let dy = off(get(kx, ky - 1), get(kx, ky + 1));
    [k[0] + dx, k[1] + dy]
}

/// Computes the maps of a (raw) image whose {111} period is `d111_px` pixels.
pub(crate) fn compute_maps(
    img: &ImageF32,
    d111_px: f64,
    span: WindowSpan,
) -> anyhow::Result<LatticeMaps> {
    let g = Geometry::new(d111_px, span);
    let b = bin_image(img, g.bin);
    anyhow::ensure!(
        b.width >= g.window && b.height >= g.window,
        "image {}x{} is too small for a {}-px analysis window (the lattice period is {:.1} px)",
        img.width,
        img.height,
        g.window * g.bin,
        d111_px
    );
    let cols = (b.width - g.window) / g.step + 1;
    let rows = (b.height - g.window) / g.step + 1;
    let plan = WindowPlan::new(g.window, g.r111);
    // Rows of cells in parallel; within a row, windows in pairs through one complex FFT.
    let cells: Vec<Vec<Cell>> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let mut buf = Vec::new();
            let mut scratch = Vec::new();
            let mut out = Vec::with_capacity(cols);
            let mut c = 0;
            while c < cols {
                let a = (c * g.step, r * g.step);
                let bpos = (c + 1 < cols).then(|| ((c + 1) * g.step, r * g.step));
                let (pa, pb) = plan.spectra2(&b, a, bpos, &mut buf, &mut scratch);
                out.push(plan.analyse_power(&pa, g.bin));
                if let Some(pb) = pb {
                    out.push(plan.analyse_power(&pb, g.bin));
                }
                c += 2;
            }
            out
        })
        .collect();
    let cells: Vec<Cell> = cells.into_iter().flatten().collect();
    let (disc, disc_dir) = discontinuity(&cells, cols, rows, &g);
    let step_px = g.step * g.bin;
    let origin = g.window * g.bin / 2;
    Ok(LatticeMaps {
        step_px,
        origin_px: [origin, origin],
        cols,
        rows,
        window_px: g.window * g.bin,
        window_span: span,
        bin: g.bin,
        orientation_deg: cells.iter().map(|c| c.orientation).collect(),
        rotation_deg: cells.iter().map(|c| c.rotation).collect(),
        discontinuity: disc,
        discontinuity_normal_deg: disc_dir,
        spacing_ratio: cells.iter().map(|c| c.spacing).collect(),
        strength: cells.iter().map(|c| c.strength).collect(),
        primitive: cells.iter().map(|c| c.primitive).collect(),
    })
}

/// Lattice discontinuity of every cell: for each of twelve directions, the mean signatures of
/// the windows a quarter window to either side, each side averaged along the would-be
/// boundary over ±`ALONG_WINDOWS` windows, compared by 1 − cosine similarity; the largest
/// over the directions wins. Averaging along the boundary keeps the contrast across it and
/// beats down the noise of single low-dose windows, which otherwise buries the ridge.
fn discontinuity(cells: &[Cell], cols: usize, rows: usize, g: &Geometry) -> (Vec<f32>, Vec<f32>) {
    // Longer sides average out more noise but blur boundaries that bend or end: on 200
    // frames of the realistic recipe ±0.5–1 window beat ±1.5 and ±2 (recall 0.85 vs 0.83).
    const ALONG_WINDOWS: f64 = 1.0;
    let len = cells.first().map_or(0, |c| c.sig.len());
    let k = ((g.window as f64 / 4.0) / g.step as f64).round().max(1.0) as i64;
    // Offsets along the boundary one half window apart (windows that far apart share a
    // quarter of their area).
    let along = ((g.window as f64 / 2.0) / g.step as f64).round().max(1.0) as i64;
    let m = ((ALONG_WINDOWS * g.window as f64 / g.step as f64) / along as f64).round() as i64;
    // Normals every 15°: a boundary lies within 7.5° of one of them, so a side averaged
    // ±1 window along it stays on its own side of the boundary.
    let dirs: Vec<(f64, f64, f32)> = (0..12)
        .map(|i| {
            let deg = i as f64 * 15.0;
            let t = deg.to_radians();
            (t.cos(), t.sin(), deg as f32)
        })
        .collect();
    let ok = |c: i64, r: i64| c >= 0 && r >= 0 && c < cols as i64 && r < rows as i64;
    // A window without any lattice signal has an all-zero signature and adds nothing.
    let live: Vec<bool> = cells
        .iter()
        .map(|c| c.sig.iter().any(|&v| v != 0.0))
        .collect();
    // A side must keep at least half its windows on the map: near the edges, fewer windows
    // average out less noise and their comparisons light up the frame's border.
    let need = m + 1;
    let per_cell: Vec<(f32, f32)> = (0..cols * rows)
        .into_par_iter()
        .map(|i| {
            let (c, r) = ((i % cols) as i64, (i / cols) as i64);
            let mut a = vec![0f32; len];
            let mut b = vec![0f32; len];
            let mut best = (0f32, 0f32);
            for &(dx, dy, deg) in &dirs {
                let kf = k as f64;
                let at = |sign: f64, j: i64| {
                    let t = (j * along) as f64;
                    (
                        c + (sign * kf * dx - t * dy).round() as i64,
                        r + (sign * kf * dy + t * dx).round() as i64,
                    )
                };
                // The centres of the two sides must lie on the map, as before.
                let (a0, b0) = (at(-1.0, 0), at(1.0, 0));
                if !ok(a0.0, a0.1) || !ok(b0.0, b0.1) {
                    continue;
                }
                a.iter_mut().for_each(|v| *v = 0.0);
                b.iter_mut().for_each(|v| *v = 0.0);
                let (mut na, mut nb) = (0, 0);
                for j in -m..=m {
                    for (sign, acc, cnt) in [(-1.0, &mut a, &mut na), (1.0, &mut b, &mut nb)] {
                        let (cc, rr) = at(sign, j);
                        if !ok(cc, rr) {
                            continue;
                        }
                        let ci = rr as usize * cols + cc as usize;
                        if !live[ci] {
                            continue;
                        }
                        acc.iter_mut()
                            .zip(&cells[ci].sig)
                            .for_each(|(s, v)| *s += v);
                        *cnt += 1;
                    }
                }
                if na < need || nb < need {
                    continue;
                }
                let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                let nn = (a.iter().map(|x| x * x).sum::<f32>()
                    * b.iter().map(|x| x * x).sum::<f32>())
                .sqrt();
                let d = if nn > 0.0 {
                    1.0 - (dot / nn).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                if d > best.0 {
                    best = (d, deg);
                }
            }
            best
        })
        .collect();
    per_cell.into_iter().unzip()
}

/// The {111} period (px) of a frame from its global power spectrum: the lowest-frequency
/// strong peak of the whitened radial profile. For frames without a calibration.
pub fn estimate_d111_px(img: &ImageF32) -> Option<f64> {
    let n = [1024usize, 512, 256, 128]
        .into_iter()
        .find(|&n| n <= img.width && n <= img.height)?;
    let plan = WindowPlan::new(n, 8.0);
    let x0 = (img.width - n) / 2;
    let y0 = (img.height - n) / 2;
    let mut buf = Vec::new();
    let mut scratch = Vec::new();
    let (p, _) = plan.spectra2(img, (x0, y0), None, &mut buf, &mut scratch);
    crate::raster::first_ring_period(&p, n)
}

#[cfg(test)]
mod tests {
    use super::polar_rotation_deg;

    /// The ideal {111} pair of a [110] net whose `u` axis points at `theta` (degrees), seen
    /// through the scan distortion `a` (image = a · specimen), as reciprocal vectors `a⁻ᵀ g`.
    fn pair(theta: f64, a: [[f64; 2]; 2], swap: bool) -> ([f32; 2], [f32; 2]) {
        let half = 0.5 * crate::lattice::boundaries::TWIN_DEG;
        let det = a[0][0] * a[1][1] - a[0][1] * a[1][0];
        // a⁻ᵀ
        let it = [
            [a[1][1] / det, -a[1][0] / det],
            [-a[0][1] / det, a[0][0] / det],
        ];
        let g = |deg: f64| {
            let r = deg.to_radians();
            let v = [0.3 * r.cos(), 0.3 * r.sin()];
            [
                (it[0][0] * v[0] + it[0][1] * v[1]) as f32,
                (it[1][0] * v[0] + it[1][1] * v[1]) as f32,
            ]
        };
        let (p, q) = (g(theta - half), g(theta + half));
        if swap { (q, p) } else { (p, q) }
    }

    fn fold(d: f64) -> f64 {
        crate::lattice::boundaries::fold_misorientation(d)
    }

    #[test]
    fn rotation_of_an_undistorted_net_is_its_u_axis() {
        for theta in [0.0, 17.0, 89.0, 135.5, 179.0] {
            for swap in [false, true] {
                let (g1, g2) = pair(theta, [[1.0, 0.0], [0.0, 1.0]], swap);
                let r = polar_rotation_deg(g1, g2) as f64;
                assert!(fold(r - theta) < 0.01, "theta {theta} swap {swap}: {r}");
            }
        }
    }

    #[test]
    fn misorientation_survives_scan_shear_and_stretch() {
        // 8 % shear and 6 % stretch, the top of real frames: the `u` directions of two grains
        // 30° apart differ by several degrees less or more; their rotations do not.
        let a = [[1.0, 0.08], [0.0, 1.06]];
        for (t1, t2) in [(10.0, 40.0), (60.0, 130.53), (100.0, 112.0)] {
            let (a1, a2) = pair(t1, a, false);
            let (b1, b2) = pair(t2, a, true);
            let truth = fold(t2 - t1);
            let got = fold((polar_rotation_deg(b1, b2) - polar_rotation_deg(a1, a2)) as f64);
            assert!((got - truth).abs() < 0.05, "{t1}/{t2}: {got} vs {truth}");
            // The bisector directions alone are off by more than the 2° target somewhere.
            let u = |p: [f32; 2], q: [f32; 2]| ((p[1] + q[1]) as f64).atan2((p[0] + q[0]) as f64);
            let naive = fold((u(b1, b2) - u(a1, a2)).to_degrees());
            if t1 == 60.0 {
                assert!((naive - truth).abs() > 1.0, "naive {naive} vs {truth}");
            }
        }
    }
}
