//! Intensity statistics: percentiles, the white-noise floor and the column width from the
//! autocorrelation.

use super::spectrum::Spectrum;
use crate::raster::ImageF32;

/// True when every finite value is an integer in `0..=255` (an 8-bit export: its intensities
/// are a display window, not detector counts).
pub fn is_eight_bit(img: &ImageF32) -> bool {
    img.data
        .iter()
        .all(|&v| !v.is_finite() || ((0.0..=255.0).contains(&v) && v.fract() == 0.0))
}

/// `(p1, p50, p99)` of the finite values.
pub(crate) fn percentiles(img: &ImageF32) -> (f64, f64, f64) {
    let p = img.percentiles(&[1.0, 50.0, 99.0]);
    (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]))
}

/// Variance of the white (pixel-to-pixel independent) noise: the height of the lag-0 spike of
/// the autocorrelation, which is the flat floor of the power spectrum. Measured where the
/// specimen signal has died out, at high vertical frequencies (|fy| ≥ 0.3 cycles/px; vertical
/// because detector afterglow colours the noise along x): per horizontal frequency the median
/// power over that band (a median of exponentially distributed powers is `ln 2` × their mean),
/// then the median over horizontal frequencies (robust to the diffuse streaks of jittered
/// reflections), divided by the window's `Σ w²`.
pub(crate) fn noise_variance(s: &Spectrum) -> f64 {
    let n = s.n as i64;
    let h = n / 2;
    let lo = (0.3 * n as f64).ceil() as i64;
    let mut col_medians = Vec::with_capacity(s.n);
    let mut buf = Vec::new();
    for kx in -h..h {
        if kx.abs() <= 1 {
            continue;
        }
        buf.clear();
        for ky in (lo..=h).chain(-h..=-lo) {
            buf.push(s.power[s.idx(kx, ky)]);
        }
        if buf.is_empty() {
            continue;
        }
        let k = buf.len() / 2;
        col_medians.push(f64::from(*buf.select_nth_unstable_by(k, f32::total_cmp).1));
    }
    if col_medians.is_empty() {
        return 0.0;
    }
    let k = col_medians.len() / 2;
    let med = *col_medians.select_nth_unstable_by(k, f64::total_cmp).1;
    med / std::f64::consts::LN_2 / s.win2
}

/// Bilinear sample of an unshifted `n x n` autocovariance at a fractional lag.
fn acf_at(acf: &[f32], n: usize, dx: f64, dy: f64) -> f64 {
    let ni = n as i64;
    let (x0, y0) = (dx.floor(), dy.floor());
    let (fx, fy) = (dx - x0, dy - y0);
    let v = |x: i64, y: i64| f64::from(acf[(y.rem_euclid(ni) * ni + x.rem_euclid(ni)) as usize]);
    let (ix, iy) = (x0 as i64, y0 as i64);
    (1.0 - fy) * ((1.0 - fx) * v(ix, iy) + fx * v(ix + 1, iy))
        + fy * ((1.0 - fx) * v(ix, iy + 1) + fx * v(ix + 1, iy + 1))
}

/// Column FWHM (px) from the autocovariance `acf` (lag-0 noise spike already removed).
///
/// With the lattice known (`u` = the u cell vector in px): the profile along u over one cell
/// is fitted by Gaussians of one width σ at the column–column lags on that line (0, ±a, 2a)
/// and at the half-cell lags (a/2 ± a; the centred column pairs, seen b_v/4 off the line
/// through the dumbbell partner) plus a constant. That is the half-height width of the
/// central peak with the tails of its neighbours taken out; the autocorrelation of a Gaussian
/// column is √2 wider than the column. Without a lattice: the half-height width of the
/// azimuthally averaged central peak above its first minimum, divided by √2.
pub(crate) fn column_fwhm_px(acf: &[f32], n: usize, u: Option<[f64; 2]>) -> Option<f64> {
    match u {
        Some(u) => fwhm_along(acf, n, u),
        None => fwhm_azimuthal(acf, n),
    }
}

fn fwhm_along(acf: &[f32], n: usize, u: [f64; 2]) -> Option<f64> {
    let a = u[0].hypot(u[1]);
    if !(a.is_finite() && a > 3.0 && a < n as f64 / 4.0) {
        return None;
    }
    let e = [u[0] / a, u[1] / a];
    let step = 0.25;
    let ds: Vec<f64> = (0..)
        .map(|i| 1.0 + i as f64 * step)
        .take_while(|&d| d <= a)
        .collect();
    let prof: Vec<f64> = ds
        .iter()
        .map(|&d| acf_at(acf, n, d * e[0], d * e[1]))
        .collect();
    // The autocorrelation of the dumbbell lattice along u, per unit column: every column
    // with itself (lags i·a), with its partner b_v/4 off the line, and the centred pair half a
    // cell along, b_v/4 and b_v/2 off the line. b_v/4 = a·√2/4 in zinc blende [110]. One
    // amplitude for all (they are the same columns) plus a constant: no second mode in which
    // free amplitudes trade width for shape.
    let o = a * std::f64::consts::SQRT_2 / 4.0;
    let sse = |s: f64| -> (f64, [f64; 2]) {
        let g = |x: f64| (-x * x / (2.0 * s * s)).exp();
        let off = |x: f64, y: f64| g((x * x + y * y).sqrt());
        let mut ata = [[0.0f64; 2]; 2];
        let mut atb = [0.0f64; 2];
        let rows: Vec<[f64; 2]> = ds
            .iter()
            .map(|&d| {
                let f: f64 = (-1..=2)
                    .map(|j| {
                        let x = d - f64::from(j) * a;
                        let y = x - a / 2.0;
                        g(x) + off(x, o) + off(y, o) + off(y, 2.0 * o)
                    })
                    .sum();
                [f, 1.0]
            })
            .collect();
        for (r, &y) in rows.iter().zip(&prof) {
            for i in 0..2 {
                atb[i] += r[i] * y;
                for j in 0..2 {
                    ata[i][j] += r[i] * r[j];
                }
            }
        }
        let Some(c) = solve(ata, atb) else {
            return (f64::INFINITY, [0.0; 2]);
        };
        let err = rows
            .iter()
            .zip(&prof)
            .map(|(r, &y)| {
                let m = r[0] * c[0] + r[1] * c[1];
                (m - y) * (m - y)
            })
            .sum();
        (err, c)
    };
    let (lo, hi) = (0.3f64, a / 2.0);
    let steps = 120;
    let grid: Vec<f64> = (0..=steps)
        .map(|i| lo * (hi / lo).powf(i as f64 / steps as f64))
        .collect();
    let (mut bi, mut be) = (0, f64::INFINITY);
    for (i, &s) in grid.iter().enumerate() {
        let (e, c) = sse(s);
        if e < be && c[0] > 0.0 {
            (bi, be) = (i, e);
        }
    }
    if !be.is_finite() {
        return None;
    }
    // golden-section refinement between the grid neighbours
    let (mut x0, mut x1) = (grid[bi.saturating_sub(1)], grid[(bi + 1).min(steps)]);
    let gr = 0.618_033_988_75;
    for _ in 0..40 {
        let c = x1 - gr * (x1 - x0);
        let d = x0 + gr * (x1 - x0);
        if sse(c).0 < sse(d).0 {
            x1 = d;
        } else {
            x0 = c;
        }
    }
    let s = 0.5 * (x0 + x1);
    let (_, c) = sse(s);
    if c[0] <= 0.0 {
        return None;
    }
    Some(2.0 * (2.0 * std::f64::consts::LN_2).sqrt() * s / std::f64::consts::SQRT_2)
}

fn fwhm_azimuthal(acf: &[f32], n: usize) -> Option<f64> {
    let rmax = (n / 8).min(80);
    let step = 0.25;
    let prof: Vec<(f64, f64)> = (0..)
        .map(|i| i as f64 * step)
        .take_while(|&r| r <= rmax as f64)
        .map(|r| {
            let m = 48;
            let v: f64 = (0..m)
                .map(|j| {
                    let t = std::f64::consts::PI * j as f64 / m as f64;
                    acf_at(acf, n, r * t.cos(), r * t.sin())
                })
                .sum::<f64>()
                / m as f64;
            (r, v)
        })
        .collect();
    let peak = prof[0].1;
    // first local minimum
    let mut imin = prof.len() - 1;
    for i in 1..prof.len() - 1 {
        if prof[i].1 <= prof[i - 1].1 && prof[i].1 < prof[i + 1].1 {
            imin = i;
            break;
        }
    }
    let base = prof[imin].1;
    if peak <= base {
        return None;
    }
    let half = 0.5 * (peak + base);
    for i in 1..=imin {
        if prof[i].1 <= half {
            let (r0, v0) = prof[i - 1];
            let (r1, v1) = prof[i];
            let r = r0 + (v0 - half) / (v0 - v1) * (r1 - r0);
            return Some(2.0 * r / std::f64::consts::SQRT_2);
        }
    }
    None
}

fn solve<const N: usize>(mut a: [[f64; N]; N], mut b: [f64; N]) -> Option<[f64; N]> {
    for col in 0..N {
        let piv = (col..N).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        for r in 0..N {
            if r != col {
                let f = a[r][col] / a[col][col];
                let pivot = a[col];
                for (v, p) in a[r].iter_mut().zip(pivot).skip(col) {
                    *v -= f * p;
                }
                b[r] -= f * b[col];
            }
        }
    }
    Some(std::array::from_fn(|i| b[i] / a[i][i]))
}
