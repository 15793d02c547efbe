//! Model detections joined with the boxes of a second, training-free detector (the lattice
//! analysis). `--method both` takes the point defects from the model alone and joins the
//! boundaries:
//! - A lattice boundary that a model grain-boundary box agrees with (its centre within one box
//!   width of the lattice line and its long axis within 20°) raises that box's confidence to
//!   `1 − (1 − c_model)(1 − c_lattice)`, the chance that at least one of two independent
//!   detectors is right, and marks it `Both`. The joined box keeps the model's geometry unless
//!   the lattice's box is [`LATTICE_EXTENDS`] times as long: then the model saw only part of
//!   the boundary, and the lattice's ridge line is the better measure.
//! - A lattice boundary no shown model box agrees with is added as `Lattice` at
//!   [`UNCONFIRMED_BOUNDARY_WEIGHT`] of its score, if the model drew a box along it at all
//!   (at [`SECOND_FLOOR`] or above); one the model shows no sign of is left out.
//!
//! How each rule was chosen, measured on 160 synthetic frames (seeds 8888 and 7777, the
//! realistic recipe, its d′ ≥ 5 labels) and on the real frames' 39 acquisition variants
//! (`eval-real --variants default`), is in the README ("What `both` joins").

use super::{Detection, DetectionSource};
use crate::classes::DefectClass;
use crate::geometry::OrientedBox;
use std::sync::Arc;

/// Which detectors to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectMethod {
    Model,
    Lattice,
    #[default]
    Both,
}

impl DetectMethod {
    /// Whether the method shows the lattice analysis' own point defects. `both` takes point
    /// defects from the model alone ([`join`]), so a front end whose method is fixed can skip
    /// that step of the analysis (half its time on a 512² frame).
    pub fn uses_lattice_points(self) -> bool {
        self == DetectMethod::Lattice
    }

    pub const ALL: [DetectMethod; 3] = [
        DetectMethod::Model,
        DetectMethod::Lattice,
        DetectMethod::Both,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DetectMethod::Model => "model",
            DetectMethod::Lattice => "lattice",
            DetectMethod::Both => "both",
        }
    }
}

/// Largest angle between the long axes of two boxes that describe the same boundary.
pub const AGREE_DEG: f64 = 20.0;

/// A box from another detector: class, box in image pixels, score in 0..=1.
pub type OtherBox = (DefectClass, OrientedBox, f32);

/// The angle between two boxes' long axes, in degrees (0..=90).
pub fn axis_angle_deg(a: &OrientedBox, b: &OrientedBox) -> f64 {
    let d = (a.long_axis().0 - b.long_axis().0)
        .to_degrees()
        .rem_euclid(180.0);
    d.min(180.0 - d)
}

/// Distance of `b`'s centre from the long axis of `a` (px).
pub fn off_axis(a: &OrientedBox, b: &OrientedBox) -> f64 {
    let t = a.long_axis().0;
    let n = [-t.sin(), t.cos()];
    ((b.cx - a.cx) * n[0] + (b.cy - a.cy) * n[1]).abs()
}

/// Along-axis overlap test: `b`'s centre lies within `a`'s length (plus a margin).
fn along_inside(a: &OrientedBox, b: &OrientedBox, margin: f64) -> bool {
    let (t, len) = a.long_axis();
    let along = (b.cx - a.cx) * t.cos() + (b.cy - a.cy) * t.sin();
    along.abs() <= len / 2.0 + margin
}

/// A lattice boundary that no model box confirms enters `both` at this fraction of its score.
/// On 160 synthetic frames 1 of 16 such boxes was a labelled boundary, and at full score they
/// ranked above the model's boundaries (boundary mAP50 0.948 against 0.956 at half); on the
/// real frames' variants they find boundaries the model misses (33 of 39 variants met with
/// them, 30 without), and at half score they still do.
pub const UNCONFIRMED_BOUNDARY_WEIGHT: f32 = 0.5;

/// A boundary only the lattice sees enters `both` only where the model, too, drew a boundary
/// box along it of at least this confidence, far below the threshold a result is shown at
/// ([`join`]'s `seconds`). The lattice's ridges also trace the edges of a wide disordered band,
/// a lattice bent by the scan, or strain: on the 400 validation frames (seed 20261206, d′ ≥ 5,
/// `--tta` + finished) its lone boxes put 52 boundary boxes on no boundary at 0.25 against 491
/// found; seconded at 0.01 / 0.03 / 0.1, 22 / 14 / 11 against 490 / 488 / 486, mAP50 0.9698 /
/// 0.9698 / 0.969 (0.9698 before). On the real Si tilt frame's 13 acquisitions, the extra
/// boxes of the 30° and 45° scan rotations and at 0.7× are such ridges (README, "What `both`
/// joins").
pub const SECOND_FLOOR: f32 = 0.03;

/// A confirmed boundary takes the lattice's box when that box is at least this many times as
/// long as the model's. On real frames the model often boxes a part of a boundary the lattice
/// traces across the field (one pass: 77 % of the CdTe tilt boundary, 40 % of the Si one); on
/// synthetic frames the lattice's ridge runs past T-junctions and sits off the band where
/// boundaries meet, where the model's box is the right one (boundary mAP50 0.884 with the
/// lattice's box always, 0.956 this way; 1.1 lost 0.012 of it, 1.25 to 1.5 nothing).
pub const LATTICE_EXTENDS: f64 = 1.25;

/// What `method` shows: the model's detections (already filtered), the other detector's boxes
/// at or above `conf`, or both joined (the model's point defects, the boundaries of both;
/// see the module's notes). Under `both`, with `seconds` (the model's boundary boxes down to
/// [`SECOND_FLOOR`]), a lattice boundary that neither a shown model box nor one of `seconds`
/// agrees with is left out; without, it enters alone.
pub fn join(
    method: DetectMethod,
    model: Vec<Detection>,
    seconds: Option<&[Detection]>,
    other: &[OtherBox],
    conf: f32,
    names: &[String],
) -> Vec<Detection> {
    match method {
        DetectMethod::Model => model,
        DetectMethod::Lattice => {
            let other: Vec<OtherBox> = other.iter().copied().filter(|d| d.2 >= conf).collect();
            combine(Vec::new(), &other, names, 1.0)
        }
        DetectMethod::Both => {
            // The analysis' point findings are left out: on synthetic frames every way of
            // joining them (added at full, half or a quarter of their score, or raising the
            // confidence of a model box they agree with) lowered mAP (README).
            let line = DefectClass::GrainBoundary.id();
            let boundaries: Vec<OtherBox> = other
                .iter()
                .copied()
                .filter(|d| d.0 == DefectClass::GrainBoundary && d.2 >= conf)
                .filter(|d| {
                    let Some(seconds) = seconds else { return true };
                    let seen_by = |m: &Detection| m.class == line && agrees(&m.obb, &d.1);
                    model.iter().any(seen_by) || seconds.iter().any(seen_by)
                })
                .collect();
            let mut out = combine(model, &boundaries, names, UNCONFIRMED_BOUNDARY_WEIGHT);
            out.retain(|d| d.source != DetectionSource::Lattice || d.confidence >= conf);
            out
        }
    }
}

/// Whether two boxes describe one boundary (or one point defect): long axes within
/// [`AGREE_DEG`], each centre within the shorter side of the other's axis, and overlapping
/// along it.
pub fn agrees(a: &OrientedBox, b: &OrientedBox) -> bool {
    let short = b.w.min(b.h);
    axis_angle_deg(a, b) <= AGREE_DEG
        && (off_axis(b, a) <= short || off_axis(a, b) <= short)
        && (along_inside(b, a, short) || along_inside(a, b, short))
}

/// Joins `model` detections with `other` boxes; an `other` box no model box agrees with is
/// added at `unconfirmed_weight` of its score. `names` are the model's class names (a class
/// the model lacks keeps the other detector's name).
pub fn combine(
    model: Vec<Detection>,
    other: &[OtherBox],
    names: &[String],
    unconfirmed_weight: f32,
) -> Vec<Detection> {
    let mut out = model;
    for &(class, obb, score) in other {
        let id = class.id();
        let agreeing = out.iter().position(|d| {
            d.class == id && d.source != DetectionSource::Lattice && agrees(&d.obb, &obb)
        });
        match agreeing {
            Some(i) => {
                let d = &mut out[i];
                let c = 1.0 - (1.0 - d.confidence) * (1.0 - score.clamp(0.0, 1.0));
                d.confidence = c;
                d.source = DetectionSource::Both;
                if class == DefectClass::GrainBoundary
                    && obb.long_axis().1 >= LATTICE_EXTENDS * d.obb.long_axis().1
                {
                    d.obb = obb;
                }
            }
            None => out.push(Detection {
                class: id,
                class_name: Arc::from(
                    names
                        .get(id)
                        .map(String::as_str)
                        .unwrap_or_else(|| class.name()),
                ),
                confidence: score.clamp(0.0, 1.0) * unconfirmed_weight,
                obb,
                source: DetectionSource::Lattice,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["grain_boundary", "vacancy", "interstitial"]
            .map(String::from)
            .to_vec()
    }

    fn model_box(obb: OrientedBox, conf: f32) -> Detection {
        Detection {
            class: 0,
            class_name: Arc::from("grain_boundary"),
            confidence: conf,
            obb,
            source: DetectionSource::Model,
        }
    }

    #[test]
    fn agreement_raises_confidence_and_lone_lattice_boxes_are_added() {
        let m = vec![model_box(
            OrientedBox::new(100.0, 100.0, 200.0, 40.0, 0.05),
            0.4,
        )];
        // The same boundary seen by the lattice (slightly shifted, 3° off), and another one
        // far away, crossing at 90°.
        let other = [
            (
                DefectClass::GrainBoundary,
                OrientedBox::new(110.0, 104.0, 300.0, 60.0, 0.1),
                0.5f32,
            ),
            (
                DefectClass::GrainBoundary,
                OrientedBox::new(300.0, 300.0, 200.0, 60.0, 1.6),
                0.3f32,
            ),
        ];
        let out = combine(m, &other, &names(), 1.0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].source, DetectionSource::Both);
        // The lattice's box is 1.5 times as long as the model's: the model saw part of the
        // boundary, and the joined box runs where the lattice says.
        assert_eq!(out[0].obb, other[0].1);
        assert!(
            (out[0].confidence - 0.7).abs() < 1e-6,
            "{}",
            out[0].confidence
        );
        assert_eq!(out[1].source, DetectionSource::Lattice);
        assert_eq!(&*out[1].class_name, "grain_boundary");
        assert!((out[1].confidence - 0.3).abs() < 1e-6);
    }

    #[test]
    fn crossing_or_distant_boxes_do_not_agree() {
        let m = vec![model_box(
            OrientedBox::new(100.0, 100.0, 200.0, 40.0, 0.0),
            0.4,
        )];
        let crossing = [(
            DefectClass::GrainBoundary,
            OrientedBox::new(100.0, 100.0, 200.0, 40.0, 1.2),
            0.5f32,
        )];
        let out = combine(m.clone(), &crossing, &names(), 1.0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].source, DetectionSource::Model);
        let parallel_far = [(
            DefectClass::GrainBoundary,
            OrientedBox::new(100.0, 200.0, 200.0, 40.0, 0.0),
            0.5f32,
        )];
        assert_eq!(combine(m, &parallel_far, &names(), 1.0).len(), 2);
    }

    #[test]
    fn a_lattice_boundary_enters_alone_only_where_the_model_drew_a_box_along_it() {
        let lattice = |cy: f64| {
            (
                DefectClass::GrainBoundary,
                OrientedBox::new(200.0, cy, 300.0, 40.0, 0.1),
                0.8f32,
            )
        };
        let other = [lattice(100.0), lattice(300.0)];
        // A faint model box along the first (shifted and turned a little), none along the
        // second; a faint vacancy on the second seconds nothing.
        let faint = model_box(OrientedBox::new(230.0, 108.0, 200.0, 36.0, 0.15), 0.05);
        let mut vacancy = model_box(OrientedBox::new(200.0, 300.0, 16.0, 22.0, 0.1), 0.2);
        vacancy.class = DefectClass::Vacancy.id();
        let seconds = [faint.clone(), vacancy];
        let out = join(
            DetectMethod::Both,
            Vec::new(),
            Some(&seconds),
            &other,
            0.25,
            &names(),
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].source, DetectionSource::Lattice);
        assert_eq!(
            out[0].obb, other[0].1,
            "the lattice's box, not the faint one"
        );
        assert!((out[0].confidence - 0.4).abs() < 1e-6);
        // Too faint to second: below the floor nothing does (the caller filters at it), and
        // without seconds every lattice boundary enters, as before the rule.
        assert!(
            join(
                DetectMethod::Both,
                Vec::new(),
                Some(&[]),
                &other,
                0.25,
                &names()
            )
            .is_empty()
        );
        assert_eq!(
            join(DetectMethod::Both, Vec::new(), None, &other, 0.25, &names()).len(),
            2
        );
        // The lattice alone keeps both: the rule is `both`'s.
        assert_eq!(
            join(
                DetectMethod::Lattice,
                Vec::new(),
                Some(&[]),
                &other,
                0.25,
                &names()
            )
            .len(),
            2
        );
    }

    fn point(class: DefectClass, cx: f64, conf: f32) -> OtherBox {
        (class, OrientedBox::new(cx, 50.0, 16.0, 22.0, 0.3), conf)
    }

    #[test]
    fn both_takes_points_from_the_model_and_weighs_unconfirmed_boundaries() {
        let gb = model_box(OrientedBox::new(100.0, 100.0, 200.0, 40.0, 0.0), 0.9);
        let vac = Detection {
            class: 1,
            class_name: Arc::from("vacancy"),
            confidence: 0.6,
            obb: OrientedBox::new(40.0, 50.0, 16.0, 22.0, 0.3),
            source: DetectionSource::Model,
        };
        let other = [
            // The model's boundary, seen a little shorter by the lattice: the model's box stays.
            (
                DefectClass::GrainBoundary,
                OrientedBox::new(104.0, 102.0, 180.0, 60.0, 0.02),
                0.5f32,
            ),
            // Boundaries the model does not see, at 0.8 and 0.4.
            (
                DefectClass::GrainBoundary,
                OrientedBox::new(300.0, 300.0, 200.0, 60.0, 1.6),
                0.8f32,
            ),
            (
                DefectClass::GrainBoundary,
                OrientedBox::new(300.0, 100.0, 200.0, 60.0, 1.6),
                0.4f32,
            ),
            // The analysis' point findings: one on the model's vacancy, one of its own.
            point(DefectClass::Vacancy, 40.0, 0.9),
            point(DefectClass::Interstitial, 150.0, 0.9),
        ];
        let out = join(
            DetectMethod::Both,
            vec![gb.clone(), vac.clone()],
            None,
            &other,
            0.25,
            &names(),
        );
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0].source, DetectionSource::Both);
        assert_eq!(
            out[0].obb, gb.obb,
            "a shorter lattice box leaves the model's geometry"
        );
        assert!((out[0].confidence - 0.95).abs() < 1e-6);
        // The point defects are the model's, untouched by the analysis' findings.
        assert_eq!(out[1], vac);
        // The unconfirmed boundary at half its score; the one at 0.4 falls below 0.25.
        assert_eq!(out[2].source, DetectionSource::Lattice);
        assert!((out[2].confidence - 0.4).abs() < 1e-6);
        assert_eq!(out[2].obb, other[1].1);
        // The analysis alone keeps all of its findings at their own score.
        let alone = join(
            DetectMethod::Lattice,
            Vec::new(),
            None,
            &other,
            0.25,
            &names(),
        );
        assert_eq!(alone.len(), 5);
        assert!(alone.iter().all(|d| d.source == DetectionSource::Lattice));
        assert!((alone[1].confidence - 0.8).abs() < 1e-6);
    }
}
