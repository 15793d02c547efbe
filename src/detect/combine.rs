//! Model detections joined with the boxes of a second, training-free detector (the lattice
//! analysis). A lattice boundary that a model grain-boundary box agrees with (its centre within
//! one box width of the lattice line and its long axis within 20°) raises that box's
//! confidence to `1 − (1 − c_model)(1 − c_lattice)`, the chance that at least one of two
//! independent detectors is right, and marks it `Both`; lattice boxes nobody agrees with are
//! added as `Lattice` with their own score.

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
    let long = |o: &OrientedBox| {
        if o.w >= o.h {
            o.angle
        } else {
            o.angle + std::f64::consts::FRAC_PI_2
        }
    };
    let d = (long(a) - long(b)).to_degrees().rem_euclid(180.0);
    d.min(180.0 - d)
}

/// Distance of `b`'s centre from the long axis of `a` (px).
pub fn off_axis(a: &OrientedBox, b: &OrientedBox) -> f64 {
    let t = if a.w >= a.h {
        a.angle
    } else {
        a.angle + std::f64::consts::FRAC_PI_2
    };
    let n = [-t.sin(), t.cos()];
    ((b.cx - a.cx) * n[0] + (b.cy - a.cy) * n[1]).abs()
}

/// Along-axis overlap test: `b`'s centre lies within `a`'s length (plus a margin).
fn along_inside(a: &OrientedBox, b: &OrientedBox, margin: f64) -> bool {
    let (t, len) = if a.w >= a.h {
        (a.angle, a.w)
    } else {
        (a.angle + std::f64::consts::FRAC_PI_2, a.h)
    };
    let along = (b.cx - a.cx) * t.cos() + (b.cy - a.cy) * t.sin();
    along.abs() <= len / 2.0 + margin
}

/// What `method` shows: the model's detections (already filtered), the other detector's boxes
/// at or above `conf`, or both joined.
pub fn join(
    method: DetectMethod,
    model: Vec<Detection>,
    other: &[OtherBox],
    conf: f32,
    names: &[String],
) -> Vec<Detection> {
    let other: Vec<OtherBox> = other.iter().copied().filter(|d| d.2 >= conf).collect();
    match method {
        DetectMethod::Model => model,
        DetectMethod::Lattice => combine(Vec::new(), &other, names),
        DetectMethod::Both => combine(model, &other, names),
    }
}

/// Joins `model` detections with `other` boxes. `names` are the model's class names (a class
/// the model lacks keeps the other detector's name).
pub fn combine(model: Vec<Detection>, other: &[OtherBox], names: &[String]) -> Vec<Detection> {
    let mut out = model;
    for &(class, obb, score) in other {
        let id = class.id();
        let short = obb.w.min(obb.h);
        let agreeing = out.iter().position(|d| {
            d.class == id
                && axis_angle_deg(&d.obb, &obb) <= AGREE_DEG
                && (off_axis(&obb, &d.obb) <= short || off_axis(&d.obb, &obb) <= short)
                && (along_inside(&obb, &d.obb, short) || along_inside(&d.obb, &obb, short))
        });
        match agreeing {
            Some(i) => {
                let d = &mut out[i];
                let c = 1.0 - (1.0 - d.confidence) * (1.0 - score.clamp(0.0, 1.0));
                d.confidence = c;
                d.source = DetectionSource::Both;
                // Where a boundary runs is what the lattice analysis measures (the ridge of the
                // lattice discontinuity); the model's box of the same boundary can sit a band
                // width off on a real frame. The joined box takes the lattice's geometry.
                if class == DefectClass::GrainBoundary {
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
                confidence: score.clamp(0.0, 1.0),
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
        let out = combine(m, &other, &names());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].source, DetectionSource::Both);
        // The joined boundary runs where the lattice says.
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
        let out = combine(m.clone(), &crossing, &names());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].source, DetectionSource::Model);
        let parallel_far = [(
            DefectClass::GrainBoundary,
            OrientedBox::new(100.0, 200.0, 200.0, 40.0, 0.0),
            0.5f32,
        )];
        assert_eq!(combine(m, &parallel_far, &names()).len(), 2);
    }
}
