//! Where mAP50-95 is lost once a defect is found: the geometry of each matched box against
//! its label (angle, the two side lengths, the centre along and across the label's long
//! axis). mAP50-95 averages over IoU thresholds up to 0.95, so a box a pixel off across a
//! thin label or 3° off in angle counts as found at 0.5 and missed at 0.8; these medians say
//! which of the box's degrees of freedom to fix.

use super::metrics::ScoredBox;
use crate::geometry::{OrientedBox, probiou};
use crate::raster::median;
use std::f64::consts::PI;

/// Detections below this confidence are not matched (the confusion matrix's threshold: what a
/// user sees at the default setting).
pub const MATCH_CONF: f32 = 0.25;
/// Least ProbIoU of a match (mAP50's threshold).
pub const MATCH_IOU: f64 = 0.5;

/// One matched pair, in the label's frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxError {
    pub iou: f64,
    /// Angle of the detection's long axis minus the label's, folded into (−90°, 90°].
    pub angle_deg: f64,
    /// Detection's long side over the label's.
    pub long_ratio: f64,
    /// Detection's short side over the label's.
    pub short_ratio: f64,
    /// Centre offset along the label's long axis (px).
    pub along_px: f64,
    /// Centre offset across it (px).
    pub across_px: f64,
}

impl BoxError {
    pub fn between(det: &OrientedBox, label: &OrientedBox) -> Self {
        let (d, g) = (det.canonical(), label.canonical());
        let mut da = (d.angle - g.angle).rem_euclid(PI);
        if da > PI / 2.0 {
            da -= PI;
        }
        let (s, c) = g.angle.sin_cos();
        let (dx, dy) = (d.cx - g.cx, d.cy - g.cy);
        Self {
            iou: probiou(det, label),
            angle_deg: da.to_degrees(),
            long_ratio: d.w / g.w,
            short_ratio: d.h / g.h,
            along_px: dx * c + dy * s,
            across_px: -dx * s + dy * c,
        }
    }
}

/// Pairs detections with labels of the same class one to one, best ProbIoU first, keeping
/// pairs of at least [`MATCH_IOU`] with detections of at least [`MATCH_CONF`]. Returns
/// `(label index, detection index, error)`.
pub fn match_boxes(
    dets: &[ScoredBox],
    labels: &[(OrientedBox, usize)],
) -> Vec<(usize, usize, BoxError)> {
    let mut pairs: Vec<(usize, usize, f64)> = Vec::new();
    for (l, (g, gc)) in labels.iter().enumerate() {
        for (d, b) in dets.iter().enumerate() {
            if b.class != *gc || b.conf < MATCH_CONF {
                continue;
            }
            let iou = probiou(&b.obb, g);
            if iou >= MATCH_IOU {
                pairs.push((l, d, iou));
            }
        }
    }
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut used_l = vec![false; labels.len()];
    let mut used_d = vec![false; dets.len()];
    let mut out = Vec::new();
    for (l, d, _) in pairs {
        if used_l[l] || used_d[d] {
            continue;
        }
        used_l[l] = true;
        used_d[d] = true;
        let e = BoxError::between(&dets[d].obb, &labels[l].0);
        out.push((l, d, e));
    }
    out
}

/// Medians of one class's matched pairs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassBoxErrors {
    pub class: usize,
    pub name: String,
    pub matched: usize,
    pub labels: usize,
    pub median_iou: f64,
    /// Fraction of matches with ProbIoU ≥ 0.75 and ≥ 0.9.
    pub iou_at_least_075: f64,
    pub iou_at_least_090: f64,
    pub median_abs_angle_deg: f64,
    /// Medians of the side ratios (bias) and of |ratio − 1| (spread).
    pub median_long_ratio: f64,
    pub median_abs_long_error: f64,
    pub median_short_ratio: f64,
    pub median_abs_short_error: f64,
    pub median_abs_along_px: f64,
    pub median_abs_across_px: f64,
}

/// Collects matched pairs per class over a whole split.
#[derive(Clone, Debug, Default)]
pub struct BoxErrorTally {
    errors: Vec<Vec<BoxError>>,
    labels: Vec<usize>,
}

impl BoxErrorTally {
    pub fn new(num_classes: usize) -> Self {
        Self {
            errors: vec![Vec::new(); num_classes],
            labels: vec![0; num_classes],
        }
    }

    pub fn add_image(&mut self, dets: &[ScoredBox], labels: &[(OrientedBox, usize)]) {
        for (_, c) in labels {
            if let Some(n) = self.labels.get_mut(*c) {
                *n += 1;
            }
        }
        for (l, _, e) in match_boxes(dets, labels) {
            if let Some(v) = self.errors.get_mut(labels[l].1) {
                v.push(e);
            }
        }
    }

    /// One row per class with labels.
    pub fn summary(&self, names: &[String]) -> Vec<ClassBoxErrors> {
        (0..self.errors.len())
            .filter(|&c| self.labels[c] > 0)
            .map(|c| {
                let e = &self.errors[c];
                let med = |f: &dyn Fn(&BoxError) -> f64| median(e.iter().map(f).collect());
                let frac = |t: f64| {
                    if e.is_empty() {
                        f64::NAN
                    } else {
                        e.iter().filter(|x| x.iou >= t).count() as f64 / e.len() as f64
                    }
                };
                ClassBoxErrors {
                    class: c,
                    name: names.get(c).cloned().unwrap_or_else(|| c.to_string()),
                    matched: e.len(),
                    labels: self.labels[c],
                    median_iou: med(&|x| x.iou),
                    iou_at_least_075: frac(0.75),
                    iou_at_least_090: frac(0.9),
                    median_abs_angle_deg: med(&|x| x.angle_deg.abs()),
                    median_long_ratio: med(&|x| x.long_ratio),
                    median_abs_long_error: med(&|x| (x.long_ratio - 1.0).abs()),
                    median_short_ratio: med(&|x| x.short_ratio),
                    median_abs_short_error: med(&|x| (x.short_ratio - 1.0).abs()),
                    median_abs_along_px: med(&|x| x.along_px.abs()),
                    median_abs_across_px: med(&|x| x.across_px.abs()),
                }
            })
            .collect()
    }
}

/// The report's table of [`ClassBoxErrors`].
pub fn table(rows: &[ClassBoxErrors]) -> String {
    let mut s = format!(
        "\nMatched box geometry (conf ≥ {MATCH_CONF}, ProbIoU ≥ {MATCH_IOU}; medians):\n{:>22}{:>10}{:>8}{:>8}{:>8}{:>8}{:>15}{:>15}{:>9}{:>9}\n",
        "Class",
        "matched",
        "IoU",
        "≥0.75",
        "≥0.90",
        "|Δθ|°",
        "long (±)",
        "short (±)",
        "|along|",
        "|across|"
    );
    for r in rows {
        s += &format!(
            "{:>22}{:>10}{:>8.3}{:>8.2}{:>8.2}{:>8.2}{:>15}{:>15}{:>9.2}{:>9.2}\n",
            r.name,
            format!("{}/{}", r.matched, r.labels),
            r.median_iou,
            r.iou_at_least_075,
            r.iou_at_least_090,
            r.median_abs_angle_deg,
            format!("{:.3}±{:.3}", r.median_long_ratio, r.median_abs_long_error),
            format!(
                "{:.3}±{:.3}",
                r.median_short_ratio, r.median_abs_short_error
            ),
            r.median_abs_along_px,
            r.median_abs_across_px,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_measured_in_the_labels_frame_whatever_the_side_convention() {
        let g = OrientedBox::new(100.0, 50.0, 40.0, 20.0, 30f64.to_radians());
        // The same box written with swapped sides is no error at all.
        let same = OrientedBox::new(100.0, 50.0, 20.0, 40.0, 120f64.to_radians());
        let e = BoxError::between(&same, &g);
        assert!(
            e.angle_deg.abs() < 1e-9 && (e.iou - 1.0).abs() < 1e-3,
            "{e:?}"
        );
        assert!((e.long_ratio - 1.0).abs() < 1e-12 && (e.short_ratio - 1.0).abs() < 1e-12);
        // Moved 3 px along the long axis and 1 px across, 2° turned, 10 % longer.
        let (s, c) = 30f64.to_radians().sin_cos();
        let d = OrientedBox::new(
            100.0 + 3.0 * c - 1.0 * s,
            50.0 + 3.0 * s + 1.0 * c,
            44.0,
            20.0,
            (30f64 + 2.0 + 180.0).to_radians(),
        );
        let e = BoxError::between(&d, &g);
        assert!((e.angle_deg - 2.0).abs() < 1e-9, "{e:?}");
        assert!((e.along_px - 3.0).abs() < 1e-9 && (e.across_px - 1.0).abs() < 1e-9);
        assert!((e.long_ratio - 1.1).abs() < 1e-12 && (e.short_ratio - 1.0).abs() < 1e-12);
        // Turning the other way across 0° folds to a small negative angle.
        let g0 = OrientedBox::new(0.0, 0.0, 40.0, 20.0, 1f64.to_radians());
        let d0 = OrientedBox::new(0.0, 0.0, 40.0, 20.0, 179f64.to_radians());
        assert!((BoxError::between(&d0, &g0).angle_deg + 2.0).abs() < 1e-9);
    }

    #[test]
    fn matching_is_one_to_one_by_class_confidence_and_overlap() {
        let g = OrientedBox::new(50.0, 50.0, 20.0, 14.0, 0.0);
        let near = OrientedBox::new(51.0, 50.0, 20.0, 14.0, 0.0);
        let nearer = OrientedBox::new(50.2, 50.0, 20.0, 14.0, 0.0);
        let labels = vec![(g, 1)];
        let sb = |obb, conf, class| ScoredBox { obb, conf, class };
        // The better overlap wins; the other detection stays unmatched.
        let m = match_boxes(&[sb(near, 0.9, 1), sb(nearer, 0.5, 1)], &labels);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].0, m[0].1), (0, 1));
        // Wrong class, low confidence, or a box elsewhere: no match.
        assert!(match_boxes(&[sb(nearer, 0.9, 2)], &labels).is_empty());
        assert!(match_boxes(&[sb(nearer, 0.1, 1)], &labels).is_empty());
        let far = OrientedBox::new(90.0, 50.0, 20.0, 14.0, 0.0);
        assert!(match_boxes(&[sb(far, 0.9, 1)], &labels).is_empty());
        let mut t = BoxErrorTally::new(3);
        t.add_image(&[sb(near, 0.9, 1)], &labels);
        t.add_image(&[], &labels);
        let rows = t.summary(&["gb".into(), "vac".into(), "int".into()]);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].matched, rows[0].labels), (1, 2));
        assert!((rows[0].median_abs_along_px - 1.0).abs() < 1e-9);
        assert!(table(&rows).contains("1/2"));
    }
}
