//! Every knob of the synthesizer, with physical units, defaults and valid ranges.
//!
//! The ranges below are the bounds the GUI sliders and the CLI accept; `validate` enforces them
//! so a bad sidecar or CLI value is a clear error instead of a panic or a silent NaN image.

use super::crystal::{CrystalSpec, Preset};
use serde::{Deserialize, Serialize};

/// An inclusive count range; each image draws its count uniformly from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountRange {
    pub min: u32,
    pub max: u32,
}

impl CountRange {
    pub const fn new(min: u32, max: u32) -> Self {
        Self { min, max }
    }
}

/// A closed real interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub min: f64,
    pub max: f64,
}

impl Span {
    pub const fn new(min: f64, max: f64) -> Self {
        Self { min, max }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CrystalParams {
    pub preset: Preset,
    /// The structure used when `preset` is `Custom` (ignored otherwise).
    pub custom: CrystalSpec,
    /// HAADF contrast exponent: column intensity ∝ Zⁿ. Range 1.0–2.0.
    pub z_exponent: f64,
}

impl Default for CrystalParams {
    fn default() -> Self {
        Self {
            preset: Preset::Cdte110,
            custom: Preset::Custom.spec(),
            z_exponent: 1.7,
        }
    }
}

impl CrystalParams {
    pub fn spec(&self) -> CrystalSpec {
        match self.preset {
            Preset::Custom => self.custom.clone(),
            p => p.spec(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefectParams {
    pub vacancies: CountRange,
    /// Probability that a vacancy removes a whole dumbbell rather than one column.
    pub dumbbell_vacancy_prob: f64,
    /// Probability that a vacancy is a partially occupied (dimmer) column instead of empty.
    pub partial_occupancy_prob: f64,
    /// Remaining occupancy of a partial vacancy.
    pub partial_occupancy: Span,
    pub interstitials: CountRange,
    /// Occupancy of an interstitial column relative to a full lattice column.
    pub interstitial_occupancy: Span,
    /// Σ3 twin boundaries (mirror across a {111} trace).
    pub twin_boundaries: CountRange,
    /// General tilt boundaries.
    pub tilt_boundaries: CountRange,
    /// Misorientation of a tilt boundary (degrees, either sense).
    pub tilt_misorientation_deg: Span,
    /// Point defects keep this distance (px) from the image edge.
    pub edge_margin_px: f64,
    /// A boundary must cross at least this fraction of the shorter image side to be used.
    pub min_boundary_length_frac: f64,
}

impl Default for DefectParams {
    fn default() -> Self {
        Self {
            vacancies: CountRange::new(1, 4),
            dumbbell_vacancy_prob: 0.3,
            partial_occupancy_prob: 0.0,
            partial_occupancy: Span::new(0.2, 0.5),
            interstitials: CountRange::new(1, 3),
            interstitial_occupancy: Span::new(0.7, 1.0),
            twin_boundaries: CountRange::new(0, 1),
            tilt_boundaries: CountRange::new(0, 1),
            tilt_misorientation_deg: Span::new(8.0, 40.0),
            edge_margin_px: 24.0,
            min_boundary_length_frac: 0.5,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProbeModel {
    /// A Gaussian of given FWHM (fast, the usual choice for bulk training data).
    Gaussian,
    /// |F⁻¹[A(k) e^{−iχ(k)}]|² from accelerating voltage, aperture, defocus and Cs.
    #[default]
    Aberrations,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeParams {
    pub model: ProbeModel,
    /// Gaussian probe FWHM (Å). Range 0.4–3.
    pub gaussian_fwhm_a: f64,
    /// Accelerating voltage (kV). Range 30–300.
    pub voltage_kv: f64,
    /// Probe-forming aperture semi-angle (mrad). Range 5–40.
    pub aperture_mrad: f64,
    /// Defocus C1 (Å; negative = underfocus, Scherzer convention χ = π λ C1 k² + ...). Range ±300.
    pub defocus_a: f64,
    /// Spherical aberration C3 = Cs (µm). Range −50–2000 (corrected to uncorrected).
    pub cs_um: f64,
    /// Gaussian source-size blur, sigma (Å). Range 0–1.5.
    pub source_sigma_a: f64,
}

impl Default for ProbeParams {
    fn default() -> Self {
        Self {
            model: ProbeModel::Aberrations,
            gaussian_fwhm_a: 0.9,
            voltage_kv: 200.0,
            aperture_mrad: 22.0,
            defocus_a: 0.0,
            cs_um: 1.0,
            source_sigma_a: 0.35,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpecimenParams {
    /// Uniform background (fraction of a Z_max column peak). Range 0–1.
    pub background: f64,
    /// Background change across the image along a random direction (fraction). Range 0–1.
    pub background_gradient: f64,
    /// Relative amplitude of slow thickness-like variation of column intensity. Range 0–0.5.
    pub thickness_variation: f64,
    /// Its typical wavelength (nm). Range 1–100.
    pub thickness_wavelength_nm: f64,
}

impl Default for SpecimenParams {
    fn default() -> Self {
        Self {
            background: 0.12,
            background_gradient: 0.15,
            thickness_variation: 0.12,
            thickness_wavelength_nm: 12.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DoseMode {
    /// Dose in e⁻/Å², converted with the pixel area and `collection_efficiency`.
    #[default]
    ElectronsPerA2,
    /// Mean detector counts at the peak of a Z_max column, directly.
    PeakCounts,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoiseParams {
    pub enabled: bool,
    pub dose_mode: DoseMode,
    /// e⁻/Å². Range 1e2–1e7.
    pub dose_e_per_a2: f64,
    /// Fraction of the probe current scattered onto the HAADF detector at a Z_max column peak.
    /// Range 0.001–1.
    pub collection_efficiency: f64,
    /// Mean counts at a Z_max column peak (`PeakCounts` mode). Range 1–1e5.
    pub peak_counts: f64,
    /// Gaussian read-out noise, RMS counts. Range 0–50.
    pub read_noise: f64,
}

impl Default for NoiseParams {
    fn default() -> Self {
        Self {
            enabled: true,
            dose_mode: DoseMode::ElectronsPerA2,
            dose_e_per_a2: 5.0e4,
            collection_efficiency: 0.1,
            peak_counts: 100.0,
            read_noise: 2.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScanParams {
    /// RMS horizontal displacement of each scan line (px): fast-scan "tearing". Range 0–3.
    pub line_jitter_px: f64,
    /// Correlation of jitter between consecutive lines (0 = white, →1 = slow wander).
    pub line_jitter_correlation: f64,
    /// Specimen drift during the frame along x (px per 1000 lines; shears the image). Range ±50.
    pub drift_x_px_per_kline: f64,
    /// Drift along y (px per 1000 lines; stretches or compresses the slow-scan axis). Range ±50.
    pub drift_y_px_per_kline: f64,
    /// Stray-field wobble amplitude along x (px) and period (lines). Range 0–2.
    pub wobble_px: f64,
    pub wobble_period_lines: f64,
    /// Detector afterglow along the fast scan: decay length (px), 0 = off. Range 0–5.
    pub afterglow_px: f64,
    /// Flyback transient at the start of each line: amplitude (fraction of a peak), length (px).
    pub flyback_amplitude: f64,
    pub flyback_length_px: f64,
}

impl Default for ScanParams {
    fn default() -> Self {
        Self {
            line_jitter_px: 0.3,
            line_jitter_correlation: 0.3,
            drift_x_px_per_kline: 4.0,
            drift_y_px_per_kline: 3.0,
            wobble_px: 0.0,
            wobble_period_lines: 40.0,
            afterglow_px: 0.0,
            flyback_amplitude: 0.0,
            flyback_length_px: 12.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabelParams {
    /// Point-defect boxes are one projected unit cell grown by this fraction. Range 0–1.
    pub cell_margin: f64,
    /// Width of a grain-boundary box across the boundary (Å). Range 2–40.
    pub boundary_width_a: f64,
}

impl Default for LabelParams {
    fn default() -> Self {
        Self {
            cell_margin: 0.1,
            boundary_width_a: 10.0,
        }
    }
}

/// Everything that determines one synthetic image (together with the seed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthParams {
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// Calibrated pixel size (pm/px). Range 3–100.
    pub pixel_size_pm: f64,
    /// In-plane rotation of the lattice (degrees); `None` draws it from the seed.
    pub rotation_deg: Option<f64>,
    pub crystal: CrystalParams,
    pub defects: DefectParams,
    pub probe: ProbeParams,
    pub specimen: SpecimenParams,
    pub noise: NoiseParams,
    pub scan: ScanParams,
    pub labels: LabelParams,
}

impl Default for SynthParams {
    fn default() -> Self {
        Self {
            seed: 7,
            width: 768,
            height: 768,
            pixel_size_pm: 15.0,
            rotation_deg: None,
            crystal: CrystalParams::default(),
            defects: DefectParams::default(),
            probe: ProbeParams::default(),
            specimen: SpecimenParams::default(),
            noise: NoiseParams::default(),
            scan: ScanParams::default(),
            labels: LabelParams::default(),
        }
    }
}

/// Largest image side accepted (px): keeps a typo from allocating gigabytes.
pub const MAX_SIDE: usize = 8192;

fn check(ok: bool, what: &str, value: f64, lo: f64, hi: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        ok && value.is_finite() && value >= lo && value <= hi,
        "{what} = {value} is outside its range {lo}..={hi}"
    );
    Ok(())
}

/// A range inside `lo..=hi` with `min <= max` (shared with the exporter's randomization).
pub(crate) fn check_span(s: &Span, what: &str, lo: f64, hi: f64) -> anyhow::Result<()> {
    check(true, &format!("{what} (min)"), s.min, lo, hi)?;
    check(true, &format!("{what} (max)"), s.max, lo, hi)?;
    anyhow::ensure!(
        s.min <= s.max,
        "{what}: min {} is above max {}",
        s.min,
        s.max
    );
    Ok(())
}

fn check_count(c: &CountRange, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        c.min <= c.max,
        "{what}: min {} is above max {}",
        c.min,
        c.max
    );
    anyhow::ensure!(c.max <= 500, "{what}: at most 500 per image");
    Ok(())
}

impl SynthParams {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (8..=MAX_SIDE).contains(&self.width) && (8..=MAX_SIDE).contains(&self.height),
            "image size {}x{} must be between 8 and {MAX_SIDE} px per side",
            self.width,
            self.height
        );
        check(true, "pixel size (pm/px)", self.pixel_size_pm, 3.0, 100.0)?;
        if let Some(r) = self.rotation_deg {
            check(true, "rotation (deg)", r, -360.0, 360.0)?;
        }
        self.crystal.spec().validate()?;
        check(true, "Z exponent", self.crystal.z_exponent, 1.0, 2.0)?;
        let d = &self.defects;
        check_count(&d.vacancies, "vacancies")?;
        check_count(&d.interstitials, "interstitials")?;
        check_count(&d.twin_boundaries, "twin boundaries")?;
        check_count(&d.tilt_boundaries, "tilt boundaries")?;
        anyhow::ensure!(
            d.twin_boundaries.max + d.tilt_boundaries.max <= 8,
            "at most 8 boundaries per image"
        );
        check(
            true,
            "dumbbell vacancy probability",
            d.dumbbell_vacancy_prob,
            0.0,
            1.0,
        )?;
        check(
            true,
            "partial occupancy probability",
            d.partial_occupancy_prob,
            0.0,
            1.0,
        )?;
        check_span(&d.partial_occupancy, "partial occupancy", 0.0, 0.95)?;
        check_span(
            &d.interstitial_occupancy,
            "interstitial occupancy",
            0.05,
            1.5,
        )?;
        check_span(
            &d.tilt_misorientation_deg,
            "tilt misorientation (deg)",
            3.0,
            177.0,
        )?;
        check(true, "edge margin (px)", d.edge_margin_px, 0.0, 1000.0)?;
        check(
            true,
            "minimum boundary length",
            d.min_boundary_length_frac,
            0.0,
            1.0,
        )?;
        let p = &self.probe;
        check(true, "Gaussian FWHM (Å)", p.gaussian_fwhm_a, 0.4, 3.0)?;
        check(true, "voltage (kV)", p.voltage_kv, 30.0, 300.0)?;
        check(true, "aperture (mrad)", p.aperture_mrad, 5.0, 40.0)?;
        check(true, "defocus (Å)", p.defocus_a, -300.0, 300.0)?;
        check(true, "Cs (µm)", p.cs_um, -50.0, 2000.0)?;
        check(true, "source size (Å)", p.source_sigma_a, 0.0, 1.5)?;
        let s = &self.specimen;
        check(true, "background", s.background, 0.0, 1.0)?;
        check(true, "background gradient", s.background_gradient, 0.0, 1.0)?;
        check(true, "thickness variation", s.thickness_variation, 0.0, 0.5)?;
        check(
            true,
            "thickness wavelength (nm)",
            s.thickness_wavelength_nm,
            1.0,
            100.0,
        )?;
        let n = &self.noise;
        check(true, "dose (e/Å²)", n.dose_e_per_a2, 1e2, 1e7)?;
        check(
            true,
            "collection efficiency",
            n.collection_efficiency,
            0.001,
            1.0,
        )?;
        check(true, "peak counts", n.peak_counts, 1.0, 1e5)?;
        check(true, "read noise", n.read_noise, 0.0, 50.0)?;
        let sc = &self.scan;
        check(true, "line jitter (px)", sc.line_jitter_px, 0.0, 3.0)?;
        check(
            true,
            "jitter correlation",
            sc.line_jitter_correlation,
            0.0,
            0.99,
        )?;
        check(true, "drift x", sc.drift_x_px_per_kline, -50.0, 50.0)?;
        check(true, "drift y", sc.drift_y_px_per_kline, -50.0, 50.0)?;
        check(true, "wobble (px)", sc.wobble_px, 0.0, 2.0)?;
        check(
            true,
            "wobble period (lines)",
            sc.wobble_period_lines,
            2.0,
            10000.0,
        )?;
        check(true, "afterglow (px)", sc.afterglow_px, 0.0, 5.0)?;
        check(true, "flyback amplitude", sc.flyback_amplitude, 0.0, 2.0)?;
        check(
            true,
            "flyback length (px)",
            sc.flyback_length_px,
            0.0,
            200.0,
        )?;
        let l = &self.labels;
        check(true, "cell margin", l.cell_margin, 0.0, 1.0)?;
        check(true, "boundary width (Å)", l.boundary_width_a, 2.0, 40.0)?;
        Ok(())
    }

    pub fn pixel_size_a(&self) -> f64 {
        self.pixel_size_pm / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        SynthParams::default().validate().unwrap();
        let p = SynthParams {
            pixel_size_pm: f64::NAN,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("pixel size"));
        let p = SynthParams {
            width: 100_000,
            ..Default::default()
        };
        assert!(p.validate().is_err());
        let mut p = SynthParams::default();
        p.defects.vacancies = CountRange::new(5, 2);
        assert!(p.validate().unwrap_err().to_string().contains("vacancies"));
    }

    #[test]
    fn sidecar_json_with_missing_fields_uses_defaults() {
        let p: SynthParams = serde_json::from_str(r#"{"seed": 3, "width": 128}"#).unwrap();
        assert_eq!(p.seed, 3);
        assert_eq!(p.height, 768);
        assert_eq!(p.crystal.z_exponent, 1.7);
    }
}
