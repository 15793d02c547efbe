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
#[serde(default, deny_unknown_fields)]
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
#[serde(default, deny_unknown_fields)]
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
    /// Twin lamellae: pairs of parallel Σ3 twin boundaries with a thin twinned slab between
    /// (stacking faults are the thinnest). Placed after the single boundaries, so a lamella
    /// may stop at one of them.
    pub twin_lamellae: CountRange,
    /// Thickness of a twin lamella (nm). Range 0.3–10.
    pub lamella_thickness_nm: Span,
    /// Probability that a tilt boundary runs within 8° of an image axis (real boundaries
    /// often do). Range 0–1.
    pub axis_aligned_boundary_fraction: f64,
    /// Misorientation of a tilt boundary (degrees, either sense).
    pub tilt_misorientation_deg: Span,
    /// Point defects keep this distance (px) from the image edge.
    pub edge_margin_px: f64,
    /// A boundary must cross at least this fraction of the shorter image side to be used.
    pub min_boundary_length_frac: f64,
    /// What real boundaries do to the lattice around them.
    pub boundary_structure: BoundaryStructure,
}

/// The neighbourhood of a real boundary: bent lattice planes, a disordered core and a band
/// of changed intensity. Real tilt boundaries bend the lattice over a few nm; coherent twins
/// are nearly perfect (zero core disorder, little strain), which `twin_factor` expresses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoundaryStructure {
    /// Largest column displacement along the boundary from lattice bending (Å), reached at the
    /// boundary and decaying away from it. Range 0–2.
    pub strain_a: f64,
    /// Decay length of the bending away from the boundary (nm). Range 0.1–20.
    pub strain_decay_nm: f64,
    /// RMS random displacement of columns in the core (Å). Range 0–1.
    pub core_disorder_a: f64,
    /// Half-width of the disordered core (Å). Range 0–20.
    pub core_width_a: f64,
    /// Relative intensity loss of columns in a band along the boundary (dechannelling in a
    /// strained region; negative = brighter, e.g. segregation). Range −0.5–0.8.
    pub dechannelling: f64,
    /// Half-width of that band (Å). Range 0.5–50.
    pub dechannelling_width_a: f64,
    /// Twins get this fraction of the strain, disorder and dechannelling of tilt boundaries.
    /// Range 0–1.
    pub twin_factor: f64,
}

impl Default for BoundaryStructure {
    fn default() -> Self {
        Self {
            strain_a: 0.4,
            strain_decay_nm: 1.5,
            core_disorder_a: 0.25,
            core_width_a: 4.0,
            dechannelling: 0.2,
            dechannelling_width_a: 6.0,
            twin_factor: 0.2,
        }
    }
}

impl BoundaryStructure {
    /// A sharp boundary: no bending, disorder or intensity band.
    pub fn ideal() -> Self {
        Self {
            strain_a: 0.0,
            core_disorder_a: 0.0,
            dechannelling: 0.0,
            ..Self::default()
        }
    }
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
            twin_lamellae: CountRange::new(0, 0),
            lamella_thickness_nm: Span::new(0.5, 3.0),
            axis_aligned_boundary_fraction: 0.0,
            edge_margin_px: 24.0,
            min_boundary_length_frac: 0.5,
            boundary_structure: BoundaryStructure::default(),
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
#[serde(default, deny_unknown_fields)]
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
    /// Extra Gaussian blur along one direction (sigma, Å): a slightly mistilted thick specimen
    /// (each column projects as a short streak) or residual two-fold astigmatism. It merges the
    /// dumbbells into elongated blobs when it runs along them. Range 0–2.
    pub directional_sigma_a: f64,
    /// Direction of that blur in the image (degrees from +x). Range ±360.
    pub directional_angle_deg: f64,
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
            directional_sigma_a: 0.0,
            directional_angle_deg: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecimenParams {
    /// Uniform background (fraction of a Z_max column peak): thick specimens and amorphous
    /// layers put several times a column's own signal under it. Range 0–8.
    pub background: f64,
    /// Background change across the image along a random direction (fraction). Range 0–1.
    pub background_gradient: f64,
    /// Relative amplitude of slow thickness-like variation of column intensity. Range 0–0.5.
    pub thickness_variation: f64,
    /// Its typical wavelength (nm). Range 1–100.
    pub thickness_wavelength_nm: f64,
    /// Width of each atom column itself (Gaussian sigma, Å): thermal vibration and the spread
    /// of the channelling probe in a thick specimen. Convolved with the probe, so neighbouring
    /// columns of a dumbbell merge as they do in real thick specimens. Range 0–1.2.
    pub column_sigma_a: f64,
    /// Amorphous surface layers: RMS amplitude of their low-frequency texture (fraction of a
    /// Z_max column peak). It adds to the expected counts, so it carries its own shot noise.
    /// Range 0–1.
    pub amorphous: f64,
    /// Correlation length of that texture (Å). Range 1–100.
    pub amorphous_length_a: f64,
}

impl Default for SpecimenParams {
    fn default() -> Self {
        Self {
            background: 0.5,
            background_gradient: 0.15,
            thickness_variation: 0.15,
            thickness_wavelength_nm: 6.0,
            column_sigma_a: 0.5,
            amorphous: 0.08,
            amorphous_length_a: 6.0,
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
#[serde(default, deny_unknown_fields)]
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
    /// A Gaussian low-pass filter applied to the finished frame (sigma, px; 0 = none): many
    /// published and exported frames were smoothed by their authors. Range 0–4.
    pub lowpass_sigma_px: f64,
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
            lowpass_sigma_px: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanParams {
    /// RMS horizontal displacement of each scan line (px): fast-scan "tearing". Range 0–3.
    pub line_jitter_px: f64,
    /// Correlation of jitter between consecutive lines (0 = white, →1 = slow wander).
    pub line_jitter_correlation: f64,
    /// Specimen drift during the frame along x (px per 1000 lines; shears the image: 100 is a
    /// 10 % shear, the top of what fits of real frames report). Range ±120.
    pub drift_x_px_per_kline: f64,
    /// Drift along y (px per 1000 lines; stretches or compresses the slow-scan axis). Range ±120.
    pub drift_y_px_per_kline: f64,
    /// Bursts of strong line jitter (horizontal streaks): mean bursts per 1000 lines. Range 0–50.
    pub jitter_bursts_per_kline: f64,
    /// RMS horizontal displacement of lines inside a burst (px). Range 0–6.
    pub jitter_burst_px: f64,
    /// Mean length of a burst (lines). Range 1–100.
    pub jitter_burst_lines: f64,
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
            jitter_bursts_per_kline: 0.0,
            jitter_burst_px: 1.5,
            jitter_burst_lines: 4.0,
            wobble_px: 0.0,
            wobble_period_lines: 40.0,
            afterglow_px: 0.0,
            flyback_amplitude: 0.0,
            flyback_length_px: 12.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
#[serde(default, deny_unknown_fields)]
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
    /// Bring the recorded frame (`width` × `height` pixels of `pixel_size_pm`) to this many
    /// pixels, `[width, height]`, as the app brings a calibrated frame to its model's pixel size
    /// before the model sees it ([`crate::raster::resample`]: area filter when shrinking,
    /// bilinear when enlarging). The frame and its labels are then what the model is fed,
    /// noise correlations included. `None`: the frame as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resample_to: Option<[usize; 2]>,
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
            resample_to: None,
        }
    }
}

/// Largest image side accepted (px): keeps a typo from allocating gigabytes.
pub const MAX_SIDE: usize = 8192;

/// Largest slow-scan drift accepted (px per 1000 lines): a 12 % shear or stretch, above the
/// 1–10 % that fits of real frames report.
pub const MAX_DRIFT_PX_PER_KLINE: f64 = 120.0;

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
    /// Output pixels per recorded pixel along x and y (1 unless `resample_to`).
    pub fn output_scale(&self) -> (f64, f64) {
        match self.resample_to {
            Some([w, h]) => (w as f64 / self.width as f64, h as f64 / self.height as f64),
            None => (1.0, 1.0),
        }
    }

    /// The output frame's size in pixels (the recorded one unless `resample_to`).
    pub fn output_size(&self) -> (usize, usize) {
        self.resample_to
            .map_or((self.width, self.height), |[w, h]| (w, h))
    }

    /// The output frame's pixel size (pm/px): the recorded one unless `resample_to`.
    pub fn output_pixel_size_pm(&self) -> f64 {
        self.pixel_size_pm / self.output_scale().0
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (8..=MAX_SIDE).contains(&self.width) && (8..=MAX_SIDE).contains(&self.height),
            "image size {}x{} must be between 8 and {MAX_SIDE} px per side",
            self.width,
            self.height
        );
        check(true, "pixel size (pm/px)", self.pixel_size_pm, 3.0, 100.0)?;
        if let Some([w, h]) = self.resample_to {
            anyhow::ensure!(
                (8..=MAX_SIDE).contains(&w) && (8..=MAX_SIDE).contains(&h),
                "resampled size {w}x{h} must be between 8 and {MAX_SIDE} px per side"
            );
            let (sx, sy) = self.output_scale();
            anyhow::ensure!(
                (0.125..=8.0).contains(&sx)
                    && (0.125..=8.0).contains(&sy)
                    && (sx / sy - 1.0).abs() < 0.02,
                "resampling {}x{} to {w}x{h} must keep the pixels square (within 2 %) and \
                 change the size at most 8x",
                self.width,
                self.height
            );
        }
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
        check_count(&d.twin_lamellae, "twin lamellae")?;
        anyhow::ensure!(
            d.twin_boundaries.max + d.tilt_boundaries.max + 2 * d.twin_lamellae.max <= 8,
            "at most 8 boundaries per image (a lamella has two)"
        );
        check_span(&d.lamella_thickness_nm, "lamella thickness (nm)", 0.3, 10.0)?;
        let b = &d.boundary_structure;
        check(true, "boundary strain (Å)", b.strain_a, 0.0, 2.0)?;
        check(true, "strain decay (nm)", b.strain_decay_nm, 0.1, 20.0)?;
        check(true, "core disorder (Å)", b.core_disorder_a, 0.0, 1.0)?;
        check(true, "core width (Å)", b.core_width_a, 0.0, 20.0)?;
        check(true, "dechannelling", b.dechannelling, -0.5, 0.8)?;
        check(
            true,
            "dechannelling width (Å)",
            b.dechannelling_width_a,
            0.5,
            50.0,
        )?;
        check(true, "twin factor", b.twin_factor, 0.0, 1.0)?;
        check(
            true,
            "axis-aligned boundary fraction",
            d.axis_aligned_boundary_fraction,
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
        check(
            true,
            "directional blur (Å)",
            p.directional_sigma_a,
            0.0,
            2.0,
        )?;
        check(
            true,
            "directional blur angle (deg)",
            p.directional_angle_deg,
            -360.0,
            360.0,
        )?;
        let s = &self.specimen;
        check(true, "background", s.background, 0.0, 8.0)?;
        check(true, "background gradient", s.background_gradient, 0.0, 1.0)?;
        check(true, "thickness variation", s.thickness_variation, 0.0, 0.5)?;
        check(
            true,
            "thickness wavelength (nm)",
            s.thickness_wavelength_nm,
            1.0,
            100.0,
        )?;
        check(true, "column width (Å)", s.column_sigma_a, 0.0, 1.2)?;
        check(true, "amorphous layer", s.amorphous, 0.0, 1.0)?;
        check(
            true,
            "amorphous correlation length (Å)",
            s.amorphous_length_a,
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
        check(true, "low-pass sigma (px)", n.lowpass_sigma_px, 0.0, 4.0)?;
        let sc = &self.scan;
        check(true, "line jitter (px)", sc.line_jitter_px, 0.0, 5.0)?;
        check(
            true,
            "jitter correlation",
            sc.line_jitter_correlation,
            0.0,
            0.99,
        )?;
        check(
            true,
            "drift x (px/kline)",
            sc.drift_x_px_per_kline,
            -MAX_DRIFT_PX_PER_KLINE,
            MAX_DRIFT_PX_PER_KLINE,
        )?;
        check(
            true,
            "drift y (px/kline)",
            sc.drift_y_px_per_kline,
            -MAX_DRIFT_PX_PER_KLINE,
            MAX_DRIFT_PX_PER_KLINE,
        )?;
        check(
            true,
            "jitter bursts (per 1000 lines)",
            sc.jitter_bursts_per_kline,
            0.0,
            50.0,
        )?;
        check(true, "burst jitter (px)", sc.jitter_burst_px, 0.0, 6.0)?;
        check(
            true,
            "burst length (lines)",
            sc.jitter_burst_lines,
            1.0,
            100.0,
        )?;
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
