//! Boundaries: ridges of the discontinuity map, traced as straight segments.
//!
//! Ridge cells are the cells above a low threshold that are local maxima across the ridge
//! (along the comparison direction that gave their score). Segments are pulled out one at a
//! time: the strongest line of a weighted Hough transform of the ridge cells, refined by a
//! total-least-squares fit of its inliers, cut to the longest run without gaps (a boundary may
//! end inside the frame), and removed before the next search. Each segment's misorientation
//! compares the local orientations on either side.

use super::{BoundaryKindGuess, LatticeBoundary, LatticeMaps, LatticeParams};
use crate::geometry::{OrientedBox, clip_line};

/// Twin misorientation of the `u` axis for a Σ3 twin in [110] zinc-blende: 2·atan(1/√2)
/// folded into [0°, 90°], i.e. 180° − 109.47°.
pub const TWIN_DEG: f64 = 70.528_779;

#[derive(Clone, Copy, Debug)]
struct RidgePt {
    p: [f64; 2],
    w: f64,
}

/// Confidence of a boundary from its ridge contrast (line minus flanks): a logistic fitted by
/// maximum likelihood to the detections of the 200-frame benchmark (seeds 1000-1199,
/// `synthetic_boundary_benchmark`, scan tears dropped): precision 0.47 / 0.73 / 0.90 / 0.99 at
/// contrast 0.05-0.065 / -0.09 / -0.13 / above, mean confidence 0.53 / 0.70 / 0.87 / 0.99. On the
/// held-out seeds 2000-2199: precision 0.44 / 0.67 / 0.96 / 0.99 against 0.53 / 0.69 / 0.87 / 0.99
/// (the previous fit, centre 0.075 and scale 0.015, read 0.22 / 0.53 / 0.89 / 1.00 there: too
/// low once the scan tears were gone). The line's mean discontinuity itself predicted precision
/// worse (0.67-0.95, not monotonic).
pub fn confidence(contrast: f32) -> f32 {
    1.0 / (1.0 + (-(contrast - 0.053) / 0.029).exp())
}

/// Folds an orientation difference (lines, mod 180°) into [0°, 90°].
pub fn fold_misorientation(d: f64) -> f64 {
    let d = d.rem_euclid(180.0);
    if d > 90.0 { 180.0 - d } else { d }
}

/// Robust orientation of one side: the mode of a ±3°-smoothed 1° histogram (mod 180°),
/// refined by the circular mean of the values within 6° of it; with its support fraction.
fn mean_orientation(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut hist = [0f64; 180];
    for &a in v {
        hist[(a.rem_euclid(180.0) as usize).min(179)] += 1.0;
    }
    let (mut best, mut best_v) = (0usize, -1.0);
    for i in 0..180 {
        let s: f64 = (-3i64..=3)
            .map(|d| hist[(i as i64 + d).rem_euclid(180) as usize])
            .sum();
        if s > best_v {
            best = i;
            best_v = s;
        }
    }
    let mode = best as f64 + 0.5;
    let near: Vec<f64> = v
        .iter()
        .copied()
        .filter(|&a| fold_misorientation(a - mode) <= 6.0)
        .collect();
    let (mut s, mut c) = (0.0, 0.0);
    for &a in &near {
        let r = (2.0 * a).to_radians();
        s += r.sin();
        c += r.cos();
    }
    let mean = (0.5 * s.atan2(c).to_degrees()).rem_euclid(180.0);
    Some((mean, near.len() as f64 / v.len() as f64))
}

/// The discontinuity map as tracing reads it: a lightly smoothed copy (binomial, σ ≈ 1 cell =
/// W/8), since noise breaks the raw ridges of noisy frames into pieces.
pub(crate) fn smoothed_discontinuity(maps: &LatticeMaps) -> Vec<f32> {
    smooth_map(&maps.discontinuity, maps.cols, maps.rows)
}

/// Boundary segments along the ridges of `smooth` ([`smoothed_discontinuity`] of `maps`).
pub(crate) fn trace(
    maps: &LatticeMaps,
    smooth: &[f32],
    params: &LatticeParams,
    width: usize,
    height: usize,
    px_per_a: f64,
    visibility: f32,
) -> Vec<LatticeBoundary> {
    let (cols, rows) = (maps.cols, maps.rows);
    let step = maps.step_px as f64;
    let map_extent = (cols.min(rows).saturating_sub(1)) as f64 * step;
    let win = maps.window_px as f64;
    // Ridges are bands about half a window wide: lines are fitted to all cells of the band.
    let tol = step.max(win / 3.0);
    let tracer = Tracer {
        maps,
        params,
        d: smooth,
        visibility,
        step,
        win,
        tol,
        max_gap: (2.6 * step).max(params.ridge_max_gap_windows * win),
        min_len: (params.min_boundary_len_a * px_per_a)
            .min(params.min_boundary_len_map_fraction * map_extent)
            .max(2.5 * step),
        debug: std::env::var_os("LATTICE_DEBUG").is_some(),
    };
    let hi = ridge_threshold(smooth, params);
    let lo = hi * params.boundary_low_fraction;
    if tracer.debug {
        tracer.print_threshold(hi, lo);
    }
    let mut segs: Vec<(Seg, f32)> = Vec::new();
    tracer.pass(&mut segs, lo, Pass::First);
    if let Some(lo2) = tracer.second_pass_threshold(&segs, lo) {
        tracer.pass(&mut segs, lo2, Pass::Second);
    }
    let mut out = Vec::new();
    for (s, contrast) in segs {
        let Some((t0, t1)) = frame_extent(&s, maps, width, height) else {
            continue;
        };
        // Lines along the map's border are its edge artefact (the outer cells compare fewer
        // windows): 21 of the benchmark's 50 false boxes ran along a frame edge. Dropping those
        // within 2.5 steps of the border: precision 0.874 -> 0.906 (seeds 2000-2199: 0.891 ->
        // 0.922), no boundary lost; 3.5 steps lost 3 and 1.
        if along_map_edge(&s, maps, params.map_edge_line_steps) {
            continue;
        }
        let c = s.at(0.5 * (t0 + t1));
        let angle = s.dir[1].atan2(s.dir[0]);
        let obb = OrientedBox::new(
            c[0],
            c[1],
            t1 - t0,
            params.boundary_width_a * px_per_a,
            angle,
        );
        let seg = Seg { t0, t1, ..s };
        let (mis, sides) = misorientation(maps, &seg, params);
        if scan_tear(s.dir, mis, params.min_misorientation_deg) {
            continue;
        }
        let kind = match mis {
            Some(m) if (m - TWIN_DEG).abs() <= params.twin_tolerance_deg => BoundaryKindGuess::Twin,
            Some(m) if m >= params.min_misorientation_deg => {
                BoundaryKindGuess::Tilt { angle_deg: m }
            }
            _ => BoundaryKindGuess::Unknown,
        };
        out.push(LatticeBoundary {
            obb,
            score: confidence(contrast),
            misorientation_deg: mis,
            orientation_sides_deg: sides,
            kind,
            lamella_with: None,
            contrast,
        });
    }
    pair_lamellae(&mut out, maps, params, px_per_a);
    out
}

/// Which Hough pass over the map: the second runs at the threshold of the map's background
/// (the cells away from the first pass's segments) and judges contrast by its own rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    First,
    Second,
}

/// A line pulled out of the ridge cells, before it is judged.
struct Candidate {
    seg: Seg,
    /// Ridge cells in its run.
    cells: usize,
}

/// How a candidate line stands out of the map: its mean discontinuity and that of parallel
/// lines one window to either side (`None`: less than half of that flank lies on the map).
struct RidgeContrast {
    on: f64,
    flanks: [Option<f64>; 2],
    /// The flank the line is measured against.
    off: f64,
}

/// What the lattice shows along a line another detector drew (a model's boundary box).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct LineEvidence {
    /// Misorientation of the lattice across the line, folded into [0°, 90°] (as a traced
    /// boundary's); `None` where one side has no reliable orientation (no lattice, amorphous,
    /// the frame's edge).
    pub misorientation_deg: Option<f64>,
    /// Mean (smoothed) discontinuity on the line minus that of its flanks, as a traced
    /// boundary's ridge contrast.
    pub contrast: f32,
}

/// The lattice's evidence along `obb`'s long axis (`None`: the line lies off the maps).
/// `smooth`: [`smoothed_discontinuity`] of `maps`.
pub fn line_evidence(
    maps: &LatticeMaps,
    smooth: &[f32],
    params: &LatticeParams,
    visibility: f32,
    obb: &OrientedBox,
) -> Option<LineEvidence> {
    if maps.is_empty() {
        return None;
    }
    let (angle, len) = obb.long_axis();
    let seg = Seg {
        base: [obb.cx, obb.cy],
        dir: [angle.cos(), angle.sin()],
        t0: -0.5 * len,
        t1: 0.5 * len,
    };
    let rc = ridge_contrast(maps, smooth, params, visibility, &seg);
    let (mis, _) = misorientation(maps, &seg, params);
    Some(LineEvidence {
        misorientation_deg: mis,
        contrast: (rc.on - rc.off) as f32,
    })
}

/// What every pass of the tracing shares: the smoothed map and the lengths derived from it.
struct Tracer<'a> {
    maps: &'a LatticeMaps,
    params: &'a LatticeParams,
    /// The smoothed discontinuity map.
    d: &'a [f32],
    visibility: f32,
    step: f64,
    win: f64,
    tol: f64,
    max_gap: f64,
    min_len: f64,
    debug: bool,
}

impl Tracer<'_> {
    fn print_threshold(&self, hi: f32, lo: f32) {
        let mut v = self.d.to_vec();
        v.sort_by(f32::total_cmp);
        let q = |f: f64| v[((v.len() - 1) as f64 * f) as usize];
        eprintln!(
            "threshold hi {hi:.3} lo {lo:.3}; map q50 {:.3} q90 {:.3} q99 {:.3} max {:.3}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(1.0)
        );
    }

    /// The second pass's threshold, from the cells farther than
    /// `second_pass_exclusion_windows` from the first pass's segments; `None` when there is no
    /// second pass (nothing traced, too little background left, or no lower threshold).
    fn second_pass_threshold(&self, segs: &[(Seg, f32)], lo: f32) -> Option<f32> {
        let (cols, rows) = (self.maps.cols, self.maps.rows);
        if segs.is_empty() || self.params.second_pass_exclusion_windows <= 0.0 {
            return None;
        }
        let radius = self.params.second_pass_exclusion_windows * self.win;
        let bg: Vec<f32> = (0..rows * cols)
            .filter(|&i| {
                let p = self.maps.cell_center(i % cols, i / cols);
                !segs.iter().any(|(o, _)| o.covers(p, radius, self.win))
            })
            .map(|i| self.d[i])
            .collect();
        if bg.len() * 4 < rows * cols {
            return None;
        }
        let lo2 = ridge_threshold(&bg, self.params) * self.params.boundary_low_fraction;
        if self.debug {
            eprintln!(
                "second pass: lo {lo2:.3} from {} background cells",
                bg.len()
            );
        }
        (lo2 < lo).then_some(lo2)
    }

    /// Map cells at or above `lo`, weighted by how far above half of it they are.
    fn ridge_points(&self, lo: f32) -> Vec<RidgePt> {
        let (cols, rows) = (self.maps.cols, self.maps.rows);
        let mut pts = Vec::new();
        for r in 0..rows {
            for c in 0..cols {
                let v = self.d[r * cols + c];
                if v >= lo {
                    pts.push(RidgePt {
                        p: self.maps.cell_center(c, r),
                        w: (v - 0.5 * lo) as f64,
                    });
                }
            }
        }
        pts
    }

    /// One Hough pass over the cells above `lo`: lines are pulled out strongest first and the
    /// ones that pass are appended to `segs`.
    fn pass(&self, segs: &mut Vec<(Seg, f32)>, lo: f32, pass: Pass) {
        let pts = self.ridge_points(lo);
        let mut alive = vec![true; pts.len()];
        if pass == Pass::Second {
            // The first pass's lines took their cells at its own threshold; the cells this
            // lower threshold adds beside them are theirs too.
            for (a, q) in alive.iter_mut().zip(&pts) {
                *a = !segs
                    .iter()
                    .any(|(o, _)| o.covers(q.p, SUPPRESS_WINDOWS * self.win, self.tol));
            }
        }
        // Noisy frames give many short candidates before the faint true ridges: allow enough.
        for _ in 0..64 {
            let earlier: Vec<Seg> = segs.iter().map(|(s, _)| *s).collect();
            let Some(cand) = self.next_candidate(&pts, &mut alive, &earlier) else {
                break;
            };
            if let Some(contrast) = self.judge(&cand, &earlier, pass) {
                segs.push((cand.seg, contrast as f32));
            }
        }
    }

    /// The strongest remaining line: a Hough peak, refined by a TLS fit of its inliers, cut to
    /// its heaviest run without a gap. Its cells (and those right beside it) are taken.
    fn next_candidate(
        &self,
        pts: &[RidgePt],
        alive: &mut [bool],
        earlier: &[Seg],
    ) -> Option<Candidate> {
        let (theta, rho) = hough_peak(pts, alive, self.step.max(self.win / 4.0))?;
        let tol = self.tol;
        // Inliers of the Hough line, then a TLS fit and inliers again.
        let n0 = [theta.cos(), theta.sin()];
        let near = |n: [f64; 2], rho: f64, q: &RidgePt| (q.p[0] * n[0] + q.p[1] * n[1] - rho).abs();
        let idx: Vec<usize> = (0..pts.len())
            .filter(|&i| alive[i] && near(n0, rho, &pts[i]) <= 1.5 * tol)
            .collect();
        let (n, rho) = tls(&idx.iter().map(|&i| pts[i]).collect::<Vec<_>>()).unwrap_or((n0, rho));
        let idx: Vec<usize> = (0..pts.len())
            .filter(|&i| alive[i] && near(n, rho, &pts[i]) <= tol)
            .collect();
        let dir = [-n[1], n[0]];
        let mut along: Vec<(f64, usize)> = idx
            .iter()
            .map(|&i| (pts[i].p[0] * dir[0] + pts[i].p[1] * dir[1], i))
            .collect();
        along.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Longest (heaviest) run without a gap.
        let mut best: Option<(usize, usize, f64)> = None;
        let mut start = 0;
        for k in 0..=along.len() {
            if k == along.len() || (k > start && along[k].0 - along[k - 1].0 > self.max_gap) {
                if k > start {
                    let wsum: f64 = along[start..k].iter().map(|&(_, i)| pts[i].w).sum();
                    if best.is_none_or(|b| wsum > b.2) {
                        best = Some((start, k, wsum));
                    }
                }
                start = k;
            }
        }
        let (s0, s1, _) = best?;
        let run: Vec<usize> = along[s0..s1].iter().map(|&(_, i)| i).collect();
        for &i in &run {
            alive[i] = false;
        }
        // Cells right beside the run belong to the same ridge (a band about half a window
        // wide). Taking cells up to a whole window away also took the cells of boundaries that
        // meet this one at a shallow angle, for up to 1/sin(angle) windows (a quarter of a
        // finely sampled frame): 0.5 window found 12 more of 379 boundaries on the benchmark,
        // with the shoulder and junction rules below.
        let taken = Seg {
            base: [n[0] * rho, n[1] * rho],
            dir,
            t0: along[s0].0,
            t1: along[s1 - 1].0,
        };
        for (a, q) in alive.iter_mut().zip(pts) {
            if *a && taken.covers(q.p, SUPPRESS_WINDOWS * self.win, tol) {
                *a = false;
            }
        }
        let rp: Vec<RidgePt> = run.iter().map(|&i| pts[i]).collect();
        let (n, rho) = tls(&rp).unwrap_or((n, rho));
        let dir = [-n[1], n[0]];
        let (t0, t1) = rp
            .iter()
            .map(|q| q.p[0] * dir[0] + q.p[1] * dir[1])
            .fold((f64::INFINITY, f64::NEG_INFINITY), |a, t| {
                (a.0.min(t), a.1.max(t))
            });
        let base = [n[0] * rho, n[1] * rho];
        let (t0, t1) = extend_to_junctions(Seg { base, dir, t0, t1 }, earlier.iter(), self.win);
        if self.debug {
            eprintln!(
                "segment candidate: n {n:?} rho {rho:.1} t {t0:.0}..{t1:.0} cells {} (min length {:.0})",
                rp.len(),
                self.min_len
            );
        }
        Some(Candidate {
            seg: Seg { base, dir, t0, t1 },
            cells: rp.len(),
        })
    }

    /// The candidate's contrast when it is a boundary of its own, `None` when it is rejected.
    fn judge(&self, cand: &Candidate, earlier: &[Seg], pass: Pass) -> Option<f64> {
        let seg = &cand.seg;
        let reject = |why: std::fmt::Arguments| {
            if self.debug {
                eprintln!("  rejected: {why}");
            }
            None
        };
        // What the narrower suppression leaves of a ridge already taken: its shoulder (a
        // parallel line within a window) and the blob where boundaries meet (short pieces in
        // any direction, mostly within a window of the earlier ones).
        if shoulder_of(seg, earlier, self.win) {
            return reject(format_args!("shoulder of an earlier line"));
        }
        let free = free_length(seg, earlier, self.win, self.step);
        if free < MIN_FREE_FRACTION * self.min_len {
            return reject(format_args!(
                "free length {free:.0} of {:.0}",
                seg.t1 - seg.t0
            ));
        }
        // Judged on the map: measuring the length as reported (extended to the frame edge)
        // found 4 more of 379 boundaries on the benchmark, none on 200 fresh seeds, and cost
        // 0.01–0.02 precision.
        if seg.t1 - seg.t0 + self.step < self.min_len || cand.cells < 3 {
            return reject(format_args!("length"));
        }
        let rc = ridge_contrast(self.maps, self.d, self.params, self.visibility, seg);
        let (contrast, fl, on) = (rc.on - rc.off, rc.flanks, rc.on);
        let params = self.params;
        let passes = match pass {
            Pass::First => {
                // A boundary stands out of its surroundings along its whole length; on frames
                // whose discontinuity is high everywhere (noise, scan tears) a line is as high
                // as its flanks. The ratio needs a flank on the map: a line without one has
                // nothing to stand above.
                let faint_but_clear = fl.iter().any(Option::is_some)
                    && contrast >= params.min_ridge_contrast_floor as f64
                    && on >= params.min_ridge_contrast_ratio as f64 * rc.off;
                contrast >= params.min_ridge_contrast as f64 || faint_but_clear
            }
            Pass::Second => {
                // Both flanks on the map: near the map's edge the outer cells compare fewer
                // windows, and a faint line there has only one side to stand above (on the
                // Si tilt frame one such line ran 70 px from the bottom edge).
                let min = if fl.iter().all(Option::is_some) {
                    params.second_pass_min_contrast
                } else {
                    params.second_pass_one_flank_min_contrast
                };
                contrast >= min as f64
            }
        };
        if !passes {
            return reject(format_args!(
                "contrast {contrast:.3} (on {on:.3}, flanks {fl:?})"
            ));
        }
        if self.debug {
            eprintln!(
                "  accepted ({pass:?} pass): contrast {contrast:.3} (on {on:.3}, flanks {fl:?})"
            );
        }
        Some(contrast)
    }
}

/// The mean (smoothed) discontinuity on the segment's centre line against that of its
/// flanks. A line on the shoulder of a real boundary (lower than one flank) is measured
/// against the higher flank, so it does not pass on its neighbour's ridge; a ridge of its
/// own against the lower one, so one plane of a thin lamella is not hidden by the other
/// (benchmark: recall 0.865 -> 0.897 at precision 0.883 -> 0.869; the rule on noisy frames
/// as well: precision 0.82).
fn ridge_contrast(
    maps: &LatticeMaps,
    d: &[f32],
    params: &LatticeParams,
    visibility: f32,
    seg: &Seg,
) -> RidgeContrast {
    let cols = maps.cols;
    let (step, win) = (maps.step_px as f64, maps.window_px as f64);
    let n = [seg.dir[1], -seg.dir[0]];
    let ns = (((seg.t1 - seg.t0) / step).ceil() as usize).max(1);
    let line = |off: f64| -> Vec<f32> {
        (0..=ns)
            .filter_map(|k| {
                let p = seg.at(seg.t0 + (seg.t1 - seg.t0) * k as f64 / ns as f64);
                let p = [p[0] + off * n[0], p[1] + off * n[1]];
                maps.cell_at(p).map(|(c, r)| d[r * cols + c])
            })
            .collect()
    };
    let mean = |v: &[f32]| v.iter().sum::<f32>() as f64 / v.len().max(1) as f64;
    let on_line = line(0.0);
    let on = mean(&on_line);
    let flank = |off: f64| {
        let v = line(off);
        (v.len() * 2 >= on_line.len()).then(|| mean(&v))
    };
    let flanks = [flank(win), flank(-win)];
    let off = match flanks {
        [Some(a), Some(b)]
            if on >= a.max(b) && visibility >= params.ridge_lower_flank_min_strength =>
        {
            a.min(b)
        }
        [Some(a), Some(b)] => a.max(b),
        [Some(a), None] | [None, Some(a)] => a,
        [None, None] => 0.0,
    };
    RidgeContrast { on, flanks, off }
}

/// True when `s` runs within 8° of a map border and its middle lies within `k` map steps of
/// that border.
fn along_map_edge(s: &Seg, maps: &LatticeMaps, k: f64) -> bool {
    let step = maps.step_px as f64;
    let lo = maps.cell_center(0, 0);
    let hi = maps.cell_center(maps.cols - 1, maps.rows - 1);
    let m = s.mid();
    let cos8 = 8f64.to_radians().cos();
    let horizontal = s.dir[0].abs() >= cos8;
    let vertical = s.dir[1].abs() >= cos8;
    (horizontal && (m[1] - lo[1]).min(hi[1] - m[1]) < k * step)
        || (vertical && (m[0] - lo[0]).min(hi[0] - m[0]) < k * step)
}

/// True for a line along the fast scan (within 2.5° of the image rows) across which the
/// lattice does not rotate (misorientation measured below `min_mis_deg`): the edge of a burst
/// of line jitter, rows torn sideways, whose spectra differ from their neighbours'. On the
/// benchmark's fresh seeds (2000-2199) 25 of the 32 false boxes ran along the rows, 14 of
/// them without rotation; no true box had both. A stacking fault exactly along the rows
/// (a translation, no rotation) is lost with them.
fn scan_tear(dir: [f64; 2], mis: Option<f64>, min_mis_deg: f64) -> bool {
    let along_rows = dir[1].abs() <= 2.5f64.to_radians().sin();
    along_rows && mis.is_some_and(|m| m < min_mis_deg)
}

/// Radius (windows) around a traced ridge line whose cells are taken with it.
const SUPPRESS_WINDOWS: f64 = 0.5;

/// True when `s` runs within 12° of an earlier segment, its middle less than a window from
/// that line, over more than half of its length: the shoulder of a ridge already traced (a
/// lamella thinner than a window is one box in the labels as well).
fn shoulder_of(s: &Seg, earlier: &[Seg], win: f64) -> bool {
    let cos_max = 12f64.to_radians().cos();
    earlier.iter().any(|o| {
        if (o.dir[0] * s.dir[0] + o.dir[1] * s.dir[1]).abs() < cos_max {
            return false;
        }
        let dist = o.off_line(s.mid());
        let (ua, ub) = (o.along(s.at(s.t0)), o.along(s.at(s.t1)));
        let (lo, hi) = (ua.min(ub), ua.max(ub));
        let overlap = (hi.min(o.t1) - lo.max(o.t0)).max(0.0);
        dist < win && overlap > 0.5 * (hi - lo)
    })
}

/// A segment must keep this fraction of the minimum length farther than ¾ window from every
/// earlier one, else it is the blob where boundaries meet. Measured on three 200-frame seed
/// sets of the benchmark (1000, 2000, 3000): 0.3 instead of 0.5 found 2, 1 and 1 more
/// boundaries at 0.003 lower precision; 0.15 no more than 0.3.
const MIN_FREE_FRACTION: f64 = 0.3;

/// Length of `s` farther than ¾ window from every earlier segment (sampled every map step).
fn free_length(s: &Seg, earlier: &[Seg], win: f64, step: f64) -> f64 {
    let n = (((s.t1 - s.t0) / step).ceil() as usize).max(1);
    let free = (0..=n)
        .filter(|&k| {
            let p = s.at(s.t0 + (s.t1 - s.t0) * k as f64 / n as f64);
            earlier.iter().all(|o| {
                let q = o.at(o.along(p).clamp(o.t0, o.t1));
                (p[0] - q[0]).hypot(p[1] - q[1]) >= 0.75 * win
            })
        })
        .count();
    (s.t1 - s.t0) * free as f64 / (n + 1) as f64
}

/// Where a segment traced on the map lies in the frame (`t` range along it): a segment that
/// reaches the edge of the map continues to the image edge (the windows there already see the
/// image border); the others keep half a step beyond their last cell. `None`: the line misses
/// the frame.
fn frame_extent(s: &Seg, maps: &LatticeMaps, width: usize, height: usize) -> Option<(f64, f64)> {
    let step = maps.step_px as f64;
    let map_lo = [maps.origin_px[0] as f64, maps.origin_px[1] as f64];
    let map_hi = maps.cell_center(maps.cols - 1, maps.rows - 1);
    let (ta, tb) = clip_line(s.base, s.dir, [0.0, 0.0], [width as f64, height as f64])?;
    let near_edge = |t: f64| {
        let p = s.at(t);
        p[0] - map_lo[0] < 1.5 * step
            || p[1] - map_lo[1] < 1.5 * step
            || map_hi[0] - p[0] < 1.5 * step
            || map_hi[1] - p[1] < 1.5 * step
    };
    let t0 = if near_edge(s.t0) {
        ta
    } else {
        (s.t0 - 0.5 * step).max(ta)
    };
    let t1 = if near_edge(s.t1) {
        tb
    } else {
        (s.t1 + 0.5 * step).min(tb)
    };
    Some((t0, t1))
}

#[derive(Clone, Copy, Debug)]
struct Seg {
    base: [f64; 2],
    dir: [f64; 2],
    t0: f64,
    t1: f64,
}

impl Seg {
    fn at(&self, t: f64) -> [f64; 2] {
        [
            self.base[0] + t * self.dir[0],
            self.base[1] + t * self.dir[1],
        ]
    }

    /// The middle of the segment.
    fn mid(&self) -> [f64; 2] {
        self.at(0.5 * (self.t0 + self.t1))
    }

    /// Where `p` projects onto the segment's line (`t`, unclamped).
    fn along(&self, p: [f64; 2]) -> f64 {
        (p[0] - self.base[0]) * self.dir[0] + (p[1] - self.base[1]) * self.dir[1]
    }

    /// True when `p` lies within `radius` of the segment's line and projects onto the segment
    /// lengthened by `margin` at either end.
    fn covers(&self, p: [f64; 2], radius: f64, margin: f64) -> bool {
        let t = self.along(p);
        self.off_line(p) <= radius && t >= self.t0 - margin && t <= self.t1 + margin
    }

    /// Distance of `p` from the segment's (infinite) line.
    fn off_line(&self, p: [f64; 2]) -> f64 {
        ((p[0] - self.base[0]) * -self.dir[1] + (p[1] - self.base[1]) * self.dir[0]).abs()
    }
}

/// A segment ending within a window of an earlier one stops there because the cells near that
/// boundary were taken by it: continue it to the junction (boundaries meet; in small fields of
/// view the lost window would make it look too short).
fn extend_to_junctions<'a>(
    seg: Seg,
    others: impl Iterator<Item = &'a Seg>,
    win: f64,
) -> (f64, f64) {
    let (mut t0, mut t1) = (seg.t0, seg.t1);
    for o in others {
        let cross = seg.dir[0] * o.dir[1] - seg.dir[1] * o.dir[0];
        // Nearly parallel segments do not meet.
        if cross.abs() < 0.26 {
            continue;
        }
        // seg.base + t·seg.dir = o.base + u·o.dir
        let dx = [o.base[0] - seg.base[0], o.base[1] - seg.base[1]];
        let t = (dx[0] * o.dir[1] - dx[1] * o.dir[0]) / cross;
        let u = (dx[0] * seg.dir[1] - dx[1] * seg.dir[0]) / cross;
        if u < o.t0 - win || u > o.t1 + win {
            continue;
        }
        if t < t0 && t0 - t <= 1.5 * win {
            t0 = t;
        } else if t > t1 && t - t1 <= 1.5 * win {
            t1 = t;
        }
    }
    (t0, t1)
}

/// The level a ridge cell must reach: `boundary_noise_sigmas` robust σ above the map's
/// median, clamped to `[boundary_threshold_floor, boundary_threshold]`. A fixed level misses the
/// faint but continuous ridges of low-contrast frames (their background sits near 0.05–0.1);
/// the ridge contrast test then rejects what noise lets through.
fn ridge_threshold(d: &[f32], params: &LatticeParams) -> f32 {
    if d.is_empty() {
        return params.boundary_threshold;
    }
    let mut v = d.to_vec();
    let m = v.len() / 2;
    let med = *v.select_nth_unstable_by(m, |a, b| a.total_cmp(b)).1;
    let mut dev: Vec<f32> = d.iter().map(|x| (x - med).abs()).collect();
    let mad = *dev.select_nth_unstable_by(m, |a, b| a.total_cmp(b)).1;
    let t = med + params.boundary_noise_sigmas * 1.4826 * mad;
    t.clamp(
        params
            .boundary_threshold_floor
            .min(params.boundary_threshold),
        params.boundary_threshold,
    )
}

/// Two passes of the separable binomial `[1, 2, 1] / 4` (edges renormalised).
fn smooth_map(d: &[f32], cols: usize, rows: usize) -> Vec<f32> {
    let mut a = d.to_vec();
    for _ in 0..2 {
        let mut b = vec![0f32; a.len()];
        for r in 0..rows {
            for c in 0..cols {
                let (mut s, mut w) = (0.0, 0.0);
                for (dc, k) in [(-1i64, 1.0f32), (0, 2.0), (1, 1.0)] {
                    let cc = c as i64 + dc;
                    if cc >= 0 && cc < cols as i64 {
                        s += k * a[r * cols + cc as usize];
                        w += k;
                    }
                }
                b[r * cols + c] = s / w;
            }
        }
        for r in 0..rows {
            for c in 0..cols {
                let (mut s, mut w) = (0.0, 0.0);
                for (dr, k) in [(-1i64, 1.0f32), (0, 2.0), (1, 1.0)] {
                    let rr = r as i64 + dr;
                    if rr >= 0 && rr < rows as i64 {
                        s += k * b[rr as usize * cols + c];
                        w += k;
                    }
                }
                a[r * cols + c] = s / w;
            }
        }
    }
    a
}

/// Weighted Hough transform of the live ridge cells: the strongest line `(θ, ρ)` with
/// `x cos θ + y sin θ = ρ`.
fn hough_peak(pts: &[RidgePt], alive: &[bool], rho_bin: f64) -> Option<(f64, f64)> {
    const NA: usize = 90;
    let live: Vec<&RidgePt> = pts
        .iter()
        .zip(alive)
        .filter(|(_, a)| **a)
        .map(|(p, _)| p)
        .collect();
    if live.len() < 3 {
        return None;
    }
    let rmax = live
        .iter()
        .map(|q| q.p[0].hypot(q.p[1]))
        .fold(0.0, f64::max)
        + 2.0 * rho_bin;
    let nr = (2.0 * rmax / rho_bin).ceil() as usize + 1;
    let mut acc = vec![0f64; NA * nr];
    let trig: Vec<(f64, f64)> = (0..NA)
        .map(|a| (std::f64::consts::PI * a as f64 / NA as f64).sin_cos())
        .collect();
    for q in &live {
        for (a, &(s, c)) in trig.iter().enumerate() {
            let rho = q.p[0] * c + q.p[1] * s;
            let f = (rho + rmax) / rho_bin;
            let i = f.floor() as usize;
            let fr = f - i as f64;
            acc[a * nr + i] += q.w * (1.0 - fr);
            if i + 1 < nr {
                acc[a * nr + i + 1] += q.w * fr;
            }
        }
    }
    let (k, _) = acc.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
    let (a, i) = (k / nr, k % nr);
    let theta = std::f64::consts::PI * a as f64 / NA as f64;
    Some((theta, i as f64 * rho_bin - rmax))
}

/// Weighted total-least-squares line: unit normal `n` and `ρ = n·centroid`.
fn tls(pts: &[RidgePt]) -> Option<([f64; 2], f64)> {
    let wsum: f64 = pts.iter().map(|q| q.w).sum();
    if pts.len() < 2 || wsum <= 0.0 {
        return None;
    }
    let mx = pts.iter().map(|q| q.w * q.p[0]).sum::<f64>() / wsum;
    let my = pts.iter().map(|q| q.w * q.p[1]).sum::<f64>() / wsum;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for q in pts {
        let (dx, dy) = (q.p[0] - mx, q.p[1] - my);
        sxx += q.w * dx * dx;
        sxy += q.w * dx * dy;
        syy += q.w * dy * dy;
    }
    // Direction of largest spread; the normal is perpendicular to it.
    let ang = 0.5 * (2.0 * sxy).atan2(sxx - syy);
    let n = [-ang.sin(), ang.cos()];
    Some((n, n[0] * mx + n[1] * my))
}

/// Misorientation across a segment: circular means of the local lattice rotation on either
/// side (free of the frame's scan shear and stretch, see `LatticeMaps::rotation_deg`), sampled
/// between 0.6 and 1.0 window from the line (where windows no longer see it).
fn misorientation(
    maps: &LatticeMaps,
    s: &Seg,
    params: &LatticeParams,
) -> (Option<f64>, Option<[f64; 2]>) {
    let step = maps.step_px as f64;
    let win = maps.window_px as f64;
    let n = [-s.dir[1], s.dir[0]];
    let mut sides: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let nt = (((s.t1 - s.t0) / step).ceil() as usize).max(1);
    for k in 0..=nt {
        let t = s.t0 + (s.t1 - s.t0) * k as f64 / nt as f64;
        let p = s.at(t);
        for (side, sg) in [(0usize, -1.0f64), (1, 1.0)] {
            for f in [0.6, 0.8, 1.0] {
                let q = [p[0] + sg * f * win * n[0], p[1] + sg * f * win * n[1]];
                let Some((c, r)) = maps.cell_at(q) else {
                    continue;
                };
                let i = r * maps.cols + c;
                let o = maps.rotation_deg[i];
                if o.is_finite()
                    && maps.strength[i] >= params.min_strength
                    && maps.discontinuity[i] < params.boundary_threshold
                {
                    sides[side].push(o as f64);
                }
            }
        }
    }
    let a = mean_orientation(&sides[0]);
    let b = mean_orientation(&sides[1]);
    match (a, b) {
        (Some((a, _)), Some((b, _))) => (Some(fold_misorientation(a - b)), Some([a, b])),
        _ => (None, None),
    }
}

/// Marks pairs of near-parallel boundaries close together along their length as lamellae.
fn pair_lamellae(
    bs: &mut [LatticeBoundary],
    _maps: &LatticeMaps,
    params: &LatticeParams,
    px_per_a: f64,
) {
    let max_sep = params.lamella_max_nm * 10.0 * px_per_a;
    let mut best: Vec<Option<(usize, f64)>> = vec![None; bs.len()];
    for i in 0..bs.len() {
        for j in 0..bs.len() {
            if i == j {
                continue;
            }
            let (a, b) = (&bs[i].obb, &bs[j].obb);
            let da = fold_misorientation((a.angle - b.angle).to_degrees());
            if da > 10.0 {
                continue;
            }
            let dir = [a.angle.cos(), a.angle.sin()];
            let n = [-dir[1], dir[0]];
            let d = [b.cx - a.cx, b.cy - a.cy];
            let sep = (d[0] * n[0] + d[1] * n[1]).abs();
            let along = (d[0] * dir[0] + d[1] * dir[1]).abs();
            if sep <= max_sep && along <= 0.5 * (a.w + b.w) && best[i].is_none_or(|(_, s)| sep < s)
            {
                best[i] = Some((j, sep));
            }
        }
    }
    for i in 0..bs.len() {
        if let Some((j, _)) = best[i]
            && best[j].is_some_and(|(k, _)| k == i)
        {
            bs[i].lamella_with = Some(j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: [f64; 2], deg: f64, t0: f64, t1: f64) -> Seg {
        let a = deg.to_radians();
        Seg {
            base,
            dir: [a.cos(), a.sin()],
            t0,
            t1,
        }
    }

    #[test]
    fn a_row_aligned_line_without_rotation_is_a_scan_tear() {
        let dir = |deg: f64| seg([0.0, 0.0], deg, 0.0, 1.0).dir;
        assert!(scan_tear(dir(0.0), Some(0.4), 3.0));
        assert!(scan_tear(dir(178.0), Some(2.0), 3.0));
        // A real boundary along the rows rotates the lattice; unknown rotation is kept.
        assert!(!scan_tear(dir(0.5), Some(12.0), 3.0));
        assert!(!scan_tear(dir(1.0), None, 3.0));
        // Off the rows, no rotation is a matter for the other rules.
        assert!(!scan_tear(dir(5.0), Some(0.2), 3.0));
        assert!(!scan_tear(dir(90.0), Some(0.2), 3.0));
    }

    #[test]
    fn a_parallel_line_within_a_window_is_a_shoulder_and_a_crossing_one_is_not() {
        let win = 100.0;
        let first = [seg([0.0, 0.0], 0.0, 0.0, 600.0)];
        // 60 px beside it, 5° off, along most of its length.
        assert!(shoulder_of(
            &seg([50.0, 60.0], 5.0, 0.0, 500.0),
            &first,
            win
        ));
        // The same line a window and a half away is a boundary of its own (a lamella).
        assert!(!shoulder_of(
            &seg([50.0, 150.0], 5.0, 0.0, 500.0),
            &first,
            win
        ));
        // Crossing at 30°: another boundary.
        assert!(!shoulder_of(
            &seg([300.0, 0.0], 30.0, -300.0, 300.0),
            &first,
            win
        ));
        // Parallel and near, but mostly beyond the end of the first.
        assert!(!shoulder_of(
            &seg([550.0, 50.0], 0.0, 0.0, 500.0),
            &first,
            win
        ));
    }

    #[test]
    fn free_length_leaves_out_the_parts_near_earlier_segments() {
        let win = 100.0;
        let first = [seg([0.0, 0.0], 0.0, 0.0, 800.0)];
        // A perpendicular line crossing the first at its middle: ¾ window either side is taken.
        let cross = seg([400.0, -400.0], 90.0, 0.0, 800.0);
        let f = free_length(&cross, &first, win, 10.0);
        assert!((f - 650.0).abs() < 20.0, "{f}");
        // A short piece lying along the junction blob: nothing free.
        let blob = seg([380.0, -40.0], 60.0, 0.0, 80.0);
        assert!(free_length(&blob, &first, win, 10.0) < 1.0);
        // With no earlier segment all of it is free.
        assert!((free_length(&cross, &[], win, 10.0) - 800.0).abs() < 1e-9);
    }
}
