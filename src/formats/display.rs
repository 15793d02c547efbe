//! Turning raw intensities into screen pixels: percentile contrast, gamma, perceptual colour
//! maps, histograms and scale bars. Pure library code (the GUI only uploads the RGBA bytes).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::raster::ImageF32;

/// Colour maps offered by the viewer. Inferno and Viridis are perceptually uniform, so equal
/// intensity steps look equally large anywhere in the range (gray-scale with a jet map does not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Colormap {
    #[default]
    Gray,
    Inferno,
    Viridis,
}

impl Colormap {
    pub const ALL: [Colormap; 3] = [Colormap::Gray, Colormap::Inferno, Colormap::Viridis];

    pub fn name(self) -> &'static str {
        match self {
            Colormap::Gray => "Gray",
            Colormap::Inferno => "Inferno",
            Colormap::Viridis => "Viridis",
        }
    }

    /// The 256-entry RGB table of this map.
    pub fn lut(self) -> [[u8; 3]; 256] {
        let mut lut = [[0u8; 3]; 256];
        for (i, e) in lut.iter_mut().enumerate() {
            *e = self.color(i as f64 / 255.0);
        }
        lut
    }

    /// Colour at position `t` in 0..=1.
    ///
    /// Inferno and Viridis use Matt Zucker's degree-6 polynomial fits to the matplotlib tables
    /// (within about 5/255 per channel, invisible in an image and still monotonic in
    /// lightness); the unit tests pin them to matplotlib's own colours at 0, 0.5 and 1.
    pub fn color(self, t: f64) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let rgb = match self {
            Colormap::Gray => [t, t, t],
            Colormap::Inferno => poly(&INFERNO, t),
            Colormap::Viridis => poly(&VIRIDIS, t),
        };
        rgb.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8)
    }
}

const VIRIDIS: [[f64; 3]; 7] = [
    [
        0.277_727_327_223_417_7,
        0.005_407_344_544_966_578,
        0.334_099_805_335_306_1,
    ],
    [
        0.105_093_043_108_577_4,
        1.404_613_529_898_575,
        1.384_590_162_594_685,
    ],
    [
        -0.330_861_828_725_556_3,
        0.214_847_559_468_213,
        0.095_095_163_028_236_59,
    ],
    [
        -4.634_230_498_983_486,
        -5.799_100_973_351_585,
        -19.332_440_956_279_87,
    ],
    [
        6.228_269_936_347_081,
        14.179_933_366_805_09,
        56.690_552_600_681_05,
    ],
    [
        4.776_384_997_670_288,
        -13.745_145_377_746_01,
        -65.353_032_633_372_34,
    ],
    [
        -5.435_455_855_934_631,
        4.645_852_612_178_535,
        26.312_435_249_583_2,
    ],
];

const INFERNO: [[f64; 3]; 7] = [
    [
        0.000_218_940_369_119_226_5,
        0.001_651_004_631_001_012,
        -0.019_480_898_437_091_84,
    ],
    [
        0.106_513_419_485_611_6,
        0.563_956_436_788_409_1,
        3.932_712_388_889_277,
    ],
    [
        11.602_493_082_471_87,
        -3.972_853_965_665_698,
        -15.942_394_106_291_4,
    ],
    [
        -41.703_996_131_394_59,
        17.436_398_882_053_13,
        44.354_145_198_728_13,
    ],
    [
        77.162_935_699_427,
        -33.402_358_942_100_92,
        -81.807_309_257_389_93,
    ],
    [
        -71.319_428_244_992_14,
        32.626_064_263_977_23,
        73.209_519_858_032_02,
    ],
    [
        25.131_126_224_773_41,
        -12.242_668_952_385_67,
        -23.070_325_002_871_72,
    ],
];

fn poly(c: &[[f64; 3]; 7], t: f64) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        // Horner, highest degree first
        *o = c.iter().rev().fold(0.0, |acc, row| acc * t + row[k]);
    }
    out
}

/// How raw values become colours: window `[lo, hi]` to 0..1, then gamma, then optional
/// inversion, then the colour map.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DisplaySettings {
    pub lo: f32,
    pub hi: f32,
    /// Exponent on the windowed value: < 1 brightens dim columns, > 1 darkens.
    pub gamma: f32,
    pub colormap: Colormap,
    pub invert: bool,
}

impl Default for DisplaySettings {
    fn default() -> Self {
        Self {
            lo: 0.0,
            hi: 1.0,
            gamma: 1.0,
            colormap: Colormap::Gray,
            invert: false,
        }
    }
}

impl DisplaySettings {
    /// Settings with the window from [`auto_contrast`] at the model percentiles.
    pub fn auto(img: &ImageF32) -> Self {
        let (lo, hi) = auto_contrast(
            img,
            crate::raster::MODEL_WINDOW_PERCENTILES.0,
            crate::raster::MODEL_WINDOW_PERCENTILES.1,
        );
        Self {
            lo,
            hi,
            ..Self::default()
        }
    }
}

/// Intensity window from percentiles `p_lo`, `p_hi` (0..=100) of the finite values. Never
/// returns an empty window: a flat image gets `[v, v + 1]`.
///
/// Exact order statistics (of a fixed pseudo-random sample for images above
/// [`PERCENTILE_SAMPLE`] pixels), not histogram bins: one saturated or hot pixel stretches a
/// min-max histogram so far that every real value lands in its first bin.
pub fn auto_contrast(img: &ImageF32, p_lo: f64, p_hi: f64) -> (f32, f32) {
    let p = robust_percentiles(img, &[p_lo.min(p_hi), p_lo.max(p_hi)]);
    let (mut lo, mut hi) = (p[0], p[1]);
    if hi <= lo {
        (lo, hi) = img.min_max();
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    (lo, hi)
}

/// Images up to this many pixels use every pixel for percentiles; larger ones a sample of this
/// size (the 0.1 % tail of 4 M samples is still 4000 values).
pub const PERCENTILE_SAMPLE: usize = 1 << 22;

/// Percentiles `ps` (0..=100) of the finite values; 0 for an image with none.
pub fn robust_percentiles(img: &ImageF32, ps: &[f64]) -> Vec<f32> {
    let n = img.data.len();
    let mut sample: Vec<f32> = if n <= PERCENTILE_SAMPLE {
        img.data.iter().copied().filter(|v| v.is_finite()).collect()
    } else {
        img.random_sample(PERCENTILE_SAMPLE)
    };
    if sample.is_empty() {
        return vec![0.0; ps.len()];
    }
    let last = sample.len() - 1;
    ps.iter()
        .map(|&p| {
            let k = ((p.clamp(0.0, 100.0) / 100.0) * last as f64).round() as usize;
            *sample.select_nth_unstable_by(k, f32::total_cmp).1
        })
        .collect()
}

/// Counts of finite values in `bins` equal bins spanning `[lo, hi]` (the finite min and max).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub lo: f32,
    pub hi: f32,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Value at the centre of bin `i`.
    pub fn bin_center(&self, i: usize) -> f32 {
        let w = (self.hi - self.lo) / self.counts.len().max(1) as f32;
        self.lo + (i as f32 + 0.5) * w
    }
}

pub fn histogram(img: &ImageF32, bins: usize) -> Histogram {
    let bins = bins.max(1);
    let (lo, hi) = img.min_max();
    let scale = if hi > lo {
        bins as f32 / (hi - lo)
    } else {
        0.0
    };
    let counts = img
        .data
        .par_chunks(1 << 16)
        .map(|chunk| {
            let mut c = vec![0u64; bins];
            for &v in chunk {
                if v.is_finite() {
                    let i = ((v - lo) * scale) as usize;
                    c[i.min(bins - 1)] += 1;
                }
            }
            c
        })
        .reduce(
            || vec![0u64; bins],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    Histogram { lo, hi, counts }
}

/// Resolution of the windowed value: finer than any 8-bit output step even after a strong
/// gamma, and small enough (64 KiB) to build per frame.
const LUT_LEVELS: usize = 4096;

/// RGBA8 pixels (alpha 255), row-major, for `img` under `s`. Table-driven: gamma and the colour
/// map are evaluated once per LUT level, not per pixel. NaN shows as the low end.
pub fn render_rgba(img: &ImageF32, s: &DisplaySettings) -> Vec<u8> {
    let gamma = if s.gamma.is_finite() && s.gamma > 0.0 {
        f64::from(s.gamma)
    } else {
        1.0
    };
    let cmap = s.colormap.lut();
    let lut: Vec<[u8; 4]> = (0..LUT_LEVELS)
        .map(|i| {
            let t = (i as f64 / (LUT_LEVELS - 1) as f64).powf(gamma);
            let t = if s.invert { 1.0 - t } else { t };
            let [r, g, b] = cmap[(t * 255.0).round() as usize];
            [r, g, b, 255]
        })
        .collect();
    let (lo, hi) = if s.hi > s.lo && s.lo.is_finite() && s.hi.is_finite() {
        (s.lo, s.hi)
    } else {
        (s.lo, s.lo + 1.0)
    };
    let scale = (LUT_LEVELS - 1) as f32 / (hi - lo);
    let top = (LUT_LEVELS - 1) as f32;
    let mut out = vec![0u8; img.data.len() * 4];
    if img.width == 0 {
        return out;
    }
    out.par_chunks_mut(img.width * 4)
        .zip(img.data.par_chunks(img.width))
        .for_each(|(dst, src)| {
            for (d, &v) in dst.chunks_exact_mut(4).zip(src) {
                // `as usize` maps NaN to 0
                let i = ((v - lo) * scale).clamp(0.0, top) as usize;
                d.copy_from_slice(&lut[i]);
            }
        });
    out
}

/// A scale bar: a round physical length and its on-screen length in image pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleBar {
    pub length_px: f64,
    pub length_nm: f64,
    /// e.g. "500 pm", "2 nm", "1 µm".
    pub label: String,
}

/// The largest 1, 2 or 5 x 10^k length not longer than `target_fraction` of the image width,
/// labelled in pm, nm, µm or mm so that the number is at least 1. `None` without a usable
/// calibration.
pub fn scale_bar(nm_per_px: f64, image_width_px: usize, target_fraction: f64) -> Option<ScaleBar> {
    if !(nm_per_px.is_finite() && nm_per_px > 0.0 && image_width_px > 0) {
        return None;
    }
    let frac = if target_fraction.is_finite() && target_fraction > 0.0 {
        target_fraction.min(1.0)
    } else {
        0.2
    };
    let target = nm_per_px * image_width_px as f64 * frac;
    // start a decade high: log10 of an exact power of ten may round just below the integer
    let mut k = target.log10().floor() + 1.0;
    let mut nice = None;
    for _ in 0..4 {
        let base = 10f64.powf(k);
        if let Some(m) = [5.0, 2.0, 1.0]
            .into_iter()
            .find(|m| m * base <= target * (1.0 + 1e-9))
        {
            nice = Some(m * base);
            break;
        }
        k -= 1.0;
    }
    let length_nm = nice?;
    let (value, unit) = if length_nm < 1.0 - 1e-9 {
        (length_nm * 1e3, "pm")
    } else if length_nm < 1e3 - 1e-6 {
        (length_nm, "nm")
    } else if length_nm < 1e6 - 1e-3 {
        (length_nm / 1e3, "µm")
    } else {
        (length_nm / 1e6, "mm")
    };
    Some(ScaleBar {
        length_px: length_nm / nm_per_px,
        length_nm,
        label: format!("{} {unit}", format_number(value)),
    })
}

/// 1/2/5 x 10^k values without float noise: "500", "0.2", "20000".
fn format_number(v: f64) -> String {
    let r = (v * 1e6).round() / 1e6;
    let s = format!("{r:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [u8; 3], b: [f64; 3]) -> bool {
        a.iter()
            .zip(b)
            .all(|(&x, y)| (f64::from(x) - y * 255.0).abs() <= 5.0)
    }

    #[test]
    fn colormaps_match_matplotlib_anchors() {
        // matplotlib's _cm_listed tables at indices 0, 128 and 255
        assert!(close(
            Colormap::Viridis.color(0.0),
            [0.267004, 0.004874, 0.329415]
        ));
        assert!(close(
            Colormap::Viridis.color(128.0 / 255.0),
            [0.127568, 0.566949, 0.550556]
        ));
        assert!(close(
            Colormap::Viridis.color(1.0),
            [0.993248, 0.906157, 0.143936]
        ));
        assert!(close(
            Colormap::Inferno.color(0.0),
            [0.001462, 0.000466, 0.013866]
        ));
        assert!(close(
            Colormap::Inferno.color(128.0 / 255.0),
            [0.735683, 0.215906, 0.330245]
        ));
        assert!(close(
            Colormap::Inferno.color(1.0),
            [0.988362, 0.998364, 0.644924]
        ));
        assert_eq!(Colormap::Gray.color(0.5), [128, 128, 128]);
    }

    #[test]
    fn luminance_of_perceptual_maps_is_monotonic() {
        for cm in [Colormap::Inferno, Colormap::Viridis] {
            let lut = cm.lut();
            let lum =
                |c: [u8; 3]| 0.2126 * c[0] as f64 + 0.7152 * c[1] as f64 + 0.0722 * c[2] as f64;
            for i in 1..256 {
                assert!(lum(lut[i]) >= lum(lut[i - 1]) - 1.0, "{cm:?} at {i}");
            }
        }
    }

    #[test]
    fn render_windows_gamma_and_invert() {
        let img = ImageF32::from_vec(4, 1, vec![0.0, 50.0, 100.0, f32::NAN]);
        let s = DisplaySettings {
            lo: 0.0,
            hi: 100.0,
            ..Default::default()
        };
        let px = render_rgba(&img, &s);
        assert_eq!(&px[0..4], &[0, 0, 0, 255]);
        assert!((i32::from(px[4]) - 128).abs() <= 1);
        assert_eq!(&px[8..12], &[255, 255, 255, 255]);
        assert_eq!(&px[12..16], &[0, 0, 0, 255], "NaN shows as black");
        let inv = render_rgba(&img, &DisplaySettings { invert: true, ..s });
        assert_eq!(inv[0], 255);
        assert_eq!(inv[8], 0);
        let g = render_rgba(&img, &DisplaySettings { gamma: 2.0, ..s });
        assert!(
            (i32::from(g[4]) - 64).abs() <= 1,
            "0.5^2 = 0.25 -> 64, got {}",
            g[4]
        );
    }

    #[test]
    fn auto_contrast_ignores_outliers() {
        let mut v: Vec<f32> = (0..10000).map(|i| (i % 100) as f32).collect();
        v[0] = 1e9;
        let img = ImageF32::from_vec(100, 100, v);
        let (lo, hi) = auto_contrast(&img, 1.0, 99.0);
        assert!(lo <= 1.0 && (98.0..=99.0).contains(&hi), "{lo} {hi}");
        // the sampled path on a large image agrees within sampling error
        let big = ImageF32::from_vec(
            3000,
            1500,
            (0..4_500_000).map(|i| (i % 1000) as f32).collect(),
        );
        let p = robust_percentiles(&big, &[10.0, 90.0]);
        assert!(
            (p[0] - 100.0).abs() < 3.0 && (p[1] - 900.0).abs() < 3.0,
            "{p:?}"
        );
        let flat = ImageF32::from_vec(2, 2, vec![3.0; 4]);
        assert_eq!(auto_contrast(&flat, 1.0, 99.0), (3.0, 4.0));
    }

    #[test]
    fn histogram_counts_every_finite_value() {
        let img = ImageF32::from_vec(5, 1, vec![0.0, 1.0, 1.0, 2.0, f32::NAN]);
        let h = histogram(&img, 2);
        assert_eq!(h.counts, vec![1, 3]);
        assert_eq!((h.lo, h.hi), (0.0, 2.0));
        assert!((h.bin_center(0) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn scale_bars_pick_round_lengths_and_units() {
        // 512 px at 0.0164 nm/px: 8.4 nm wide, 20 % is 1.68 nm -> 1 nm
        let b = scale_bar(0.016388, 512, 0.2).unwrap();
        assert_eq!(b.label, "1 nm");
        assert!((b.length_px - 1.0 / 0.016388).abs() < 1e-9);
        // 2048 px at 7.5 pm/px: 15.4 nm wide, 20 % = 3.07 nm -> 2 nm
        assert_eq!(scale_bar(0.007498, 2048, 0.2).unwrap().label, "2 nm");
        // sub-nanometre: 100 px at 0.01 nm/px, 20 % = 0.2 nm -> 200 pm
        assert_eq!(scale_bar(0.01, 100, 0.2).unwrap().label, "200 pm");
        // micrometres: 1000 px at 10 nm/px = 10 µm wide, 25 % = 2.5 µm -> 2 µm
        let b = scale_bar(10.0, 1000, 0.25).unwrap();
        assert_eq!(b.label, "2 µm");
        assert!((b.length_px - 200.0).abs() < 1e-9);
        // exact hit stays: 500 nm
        assert_eq!(scale_bar(1.0, 2500, 0.2).unwrap().label, "500 nm");
        assert_eq!(scale_bar(0.1, 10_000, 1.0).unwrap().label, "1 µm");
        assert_eq!(scale_bar(0.001, 1000, 0.1).unwrap().label, "100 pm");
        assert!(scale_bar(0.0, 100, 0.2).is_none());
        assert!(scale_bar(f64::NAN, 100, 0.2).is_none());
    }
}

/// A metadata entry for display: the value at sensible precision with its unit, and where in
/// the file it came from (the reader appends that as " (path)"), for a tooltip.
pub fn pretty_metadata(key: &str, value: &str) -> (String, Option<String>) {
    let (v, source) = match value.rfind(" (") {
        Some(i) if value.ends_with(')') => (
            value[..i].trim(),
            Some(value[i + 2..value.len() - 1].to_string()),
        ),
        _ => (value.trim(), None),
    };
    let Ok(x) = v.parse::<f64>() else {
        return (v.to_string(), source);
    };
    let sig = |x: f64| {
        let s = format!("{x:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() {
            "0".to_string()
        } else {
            s.to_string()
        }
    };
    let k = key.to_ascii_lowercase();
    let shown = if k.contains("dwell") {
        // Velox records seconds (2.5e-6), DigitalMicrograph's DigiScan "Sample Time" µs (31.1).
        let us = if x < 1e-2 { x * 1e6 } else { x };
        format!("{} µs", sig(us))
    } else if k.ends_with("_kv") || k.contains("voltage") {
        let kv = if x > 1e4 { x / 1e3 } else { x };
        format!("{} kV", sig(kv))
    } else if k.contains("magnification") {
        format!("{}×", sig(x))
    } else if k.ends_with("_nm") {
        format!("{} nm", sig(x))
    } else if k.ends_with("_mrad") {
        format!("{} mrad", sig(x))
    } else if k.ends_with("_mm") {
        format!("{} mm", sig(x))
    } else if x.fract() == 0.0 && x.abs() < 1e12 {
        format!("{x:.0}")
    } else if x.abs() >= 1e-3 && x.abs() < 1e6 {
        sig(x)
    } else {
        format!("{x:.4e}")
    };
    (shown, source)
}

#[cfg(test)]
mod metadata_tests {
    use super::pretty_metadata;

    #[test]
    fn metadata_gets_units_and_sensible_precision() {
        let (v, src) = pretty_metadata(
            "dwell_time",
            "2.5000000000000002e-006 (Data/Image.a6264d/DwellTime)",
        );
        assert_eq!(v, "2.5 µs");
        assert_eq!(src.as_deref(), Some("Data/Image.a6264d/DwellTime"));
        assert_eq!(
            pretty_metadata(
                "dwell_time",
                "31.124107360839844 (ImageList[1].ImageTags.DigiScan.Sample Time)"
            )
            .0,
            "31.1241 µs"
        );
        assert_eq!(pretty_metadata("voltage_kv", "200").0, "200 kV");
        assert_eq!(pretty_metadata("detector", "HAADF").0, "HAADF");
        assert_eq!(pretty_metadata("format_version", "3").0, "3");
    }
}
