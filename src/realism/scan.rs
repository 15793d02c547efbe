//! Scan-line jitter: per-row horizontal shifts against an image of the average lattice.

use super::lattice::{LatticeFit, refine_list};
use super::spectrum::Spectrum;

/// RMS (px) of the per-row horizontal shifts, after removing a linear trend, found by
/// cross-correlating each row of the windowed crop with the same row of the lattice-filtered
/// reference (only the Bragg peaks kept, 2-bin discs at the fitted reflections: an image of
/// the average lattice). Sub-pixel by a parabola through the correlation maximum nearest to
/// zero shift. Rows correlating less than half as well as the best tenth of rows are left
/// out (another grain). `None` when fewer than 16 rows give a shift.
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
    const S: i64 = 8;
    let mut ys = Vec::new();
    let mut shifts = Vec::new();
    let mut rhos = Vec::new();
    for y in 0..n {
        if s.w[y] < 0.05 {
            continue;
        }
        let a = &s.windowed[y * n..(y + 1) * n];
        let r = &reference[y * n..(y + 1) * n];
        let cc = |sh: i64| -> f64 {
            let (x0, x1) = ((-sh).max(0) as usize, (n as i64 - sh.max(0)) as usize);
            (x0..x1)
                .map(|x| f64::from(a[(x as i64 + sh) as usize]) * f64::from(r[x]))
                .sum()
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
                let na: f64 = a.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                let nr: f64 = r.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                let rho = c0 / (na * nr).sqrt().max(1e-300);
                if c0 > 0.0 {
                    ys.push(y as f64);
                    shifts.push(sh as f64 + frac.clamp(-0.5, 0.5));
                    rhos.push(rho);
                }
                break;
            }
            if sh.abs() >= S {
                break;
            }
        }
    }
    // Rows that do not look like the average lattice (another grain, an amorphous patch)
    // give no shift: keep rows correlating at least half as well as the best tenth.
    if rhos.len() < 16 {
        return None;
    }
    let mut sorted = rhos.clone();
    sorted.sort_by(f64::total_cmp);
    let good = 0.5 * sorted[sorted.len() * 9 / 10];
    let (ys, shifts): (Vec<f64>, Vec<f64>) = ys
        .iter()
        .zip(&shifts)
        .zip(&rhos)
        .filter(|&(_, &r)| r >= good)
        .map(|((&y, &s), _)| (y, s))
        .unzip();
    if shifts.len() < 16 {
        return None;
    }
    // remove the linear trend
    let m = ys.len() as f64;
    let (my, ms) = (ys.iter().sum::<f64>() / m, shifts.iter().sum::<f64>() / m);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (y, v) in ys.iter().zip(&shifts) {
        sxy += (y - my) * (v - ms);
        sxx += (y - my) * (y - my);
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let ss: f64 = ys
        .iter()
        .zip(&shifts)
        .map(|(y, v)| {
            let r = v - ms - slope * (y - my);
            r * r
        })
        .sum();
    Some((ss / m).sqrt())
}
