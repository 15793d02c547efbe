//! Test-time augmentation: the model run on dihedral copies of the frame (the symmetries its
//! training data was augmented with), optionally each at several scales (the preset crystals'
//! readings of a lattice-derived pixel size, [`crate::synth::crystal::CrystalSpec::preset_scales`]),
//! every copy's boxes mapped back and fused.
//!
//! Fusion follows weighted box fusion (Solovyev et al. 2021) for oriented boxes: boxes of one
//! class from different copies that overlap (ProbIoU ≥ [`FUSE_IOU`]) form a cluster with at
//! most one box per copy; the fused box is their confidence-weighted mean (centre, side
//! lengths, and the long axis's angle averaged as a doubled-angle vector, since a box turned
//! by 180° is the same box), and its confidence the sum of theirs over the number of copies,
//! so a box that only some copies see ranks below one they all see.

use super::post::{FilterOptions, filter_with, regularize};
use super::{DetectOptions, Detection, DetectionResult, Detector, StageTimings};
use crate::geometry::{Dihedral, OrientedBox, probiou};
use crate::raster::{ImageF32, PixelSize};

/// Least ProbIoU between a box and a cluster's fused box for the box to join it.
pub const FUSE_IOU: f64 = 0.55;

/// The copies run by default: all eight symmetries of the square, the frame itself first.
/// On the realistic test set the four that keep the frame's shape (mirror, 180°) gave
/// mAP50-95 0.836, all eight 0.840.
pub fn default_transforms() -> Vec<Dihedral> {
    Dihedral::all().to_vec()
}

/// The frame at its own scale only.
pub const ONE_SCALE: &[f64] = &[1.0];

/// The whole frame only, no rows or columns cut.
pub const WHOLE_FRAME: &[usize] = &[0];

/// Which copies are run and how their boxes are kept.
#[derive(Clone, Debug)]
pub struct TtaPlan<'a> {
    pub copies: &'a [Dihedral],
    /// Scales each copy is also run at (1: as the frame is); every copy runs at every scale.
    pub scales: &'a [f64],
    /// Rows and columns cut from the frame's top-left before each copy runs (0: the whole
    /// frame); every copy runs at every cut. The dihedral copies all sample the frame on one
    /// grid (each maps the model's stride grid onto itself); a cut of 8 px, with the spare
    /// pixels split around the frame as the letterbox does, moves the content 4 px against it.
    pub cuts: &'a [usize],
    /// Applied to each copy's candidates before fusion.
    pub filter: FilterOptions,
    /// Fused boxes at or below this confidence are dropped.
    pub final_conf: f32,
}

impl<'a> TtaPlan<'a> {
    /// What `detect --tta` keeps at threshold `conf`: each copy's boxes down to half of it
    /// (a box every copy sees just below it can still fuse above it), NMS at `iou`, boxes
    /// along one line joined; fused boxes above `conf`.
    pub fn at_threshold(
        copies: &'a [Dihedral],
        conf: f32,
        iou: f64,
        class_names: &[String],
    ) -> Self {
        Self {
            copies,
            scales: ONE_SCALE,
            cuts: WHOLE_FRAME,
            filter: threshold_filter(conf, iou, class_names),
            final_conf: conf,
        }
    }
}

/// Each copy's filter when the fused boxes are shown at `conf` ([`TtaPlan::at_threshold`]).
/// Fusing every copy's boxes down to the candidate floor instead joins weak boundary pieces
/// into each copy's line, which then no longer overlap between copies: on the real Si tilt
/// frame the model with `--tta` lost its boundary in 4 of 13 acquisitions that way.
pub fn threshold_filter(conf: f32, iou: f64, class_names: &[String]) -> FilterOptions {
    FilterOptions {
        conf: conf * 0.5,
        iou,
        merge_lines: super::line_class(class_names),
        ..Default::default()
    }
}

/// A frame's model result, and, where more than the frame itself ran (test-time copies,
/// more scales), every copy's candidates: what `detect`, `watch`, `eval-real` and the Viewer
/// run, so that a frame gives the same boxes in each ([`FrameRuns::boxes`]).
#[derive(Clone, Debug)]
pub struct FrameRuns {
    /// The frame's own run; its timings and runs count every copy.
    pub result: DetectionResult,
    pub copies: Option<CopyRuns>,
}

impl FrameRuns {
    /// Runs `det` on `img` and, unless `copies` is the frame alone at scale 1, on each copy
    /// at each of `scales`.
    pub fn run(
        det: &Detector,
        img: &ImageF32,
        pixel_size: Option<PixelSize>,
        opts: &DetectOptions,
        copies: &[Dihedral],
        scales: &[f64],
        ctl: Option<&crate::jobs::JobControl>,
    ) -> anyhow::Result<Self> {
        let mut result = det.detect_with_control(img, pixel_size, opts, ctl)?;
        let alone = copies.iter().all(|c| *c == Dihedral::IDENTITY)
            && scales.iter().all(|s| (s - 1.0).abs() < 1e-9);
        if alone {
            return Ok(Self {
                result,
                copies: None,
            });
        }
        let plan = RunPlan {
            copies,
            scales,
            cuts: WHOLE_FRAME,
        };
        let runs = CopyRuns::run(det, img, pixel_size, opts, &plan, Some(&result), ctl)?;
        result.timings = runs.timings;
        result.tiles *= runs.len();
        Ok(Self {
            result,
            copies: Some(runs),
        })
    }

    /// The model's boxes at `conf` after NMS at `iou`, boundary boxes joined along lines and
    /// cut at the frame's edges: the frame's own run filtered, or the copies fused as
    /// `detect --tta` fuses them.
    pub fn boxes(&self, conf: f32, iou: f64) -> Vec<Detection> {
        boxes_at(&self.result, self.copies.as_ref(), conf, iou)
    }
}

/// [`FrameRuns::boxes`] of a result and its copies held apart (the Viewer keeps the result
/// it shows apart from the copies it fuses again at each slider step).
pub fn boxes_at(
    result: &DetectionResult,
    copies: Option<&CopyRuns>,
    conf: f32,
    iou: f64,
) -> Vec<Detection> {
    let Some(runs) = copies else {
        return result.filtered(conf, iou);
    };
    let mut d = runs.fuse(&threshold_filter(conf, iou, &result.class_names), conf);
    if let Some(c) = super::line_class(&result.class_names) {
        let (w, h) = (result.width as f64, result.height as f64);
        super::post::clip_line_boxes(&mut d, c, w, h);
    }
    d
}

/// Runs `det` on each of the plan's copies of `img`, filters each copy's candidates, maps the
/// boxes back to `img` and fuses them; at most `filter.max_det` are kept. `identity`: the
/// model's result on `img` itself when the caller has it already (it is not run again).
pub fn detect_tta(
    det: &Detector,
    img: &ImageF32,
    pixel_size: Option<PixelSize>,
    opts: &DetectOptions,
    plan: &TtaPlan,
    identity: Option<&DetectionResult>,
) -> anyhow::Result<TtaResult> {
    let runs = CopyRuns::run(
        det,
        img,
        pixel_size,
        opts,
        &RunPlan {
            copies: plan.copies,
            scales: plan.scales,
            cuts: plan.cuts,
        },
        identity,
        None,
    )?;
    Ok(TtaResult {
        detections: runs.fuse(&plan.filter, plan.final_conf),
        timings: runs.timings,
    })
}

/// Which copies of a frame run: every copy at every scale and every cut.
#[derive(Clone, Copy, Debug)]
pub struct RunPlan<'a> {
    pub copies: &'a [Dihedral],
    pub scales: &'a [f64],
    pub cuts: &'a [usize],
}

/// One copy's run: its candidates as the model gave them (in the copy's own pixels), and
/// how to map them back onto the frame.
#[derive(Clone, Debug)]
struct CopyRun {
    candidates: Vec<Detection>,
    transform: Dihedral,
    /// The copy's size, for the inverse transform.
    size: (usize, usize),
    /// Rows and columns cut from the (scaled) frame's top-left before the copy was made.
    cut: f64,
    /// Frame pixels per scaled pixel, per axis.
    back: [f64; 2],
}

/// Every copy's candidates of one frame, kept so the copies can be fused again at another
/// threshold without running the model: the Viewer fuses them again at each step of its
/// confidence slider, as `detect` fuses them at its `--conf` ([`TtaPlan::at_threshold`]).
#[derive(Clone, Debug)]
pub struct CopyRuns {
    runs: Vec<CopyRun>,
    /// The summed time of every copy's run.
    pub timings: StageTimings,
}

impl CopyRuns {
    /// Runs `det` on each copy of `img` in `plan`. `identity`: the model's result on `img`
    /// itself when the caller has it already (it is not run again). Cancelled through `ctl`
    /// between copies.
    pub fn run(
        det: &Detector,
        img: &ImageF32,
        pixel_size: Option<PixelSize>,
        opts: &DetectOptions,
        plan: &RunPlan,
        identity: Option<&DetectionResult>,
        ctl: Option<&crate::jobs::JobControl>,
    ) -> anyhow::Result<Self> {
        let (w, h) = (img.width, img.height);
        let scales = if plan.scales.is_empty() {
            ONE_SCALE
        } else {
            plan.scales
        };
        let cuts = if plan.cuts.is_empty() {
            WHOLE_FRAME
        } else {
            plan.cuts
        };
        let mut runs = Vec::with_capacity(plan.copies.len() * scales.len() * cuts.len());
        let mut timings = StageTimings::default();
        for &s in scales {
            anyhow::ensure!(
                s.is_finite() && (0.25..=4.0).contains(&s),
                "a test-time scale must lie between 0.25 and 4 (got {s})"
            );
            let unscaled = (s - 1.0).abs() < 1e-9;
            // A calibrated frame is scaled by telling the detector a pixel size `s` times the
            // true one (one resampling); an uncalibrated one is resampled here.
            let by_calibration = match (pixel_size, det.info().nm_per_px) {
                (Some(p), Some(_)) if opts.match_model_scale && p.nm_per_px > 0.0 => {
                    Some(PixelSize {
                        nm_per_px: p.nm_per_px * s,
                    })
                }
                _ => None,
            };
            let scaled;
            let (base, px, back) = if unscaled {
                (img, pixel_size, [1.0, 1.0])
            } else if let Some(px) = by_calibration {
                (img, Some(px), [1.0, 1.0])
            } else {
                let nw = ((w as f64 * s).round() as usize).max(1);
                let nh = ((h as f64 * s).round() as usize).max(1);
                let (fx, fy) = (nw as f64 / w as f64, nh as f64 / h as f64);
                scaled = super::pre::resample(img, nw, nh, fx, fy);
                (&scaled, pixel_size, [1.0 / fx, 1.0 / fy])
            };
            for &k in cuts {
                anyhow::ensure!(
                    k < base.width.min(base.height) / 2,
                    "a test-time cut of {k} px leaves too little of a {}x{} frame",
                    base.width,
                    base.height
                );
                let cut_frame;
                let frame = if k == 0 {
                    base
                } else {
                    cut_frame = base.crop(k, k, base.width - k, base.height - k);
                    &cut_frame
                };
                let (bw, bh) = (frame.width, frame.height);
                for &t in plan.copies {
                    if let Some(c) = ctl {
                        c.check()?;
                    }
                    let size = t.output_size(bw, bh);
                    let candidates = match identity {
                        Some(r) if t == Dihedral::IDENTITY && unscaled && k == 0 => {
                            add_timings(&mut timings, &r.timings);
                            r.candidates.clone()
                        }
                        _ => {
                            let (ow, oh) = size;
                            let copy =
                                ImageF32::from_vec(ow, oh, t.apply_image(&frame.data, bw, bh));
                            let r = det.detect(&copy, px, opts)?;
                            add_timings(&mut timings, &r.timings);
                            r.candidates
                        }
                    };
                    runs.push(CopyRun {
                        candidates,
                        transform: t,
                        size,
                        cut: k as f64,
                        back,
                    });
                }
            }
        }
        Ok(Self { runs, timings })
    }

    /// How many copies ran.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Each copy's candidates filtered by `filter`, mapped back to the frame and fused;
    /// fused boxes at or below `final_conf` dropped, at most `filter.max_det` kept.
    pub fn fuse(&self, filter: &FilterOptions, final_conf: f32) -> Vec<Detection> {
        let sets: Vec<Vec<Detection>> = self
            .runs
            .iter()
            .map(|run| {
                let inv = run.transform.inverse();
                let (ow, oh) = (run.size.0 as f64, run.size.1 as f64);
                let mut dets = filter_with(&run.candidates, filter);
                for d in &mut dets {
                    d.obb = regularize(&d.obb.map(|p| {
                        let q = inv.map_point(p, ow, oh);
                        [
                            (q[0] + run.cut) * run.back[0],
                            (q[1] + run.cut) * run.back[1],
                        ]
                    }));
                }
                dets
            })
            .collect();
        let mut detections = fuse(&sets, FUSE_IOU);
        detections.retain(|d| d.confidence > final_conf);
        if let Some(m) = filter.max_det {
            detections.truncate(m);
        }
        detections
    }
}

fn add_timings(sum: &mut StageTimings, t: &StageTimings) {
    sum.preprocess_ms += t.preprocess_ms;
    sum.inference_ms += t.inference_ms;
    sum.postprocess_ms += t.postprocess_ms;
}

/// Fused detections and the summed time of every copy's run.
#[derive(Clone, Debug)]
pub struct TtaResult {
    pub detections: Vec<Detection>,
    pub timings: StageTimings,
}

struct Cluster {
    members: Vec<(OrientedBox, f32, usize)>,
    fused: OrientedBox,
    top: Detection,
}

/// Weighted box fusion of the copies' detections (`sets[k]`: copy `k`'s boxes, already in
/// the frame's coordinates). Sorted by fused confidence, best first.
pub fn fuse(sets: &[Vec<Detection>], iou: f64) -> Vec<Detection> {
    let n = sets.len().max(1) as f32;
    let mut all: Vec<(usize, &Detection)> = sets
        .iter()
        .enumerate()
        .flat_map(|(k, s)| s.iter().map(move |d| (k, d)))
        .collect();
    all.sort_by(|a, b| b.1.confidence.total_cmp(&a.1.confidence));
    let mut clusters: Vec<Cluster> = Vec::new();
    for (k, d) in all {
        let best = clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| c.top.class == d.class && !c.members.iter().any(|m| m.2 == k))
            .map(|(i, c)| (i, probiou(&c.fused, &d.obb)))
            .filter(|(_, v)| *v >= iou)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, _)) => {
                let c = &mut clusters[i];
                c.members.push((d.obb, d.confidence, k));
                c.fused = weighted_mean(&c.members);
            }
            None => clusters.push(Cluster {
                members: vec![(d.obb, d.confidence, k)],
                fused: d.obb,
                top: d.clone(),
            }),
        }
    }
    let mut out: Vec<Detection> = clusters
        .into_iter()
        .map(|c| {
            let sum: f32 = c.members.iter().map(|m| m.1).sum();
            Detection {
                confidence: (sum / n).min(1.0),
                obb: regularize(&c.fused),
                ..c.top
            }
        })
        .collect();
    out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    out
}

/// Confidence-weighted mean of boxes: centre and sides averaged, the long axis's angle as a
/// doubled-angle vector.
fn weighted_mean(members: &[(OrientedBox, f32, usize)]) -> OrientedBox {
    let (mut sw, mut cx, mut cy, mut lw, mut sh, mut c2, mut s2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (b, conf, _) in members {
        let b = b.canonical();
        let wt = *conf as f64;
        sw += wt;
        cx += wt * b.cx;
        cy += wt * b.cy;
        lw += wt * b.w;
        sh += wt * b.h;
        c2 += wt * (2.0 * b.angle).cos();
        s2 += wt * (2.0 * b.angle).sin();
    }
    if sw <= 0.0 {
        return members[0].0;
    }
    OrientedBox::new(cx / sw, cy / sw, lw / sw, sh / sw, 0.5 * s2.atan2(c2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectionSource;

    fn det(class: usize, conf: f32, obb: OrientedBox) -> Detection {
        Detection {
            class,
            class_name: "x".into(),
            confidence: conf,
            obb,
            source: DetectionSource::Model,
        }
    }

    #[test]
    fn copies_of_one_box_fuse_to_their_weighted_mean() {
        let deg = |d: f64| d.to_radians();
        // Two copies see the box 1° either side of 10° and 2 px apart; the third copy sees
        // it written with swapped sides (the same rectangle), the fourth not at all.
        let sets = vec![
            vec![det(
                1,
                0.9,
                OrientedBox::new(50.0, 50.0, 40.0, 28.0, deg(9.0)),
            )],
            vec![det(
                1,
                0.9,
                OrientedBox::new(52.0, 50.0, 40.0, 28.0, deg(11.0)),
            )],
            vec![det(
                1,
                0.6,
                OrientedBox::new(51.0, 50.0, 28.0, 40.0, deg(100.0)),
            )],
            vec![det(2, 0.8, OrientedBox::new(150.0, 50.0, 40.0, 28.0, 0.0))],
        ];
        let f = fuse(&sets, FUSE_IOU);
        assert_eq!(f.len(), 2);
        let b = f.iter().find(|d| d.class == 1).unwrap();
        let c = b.obb.canonical();
        assert!(
            (c.cx - 51.0).abs() < 1e-9 && (c.cy - 50.0).abs() < 1e-9,
            "{c:?}"
        );
        assert!((c.angle.to_degrees() - 10.0).abs() < 1e-6, "{c:?}");
        assert!((c.w - 40.0).abs() < 1e-9 && (c.h - 28.0).abs() < 1e-9);
        // Seen by three of four copies: (0.9 + 0.9 + 0.6) / 4.
        assert!((b.confidence - 0.6).abs() < 1e-6, "{}", b.confidence);
        // The box only one copy saw keeps a quarter of its confidence and ranks below.
        let other = f.iter().find(|d| d.class == 2).unwrap();
        assert!((other.confidence - 0.2).abs() < 1e-6);
        assert_eq!(f[0].class, 1);
    }

    #[test]
    fn one_copy_never_adds_two_boxes_to_a_cluster() {
        let a = OrientedBox::new(50.0, 50.0, 40.0, 28.0, 0.0);
        let b = OrientedBox::new(51.0, 50.0, 40.0, 28.0, 0.0);
        let f = fuse(&[vec![det(0, 0.9, a), det(0, 0.8, b)]], FUSE_IOU);
        assert_eq!(f.len(), 2);
        // Across 0°/180° the doubled-angle mean does not average to 90°.
        let m = weighted_mean(&[
            (
                OrientedBox::new(0.0, 0.0, 40.0, 20.0, 1f64.to_radians()),
                1.0,
                0,
            ),
            (
                OrientedBox::new(0.0, 0.0, 40.0, 20.0, 179f64.to_radians()),
                1.0,
                1,
            ),
        ]);
        let t = m.angle.to_degrees().rem_euclid(180.0);
        assert!(t < 1e-6 || (180.0 - t) < 1e-6, "{t}");
    }

    #[test]
    fn the_default_copies_map_back() {
        let copies = default_transforms();
        assert_eq!((copies.len(), copies[0]), (8, Dihedral::IDENTITY));
        for t in copies {
            let p = t.map_point([3.0, 4.0], 30.0, 20.0);
            let (ow, oh) = t.output_size(30, 20);
            let q = t.inverse().map_point(p, ow as f64, oh as f64);
            assert!((q[0] - 3.0).abs() < 1e-12 && (q[1] - 4.0).abs() < 1e-12);
        }
    }
}
