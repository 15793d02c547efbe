//! Post-processing: decoding the raw YOLO-OBB output, Ultralytics' rotated NMS, re-filtering.

use super::pre::Tile;
use super::{Detection, DetectionSource};
use crate::geometry::OrientedBox;
use std::f64::consts::PI;
use std::sync::Arc;

/// Ultralytics' `max_nms`: at most this many candidates enter NMS (the most confident).
pub const MAX_NMS: usize = 30_000;

/// How a model-input coordinate maps to the original image: `orig = (input - pad) * scale + offset`
/// per axis; box sizes scale by the mean of the two scales.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxMap {
    pub pad: [f64; 2],
    pub scale: [f64; 2],
    pub offset: [f64; 2],
}

impl BoxMap {
    pub fn identity() -> Self {
        Self {
            pad: [0.0; 2],
            scale: [1.0; 2],
            offset: [0.0; 2],
        }
    }

    pub fn apply(&self, b: &OrientedBox) -> OrientedBox {
        let s = 0.5 * (self.scale[0] + self.scale[1]);
        OrientedBox::new(
            (b.cx - self.pad[0]) * self.scale[0] + self.offset[0],
            (b.cy - self.pad[1]) * self.scale[1] + self.offset[1],
            b.w * s,
            b.h * s,
            b.angle,
        )
    }

    /// The inverse, for tests and for drawing model-space overlays.
    pub fn invert(&self, b: &OrientedBox) -> OrientedBox {
        let s = 0.5 * (self.scale[0] + self.scale[1]);
        OrientedBox::new(
            (b.cx - self.offset[0]) / self.scale[0] + self.pad[0],
            (b.cy - self.offset[1]) / self.scale[1] + self.pad[1],
            b.w / s,
            b.h / s,
            b.angle,
        )
    }
}

/// Ultralytics' `regularize_rboxes`: the same rectangle with the angle in `[0, pi/2)`.
pub fn regularize(b: &OrientedBox) -> OrientedBox {
    let swap = b.angle.rem_euclid(PI) >= PI / 2.0;
    let (w, h) = if swap { (b.h, b.w) } else { (b.w, b.h) };
    OrientedBox::new(b.cx, b.cy, w, h, b.angle.rem_euclid(PI / 2.0))
}

/// What to keep from one model output.
#[derive(Clone, Copy, Debug)]
pub struct DecodeSpec<'a> {
    /// Candidates need a class score strictly above this.
    pub floor: f32,
    /// One candidate per class above the floor (Ultralytics `val`), instead of the best class
    /// only (Ultralytics `predict`).
    pub multi_label: bool,
    /// Model input -> original image.
    pub map: BoxMap,
    /// Only candidates whose centre (in working-image coordinates) lies in this tile's core.
    pub tile: Option<&'a Tile>,
}

/// Decodes `output` (`[4+nc+1, n]` row-major: cx, cy, w, h in input pixels, nc sigmoid
/// scores, angle in radians) into `out`. Scores are thresholded before any box is built, so
/// the cost is one pass over the score rows plus work proportional to the survivors.
/// Decodes the candidates above the floor into `out`. Returns how many of them had a box no
/// model can mean (a coordinate or angle not finite, a side not positive); those are not
/// decoded.
pub fn decode(
    output: &[f32],
    n: usize,
    names: &[Arc<str>],
    spec: &DecodeSpec,
    out: &mut Vec<Detection>,
) -> usize {
    let mut invalid = 0usize;
    let nc = names.len();
    debug_assert_eq!(output.len(), (5 + nc) * n);
    let row = |r: usize| &output[r * n..(r + 1) * n];
    let (cx, cy, w, h, ang) = (row(0), row(1), row(2), row(3), row(4 + nc));
    let scores: Vec<&[f32]> = (0..nc).map(|c| row(4 + c)).collect();
    let mut push = |i: usize, class: usize, conf: f32| {
        let finite = [cx[i], cy[i], w[i], h[i], ang[i]]
            .iter()
            .all(|v| v.is_finite());
        if !(finite && w[i] > 0.0 && h[i] > 0.0) {
            invalid += 1;
            return;
        }
        if let Some(t) = spec.tile {
            // Working-image coordinates of the centre: input minus padding plus tile origin.
            let wx = cx[i] as f64 - t.pad_x as f64 + t.x0 as f64;
            let wy = cy[i] as f64 - t.pad_y as f64 + t.y0 as f64;
            if !t.core_contains(wx, wy) {
                return;
            }
        }
        let b = OrientedBox::new(
            cx[i] as f64,
            cy[i] as f64,
            w[i] as f64,
            h[i] as f64,
            ang[i] as f64,
        );
        out.push(Detection {
            class,
            class_name: names[class].clone(),
            confidence: conf,
            obb: regularize(&spec.map.apply(&b)),
            source: DetectionSource::Model,
        });
    };
    for i in 0..n {
        if spec.multi_label {
            for (c, s) in scores.iter().enumerate() {
                if s[i] > spec.floor {
                    push(i, c, s[i]);
                }
            }
        } else {
            let mut best = 0usize;
            let mut best_s = f32::NEG_INFINITY;
            for (c, s) in scores.iter().enumerate() {
                if s[i] > best_s {
                    best_s = s[i];
                    best = c;
                }
            }
            if best_s > spec.floor {
                push(i, best, best_s);
            }
        }
    }
    invalid
}

/// Sorts candidates by confidence, highest first (stable, so ties keep anchor order).
pub fn sort_by_confidence(dets: &mut [Detection]) {
    dets.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
}

/// Precomputed Gaussian of a box for ProbIoU.
#[derive(Clone, Copy)]
struct Gauss {
    x: f64,
    y: f64,
    a: f64,
    b: f64,
    c: f64,
    /// Largest eigenvalue of the covariance (max side squared / 12).
    lmax: f64,
}

impl Gauss {
    fn of(o: &OrientedBox) -> Self {
        let a0 = o.w * o.w / 12.0;
        let b0 = o.h * o.h / 12.0;
        let (s, c) = o.angle.sin_cos();
        Self {
            x: o.cx,
            y: o.cy,
            a: a0 * c * c + b0 * s * s,
            b: a0 * s * s + b0 * c * c,
            c: (a0 - b0) * c * s,
            lmax: a0.max(b0),
        }
    }
}

/// ProbIoU exactly as `geometry::probiou` (Ultralytics' formula), on precomputed Gaussians.
fn probiou_g(p: &Gauss, q: &Gauss) -> f64 {
    const EPS: f64 = 1e-7;
    let (sa, sb, sc) = (p.a + q.a, p.b + q.b, p.c + q.c);
    let den = sa * sb - sc * sc + EPS;
    let t1 = (sa * (p.y - q.y).powi(2) + sb * (p.x - q.x).powi(2)) / den * 0.25;
    let t2 = (sc * (q.x - p.x) * (p.y - q.y)) / den * 0.5;
    let t3 = ((sa * sb - sc * sc)
        / (4.0 * ((p.a * p.b - p.c * p.c).max(0.0) * (q.a * q.b - q.c * q.c).max(0.0)).sqrt()
            + EPS)
        + EPS)
        .ln()
        * 0.5;
    let bd = (t1 + t2 + t3).clamp(EPS, 100.0);
    1.0 - (1.0 - (-bd).exp() + EPS).sqrt()
}

/// Ultralytics' rotated NMS (`TorchNMS.fast_nms` with `batch_probiou`): with boxes in
/// descending confidence, box `j` is dropped when ANY more confident box of its class (dropped
/// or not) has ProbIoU `>= iou` with it. This is Fast-NMS, not greedy NMS: a box suppressed
/// only by an already-suppressed box is still dropped. `dets` must be sorted by confidence,
/// descending; returns the kept indices in that order.
pub fn fast_nms(dets: &[Detection], iou: f64, agnostic: bool) -> Vec<usize> {
    let n = dets.len();
    if n == 0 {
        return Vec::new();
    }
    // Bhattacharyya distance bd >= 0.25 d^T (S1+S2)^-1 d >= 0.25 |d|^2 / (lmax1 + lmax2), and
    // ProbIoU >= iou needs bd <= bd_max: pairs farther apart cannot suppress each other.
    let arg = 1.0 + 1e-7 - (1.0 - iou).powi(2);
    let bd_max = if arg > 0.0 { -arg.ln() } else { f64::INFINITY };
    // Slack for the formula's eps terms (they shift bd by ~eps/det, far below this).
    let bd_bound = bd_max * (1.0 + 1e-3) + 1e-3;
    let g: Vec<Gauss> = dets.iter().map(|d| Gauss::of(&d.obb)).collect();
    let mut keep = vec![true; n];
    let groups: Vec<Vec<usize>> = if agnostic {
        vec![(0..n).collect()]
    } else {
        let nc = dets.iter().map(|d| d.class).max().unwrap_or(0) + 1;
        let mut v = vec![Vec::new(); nc];
        for (i, d) in dets.iter().enumerate() {
            v[d.class].push(i);
        }
        v
    };
    for group in groups {
        if group.len() < 2 {
            continue;
        }
        // Sweep in x: members sorted by centre x.
        let mut by_x = group.clone();
        by_x.sort_by(|&a, &b| g[a].x.total_cmp(&g[b].x));
        let xs: Vec<f64> = by_x.iter().map(|&i| g[i].x).collect();
        let lmax_all = group.iter().map(|&i| g[i].lmax).fold(0.0, f64::max);
        for &j in &group {
            let gj = &g[j];
            let reach = if bd_max.is_finite() {
                (4.0 * bd_bound * (gj.lmax + lmax_all)).sqrt()
            } else {
                f64::INFINITY
            };
            let lo = xs.partition_point(|&x| x < gj.x - reach);
            let hi = xs.partition_point(|&x| x <= gj.x + reach);
            for &i in &by_x[lo..hi] {
                if i >= j {
                    continue;
                }
                let gi = &g[i];
                let d2 = (gi.x - gj.x).powi(2) + (gi.y - gj.y).powi(2);
                if bd_max.is_finite() && 0.25 * d2 > bd_bound * (gi.lmax + gj.lmax) {
                    continue;
                }
                if probiou_g(gi, gj) >= iou {
                    keep[j] = false;
                    break;
                }
            }
        }
    }
    (0..n).filter(|&i| keep[i]).collect()
}

/// Options for turning candidates into final detections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FilterOptions {
    /// Keep candidates with confidence strictly above this (Ultralytics `conf`).
    pub conf: f32,
    /// ProbIoU at or above which a less confident box is suppressed (Ultralytics `iou`).
    pub iou: f64,
    /// Let boxes of different classes suppress each other.
    pub agnostic: bool,
    /// Keep at most this many (Ultralytics `max_det`, 300 per image in `val`).
    pub max_det: Option<usize>,
    /// Class of line defects (grain boundaries) whose boxes along one line are joined into
    /// one; `None` keeps the boxes as NMS leaves them (Ultralytics' behaviour).
    pub merge_lines: Option<usize>,
}

impl Default for FilterOptions {
    fn default() -> Self {
        Self {
            conf: 0.25,
            iou: 0.7,
            agnostic: false,
            max_det: None,
            merge_lines: None,
        }
    }
}

/// The class of line defects among a model's classes: the first whose name says "boundary".
pub fn line_class(names: &[String]) -> Option<usize> {
    names
        .iter()
        .position(|n| n.to_ascii_lowercase().contains("boundary"))
}

/// Largest angle (degrees) between two boxes' long axes that can lie on one boundary.
pub const LINE_MERGE_ANGLE_DEG: f64 = 10.0;

/// The long axis of a box (unit vector), its length and its width.
fn line_frame(b: &OrientedBox) -> ([f64; 2], f64, f64) {
    let (s, c) = b.angle.sin_cos();
    if b.w >= b.h {
        ([c, s], b.w, b.h)
    } else {
        ([-s, c], b.h, b.w)
    }
}

/// Shortens each box of the line-defect class `class` along its long axis until all four
/// corners lie inside the `w × h` frame: the rule the labels follow
/// ([`crate::synth::scene::boundary_box`]), since a boundary seen in a frame ends at its edge.
/// The width and angle stay; a box inside the frame, or whose centre line misses it, stays
/// as it was.
pub fn clip_line_boxes(dets: &mut [Detection], class: usize, w: f64, h: f64) {
    for d in dets.iter_mut().filter(|d| d.class == class) {
        let (u, len, width) = line_frame(&d.obb);
        let (hx, hy) = (width / 2.0 * u[1].abs(), width / 2.0 * u[0].abs());
        if 2.0 * hx >= w || 2.0 * hy >= h {
            continue;
        }
        let c = d.obb.center();
        let Some((t0, t1)) = crate::geometry::clip_line(c, u, [hx, hy], [w - hx, h - hy]) else {
            continue;
        };
        let (t0, t1) = (t0.max(-len / 2.0), t1.min(len / 2.0));
        if t1 <= t0 || (t0 == -len / 2.0 && t1 == len / 2.0) {
            continue;
        }
        let tm = 0.5 * (t0 + t1);
        // Same angle and the same side along the line as before: the lattice analysis's
        // boxes keep their long-axis angle (what the table shows), the model's their
        // Ultralytics form.
        let b = &mut d.obb;
        (b.cx, b.cy) = (c[0] + tm * u[0], c[1] + tm * u[1]);
        if b.w >= b.h {
            b.w = t1 - t0;
        } else {
            b.h = t1 - t0;
        }
    }
}

/// Drops the point-defect boxes (every class but `line_class`) that reach past the `w × h`
/// frame: a column is judged missing or extra against the columns around it, and at the
/// frame's edge half of them are not in the field, so the image cannot tell a defect there
/// from the edge's own truncation (the scan's first lines and columns are its least reliable
/// too). The labels follow the same rule: the synthesizer places no point defect whose box
/// leaves the frame ([`crate::synth::params::DefectParams::edge_margin_px`]), and the lattice
/// analysis does not judge sites at the edge. Returns how many boxes were dropped.
///
/// Chosen on the 400 validation frames (seed 20261206, d′ ≥ 5 labels, `--tta` + finished): 46
/// point boxes of ≥ 0.25 reached past the edge, none of them a labelled defect, and mAP50 rose
/// 0.9704 → 0.9722 (interstitials 0.947 → 0.951). Letting a box overhang by 4 or 8 px kept 10
/// and 24 of them (0.9719, 0.9714).
pub fn drop_points_across_edges(
    dets: &mut Vec<Detection>,
    line_class: Option<usize>,
    w: f64,
    h: f64,
) -> usize {
    let before = dets.len();
    dets.retain(|d| {
        if Some(d.class) == line_class {
            return true;
        }
        let [x0, y0, x1, y1] = d.obb.aabb();
        // A fitted box exactly on the edge is inside: its corners carry rounding.
        let tol = 1e-6;
        x0 >= -tol && y0 >= -tol && x1 <= w + tol && y1 <= h + tol
    });
    before - dets.len()
}

/// Drops the point-defect boxes centred inside a box of the line-defect class `line_class`
/// that has at least `min_line_conf`: the labels' rule, under which a defect on a boundary is
/// neither bulk nor boundary (the synthesizer places no point defect within half a boundary
/// band of one, [`crate::synth::scene`]), and the disordered core of a boundary shows gaps and
/// extra spots that are its own structure, not vacancies or interstitials. On the realistic
/// synthetic test set (`--tta`, fitted boxes, boundaries of ≥ 0.25) vacancy false positives
/// at the matrix's threshold fell 30 → 21 and mAP50 / mAP50-95 rose 0.928 / 0.848 → 0.930 /
/// 0.850; widening the zone by half a point box's diagonal gained nothing, by a whole one lost
/// 0.016 mAP50 (true defects beside a boundary went with it).
///
/// A boundary that only the lattice analysis sees (`DetectionSource::Lattice`, in `both`)
/// takes no model box with it: on synthetic frames 1 in 16 such boxes is a labelled
/// boundary, and letting them drop the model's points cost `both` 0.03 of vacancy mAP50 on
/// the d′ ≥ 5 labels (README, "What `both` joins").
pub fn drop_points_on_lines(dets: &mut Vec<Detection>, line_class: usize, min_line_conf: f32) {
    use super::DetectionSource::Lattice;
    let lines: Vec<(crate::geometry::OrientedBox, bool)> = dets
        .iter()
        .filter(|d| d.class == line_class && d.confidence >= min_line_conf)
        .map(|d| (d.obb, d.source == Lattice))
        .collect();
    if lines.is_empty() {
        return;
    }
    dets.retain(|d| {
        d.class == line_class
            || !lines.iter().any(|&(l, lattice_only)| {
                (!lattice_only || d.source == Lattice) && l.contains(d.obb.center())
            })
    });
}

/// Joins boxes of one line-defect class that lie along the same line. A boundary crossing the
/// field is often seen as two or more shorter, overlapping boxes whose ProbIoU is too low for
/// NMS (a short box inside a long one); a microscopist sees one boundary. A box joins a more
/// confident one when their long axes agree within [`LINE_MERGE_ANGLE_DEG`], its centre lies
/// within half a width of the other's centre line, and the two overlap (or nearly touch) along
/// the line; the more confident box then stretches to cover both, keeping its width, angle
/// and confidence. Input most confident first; order kept.
pub fn merge_line_boxes(dets: Vec<Detection>, class: usize) -> Vec<Detection> {
    let cos_max = LINE_MERGE_ANGLE_DEG.to_radians().cos();
    let mut out: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if d.class == class {
            let (du, dl, dw) = line_frame(&d.obb);
            let host = out.iter_mut().find(|a| {
                if a.class != class {
                    return false;
                }
                let (au, al, aw) = line_frame(&a.obb);
                let rel = [d.obb.cx - a.obb.cx, d.obb.cy - a.obb.cy];
                let along = rel[0] * au[0] + rel[1] * au[1];
                let across = (rel[0] * au[1] - rel[1] * au[0]).abs();
                let gap = along.abs() - (al + dl) / 2.0;
                (au[0] * du[0] + au[1] * du[1]).abs() >= cos_max
                    && across <= aw.max(dw) / 2.0
                    && gap <= aw.max(dw)
            });
            if let Some(a) = host {
                let (au, al, aw) = line_frame(&a.obb);
                let along = (d.obb.cx - a.obb.cx) * au[0] + (d.obb.cy - a.obb.cy) * au[1];
                let lo = (-al / 2.0).min(along - dl / 2.0);
                let hi = (al / 2.0).max(along + dl / 2.0);
                let mid = (lo + hi) / 2.0;
                let angle = au[1].atan2(au[0]);
                a.obb = regularize(&OrientedBox::new(
                    a.obb.cx + mid * au[0],
                    a.obb.cy + mid * au[1],
                    hi - lo,
                    aw,
                    angle,
                ));
                continue;
            }
        }
        out.push(d);
    }
    out
}

/// The GUI's re-filter: confidence threshold then class-aware rotated NMS, best first.
pub fn filter(cands: &[Detection], conf: f32, iou: f64) -> Vec<Detection> {
    filter_with(
        cands,
        &FilterOptions {
            conf,
            iou,
            ..Default::default()
        },
    )
}

pub fn filter_with(cands: &[Detection], o: &FilterOptions) -> Vec<Detection> {
    let mut sel: Vec<Detection> = cands
        .iter()
        .filter(|d| d.confidence > o.conf)
        .cloned()
        .collect();
    sort_by_confidence(&mut sel);
    sel.truncate(MAX_NMS);
    let kept = fast_nms(&sel, o.iou, o.agnostic);
    let limit = o.max_det.unwrap_or(usize::MAX);
    let kept = kept.into_iter().map(|i| sel[i].clone());
    match o.merge_lines {
        // Joining can only shorten the list, so the limit applies after it.
        Some(c) => {
            let mut merged = merge_line_boxes(kept.collect(), c);
            merged.truncate(limit);
            merged
        }
        None => kept.take(limit).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::probiou;

    #[test]
    fn point_boxes_on_a_boundary_are_dropped_and_beside_it_kept() {
        // A boundary band 20 px wide along y = 50, tilted 10°; a weak one along x = 150.
        let gb = OrientedBox::new(100.0, 50.0, 200.0, 20.0, 10f64.to_radians());
        let weak = OrientedBox::new(150.0, 100.0, 20.0, 200.0, 0.0);
        let on = OrientedBox::new(60.0, 43.0, 12.0, 8.0, 0.3);
        let beside = OrientedBox::new(60.0, 70.0, 12.0, 8.0, 0.3);
        let on_weak = OrientedBox::new(150.0, 160.0, 12.0, 8.0, 0.0);
        let mut dets = vec![
            det(0, 0.9, gb),
            det(0, 0.2, weak),
            det(1, 0.8, on),
            det(2, 0.7, on),
            det(1, 0.8, beside),
            det(2, 0.6, on_weak),
        ];
        let mut all = dets.clone();
        drop_points_on_lines(&mut dets, 0, 0.25);
        let kept: Vec<(usize, f32)> = dets.iter().map(|d| (d.class, d.confidence)).collect();
        // Both point boxes on the strong band go; the one beside it, and the one on the band
        // below the confidence asked for, stay; boundaries are never dropped.
        assert_eq!(kept, vec![(0, 0.9), (0, 0.2), (1, 0.8), (2, 0.6)]);
        assert_eq!(dets[2].obb, beside);
        // With every boundary counted, the weak one clears its point too.
        drop_points_on_lines(&mut all, 0, 0.0);
        assert_eq!(all.len(), 3);
        // No boundary: nothing changes.
        let mut points = vec![det(1, 0.8, on), det(2, 0.7, beside)];
        drop_points_on_lines(&mut points, 0, 0.0);
        assert_eq!(points.len(), 2);
        // A boundary only the lattice analysis sees takes the analysis' own point boxes with
        // it, not the model's.
        let lattice = |mut d: Detection| {
            d.source = crate::detect::DetectionSource::Lattice;
            d
        };
        let mut mixed = vec![
            lattice(det(0, 0.9, gb)),
            det(1, 0.8, on),
            lattice(det(2, 0.7, on)),
        ];
        drop_points_on_lines(&mut mixed, 0, 0.25);
        let kept: Vec<(usize, f32)> = mixed.iter().map(|d| (d.class, d.confidence)).collect();
        assert_eq!(kept, vec![(0, 0.9), (1, 0.8)]);
    }

    #[test]
    fn point_boxes_reaching_past_the_frame_are_dropped_and_boundaries_kept() {
        // A 100 x 80 frame. Inside: a box touching the left edge exactly, and one in the
        // middle. Across: a box 1 px over the bottom edge, and one whose centre is well inside
        // but whose 45° turn takes a corner past the right edge. A boundary box overshooting
        // the frame is the boundary rule's business and stays.
        let touching = OrientedBox::new(6.0, 40.0, 12.0, 8.0, 0.0);
        let middle = OrientedBox::new(50.0, 40.0, 12.0, 8.0, 0.2);
        let over_bottom = OrientedBox::new(50.0, 77.0, 12.0, 8.0, 0.0);
        let turned = OrientedBox::new(93.5, 40.0, 12.0, 8.0, 45f64.to_radians());
        assert!(turned.aabb()[2] > 100.0 && turned.center()[0] + 6.0 < 100.0);
        let gb = OrientedBox::new(50.0, 40.0, 160.0, 20.0, 0.0);
        let mut dets = vec![
            det(0, 0.9, gb),
            det(1, 0.8, touching),
            det(2, 0.7, middle),
            det(1, 0.6, over_bottom),
            det(2, 0.5, turned),
        ];
        assert_eq!(drop_points_across_edges(&mut dets, Some(0), 100.0, 80.0), 2);
        let kept: Vec<(usize, f32)> = dets.iter().map(|d| (d.class, d.confidence)).collect();
        assert_eq!(kept, vec![(0, 0.9), (1, 0.8), (2, 0.7)]);
        // Without a boundary class every box is a point box, so the overshooting one goes too.
        assert_eq!(drop_points_across_edges(&mut dets, None, 100.0, 80.0), 1);
        assert_eq!(dets.len(), 2);
    }

    #[test]
    fn boundary_boxes_end_at_the_frame_as_labels_do() {
        let n = names();
        let det = |class: usize, obb: OrientedBox| Detection {
            class,
            class_name: n[class].clone(),
            confidence: 0.9,
            obb,
            source: DetectionSource::Model,
        };
        // A horizontal boundary box 20 px wide overshooting a 100 x 80 frame on both sides,
        // one tilted by 30° overshooting on the right, one inside, and a vacancy box outside.
        let mut dets = vec![
            det(0, OrientedBox::new(50.0, 40.0, 160.0, 20.0, 0.0)),
            det(
                0,
                OrientedBox::new(70.0, 40.0, 80.0, 10.0, 30f64.to_radians()),
            ),
            det(0, OrientedBox::new(50.0, 40.0, 40.0, 10.0, 0.0)),
            det(1, OrientedBox::new(95.0, 40.0, 30.0, 20.0, 0.0)),
        ];
        let before = dets.clone();
        clip_line_boxes(&mut dets, 0, 100.0, 80.0);
        let b = dets[0].obb;
        assert!(
            (b.cx - 50.0).abs() < 1e-9 && (b.w - 100.0).abs() < 1e-9,
            "{b:?}"
        );
        for d in &dets[..2] {
            for p in d.obb.corners() {
                assert!(
                    (-1e-9..=100.0 + 1e-9).contains(&p[0]) && (-1e-9..=80.0 + 1e-9).contains(&p[1]),
                    "{:?} leaves the frame at {p:?}",
                    d.obb
                );
            }
        }
        // Shortened along its own line only: same angle and width, centre on the same line.
        let (t, o) = (dets[1].obb, before[1].obb);
        assert!((t.h.min(t.w) - 10.0).abs() < 1e-9 && t.w.max(t.h) < 80.0);
        assert!((probiou(&t, &o) - 1.0).abs() > 1e-3);
        let off = (t.cy - o.cy) * o.angle.cos() - (t.cx - o.cx) * o.angle.sin();
        assert!(off.abs() < 1e-9, "moved off its line by {off}");
        assert_eq!(dets[2], before[2]);
        assert_eq!(dets[3], before[3]);
    }

    fn names() -> Vec<Arc<str>> {
        ["grain_boundary", "vacancy", "interstitial"]
            .iter()
            .map(|s| Arc::from(*s))
            .collect()
    }

    /// A raw output tensor `[8, n]` from (cx, cy, w, h, scores[3], angle) columns.
    fn tensor(cols: &[[f32; 8]]) -> Vec<f32> {
        let n = cols.len();
        let mut t = vec![0f32; 8 * n];
        for (i, c) in cols.iter().enumerate() {
            for r in 0..8 {
                t[r * n + i] = c[r];
            }
        }
        t
    }

    fn same_rectangle(a: &OrientedBox, b: &OrientedBox, tol: f64) -> bool {
        // Compare as point sets: every corner of one is a corner of the other.
        let (ca, cb) = (a.corners(), b.corners());
        ca.iter().all(|p| {
            cb.iter()
                .any(|q| (p[0] - q[0]).abs() < tol && (p[1] - q[1]).abs() < tol)
        })
    }

    #[test]
    fn decode_refuses_boxes_no_model_can_mean() {
        let cols = [
            [f32::NAN, 50.0, 30.0, 10.0, 0.9, 0.0, 0.0, 0.1],
            [100.0, 50.0, 0.0, 10.0, 0.9, 0.0, 0.0, 0.1],
            [100.0, 50.0, 30.0, -2.0, 0.9, 0.0, 0.0, 0.1],
            [100.0, 50.0, 30.0, 10.0, 0.9, 0.0, 0.0, f32::INFINITY],
            // Broken but below the floor: not a candidate, not counted.
            [f32::NAN, 50.0, 30.0, 10.0, 0.001, 0.0, 0.0, 0.1],
            [100.0, 50.0, 30.0, 10.0, 0.9, 0.0, 0.0, 0.1],
        ];
        let spec = DecodeSpec {
            floor: 0.01,
            multi_label: false,
            map: BoxMap::identity(),
            tile: None,
        };
        let mut out = Vec::new();
        assert_eq!(
            decode(&tensor(&cols), cols.len(), &names(), &spec, &mut out),
            4
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].obb.cx.is_finite() && out[0].obb.w > 0.0);
    }

    #[test]
    fn decode_keeps_geometry_and_classes_across_the_angle_range() {
        let fpi = std::f32::consts::PI;
        let cols = [
            // Angle just below 3pi/4 (the top of the exported range).
            [
                100.0,
                50.0,
                30.0,
                10.0,
                0.1,
                0.9,
                0.2,
                3.0 * fpi / 4.0 - 1e-4,
            ],
            // Negative angle near -pi/4.
            [200.0, 60.0, 12.0, 40.0, 0.8, 0.05, 0.02, -fpi / 4.0 + 1e-4],
            // Exactly pi/2: w and h must swap when regularised.
            [20.0, 30.0, 8.0, 4.0, 0.0, 0.0, 0.5, fpi / 2.0],
            // Below the floor: dropped.
            [5.0, 5.0, 3.0, 3.0, 0.005, 0.009, 0.001, 0.0],
        ];
        let t = tensor(&cols);
        let spec = DecodeSpec {
            floor: 0.01,
            multi_label: false,
            map: BoxMap::identity(),
            tile: None,
        };
        let mut out = Vec::new();
        decode(&t, 4, &names(), &spec, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!((out[0].class, &*out[0].class_name), (1, "vacancy"));
        assert_eq!(out[1].class, 0);
        assert_eq!(out[2].class, 2);
        for (d, c) in out.iter().zip(&cols) {
            let raw = OrientedBox::new(
                c[0] as f64,
                c[1] as f64,
                c[2] as f64,
                c[3] as f64,
                c[7] as f64,
            );
            assert!(same_rectangle(&d.obb, &raw, 1e-3), "{d:?} vs {raw:?}");
            assert!((0.0..PI / 2.0).contains(&d.obb.angle));
        }
        // pi/2 with w=8, h=4 is the axis-aligned 4 x 8 box.
        let b = out[2].obb;
        assert!(b.angle.abs() < 1e-6 || (PI / 2.0 - b.angle).abs() < 1e-6);
        let aabb = b.aabb();
        assert!((aabb[2] - aabb[0] - 4.0).abs() < 1e-4 && (aabb[3] - aabb[1] - 8.0).abs() < 1e-4);

        // Multi-label: one candidate per class above the floor.
        let spec = DecodeSpec {
            multi_label: true,
            ..spec
        };
        let mut out = Vec::new();
        decode(&t, 4, &names(), &spec, &mut out);
        let classes: Vec<usize> = out.iter().map(|d| d.class).collect();
        assert_eq!(classes, vec![0, 1, 2, 0, 1, 2, 2]);
    }

    #[test]
    fn letterbox_map_round_trips_and_matches_hand_values() {
        // A 100 x 50 image letterboxed into 64: gain 0.64, content 64 x 32, pad (0, 16).
        let m = BoxMap {
            pad: [0.0, 16.0],
            scale: [1.0 / 0.64, 1.0 / 0.64],
            offset: [0.0, 0.0],
        };
        let input = OrientedBox::new(32.0, 32.0, 6.4, 3.2, 0.3);
        let orig = m.apply(&input);
        assert!((orig.cx - 50.0).abs() < 1e-9 && (orig.cy - 25.0).abs() < 1e-9);
        assert!((orig.w - 10.0).abs() < 1e-9 && (orig.h - 5.0).abs() < 1e-9);
        let back = m.invert(&orig);
        assert!(same_rectangle(&back, &input, 1e-9));
    }

    fn det(class: usize, conf: f32, b: OrientedBox) -> Detection {
        Detection {
            class,
            class_name: names()[class].clone(),
            confidence: conf,
            obb: b,
            source: DetectionSource::Model,
        }
    }

    /// Fast-NMS by its definition, on the full upper triangle.
    fn brute(dets: &[Detection], thr: f64, agnostic: bool) -> Vec<usize> {
        (0..dets.len())
            .filter(|&j| {
                !(0..j).any(|i| {
                    (agnostic || dets[i].class == dets[j].class)
                        && probiou(&dets[i].obb, &dets[j].obb) >= thr
                })
            })
            .collect()
    }

    #[test]
    fn fast_nms_differs_from_greedy_as_ultralytics_does() {
        // A suppresses B, B would suppress C, A does not touch C: greedy keeps C, Fast-NMS
        // (Ultralytics) drops it.
        let a = OrientedBox::new(0.0, 0.0, 10.0, 4.0, 0.0);
        let b = OrientedBox::new(2.0, 0.0, 10.0, 4.0, 0.0);
        let c = OrientedBox::new(4.0, 0.0, 10.0, 4.0, 0.0);
        let (ab, bc, ac) = (probiou(&a, &b), probiou(&b, &c), probiou(&a, &c));
        let thr = 0.6;
        assert!(ab >= thr && bc >= thr && ac < thr, "{ab} {bc} {ac}");
        let dets = vec![det(1, 0.9, a), det(1, 0.8, b), det(1, 0.7, c)];
        assert_eq!(fast_nms(&dets, thr, false), vec![0]);
        let greedy: Vec<(OrientedBox, f32, usize)> = dets
            .iter()
            .map(|d| (d.obb, d.confidence, d.class))
            .collect();
        let g = crate::geometry::nms_rotated(&greedy, thr, crate::geometry::IouKind::ProbIou, true);
        assert_eq!(g, vec![0, 2]);
        // Another class is never suppressed unless agnostic.
        let dets = vec![det(1, 0.9, a), det(2, 0.8, b)];
        assert_eq!(fast_nms(&dets, thr, false), vec![0, 1]);
        assert_eq!(fast_nms(&dets, thr, true), vec![0]);
        // Exactly at the threshold suppresses (>=), as Ultralytics.
        let dets = vec![det(0, 0.9, a), det(0, 0.8, b)];
        assert_eq!(fast_nms(&dets, ab, false), vec![0]);
    }

    #[test]
    fn fast_nms_spatial_pruning_matches_brute_force() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
        for round in 0..20 {
            let n = 150;
            let mut dets: Vec<Detection> = (0..n)
                .map(|_| {
                    let b = OrientedBox::new(
                        rng.random_range(0.0..200.0),
                        rng.random_range(0.0..200.0),
                        rng.random_range(1.0..40.0),
                        rng.random_range(1.0..12.0),
                        rng.random_range(-0.8..2.4),
                    );
                    det(rng.random_range(0..3), rng.random_range(0.0..1.0), b)
                })
                .collect();
            sort_by_confidence(&mut dets);
            for thr in [0.05, 0.3, 0.7, 0.95] {
                for agnostic in [false, true] {
                    assert_eq!(
                        fast_nms(&dets, thr, agnostic),
                        brute(&dets, thr, agnostic),
                        "round {round} thr {thr} agnostic {agnostic}"
                    );
                }
            }
        }
    }

    #[test]
    fn filter_applies_strict_confidence_then_nms() {
        let a = OrientedBox::new(0.0, 0.0, 10.0, 4.0, 0.0);
        let b = OrientedBox::new(1.0, 0.0, 10.0, 4.0, 0.0);
        let far = OrientedBox::new(100.0, 0.0, 10.0, 4.0, 0.0);
        let cands = vec![det(0, 0.25, far), det(0, 0.6, b), det(0, 0.9, a)];
        let f = filter(&cands, 0.25, 0.7);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].confidence, 0.9);
        let f = filter(&cands, 0.2, 0.99);
        let confs: Vec<f32> = f.iter().map(|d| d.confidence).collect();
        assert_eq!(confs, vec![0.9, 0.6, 0.25]);
    }

    #[test]
    fn a_box_on_a_tile_seam_is_reported_once_by_the_tile_that_sees_it_whole() {
        use super::super::pre::plan_tiles;
        // A 96 x 64 image in 64-pixel tiles at x = 0 and 32; the seam core boundary is x = 48.
        let tiles = plan_tiles(96, 64, 64, 0.2);
        assert_eq!(tiles.len(), 2);
        assert_eq!(tiles[1].x0, 32);
        // The object spans x 56..64 (centre 60). Tile 0 sees it cut by its edge (x < 64 only
        // partly visible, box predicted 61 +- 3); tile 1 sees it whole (local 28 +- 4).
        let seen_by_0 = tensor(&[[61.0, 20.0, 6.0, 6.0, 0.0, 0.8, 0.0, 0.0]]);
        let seen_by_1 = tensor(&[[28.0, 20.0, 8.0, 6.0, 0.0, 0.7, 0.0, 0.0]]);
        let mut cands = Vec::new();
        for (t, out) in tiles.iter().zip([&seen_by_0, &seen_by_1]) {
            let spec = DecodeSpec {
                floor: 0.01,
                multi_label: false,
                map: BoxMap {
                    pad: [t.pad_x as f64, t.pad_y as f64],
                    scale: [1.0, 1.0],
                    offset: [t.x0 as f64, t.y0 as f64],
                },
                tile: Some(t),
            };
            decode(out, 1, &names(), &spec, &mut cands);
        }
        assert_eq!(cands.len(), 1, "{cands:?}");
        let d = &cands[0];
        assert!((d.obb.cx - 60.0).abs() < 1e-9);
        assert!(
            (d.obb.w.max(d.obb.h) - 8.0).abs() < 1e-9,
            "the whole box: {d:?}"
        );
        assert_eq!(d.confidence, 0.7);
    }

    #[test]
    fn boundary_fragments_on_one_line_join_into_one_box() {
        // A long box and a shorter, less confident one further along the same line (as the
        // model sees one boundary in two pieces): one box covering both, first one's score.
        let long = OrientedBox::new(100.0, 100.0, 120.0, 20.0, 0.3);
        let (c, s) = (0.3f64.cos(), 0.3f64.sin());
        let short = OrientedBox::new(100.0 + 90.0 * c, 100.0 + 90.0 * s + 3.0, 80.0, 18.0, 0.31);
        let out = merge_line_boxes(vec![det(0, 0.9, long), det(0, 0.5, short)], 0);
        assert_eq!(out.len(), 1);
        let b = out[0].obb;
        assert_eq!(out[0].confidence, 0.9);
        // From -60 to 90.9 + 40 along the axis (the 3 px offset across adds 3 sin 0.3):
        // length 190.9, centre at +35.4.
        let along = 90.0 + 3.0 * s;
        assert!((b.w.max(b.h) - (100.0 + along)).abs() < 1e-6, "{b:?}");
        assert!((b.w.min(b.h) - 20.0).abs() < 1e-9);
        let mid = (along + 40.0 - 60.0) / 2.0;
        assert!((b.cx - (100.0 + mid * c)).abs() < 1e-6 && (b.cy - (100.0 + mid * s)).abs() < 1e-6);
        // The same line described with swapped sides (h long, angle + 90 deg) joins too.
        let swapped = OrientedBox::new(
            100.0 - 80.0 * c,
            100.0 - 80.0 * s,
            18.0,
            60.0,
            0.3 + PI / 2.0,
        );
        assert_eq!(
            merge_line_boxes(vec![det(0, 0.9, long), det(0, 0.4, swapped)], 0).len(),
            1
        );
    }

    #[test]
    fn separate_boundaries_and_point_defects_are_left_alone() {
        let a = OrientedBox::new(100.0, 100.0, 200.0, 20.0, 0.0);
        // Parallel, one and a half widths away: another boundary.
        let parallel = OrientedBox::new(100.0, 130.0, 200.0, 20.0, 0.0);
        // Crossing at 30 degrees.
        let crossing = OrientedBox::new(100.0, 100.0, 200.0, 20.0, 30f64.to_radians());
        // On the same line but far beyond the end.
        let beyond = OrientedBox::new(400.0, 100.0, 100.0, 20.0, 0.0);
        let dets = vec![
            det(0, 0.9, a),
            det(0, 0.8, parallel),
            det(0, 0.7, crossing),
            det(0, 0.6, beyond),
        ];
        assert_eq!(merge_line_boxes(dets.clone(), 0).len(), 4);
        // Vacancies overlapping along a line are not boundaries.
        let v1 = OrientedBox::new(10.0, 10.0, 8.0, 6.0, 0.0);
        let v2 = OrientedBox::new(14.0, 10.0, 8.0, 6.0, 0.0);
        assert_eq!(
            merge_line_boxes(vec![det(1, 0.9, v1), det(1, 0.8, v2)], 0).len(),
            2
        );
        // Off, filter_with keeps what NMS keeps.
        let inner = OrientedBox::new(150.0, 100.0, 60.0, 20.0, 0.0);
        let cands = vec![det(0, 0.9, a), det(0, 0.8, inner)];
        let plain = filter_with(&cands, &FilterOptions::default());
        let merged = filter_with(
            &cands,
            &FilterOptions {
                merge_lines: Some(0),
                ..Default::default()
            },
        );
        assert_eq!((plain.len(), merged.len()), (2, 1));
        assert_eq!(
            line_class(&["vacancy".into(), "grain_boundary".into()]),
            Some(1)
        );
        assert_eq!(line_class(&["vacancy".into()]), None);
    }
}
