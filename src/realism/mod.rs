//! Realism statistics: does a STEM image look like our synthetic training data?
//!
//! This room owns the measurements that compare a frame with the synthesizer's knobs: the
//! lattice (pixel size, rotation, scan shear and stretch) from the power spectrum, the column
//! width and the white-noise level from the autocorrelation, intensity percentiles, and
//! scan-line jitter against an image of the average lattice; plus the 5–95 % ranges of a
//! dataset and the list of statistics of a frame that fall outside them. Library only: no GUI.
//!
//! Statistics are meant for raw detector counts at the true pixel size. 8-bit exports are
//! detected (`eight_bit`): their background and contrast describe a display window.

mod compare;
mod intensity;
mod lattice;
mod scan;
mod spectrum;

use serde::{Deserialize, Serialize};

use crate::raster::ImageF32;
use crate::synth::crystal::CrystalSpec;

pub use compare::{
    Outside, Rank, StatRange, dataset_stats, fmt_num, outside, percentile_ranks, ranges,
};
pub use intensity::is_eight_bit;
pub use lattice::{LatticeEstimate, MIN_PEAKS_FOR_MATCH, MIN_SCORE};

/// Below this share of its strongest spectrum peaks on the crystal's lattice a frame is
/// reported as another structure ([`RealismStats::lattice_match`], judged only where the fit
/// rests on at least [`MIN_PEAKS_FOR_MATCH`] peaks). Measured: the real CdTe tilt frame
/// 0.84, bulk Si read as CdTe 0.81 (as Si: not judged), SrTiO3 [001] read as CdTe [110] 0.36;
/// 37 crowded 384-px training frames with a lattice: 6 judged, 3 below (0.33 and 0.47 where the
/// fit's scale was 25 % and 15 % off, 0.44 on a five-grain frame).
pub const MIN_LATTICE_MATCH: f64 = 0.5;

/// The smallest noise level reported (σ / (p99 − p1)): a filtered frame's floor.
pub const NOISE_FLOOR: f64 = 1e-4;

/// Where the pixel size used for the statistics came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationSource {
    /// The file's own calibration (or a synthetic image's known pixel size).
    File,
    /// The fitted lattice (the file had none).
    Lattice,
    /// Given by the user (overrides the file).
    User,
}

/// Everything measured on one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealismStats {
    /// Pixel size used for the Å-valued statistics (nm/px).
    pub nm_per_px: f64,
    pub nm_per_px_source: CalibrationSource,
    /// The file's calibration, when it had one.
    pub file_nm_per_px: Option<f64>,
    /// The fitted lattice (`None` when none was found clearly enough).
    pub lattice: Option<LatticeEstimate>,
    /// `[x0, y0, side]` of the square crop the lattice was fitted on, when the central crop
    /// holds no single clear lattice (several grains) and one quadrant does; `None`: the
    /// central crop. The scan statistics come from the same crop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice_crop: Option<[usize; 3]>,
    /// Column FWHM (Å) from the autocorrelation.
    pub column_fwhm_a: Option<f64>,
    /// 1st percentile / median.
    pub background: f64,
    /// (99th − 1st percentile) / median.
    pub contrast: f64,
    /// White-noise standard deviation / (p99 − p1).
    pub noise: Option<f64>,
    /// RMS per-line horizontal shift (px), linear trend removed.
    pub line_jitter_px: Option<f64>,
    /// From the lattice fit (ScanDistortion convention).
    pub shear: Option<f64>,
    pub stretch: Option<f64>,
    /// Share of the frame's strongest spectrum peaks on the fitted lattice's rings
    /// ([`lattice::explained_share`]): about 1 for a frame of the crystal, low for another
    /// structure the fit was forced onto; `None` without a fit on enough peaks to judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice_match: Option<f64>,
    /// All values are integers in 0..=255: background and contrast are a display window,
    /// not detector counts.
    pub eight_bit: bool,
}

/// One named statistic for tables and range checks.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatValue {
    /// Stable snake_case key.
    pub name: &'static str,
    /// Human label with its unit in parentheses.
    pub label: &'static str,
    pub value: f64,
}

/// Lattice estimate on its own: see [`LatticeEstimate`]. The search spans 3–100 pm/px, or
/// ±15 % around `hint_nm_per_px`. Errors when no lattice scores at least [`MIN_SCORE`].
pub fn estimate_lattice(
    img: &ImageF32,
    crystal: &CrystalSpec,
    hint_nm_per_px: Option<f64>,
) -> anyhow::Result<LatticeEstimate> {
    let s = spectrum::Spectrum::new(img)?;
    let ex = lattice::Excess::new(&s);
    let whole = lattice::fit(&s, &ex, crystal, hint_nm_per_px);
    if let Ok(f) = &whole
        && f.est.score >= MIN_SCORE
    {
        return Ok(f.est.clone());
    }
    if let Some(g) = grain_fit(img, crystal, hint_nm_per_px) {
        return Ok(g.fit.est);
    }
    let f = whole?;
    anyhow::bail!(
        "no clear {} lattice (score {:.2} < {MIN_SCORE})",
        crystal.name,
        f.est.score
    )
}

/// A lattice fitted on one grain: the fit, the spectrum of its crop and the crop.
struct GrainFit {
    fit: lattice::LatticeFit,
    spectrum: spectrum::Spectrum,
    crop: [usize; 3],
}

/// A fit scoring at least [`MIN_SCORE`], searched around `hint` when given.
fn clear_fit(
    s: &spectrum::Spectrum,
    ex: &lattice::Excess,
    crystal: &CrystalSpec,
    hint: Option<f64>,
) -> Option<lattice::LatticeFit> {
    lattice::fit(s, ex, crystal, hint)
        .ok()
        .filter(|f| f.est.score >= MIN_SCORE)
}

/// The best-scoring fit over the four quadrants (half-side square crops in the corners).
/// A frame with boundaries holds several lattices, whose spectra together may fit none
/// (on 30 frames of the realistic recipe, 12 gave no lattice, most of them with boundaries);
/// a grain usually fills a quadrant. A quadrant holds a quarter of the columns: a weak free
/// fit there is as likely to be a chance alignment as a grain (on the Si DM3, +72 % at score
/// 2.9), so a known calibration (`hint`) always constrains the search.
fn grain_fit(img: &ImageF32, crystal: &CrystalSpec, hint: Option<f64>) -> Option<GrainFit> {
    let n = (img.width.min(img.height) / 2).min(spectrum::MAX_SIDE) & !1;
    if n < 128 {
        return None;
    }
    let (xs, ys) = ([0, img.width - n], [0, img.height - n]);
    let mut best: Option<GrainFit> = None;
    for &y0 in &ys {
        for &x0 in &xs {
            let Ok(sp) = spectrum::Spectrum::of_crop(img, x0, y0, n) else {
                continue;
            };
            let ex = lattice::Excess::new(&sp);
            if let Some(f) = clear_fit(&sp, &ex, crystal, hint)
                && best.as_ref().is_none_or(|b| f.est.score > b.fit.est.score)
            {
                best = Some(GrainFit {
                    fit: f,
                    spectrum: sp,
                    crop: [x0, y0, n],
                });
            }
        }
    }
    best
}

/// A frame's lattice fit and, when it came from one grain, that crop's spectrum and
/// `[x0, y0, side]`.
struct FrameFit {
    fit: lattice::LatticeFit,
    grain: Option<(spectrum::Spectrum, [usize; 3])>,
}

/// The lattice of a frame as `measure` and [`lattice_match`] fit it: the whole frame's
/// ([`best_fit`]), else the clearest quadrant's ([`grain_fit`]); without either, why the whole
/// frame's search found none.
fn frame_fit(
    img: &ImageF32,
    s: &spectrum::Spectrum,
    ex: &lattice::Excess,
    crystal: &CrystalSpec,
    hint: Option<f64>,
) -> Result<FrameFit, String> {
    match best_fit(s, ex, crystal, hint) {
        Ok(fit) => Ok(FrameFit { fit, grain: None }),
        Err(why) => match grain_fit(img, crystal, hint) {
            Some(g) => Ok(FrameFit {
                fit: g.fit,
                grain: Some((g.spectrum, g.crop)),
            }),
            None => Err(why),
        },
    }
}

/// The lattice fit used by `measure`: an unconstrained search, and, when a calibration is
/// known and the free search disagrees with it by more than 15 % (or fails), a search
/// around it; the better-scoring one wins. Without one, why the free search found none.
fn best_fit(
    s: &spectrum::Spectrum,
    ex: &lattice::Excess,
    crystal: &CrystalSpec,
    hint: Option<f64>,
) -> Result<lattice::LatticeFit, String> {
    let free = lattice::fit(s, ex, crystal, None);
    let why = match &free {
        Ok(f) => format!("score {:.2} < {MIN_SCORE}", f.est.score),
        Err(e) => e.to_string(),
    };
    let free = free.ok();
    let agrees = |f: &lattice::LatticeFit, h: f64| (f.est.nm_per_px / h - 1.0).abs() <= 0.15;
    let best = match (free, hint) {
        (Some(f), Some(h)) if !agrees(&f, h) => match lattice::fit(s, ex, crystal, Some(h)).ok() {
            Some(g) if g.est.score > f.est.score => Some(g),
            _ => Some(f),
        },
        (None, Some(h)) => lattice::fit(s, ex, crystal, Some(h)).ok(),
        (f, _) => f,
    };
    best.filter(|f| f.est.score >= MIN_SCORE).ok_or(why)
}

/// Measures one frame. The pixel size is the user's if given, else the file's, else the
/// lattice's; without any of them this is an error.
pub fn measure(
    img: &ImageF32,
    crystal: &CrystalSpec,
    file_nm_per_px: Option<f64>,
    user_nm_per_px: Option<f64>,
) -> anyhow::Result<RealismStats> {
    let valid = |v: Option<f64>| v.filter(|x| x.is_finite() && *x > 0.0);
    let (file_nm_per_px, user_nm_per_px) = (valid(file_nm_per_px), valid(user_nm_per_px));
    let s = spectrum::Spectrum::new(img)?;
    let ex = lattice::Excess::new(&s);
    let hint = user_nm_per_px.or(file_nm_per_px);
    let (fit, grain) = match frame_fit(img, &s, &ex, crystal, hint) {
        Ok(f) => (Ok(f.fit), f.grain),
        Err(why) => (Err(why), None),
    };
    let (nm_per_px, source) = match (user_nm_per_px, file_nm_per_px, &fit) {
        (Some(u), _, _) => (u, CalibrationSource::User),
        (None, Some(f), _) => (f, CalibrationSource::File),
        (None, None, Ok(f)) => (f.est.nm_per_px, CalibrationSource::Lattice),
        (None, None, Err(why)) => {
            anyhow::bail!(
                "no calibration in the file and no clear {} lattice to take it from ({why}; \
                 give --nm-per-px)",
                crystal.name
            )
        }
    };
    let fit = fit.ok();
    let eight_bit = intensity::is_eight_bit(img);
    let (p1, p50, p99) = intensity::percentiles(img);
    let med = if p50.abs() > 0.0 { p50 } else { f64::NAN };
    let noise_var = intensity::noise_variance(&s);
    let mut acf = s.autocovariance();
    acf[0] -= noise_var as f32;
    let u = fit.as_ref().map(|f| [f.m[0][0], f.m[1][0]]);
    let px_a = nm_per_px * 10.0;
    let column_fwhm_a = intensity::column_fwhm_px(&acf, s.n, u).map(|w| w * px_a);
    let range = p99 - p1;
    // Below NOISE_FLOOR nothing is measurable (smoothed or filtered frames): report the
    // floor, so two such frames compare as equal instead of by their rounding errors.
    let noise = (range > 0.0).then(|| (noise_var.max(0.0).sqrt() / range).max(NOISE_FLOOR));
    // The lattice-filtered reference must come from the crop the lattice was fitted on.
    let scan_spectrum = grain.as_ref().map_or(&s, |g| &g.0);
    let line_jitter_px = fit
        .as_ref()
        .and_then(|f| scan::line_jitter(scan_spectrum, f));
    Ok(RealismStats {
        nm_per_px,
        nm_per_px_source: source,
        file_nm_per_px,
        lattice: fit.as_ref().map(|f| f.est.clone()),
        lattice_crop: grain.map(|g| g.1),
        column_fwhm_a,
        background: p1 / med,
        contrast: range / med,
        noise,
        line_jitter_px,
        shear: fit.as_ref().map(|f| f.est.shear),
        stretch: fit.as_ref().map(|f| f.est.stretch),
        lattice_match: fit.as_ref().and_then(|f| lattice::explained_share(&ex, f)),
        eight_bit,
    })
}

impl RealismStats {
    /// The comparable statistics (rotation is left out: it is random in training data).
    /// Background and contrast are left out for 8-bit exports (not detector counts).
    pub fn values(&self) -> Vec<StatValue> {
        let mut v = vec![StatValue {
            name: "pixel_size_pm",
            label: "pixel size (pm/px)",
            value: self.nm_per_px * 1000.0,
        }];
        let mut opt = |name, label, x: Option<f64>| {
            if let Some(value) = x.filter(|x| x.is_finite()) {
                v.push(StatValue { name, label, value });
            }
        };
        opt("column_fwhm_a", "column FWHM (Å)", self.column_fwhm_a);
        if !self.eight_bit {
            opt(
                "background",
                "background (p1/median)",
                Some(self.background),
            );
            opt(
                "contrast",
                "contrast ((p99-p1)/median)",
                Some(self.contrast),
            );
        }
        opt("noise", "noise (σ/(p99-p1))", self.noise);
        opt("line_jitter_px", "line jitter (px)", self.line_jitter_px);
        opt("shear", "shear (px/line)", self.shear);
        opt("stretch", "stretch", self.stretch);
        opt(
            "lattice_match",
            "share of spectrum peaks on the lattice",
            self.lattice_match,
        );
        v
    }

    /// The [`RealismStats::lattice_match`] of a frame whose strongest spatial frequencies
    /// are mostly not the crystal's (below [`MIN_LATTICE_MATCH`]): another crystal or zone
    /// axis that the lattice fit was forced onto. `None` when it matches, or when no lattice
    /// was found (then nothing was forced).
    pub fn lattice_mismatch(&self) -> Option<f64> {
        not_the_crystal(self.lattice_match)
    }

    /// Lattice pixel size relative to the file's, in percent (both known).
    pub fn lattice_vs_file_pct(&self) -> Option<f64> {
        let l = self.lattice.as_ref()?;
        let f = self.file_nm_per_px?;
        Some((l.nm_per_px / f - 1.0) * 100.0)
    }
}

#[cfg(test)]
mod tests;

/// What a model was trained on, as its model card records it: the 5–95 % ranges of the
/// realism statistics over its training data. The Viewer warns when a frame lies outside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingRealism {
    /// Crystal the statistics were measured with (cdte110, si110, gaas110).
    pub crystal: String,
    /// Images measured.
    pub images: usize,
    /// How the training data was made (recipe file, seeds), for people.
    #[serde(default)]
    pub source: String,
    pub ranges: Vec<StatRange>,
}

/// The `training_realism` section of the model card beside `model` (`model.json` next to
/// `model.onnx`). `Ok(None)` when the card or the section is absent: such a model gets no
/// warning. A card that exists but cannot be read is an error worth showing.
pub fn model_training_realism(model: &std::path::Path) -> anyhow::Result<Option<TrainingRealism>> {
    let card = model.with_extension("json");
    let text = match std::fs::read_to_string(&card) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => anyhow::bail!("cannot read the model card {}: {e}", card.display()),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("model card {} is not JSON: {e}", card.display()))?;
    match v.get("training_realism") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(s) => Ok(Some(serde_json::from_value(s.clone()).map_err(|e| {
            anyhow::anyhow!(
                "model card {}: training_realism is not valid: {e}",
                card.display()
            )
        })?)),
    }
}

/// A `lattice_match` share that says the frame is not of the crystal (below
/// [`MIN_LATTICE_MATCH`]); the one rule for the Viewer's banner and the warnings of `detect`,
/// `watch` and `realism`.
pub fn not_the_crystal(lattice_match: Option<f64>) -> Option<f64> {
    lattice_match.filter(|&m| m < MIN_LATTICE_MATCH)
}

/// What `detect` and `watch` say of a frame whose statistics lie outside the model's training
/// ranges (`FrameDetections::outside_training`, each as [`Outside`] prints it).
pub fn unlike_training_message(outside: &[String]) -> String {
    format!(
        "unlike the model's training data: {}; its detections may be unreliable \
         (`export --like` makes a matched dataset)",
        outside.join(", ")
    )
}

/// What the Viewer and `detect` say of a frame [`not_the_crystal`] flags, `share` its
/// `lattice_match`.
pub fn not_the_crystal_message(crystal_name: &str, share: f64) -> String {
    format!(
        "Not a {crystal_name} lattice: only {:.0} % of the frame's strongest spatial frequencies \
         lie on its rings (another crystal or zone axis?); the model knows [110] zincblende and \
         diamond frames only, so its boxes here mean nothing",
        share * 100.0
    )
}

/// [`RealismStats::lattice_match`] alone, from the fit [`measure`] makes (the whole frame, else
/// its clearest quadrant; searched near `hint_nm_per_px` when given), for `detect` and `watch`.
/// `None` when no lattice of `crystal` is found: nothing was forced onto the frame.
pub fn lattice_match(
    img: &ImageF32,
    crystal: &CrystalSpec,
    hint_nm_per_px: Option<f64>,
) -> Option<f64> {
    let s = spectrum::Spectrum::new(img).ok()?;
    let ex = lattice::Excess::new(&s);
    let f = frame_fit(img, &s, &ex, crystal, hint_nm_per_px).ok()?;
    lattice::explained_share(&ex, &f.fit)
}

/// The pixel size (nm/px) an uncalibrated frame's lattice gives, for detection; `None` when
/// no clear lattice of `crystal` is found (then the frame is used at its own scale).
pub fn lattice_pixel_size(img: &ImageF32, crystal: &CrystalSpec) -> Option<f64> {
    estimate_lattice(img, crystal, None)
        .ok()
        .map(|e| e.nm_per_px)
}
