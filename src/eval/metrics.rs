//! Detection metrics with Ultralytics' definitions (`ultralytics/utils/metrics.py` and the OBB
//! validator), reimplemented: matching at 10 IoU thresholds, AP from the 101-point
//! interpolated precision envelope, precision and recall at the maximum of the smoothed mean
//! F1 curve, and the detection confusion matrix with a background row and column.
//!
//! Numerical details follow NumPy where they change results: `np.interp` semantics (including
//! its choice at repeated abscissae), `np.linspace`, `np.trapz`, banker's rounding of
//! `np.round`, and Ultralytics' AP of 0.995 for a perfect detector (the envelope is 0 at
//! recall 1 because of the sentinel).

use crate::geometry::{OrientedBox, probiou};

/// Number of IoU thresholds, 0.50:0.05:0.95.
pub const N_IOU: usize = 10;

/// `torch.linspace(0.5, 0.95, 10)` (float32, as the IoU matrix is compared in float32).
pub fn iou_thresholds() -> [f32; N_IOU] {
    let mut t = [0f32; N_IOU];
    let step = (0.95f32 - 0.5f32) / 9.0;
    for (i, v) in t.iter_mut().enumerate() {
        *v = 0.5 + step * i as f32;
    }
    t[N_IOU - 1] = 0.95;
    t
}

/// Per-detection correctness at each IoU threshold.
pub type Correct = [bool; N_IOU];

/// `BaseValidator.match_predictions` without SciPy. `iou[l][d]` is the IoU of label `l` and
/// detection `d`. Pairs of equal class with IoU >= threshold are ranked by IoU; each detection
/// keeps its best label; then each label keeps the pair that comes first *in detection order*
/// (an Ultralytics quirk: after the first de-duplication the pairs are sorted by detection
/// index, so a more confident detection wins over a better-overlapping later one).
pub fn match_predictions(pred_cls: &[usize], true_cls: &[usize], iou: &[Vec<f64>]) -> Vec<Correct> {
    let mut correct = vec![[false; N_IOU]; pred_cls.len()];
    for (ti, &thr) in iou_thresholds().iter().enumerate() {
        // np.nonzero order: row-major over (label, detection).
        let mut pairs: Vec<(usize, usize, f32)> = Vec::new();
        for (l, row) in iou.iter().enumerate() {
            for (d, &v) in row.iter().enumerate() {
                let v = if true_cls[l] == pred_cls[d] {
                    v as f32
                } else {
                    0.0
                };
                if v >= thr {
                    pairs.push((l, d, v));
                }
            }
        }
        if pairs.len() > 1 {
            // argsort ascending (stable for these sizes) then reversed.
            pairs.sort_by(|a, b| a.2.total_cmp(&b.2));
            pairs.reverse();
            pairs = unique_first(pairs, |p| p.1);
            pairs = unique_first(pairs, |p| p.0);
        }
        for (_, d, _) in pairs {
            correct[d][ti] = true;
        }
    }
    correct
}

/// `x[np.unique(key(x), return_index=True)[1]]`: the first row of each key, ordered by key.
fn unique_first<T: Copy>(rows: Vec<T>, key: impl Fn(&T) -> usize) -> Vec<T> {
    let mut firsts: std::collections::BTreeMap<usize, T> = std::collections::BTreeMap::new();
    for r in rows {
        firsts.entry(key(&r)).or_insert(r);
    }
    firsts.into_values().collect()
}

/// `np.linspace(0, 1, n)`.
pub fn linspace01(n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![0.0];
    }
    let step = 1.0 / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    v[n - 1] = 1.0;
    v
}

/// `np.interp(x, xp, fp, left, right)` for non-decreasing `xp`: at a repeated abscissa the
/// value of the last repeat is used, as NumPy's binary search does.
pub fn interp(x: f64, xp: &[f64], fp: &[f64], left: f64, right: f64) -> f64 {
    let n = xp.len();
    if n == 0 {
        return f64::NAN;
    }
    if x > xp[n - 1] {
        return right;
    }
    if x < xp[0] {
        return left;
    }
    let j = xp.partition_point(|&v| v <= x) - 1;
    if j == n - 1 || xp[j] == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    let v = slope * (x - xp[j]) + fp[j];
    if v.is_nan() {
        let v2 = slope * (x - xp[j + 1]) + fp[j + 1];
        if v2.is_nan() && fp[j] == fp[j + 1] {
            return fp[j];
        }
        return v2;
    }
    v
}

/// `np.trapz(y, x)`.
fn trapz(y: &[f64], x: &[f64]) -> f64 {
    (1..y.len())
        .map(|i| (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2.0)
        .sum()
}

/// `compute_ap` ('interp' method): sentinels, precision envelope, 101-point interpolation,
/// trapezoidal integration.
pub fn compute_ap(recall: &[f64], precision: &[f64]) -> f64 {
    let mut mrec = Vec::with_capacity(recall.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(recall);
    mrec.push(1.0);
    let mut mpre = Vec::with_capacity(precision.len() + 2);
    mpre.push(1.0);
    mpre.extend_from_slice(precision);
    mpre.push(0.0);
    for i in (0..mpre.len() - 1).rev() {
        mpre[i] = mpre[i].max(mpre[i + 1]);
    }
    let x = linspace01(101);
    let y: Vec<f64> = x
        .iter()
        .map(|&xi| interp(xi, &mrec, &mpre, mpre[0], mpre[mpre.len() - 1]))
        .collect();
    trapz(&y, &x)
}

/// `smooth(y, f)`: box filter with edge replication.
pub fn smooth(y: &[f64], f: f64) -> Vec<f64> {
    let nf = ((y.len() as f64 * f * 2.0).round_ties_even() as usize) / 2 + 1;
    let half = nf / 2;
    let mut yp = Vec::with_capacity(y.len() + 2 * half);
    yp.extend(std::iter::repeat_n(y[0], half));
    yp.extend_from_slice(y);
    yp.extend(std::iter::repeat_n(y[y.len() - 1], half));
    let w = 1.0 / nf as f64;
    (0..y.len())
        .map(|k| yp[k..k + nf].iter().map(|v| v * w).sum())
        .collect()
}

/// The outcome of [`ap_per_class`], one entry per class present in the labels.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ApResult {
    /// Class ids with at least one label, ascending (Ultralytics `ap_class_index`).
    pub classes: Vec<usize>,
    /// Labels per class.
    pub n_labels: Vec<usize>,
    pub tp: Vec<f64>,
    pub fp: Vec<f64>,
    /// Precision, recall and F1 at the confidence of maximum smoothed mean F1.
    pub p: Vec<f64>,
    pub r: Vec<f64>,
    pub f1: Vec<f64>,
    /// AP per class at each IoU threshold.
    pub ap: Vec<[f64; N_IOU]>,
    /// The confidence where P and R are read.
    pub best_conf: f64,
}

impl ApResult {
    fn mean(v: impl Iterator<Item = f64>, n: usize) -> f64 {
        if n == 0 {
            0.0
        } else {
            v.sum::<f64>() / n as f64
        }
    }
    pub fn mp(&self) -> f64 {
        Self::mean(self.p.iter().copied(), self.p.len())
    }
    pub fn mr(&self) -> f64 {
        Self::mean(self.r.iter().copied(), self.r.len())
    }
    pub fn map50(&self) -> f64 {
        Self::mean(self.ap.iter().map(|a| a[0]), self.ap.len())
    }
    pub fn map75(&self) -> f64 {
        Self::mean(self.ap.iter().map(|a| a[5]), self.ap.len())
    }
    /// mAP50-95: mean over classes and the 10 thresholds.
    pub fn map(&self) -> f64 {
        Self::mean(
            self.ap.iter().map(|a| a.iter().sum::<f64>() / N_IOU as f64),
            self.ap.len(),
        )
    }
    pub fn class_ap(&self, i: usize) -> f64 {
        self.ap[i].iter().sum::<f64>() / N_IOU as f64
    }
}

/// `ap_per_class`: `tp`, `conf`, `pred_cls` per detection over the whole split, `target_cls`
/// per label.
pub fn ap_per_class(
    tp: &[Correct],
    conf: &[f32],
    pred_cls: &[usize],
    target_cls: &[usize],
) -> ApResult {
    const EPS: f64 = 1e-16;
    let mut order: Vec<usize> = (0..conf.len()).collect();
    order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]));
    let mut counts: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
    for &c in target_cls {
        *counts.entry(c).or_default() += 1;
    }
    let classes: Vec<usize> = counts.keys().copied().collect();
    let nt: Vec<usize> = counts.values().copied().collect();
    let nc = classes.len();
    let x = linspace01(1000);
    let mut ap = vec![[0.0; N_IOU]; nc];
    let mut p_curve = vec![vec![0.0; x.len()]; nc];
    let mut r_curve = vec![vec![0.0; x.len()]; nc];
    for (ci, &c) in classes.iter().enumerate() {
        let idx: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| pred_cls[i] == c)
            .collect();
        let n_l = nt[ci] as f64;
        if idx.is_empty() {
            continue;
        }
        let neg_conf: Vec<f64> = idx.iter().map(|&i| -(conf[i] as f64)).collect();
        let mut recall = vec![vec![0.0; idx.len()]; N_IOU];
        let mut precision = vec![vec![0.0; idx.len()]; N_IOU];
        for j in 0..N_IOU {
            let (mut tpc, mut fpc) = (0.0, 0.0);
            for (k, &i) in idx.iter().enumerate() {
                if tp[i][j] {
                    tpc += 1.0;
                } else {
                    fpc += 1.0;
                }
                recall[j][k] = tpc / (n_l + EPS);
                precision[j][k] = tpc / (tpc + fpc);
            }
        }
        let last_r = *recall[0].last().unwrap_or(&0.0);
        let last_p = *precision[0].last().unwrap_or(&0.0);
        for (k, &xk) in x.iter().enumerate() {
            r_curve[ci][k] = interp(-xk, &neg_conf, &recall[0], 0.0, last_r);
            p_curve[ci][k] = interp(-xk, &neg_conf, &precision[0], 1.0, last_p);
        }
        for j in 0..N_IOU {
            ap[ci][j] = compute_ap(&recall[j], &precision[j]);
        }
    }
    let f1_curve: Vec<Vec<f64>> = (0..nc)
        .map(|ci| {
            (0..x.len())
                .map(|k| {
                    let (p, r) = (p_curve[ci][k], r_curve[ci][k]);
                    2.0 * p * r / (p + r + EPS)
                })
                .collect()
        })
        .collect();
    let best = if nc == 0 {
        0
    } else {
        let mean: Vec<f64> = (0..x.len())
            .map(|k| f1_curve.iter().map(|c| c[k]).sum::<f64>() / nc as f64)
            .collect();
        let s = smooth(&mean, 0.1);
        // First index of the maximum, as np.argmax.
        let mut bi = 0;
        for (k, v) in s.iter().enumerate() {
            if *v > s[bi] {
                bi = k;
            }
        }
        bi
    };
    let p: Vec<f64> = p_curve.iter().map(|c| c[best]).collect();
    let r: Vec<f64> = r_curve.iter().map(|c| c[best]).collect();
    let f1: Vec<f64> = f1_curve.iter().map(|c| c[best]).collect();
    let tp_n: Vec<f64> = r
        .iter()
        .zip(&nt)
        .map(|(r, &n)| (r * n as f64).round_ties_even())
        .collect();
    let fp_n: Vec<f64> = tp_n
        .iter()
        .zip(&p)
        .map(|(t, p)| (t / (p + EPS) - t).round_ties_even())
        .collect();
    ApResult {
        classes,
        n_labels: nt,
        tp: tp_n,
        fp: fp_n,
        p,
        r,
        f1,
        ap,
        best_conf: x[best],
    }
}

/// The detection confusion matrix: rows predicted class, columns true class, the last row and
/// column "background" (`ConfusionMatrix.process_batch` for OBB).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConfusionMatrix {
    pub nc: usize,
    /// `(nc + 1) x (nc + 1)`, `matrix[pred][true]`.
    pub matrix: Vec<Vec<f64>>,
    pub conf: f32,
    pub iou_thres: f64,
}

/// A detection for the confusion matrix and matching.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoredBox {
    pub obb: OrientedBox,
    pub conf: f32,
    pub class: usize,
}

impl ConfusionMatrix {
    /// Ultralytics replaces its default `val` confidence (0.01 for OBB) by 0.25 here and keeps
    /// any other value the user gave.
    pub fn for_val_conf(nc: usize, val_conf: f32) -> Self {
        let conf = if (val_conf - 0.01).abs() < 1e-9 {
            0.25
        } else {
            val_conf
        };
        Self::new(nc, conf, 0.45)
    }

    pub fn new(nc: usize, conf: f32, iou_thres: f64) -> Self {
        Self {
            nc,
            matrix: vec![vec![0.0; nc + 1]; nc + 1],
            conf,
            iou_thres,
        }
    }

    pub fn process_batch(&mut self, dets: &[ScoredBox], gts: &[(OrientedBox, usize)]) {
        let bg = self.nc;
        let dets: Vec<&ScoredBox> = dets.iter().filter(|d| d.conf > self.conf).collect();
        if gts.is_empty() {
            for d in &dets {
                self.matrix[d.class][bg] += 1.0;
            }
            return;
        }
        if dets.is_empty() {
            for (_, gc) in gts {
                self.matrix[bg][*gc] += 1.0;
            }
            return;
        }
        // (gt, det, iou) with iou > threshold, in torch.where order (row-major).
        let mut m: Vec<(usize, usize, f32)> = Vec::new();
        for (g, (gb, _)) in gts.iter().enumerate() {
            for (d, det) in dets.iter().enumerate() {
                let v = probiou(gb, &det.obb) as f32;
                if v as f64 > self.iou_thres {
                    m.push((g, d, v));
                }
            }
        }
        if m.len() > 1 {
            let by_iou_desc = |v: &mut Vec<(usize, usize, f32)>| {
                v.sort_by(|a, b| a.2.total_cmp(&b.2));
                v.reverse();
            };
            by_iou_desc(&mut m);
            m = unique_first(m, |p| p.1);
            by_iou_desc(&mut m);
            m = unique_first(m, |p| p.0);
        }
        for (g, (_, gc)) in gts.iter().enumerate() {
            let hits: Vec<&(usize, usize, f32)> = m.iter().filter(|p| p.0 == g).collect();
            if hits.len() == 1 {
                self.matrix[dets[hits[0].1].class][*gc] += 1.0;
            } else {
                self.matrix[bg][*gc] += 1.0;
            }
        }
        for (d, det) in dets.iter().enumerate() {
            if !m.iter().any(|p| p.1 == d) {
                self.matrix[det.class][bg] += 1.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn thresholds_and_linspace() {
        let t = iou_thresholds();
        assert_eq!(t[0], 0.5);
        assert!((t[1] - 0.55).abs() < 1e-7 && t[9] == 0.95);
        let x = linspace01(101);
        assert_eq!((x[0], x[50], x[100]), (0.0, 0.5, 1.0));
    }

    #[test]
    fn interp_follows_numpy() {
        let xp = [0.0, 0.5, 0.5, 1.0];
        let fp = [1.0, 1.0, 0.5, 0.25];
        assert_eq!(interp(0.25, &xp, &fp, 9.0, 9.0), 1.0);
        // At a repeated abscissa NumPy returns the last repeat's value.
        assert_eq!(interp(0.5, &xp, &fp, 9.0, 9.0), 0.5);
        assert!(close(interp(0.75, &xp, &fp, 9.0, 9.0), 0.375));
        assert_eq!(interp(1.0, &xp, &fp, 9.0, 7.0), 0.25);
        assert_eq!(interp(-0.1, &xp, &fp, 9.0, 7.0), 9.0);
        assert_eq!(interp(1.1, &xp, &fp, 9.0, 7.0), 7.0);
    }

    #[test]
    fn ap_of_a_perfect_detector_is_0995() {
        // mrec [0, 1, 1], envelope [1, 1, 0]: 1 up to recall 0.99, 0 at recall 1.
        assert!(close(compute_ap(&[1.0], &[1.0]), 0.995));
    }

    #[test]
    fn ap_by_hand() {
        // 2 labels; detections TP, FP, TP by confidence: recall .5 .5 1, precision 1 .5 2/3.
        // Envelope: 1 on [0, .5), 2/3 from .5 (the repeat's value) to .99, 0 at 1.
        // Trapezoids: 49 * .01 + .01 * (1 + 2/3)/2 + 49 * .01 * 2/3 + .01 * (2/3)/2.
        let expect = 0.49 + 0.005 * (5.0 / 3.0) + 0.49 * (2.0 / 3.0) + 0.005 * (2.0 / 3.0);
        let ap = compute_ap(&[0.5, 0.5, 1.0], &[1.0, 0.5, 2.0 / 3.0]);
        assert!(close(ap, expect), "{ap} vs {expect}");
        assert!(close(expect, 0.828_333_333_333_333_3));
    }

    #[test]
    fn smoothing_window() {
        // 1000 points at f = 0.1: a 101-point box filter.
        let mut y = vec![0.0; 1000];
        y[500] = 101.0;
        let s = smooth(&y, 0.1);
        assert!(close(s[450], 1.0) && close(s[550], 1.0));
        assert!(close(s[449], 0.0) && close(s[551], 0.0));
        // Edges are padded with the end values.
        let s = smooth(&[2.0; 1000], 0.1);
        assert!(s.iter().all(|v| (v - 2.0).abs() < 1e-12));
    }

    #[test]
    fn matching_is_greedy_by_iou_and_class_aware() {
        // Labels: two of class 0. Detections: d0 (class 0), d1 (class 0), d2 (class 1).
        let iou = vec![vec![0.9, 0.8, 0.95], vec![0.6, 0.0, 0.0]];
        let c = match_predictions(&[0, 0, 1], &[0, 0], &iou);
        // At 0.5: d0 takes label 0 (its best, 0.9); d1 also prefers label 0 (0.8) and loses;
        // label 1 is not re-matched to d0 (0.6) because d0 already chose label 0.
        assert_eq!((c[0][0], c[1][0], c[2][0]), (true, false, false));
        // From 0.85 only the 0.9 pair is left; at 0.95 nothing.
        assert!(c[0][7]);
        assert!(!c[0][9] && !c[1][9] && !c[2][9]);
    }

    #[test]
    fn matching_prefers_the_earlier_detection_per_label() {
        // One label; d0 (more confident) overlaps 0.6, d1 overlaps 0.9.
        let iou = vec![vec![0.6, 0.9]];
        let c = match_predictions(&[0, 0], &[0], &iou);
        // Up to 0.6 the label goes to d0 (Ultralytics' ordering quirk), above it to d1.
        assert_eq!((c[0][0], c[1][0]), (true, false));
        assert_eq!((c[0][2], c[1][2]), (true, false));
        assert_eq!((c[0][3], c[1][3]), (false, true));
        assert_eq!((c[0][9], c[1][9]), (false, false));
    }

    #[test]
    fn ap_per_class_by_hand() {
        // Class 0: 2 labels, detections TP (0.9), FP (0.8), TP (0.7) at every threshold.
        // Class 1: 1 label, no detections. Class 2: detections only (ignored).
        let t = [true; N_IOU];
        let f = [false; N_IOU];
        let r = ap_per_class(
            &[f, t, t, f],
            &[0.8, 0.9, 0.7, 0.95],
            &[0, 0, 0, 2],
            &[0, 0, 1],
        );
        assert_eq!(r.classes, vec![0, 1]);
        assert_eq!(r.n_labels, vec![2, 1]);
        let ap0 = 0.828_333_333_333_333_3;
        assert!(r.ap[0].iter().all(|a| close(*a, ap0)));
        assert!(r.ap[1].iter().all(|a| *a == 0.0));
        // F1 of class 0 peaks (0.8) for every confidence <= 0.7 (P 2/3, R 1); the smoothed
        // mean is flat there, so argmax is the first point: confidence 0.
        assert_eq!(r.best_conf, 0.0);
        assert!(close(r.p[0], 2.0 / 3.0) && close(r.r[0], 1.0));
        assert!((r.f1[0] - 0.8).abs() < 1e-12);
        assert_eq!((r.p[1], r.r[1]), (0.0, 0.0));
        assert_eq!((r.tp[0], r.fp[0]), (2.0, 1.0));
        assert!(close(r.mp(), 1.0 / 3.0) && close(r.mr(), 0.5));
        assert!(close(r.map50(), ap0 / 2.0) && close(r.map(), ap0 / 2.0));
    }

    #[test]
    fn precision_recall_between_detections_are_interpolated_in_confidence() {
        // One label, one TP at 1.0 and one FP at 0.5: F1 is 1 at confidence 1 and falls to
        // 2/3 below 0.5, so the smoothed maximum sits at the top end (P = R = 1).
        let t = [true; N_IOU];
        let r = ap_per_class(&[t, [false; N_IOU]], &[1.0, 0.5], &[0, 0], &[0]);
        assert!(close(r.ap[0][0], 0.995));
        assert_eq!(r.best_conf, 1.0);
        assert_eq!((r.p[0], r.r[0]), (1.0, 1.0));
    }

    #[test]
    fn confusion_matrix_by_hand() {
        let g0 = OrientedBox::new(10.0, 10.0, 8.0, 4.0, 0.2);
        let g1 = OrientedBox::new(50.0, 10.0, 8.0, 4.0, 0.0);
        let near_g1 = OrientedBox::new(50.5, 10.0, 8.0, 4.0, 0.0);
        let far = OrientedBox::new(90.0, 90.0, 8.0, 4.0, 0.0);
        let mut cm = ConfusionMatrix::for_val_conf(2, 0.01);
        assert_eq!((cm.conf, cm.iou_thres), (0.25, 0.45));
        let dets = [
            ScoredBox {
                obb: g0,
                conf: 0.9,
                class: 0,
            }, // correct
            ScoredBox {
                obb: near_g1,
                conf: 0.8,
                class: 0,
            }, // right place, wrong class
            ScoredBox {
                obb: far,
                conf: 0.2,
                class: 1,
            }, // below 0.25: ignored
            ScoredBox {
                obb: far,
                conf: 0.5,
                class: 1,
            }, // background FP
        ];
        cm.process_batch(&dets, &[(g0, 0), (g1, 1)]);
        let m = &cm.matrix;
        assert_eq!(m[0], vec![1.0, 1.0, 0.0]);
        assert_eq!(m[1], vec![0.0, 0.0, 1.0]);
        assert_eq!(m[2], vec![0.0, 0.0, 0.0]);
        // An image without labels: confident detections are background FPs; without
        // detections, labels are missed (background row).
        cm.process_batch(&dets, &[]);
        assert_eq!(m_at(&cm, 0, 2), 2.0);
        assert_eq!(m_at(&cm, 1, 2), 2.0);
        cm.process_batch(&[], &[(g0, 0)]);
        assert_eq!(m_at(&cm, 2, 0), 1.0);
        // Any other val confidence is used as given.
        assert_eq!(ConfusionMatrix::for_val_conf(2, 0.4).conf, 0.4);
    }

    fn m_at(cm: &ConfusionMatrix, p: usize, t: usize) -> f64 {
        cm.matrix[p][t]
    }
}
