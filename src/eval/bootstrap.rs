//! How far a split's mAP could move on another draw of frames from the same recipe: a
//! percentile bootstrap over frames (Efron & Tibshirani 1993). A test set of 80 synthetic
//! frames holds a few hundred boxes, so a target such as mAP50 ≥ 0.98 is read against the
//! spread of the score, not its third decimal.
//!
//! Frames, not boxes, are resampled: the boxes of one frame share its dose, pixel size and
//! lattice, so they are not independent draws.

use super::metrics::{ApResult, Correct, ap_per_class};
use rand::{RngExt, SeedableRng};

/// What one frame contributed to a split's scoring: its detections' match flags, confidences
/// and classes, and its labels' classes.
#[derive(Clone, Debug, Default)]
pub struct ScoredFrame {
    pub tp: Vec<Correct>,
    pub conf: Vec<f32>,
    pub pred_cls: Vec<usize>,
    pub target_cls: Vec<usize>,
}

/// A central interval of a metric over the resamples.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// Percentile-bootstrap intervals of mAP50 and mAP50-95.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BootstrapCi {
    /// Resamples drawn (each of as many frames as the split holds, with replacement).
    pub resamples: usize,
    /// The interval's coverage, e.g. 0.95.
    pub level: f64,
    pub seed: u64,
    pub map50: Interval,
    pub map50_95: Interval,
    /// Share of the resamples whose mAP50 reached `target_map50` (when asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_reaching: Option<ShareReaching>,
}

/// How often a resample met a target.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ShareReaching {
    pub map50_at_least: f64,
    pub map50_95_at_least: f64,
    pub map50_share: f64,
    pub map50_95_share: f64,
}

/// The `q`-quantile of sorted values, linearly interpolated (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] * (1.0 - f) + sorted[j] * f
}

/// The AP of the frames `pick` (indices into `frames`, repeats allowed), their detections and
/// labels pooled in that order.
fn ap_of_picked(frames: &[ScoredFrame], pick: impl Iterator<Item = usize>) -> ApResult {
    let (mut tp, mut conf, mut pred, mut target) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in pick {
        let f = &frames[i];
        tp.extend_from_slice(&f.tp);
        conf.extend_from_slice(&f.conf);
        pred.extend_from_slice(&f.pred_cls);
        target.extend_from_slice(&f.target_cls);
    }
    ap_per_class(&tp, &conf, &pred, &target)
}

/// The AP of a whole split, every frame once ([`crate::eval::evaluate`]'s metrics).
pub fn ap_of(frames: &[ScoredFrame]) -> ApResult {
    ap_of_picked(frames, 0..frames.len())
}

/// mAP50 and mAP50-95 of the frames `pick`.
fn score(frames: &[ScoredFrame], pick: &[usize]) -> (f64, f64) {
    let ap = ap_of_picked(frames, pick.iter().copied());
    (ap.map50(), ap.map())
}

/// Calls `f` with each of `resamples` draws of `n` frame indices with replacement, seeded by
/// `seed` (the same seed, the same draws).
fn for_each_resample(n: usize, resamples: usize, seed: u64, mut f: impl FnMut(&[usize])) {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut pick = vec![0usize; n];
    for _ in 0..resamples {
        for p in pick.iter_mut() {
            *p = rng.random_range(0..n);
        }
        f(&pick);
    }
}

/// The central interval of coverage `level` of the values `v` (sorted here).
fn central_interval(v: &mut [f64], level: f64) -> Interval {
    v.sort_by(f64::total_cmp);
    let tail = 0.5 * (1.0 - level);
    Interval {
        lo: quantile(v, tail),
        hi: quantile(v, 1.0 - tail),
    }
}

/// Percentile-bootstrap intervals at coverage `level` from `resamples` draws of the frames
/// with replacement (seeded: the same call gives the same interval). `targets`: (mAP50,
/// mAP50-95) whose share of resamples reaching them is reported too. `None` without frames.
pub fn bootstrap(
    frames: &[ScoredFrame],
    resamples: usize,
    level: f64,
    seed: u64,
    targets: Option<(f64, f64)>,
) -> Option<BootstrapCi> {
    if frames.is_empty() || resamples == 0 {
        return None;
    }
    let (mut m50, mut m) = (Vec::with_capacity(resamples), Vec::with_capacity(resamples));
    for_each_resample(frames.len(), resamples, seed, |pick| {
        let (a, b) = score(frames, pick);
        m50.push(a);
        m.push(b);
    });
    let share = |v: &[f64], t: f64| v.iter().filter(|&&x| x >= t).count() as f64 / v.len() as f64;
    let share_reaching = targets.map(|(t50, t)| ShareReaching {
        map50_at_least: t50,
        map50_95_at_least: t,
        map50_share: share(&m50, t50),
        map50_95_share: share(&m, t),
    });
    Some(BootstrapCi {
        resamples,
        level,
        seed,
        map50: central_interval(&mut m50, level),
        map50_95: central_interval(&mut m, level),
        share_reaching,
    })
}

/// Two detectors scored on the same frames: intervals of their difference (first minus
/// second), each resample drawing the same frames for both. Most of a split's spread is which
/// frames it holds, and that cancels in the difference, so the paired interval is far narrower
/// than either detector's own.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PairedCi {
    pub resamples: usize,
    pub level: f64,
    pub seed: u64,
    /// mAP50 and mAP50-95 of the first minus the second, on all frames.
    pub d_map50: f64,
    pub d_map50_95: f64,
    pub d_map50_interval: Interval,
    pub d_map50_95_interval: Interval,
    /// Share of resamples where the first scored higher.
    pub first_better_map50: f64,
    pub first_better_map50_95: f64,
}

/// [`PairedCi`] of `a` against `b` (the same frames, in the same order). `None` when the
/// frame lists differ in length, are empty, or no resample is asked for.
pub fn paired(
    a: &[ScoredFrame],
    b: &[ScoredFrame],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<PairedCi> {
    if a.is_empty() || a.len() != b.len() || resamples == 0 {
        return None;
    }
    let (ap_a, ap_b) = (ap_of(a), ap_of(b));
    let (mut d50, mut d95) = (Vec::with_capacity(resamples), Vec::with_capacity(resamples));
    for_each_resample(a.len(), resamples, seed, |pick| {
        let ((x50, x95), (y50, y95)) = (score(a, pick), score(b, pick));
        d50.push(x50 - y50);
        d95.push(x95 - y95);
    });
    let better = |v: &[f64]| v.iter().filter(|&&x| x > 0.0).count() as f64 / v.len() as f64;
    let (first_better_map50, first_better_map50_95) = (better(&d50), better(&d95));
    Some(PairedCi {
        resamples,
        level,
        seed,
        d_map50: ap_a.map50() - ap_b.map50(),
        d_map50_95: ap_a.map() - ap_b.map(),
        d_map50_interval: central_interval(&mut d50, level),
        d_map50_95_interval: central_interval(&mut d95, level),
        first_better_map50,
        first_better_map50_95,
    })
}

impl PairedCi {
    /// One line for the CLI.
    pub fn line(&self, first: &str, second: &str) -> String {
        format!(
            "Paired bootstrap ({} resamples, seed {}), {first} minus {second}: mAP50 {:+.4} \
             ({:.0} % interval {:+.4} to {:+.4}; {first} higher in {:.0} % of resamples), \
             mAP50-95 {:+.4} ({:+.4} to {:+.4}; {:.0} %)",
            self.resamples,
            self.seed,
            self.d_map50,
            self.level * 100.0,
            self.d_map50_interval.lo,
            self.d_map50_interval.hi,
            self.first_better_map50 * 100.0,
            self.d_map50_95,
            self.d_map50_95_interval.lo,
            self.d_map50_95_interval.hi,
            self.first_better_map50_95 * 100.0
        )
    }
}

impl BootstrapCi {
    /// "mAP50 0.978 (95 % interval 0.968–0.987) ..." for the CLI, around the split's own
    /// figures.
    pub fn line(&self, map50: f64, map50_95: f64, frames: usize) -> String {
        let pct = self.level * 100.0;
        let mut s = format!(
            "Bootstrap over frames ({} resamples of the {frames} frames, seed {}): mAP50 {map50:.3} \
             ({pct:.0} % interval {:.3}–{:.3}), mAP50-95 {map50_95:.3} ({:.3}–{:.3})",
            self.resamples,
            self.seed,
            self.map50.lo,
            self.map50.hi,
            self.map50_95.lo,
            self.map50_95.hi
        );
        if let Some(t) = &self.share_reaching {
            s += &format!(
                "; resamples reaching mAP50 ≥ {}: {:.0} %, mAP50-95 ≥ {}: {:.0} %",
                t.map50_at_least,
                t.map50_share * 100.0,
                t.map50_95_at_least,
                t.map50_95_share * 100.0
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::N_IOU;

    /// A frame with one label of class 0 and one detection that is right at every IoU
    /// threshold or at none.
    fn frame(right: bool, conf: f32) -> ScoredFrame {
        ScoredFrame {
            tp: vec![[right; N_IOU]],
            conf: vec![conf],
            pred_cls: vec![0],
            target_cls: vec![0],
        }
    }

    #[test]
    fn a_perfect_split_has_no_spread_and_a_mixed_one_does() {
        let perfect: Vec<ScoredFrame> = (0..20).map(|_| frame(true, 0.9)).collect();
        let ci = bootstrap(&perfect, 200, 0.95, 1, Some((0.98, 0.9))).unwrap();
        assert_eq!(ci.map50.lo, ci.map50.hi);
        assert!((ci.map50.lo - 0.995).abs() < 1e-9, "{ci:?}");
        assert_eq!(ci.share_reaching.unwrap().map50_share, 1.0);

        // Half the frames wrong, the wrong ones ranked last: recall stops at the share of
        // right frames, which resamples with more or fewer of them spread.
        let mixed: Vec<ScoredFrame> = (0..40)
            .map(|i| frame(i % 2 == 0, if i % 2 == 0 { 0.9 } else { 0.3 }))
            .collect();
        let whole = ap_of(&mixed).map50();
        let ci = bootstrap(&mixed, 500, 0.95, 1, Some((0.98, 0.9))).unwrap();
        assert!(ci.map50.lo < whole && whole < ci.map50.hi, "{whole} {ci:?}");
        assert!(ci.map50.hi - ci.map50.lo > 0.15, "{ci:?}");
        assert_eq!(ci.share_reaching.unwrap().map50_share, 0.0);
        // Seeded: the same call, the same interval.
        assert_eq!(
            bootstrap(&mixed, 500, 0.95, 1, None).unwrap().map50,
            ci.map50
        );
    }

    #[test]
    fn a_paired_difference_is_tighter_than_either_score() {
        // Two detectors that agree on every frame but one, where only the first is right.
        let a: Vec<ScoredFrame> = (0..40).map(|i| frame(i % 3 != 0 || i == 0, 0.9)).collect();
        let b: Vec<ScoredFrame> = (0..40).map(|i| frame(i % 3 != 0, 0.9)).collect();
        let p = paired(&a, &b, 500, 0.95, 3).unwrap();
        assert!(p.d_map50 > 0.0, "{p:?}");
        // Never worse on any resample; better wherever frame 0 was drawn.
        assert!(p.d_map50_interval.lo >= 0.0, "{p:?}");
        let own = bootstrap(&a, 500, 0.95, 3, None).unwrap();
        assert!(
            p.d_map50_interval.hi - p.d_map50_interval.lo < own.map50.hi - own.map50.lo,
            "{p:?} {own:?}"
        );
        assert!(
            p.first_better_map50 > 0.5 && p.first_better_map50 < 1.0,
            "{p:?}"
        );
        // A detector against itself: no difference at all.
        let same = paired(&a, &a, 100, 0.95, 3).unwrap();
        assert_eq!((same.d_map50, same.first_better_map50), (0.0, 0.0));
        assert!(paired(&a, &b[..10], 100, 0.95, 3).is_none());
    }

    #[test]
    fn no_frames_or_no_resamples_give_nothing() {
        assert!(bootstrap(&[], 100, 0.95, 1, None).is_none());
        assert!(bootstrap(&[frame(true, 0.9)], 0, 0.95, 1, None).is_none());
    }

    #[test]
    fn quantiles_interpolate_as_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!((quantile(&v, 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile(&v, 0.025) - 1.075).abs() < 1e-12);
    }
}
