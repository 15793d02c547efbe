//! A dataset matched to one microscope: domain randomization centred on what the `realism`
//! statistics measure on given real frames (pixel size, column width, background, noise, scan
//! distortions), for fine-tuning to that microscope. Rotations and defect content stay free.
//!
//! The knobs that set a statistic are found by simulation, not by formula: the synthesizer is
//! run at trial values and measured with the same estimators as the real frames, and a
//! bisection finds the value whose synthetic statistic equals the target. So a bias of an
//! estimator cancels out.

use crate::dataset::randomize::DomainRandomization;
use crate::realism::{self, RealismStats};
use crate::synth::crystal::Preset;
use crate::synth::params::{CountRange, ProbeModel, Span, SynthParams};
use serde::Serialize;

/// What the matching found, for the manifest and the user.
#[derive(Clone, Debug, Serialize)]
pub struct MatchReport {
    /// Medians over the frames of the statistics that were matched.
    pub target: MatchTarget,
    /// Knob values whose synthetic statistics equal the targets.
    pub column_sigma_a: Option<f64>,
    pub background: Option<f64>,
    pub dose_e_per_a2: Option<f64>,
    /// The randomization written into the dataset.
    pub randomization: DomainRandomization,
}

#[derive(Clone, Debug, Serialize)]
pub struct MatchTarget {
    pub nm_per_px: Span,
    pub column_fwhm_a: Option<f64>,
    pub background: Option<f64>,
    pub noise: Option<f64>,
    pub line_jitter_px: Option<f64>,
    pub shear: Option<f64>,
    pub stretch: Option<f64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

impl MatchTarget {
    pub fn from_frames(frames: &[RealismStats]) -> anyhow::Result<Self> {
        anyhow::ensure!(!frames.is_empty(), "no frames to match");
        let px: Vec<f64> = frames.iter().map(|s| s.nm_per_px).collect();
        let lo = px.iter().cloned().fold(f64::MAX, f64::min);
        let hi = px.iter().cloned().fold(f64::MIN, f64::max);
        let raw: Vec<&RealismStats> = frames.iter().filter(|s| !s.eight_bit).collect();
        let pick = |f: &dyn Fn(&RealismStats) -> Option<f64>| {
            median(frames.iter().filter_map(f).collect::<Vec<_>>())
        };
        Ok(Self {
            nm_per_px: Span::new(lo, hi),
            column_fwhm_a: pick(&|s| s.column_fwhm_a),
            // Background and noise of 8-bit exports describe a display window, not counts.
            background: median(raw.iter().map(|s| s.background).collect()),
            noise: median(raw.iter().filter_map(|s| s.noise).collect()),
            line_jitter_px: pick(&|s| s.line_jitter_px),
            shear: pick(&|s| s.shear),
            stretch: pick(&|s| s.stretch),
        })
    }
}

/// Images per trial value: enough to average out the scene, few enough to be quick.
const TRIAL_IMAGES: u64 = 2;
const TRIAL_SIZE: usize = 256;

/// The mean of a statistic over a few synthetic images made with `set` applied.
fn trial(
    base: &SynthParams,
    set: &dyn Fn(&mut SynthParams),
    stat: &dyn Fn(&RealismStats) -> Option<f64>,
) -> Option<f64> {
    let spec = base.crystal.spec();
    let mut vals = Vec::new();
    for k in 0..TRIAL_IMAGES {
        let mut p = base.clone();
        p.seed = base.seed.wrapping_add(k * 7919);
        set(&mut p);
        let s = crate::synth::generate(&p).ok()?;
        let m = realism::measure(
            &s.image,
            &spec,
            Some(p.output_pixel_size_pm() / 1000.0),
            None,
        )
        .ok()?;
        vals.extend(stat(&m));
    }
    (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
}

/// Bisection for the knob value in `[lo, hi]` whose statistic equals `target`, for a
/// statistic that grows (`rising`) or falls with the knob. `log` bisects in log space.
#[allow(clippy::too_many_arguments)]
fn solve(
    base: &SynthParams,
    lo: f64,
    hi: f64,
    log: bool,
    rising: bool,
    target: f64,
    set: &dyn Fn(&mut SynthParams, f64),
    stat: &dyn Fn(&RealismStats) -> Option<f64>,
) -> Option<f64> {
    let (mut a, mut b) = if log { (lo.ln(), hi.ln()) } else { (lo, hi) };
    let val = |x: f64| if log { x.exp() } else { x };
    for _ in 0..9 {
        let m = 0.5 * (a + b);
        let v = trial(base, &|p| set(p, val(m)), stat)?;
        if (v < target) == rising {
            a = m;
        } else {
            b = m;
        }
    }
    Some(val(0.5 * (a + b)))
}

/// A span `centre·(1 ∓ rel)` clamped to `[lo, hi]`.
fn around(centre: f64, rel: f64, lo: f64, hi: f64) -> Span {
    Span::new(
        (centre * (1.0 - rel)).clamp(lo, hi),
        (centre * (1.0 + rel)).clamp(lo, hi),
    )
}

/// The randomization of a dataset matched to `frames` of crystal `preset`, starting from
/// `base` (defect content, rotations and everything not measured stay as there).
pub fn matched_randomization(
    frames: &[RealismStats],
    preset: Preset,
    base: &DomainRandomization,
) -> anyhow::Result<MatchReport> {
    let target = MatchTarget::from_frames(frames)?;
    let mut dr = base.clone();
    dr.presets = crate::dataset::randomize::PresetWeights {
        cdte: (preset == Preset::Cdte110) as u8 as f64,
        si: (preset == Preset::Si110) as u8 as f64,
        gaas: (preset == Preset::Gaas110) as u8 as f64,
    };
    anyhow::ensure!(
        preset != Preset::Custom,
        "matching needs a named crystal (cdte110, si110, gaas110)"
    );
    let pm = target.nm_per_px;
    dr.pixel_size_pm = Span::new(
        (pm.min * 1000.0 * 0.95).clamp(3.0, 100.0),
        (pm.max * 1000.0 * 1.05).clamp(3.0, 100.0),
    );
    // One probe, so the column width alone sets the measured FWHM.
    dr.gaussian_probe_fraction = 1.0;
    dr.gaussian_fwhm_a = Span::new(0.85, 0.95);
    let mut trial_base = SynthParams {
        width: TRIAL_SIZE,
        height: TRIAL_SIZE,
        seed: 1,
        pixel_size_pm: 0.5 * (dr.pixel_size_pm.min + dr.pixel_size_pm.max),
        ..Default::default()
    };
    trial_base.crystal.preset = preset;
    trial_base.probe.model = ProbeModel::Gaussian;
    trial_base.probe.gaussian_fwhm_a = 0.9;
    trial_base.probe.source_sigma_a = 0.0;
    for c in [
        &mut trial_base.defects.vacancies,
        &mut trial_base.defects.interstitials,
        &mut trial_base.defects.twin_boundaries,
        &mut trial_base.defects.tilt_boundaries,
        &mut trial_base.defects.twin_lamellae,
    ] {
        *c = CountRange::new(0, 0);
    }
    // Trials sit in the middle of the ranges the dataset will draw the other knobs from.
    let mid = |s: Span| 0.5 * (s.min + s.max);
    trial_base.specimen.background_gradient = mid(base.background_gradient);
    trial_base.specimen.amorphous = mid(base.amorphous);
    trial_base.specimen.amorphous_length_a = mid(base.amorphous_length_a);
    trial_base.specimen.thickness_variation = mid(base.thickness_variation);
    trial_base.specimen.thickness_wavelength_nm = mid(base.thickness_wavelength_nm);
    let filtered = target
        .noise
        .is_some_and(|n| n <= 2.0 * realism::NOISE_FLOOR);
    if filtered {
        // Smoothed frames: trials are smoothed alike (the middle of the low-pass span).
        trial_base.noise.lowpass_sigma_px =
            0.5 * (base.lowpass_sigma_px.min + base.lowpass_sigma_px.max);
    }
    // Trials carry the frame's measured scan distortions: they change the width estimate.
    trial_base.scan.line_jitter_px = target.line_jitter_px.unwrap_or(0.0).clamp(0.0, 3.0);
    let md = crate::synth::params::MAX_DRIFT_PX_PER_KLINE;
    trial_base.scan.drift_x_px_per_kline = (target.shear.unwrap_or(0.0) * 1000.0).clamp(-md, md);
    trial_base.scan.drift_y_px_per_kline = (target.stretch.unwrap_or(0.0) * 1000.0).clamp(-md, md);

    // Each statistic depends a little on the other knobs (the width estimate on the noise,
    // the noise ratio on the column contrast), so solve them in turn, twice, each under the
    // others' current values.
    let mut column_sigma_a = None;
    let mut background = None;
    let mut dose_e_per_a2 = None;
    for _round in 0..2 {
        if let Some(b) = target.background {
            background = solve(
                &trial_base,
                0.0,
                8.0,
                false,
                true,
                b,
                &|p, v| p.specimen.background = v,
                &|m| Some(m.background),
            );
            if let Some(b) = background {
                trial_base.specimen.background = b;
            }
        }
        if let Some(n) = target.noise {
            dose_e_per_a2 = solve(
                &trial_base,
                1e2,
                1e7,
                true,
                false,
                n,
                &|p, v| p.noise.dose_e_per_a2 = v,
                &|m| m.noise,
            );
            if let Some(d) = dose_e_per_a2 {
                trial_base.noise.dose_e_per_a2 = d;
            }
        }
        if let Some(f) = target.column_fwhm_a {
            column_sigma_a = solve(
                &trial_base,
                0.0,
                1.2,
                false,
                true,
                f,
                &|p, v| p.specimen.column_sigma_a = v,
                &|m| m.column_fwhm_a,
            );
            if let Some(s) = column_sigma_a {
                trial_base.specimen.column_sigma_a = s;
            }
        }
    }
    if let Some(s) = column_sigma_a {
        dr.column_sigma_a = around(s, 0.2, 0.0, 1.2);
    }
    if let Some(b) = background {
        dr.background = around(b, 0.25, 0.0, 8.0);
    }
    if let Some(d) = dose_e_per_a2 {
        dr.dose_e_per_a2 = Span::new((d / 1.6).max(1e2), (d * 1.6).min(1e7));
    }
    // A frame with no measurable noise was smoothed by its author: so are all matched images;
    // a noisy one gets none.
    dr.lowpass_fraction = if filtered { 1.0 } else { 0.0 };
    if let Some(j) = target.line_jitter_px {
        dr.line_jitter_px = Span::new((j * 0.6).clamp(0.0, 3.0), (j * 1.4).clamp(0.0, 3.0));
    }
    // Real drift differs between frames of one session, so keep a margin of ±1.5 %.
    let drift = |v: f64| Span::new((v * 1000.0 - 15.0).max(-md), (v * 1000.0 + 15.0).min(md));
    if let Some(s) = target.shear {
        dr.drift_px_per_kline = drift(s);
    }
    if let Some(s) = target.stretch {
        dr.drift_y_px_per_kline = Some(drift(s));
    }
    dr.validate()?;
    Ok(MatchReport {
        target,
        column_sigma_a,
        background,
        dose_e_per_a2,
        randomization: dr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic stand-in for a real frame, with known knob values.
    fn frame(sigma: f64, background: f64, dose: f64, seed: u64) -> RealismStats {
        let mut p = SynthParams {
            width: 320,
            height: 320,
            seed,
            pixel_size_pm: 16.0,
            ..Default::default()
        };
        p.probe.model = ProbeModel::Gaussian;
        p.probe.gaussian_fwhm_a = 0.9;
        p.probe.source_sigma_a = 0.0;
        p.specimen.column_sigma_a = sigma;
        p.specimen.background = background;
        p.noise.dose_e_per_a2 = dose;
        p.scan.drift_x_px_per_kline = 40.0;
        p.scan.drift_y_px_per_kline = -30.0;
        let s = crate::synth::generate(&p).unwrap();
        realism::measure(&s.image, &p.crystal.spec(), Some(0.016), None).unwrap()
    }

    #[test]
    fn matching_recovers_the_knobs_of_a_frame_and_centres_the_ranges_on_it() {
        let target = frame(0.6, 1.5, 2.0e4, 3);
        let m = matched_randomization(
            std::slice::from_ref(&target),
            Preset::Cdte110,
            &DomainRandomization::default(),
        )
        .unwrap();
        // The knobs land near the frame's (the estimators are not perfectly monotonic in
        // them, so the bands are loose); the statistics are checked tightly below.
        let sigma = m.column_sigma_a.unwrap();
        assert!((0.3..=1.0).contains(&sigma), "column sigma {sigma}");
        let bg = m.background.unwrap();
        assert!((bg / 1.5 - 1.0).abs() < 0.5, "background {bg}");
        let dose = m.dose_e_per_a2.unwrap();
        assert!(dose > 2.0e4 / 4.0 && dose < 2.0e4 * 4.0, "dose {dose}");
        let dr = &m.randomization;
        dr.validate().unwrap();
        assert!(dr.column_sigma_a.min <= sigma && sigma <= dr.column_sigma_a.max);
        assert!(dr.pixel_size_pm.min <= 16.0 && 16.0 <= dr.pixel_size_pm.max);
        assert_eq!(
            (dr.presets.cdte, dr.presets.si, dr.presets.gaas),
            (1.0, 0.0, 0.0)
        );
        // Shear 0.04 and stretch −0.03 were measured and centre the drift spans.
        let mid = |s: Span| 0.5 * (s.min + s.max);
        assert!(
            (mid(dr.drift_px_per_kline) - 40.0).abs() < 10.0,
            "{:?}",
            dr.drift_px_per_kline
        );
        let dy = dr.drift_y_px_per_kline.unwrap();
        assert!((mid(dy) + 30.0).abs() < 10.0, "{dy:?}");
        // A synthetic image drawn from the matched recipe measures like the frame.
        let mut p = crate::dataset::randomize::draw_params(
            &SynthParams {
                width: 320,
                height: 320,
                ..Default::default()
            },
            dr,
            5,
        );
        p.defects.tilt_boundaries = CountRange::new(0, 0);
        p.defects.twin_boundaries = CountRange::new(0, 0);
        p.defects.twin_lamellae = CountRange::new(0, 0);
        let s = crate::synth::generate(&p).unwrap();
        let got = realism::measure(
            &s.image,
            &p.crystal.spec(),
            Some(p.pixel_size_pm / 1000.0),
            None,
        )
        .unwrap();
        let (a, b) = (got.column_fwhm_a.unwrap(), target.column_fwhm_a.unwrap());
        assert!((a / b - 1.0).abs() < 0.35, "FWHM {a} vs frame {b}");
        assert!((got.background - target.background).abs() < 0.2, "{got:?}");
        let (a, b) = (got.noise.unwrap(), target.noise.unwrap());
        assert!((a / b - 1.0).abs() < 0.5, "noise {a} vs frame {b}");
    }

    #[test]
    fn no_frames_is_an_error() {
        assert!(
            matched_randomization(&[], Preset::Cdte110, &DomainRandomization::default()).is_err()
        );
    }
}
