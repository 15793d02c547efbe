//! Scan-line jitter: per-row horizontal shifts against an image of the average lattice.

use super::lattice::{LatticeFit, refine_list};
use super::spectrum::Spectrum;

/// One row's shift against the reference over columns `x0..x1`: the correlation maximum
/// nearest to zero shift, sub-pixel by a parabola; with the normalised correlation.
fn row_shift(a: &[f32], r: &[f32], x0: usize, x1: usize) -> Option<(f64, f64)> {
    const S: i64 = 8;
    // Mean over the overlap: a sum would favour the longest overlap, i.e. zero shift.
    let cc = |sh: i64| -> f64 {
        let lo = (x0 as i64).max(x0 as i64 - sh) as usize;
        let hi = (x1 as i64).min(x1 as i64 - sh) as usize;
        (lo..hi)
            .map(|x| f64::from(a[(x as i64 + sh) as usize]) * f64::from(r[x]))
            .sum::<f64>()
            / (hi.saturating_sub(lo)).max(1) as f64
    };
    let mut sh = 0i64;
    let mut c0 = cc(0);
    loop {
        let (cl, cr) = (cc(sh - 1), cc(sh + 1));
        if cr > c0 && cr >= cl {
            sh += 1;
            c0 = cr;
        } else if cl > c0 {
            sh -= 1;
            c0 = cl;
        } else {
            let d = cl - 2.0 * c0 + cr;
            let frac = if d < 0.0 { 0.5 * (cl - cr) / d } else { 0.0 };
            let na: f64 = a[x0..x1].iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let nr: f64 = r[x0..x1].iter().map(|&v| f64::from(v) * f64::from(v)).sum();
            let rho = c0 / (na * nr).sqrt().max(1e-300);
            return (c0 > 0.0).then_some((sh as f64 + frac.clamp(-0.5, 0.5), rho));
        }
        if sh.abs() >= S {
            return None;
        }
    }
}

/// Residuals of `v` after a least-squares line in `y`.
fn detrend(ys: &[f64], v: &[f64]) -> Vec<f64> {
    let m = ys.len() as f64;
    let (my, mv) = (ys.iter().sum::<f64>() / m, v.iter().sum::<f64>() / m);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (y, x) in ys.iter().zip(v) {
        sxy += (y - my) * (x - mv);
        sxx += (y - my) * (y - my);
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    ys.iter()
        .zip(v)
        .map(|(y, x)| x - mv - slope * (y - my))
        .collect()
}

/// RMS (px) of the per-row horizontal shifts, after removing a linear trend (scan shear),
/// found by cross-correlating each row of the crop with the same row of the
/// lattice-filtered reference (only the Bragg peaks kept, 2-bin discs at the fitted
/// reflections: an image of the average lattice). Rows correlating less than half as well as
/// the best tenth of rows are left out (another grain). `None` when fewer than 16 rows give a
/// shift.
///
/// A shift read from one row carries an error of its own (shot noise, broad columns, fine
/// sampling: 0.3–0.8 px on synthetic frames drawn without any jitter), which a plain RMS adds
/// to the jitter. Each row is therefore read twice, from its left and its right half: the two
/// readings share the row's true shift and have independent errors, so the covariance of the
/// two halves' residuals is the variance of the jitter alone.
pub(crate) fn line_jitter(s: &Spectrum, fit: &LatticeFit) -> Option<f64> {
    let n = s.n;
    let nf = n as f64;
    let mut keep = vec![false; n * n];
    let mut any_x = false;
    for (_, _, x, y) in refine_list(&fit.q, nf) {
        if x.abs() >= 1.5 {
            any_x = true;
        }
        for sign in [1.0, -1.0] {
            let (cx, cy) = ((sign * x).round() as i64, (sign * y).round() as i64);
            for dy in -2..=2i64 {
                for dx in -2..=2i64 {
                    if dx * dx + dy * dy <= 5 {
                        keep[s.idx(cx + dx, cy + dy)] = true;
                    }
                }
            }
        }
    }
    if !any_x {
        return None;
    }
    let reference = s.filtered(&keep);
    let mut ys = Vec::new();
    let mut halves = Vec::new();
    let mut rhos = Vec::new();
    // The crop and the reference both carry the Hann window, whose envelope pulls every
    // correlation peak towards zero shift (a 10–15 % low reading): both are divided by it
    // where it is at least ¼, the central two thirds in x and y.
    let x0 = s.w.iter().position(|&v| v >= 0.25).unwrap_or(0);
    let x1 = n - x0;
    let mid = n / 2;
    let mut a = vec![0f32; n];
    let mut r = vec![0f32; n];
    for y in x0..x1 {
        for x in x0..x1 {
            let w = s.w[x] * s.w[y];
            a[x] = s.windowed[y * n + x] / w;
            r[x] = reference[y * n + x] / w;
        }
        let (Some((_, rho)), Some((l, _)), Some((rt, _))) = (
            row_shift(&a, &r, x0, x1),
            row_shift(&a, &r, x0, mid),
            row_shift(&a, &r, mid, x1),
        ) else {
            continue;
        };
        ys.push(y as f64);
        halves.push((l, rt));
        rhos.push(rho);
    }
    // Rows that do not look like the average lattice (another grain, an amorphous patch)
    // give no shift: keep rows correlating at least half as well as the best tenth.
    if rhos.len() < 16 {
        return None;
    }
    let mut sorted = rhos.clone();
    sorted.sort_by(f64::total_cmp);
    let good = 0.5 * sorted[sorted.len() * 9 / 10];
    let (ys, halves): (Vec<f64>, Vec<(f64, f64)>) = ys
        .iter()
        .zip(&halves)
        .zip(&rhos)
        .filter(|&(_, &r)| r >= good)
        .map(|((&y, &h), _)| (y, h))
        .unzip();
    if ys.len() < 16 {
        return None;
    }
    let left = detrend(&ys, &halves.iter().map(|h| h.0).collect::<Vec<_>>());
    let right = detrend(&ys, &halves.iter().map(|h| h.1).collect::<Vec<_>>());
    let cov = left.iter().zip(&right).map(|(a, b)| a * b).sum::<f64>() / ys.len() as f64;
    Some(cov.max(0.0).sqrt())
}
