//! A plain single-channel f32 image, the currency between loaders, synthesis, display and detection.

use serde::{Deserialize, Serialize};

/// Percentiles of raw intensity mapped to black and white when an image is handed to a
/// detector or written as an 8-bit training image. Robust to hot pixels and dead rows.
pub const MODEL_WINDOW_PERCENTILES: (f64, f64) = (0.1, 99.9);

#[derive(Clone, Debug, PartialEq)]
pub struct ImageF32 {
    pub width: usize,
    pub height: usize,
    /// Row-major, `width * height` values.
    pub data: Vec<f32>,
}

impl ImageF32 {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0.0; width * height],
        }
    }

    pub fn from_vec(width: usize, height: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), width * height, "buffer does not match size");
        Self {
            width,
            height,
            data,
        }
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    pub fn row(&self, y: usize) -> &[f32] {
        &self.data[y * self.width..(y + 1) * self.width]
    }

    /// Finite minimum and maximum (NaN and inf ignored); `(0, 0)` for an empty or all-NaN image.
    pub fn min_max(&self) -> (f32, f32) {
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        for &v in &self.data {
            if v.is_finite() {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo > hi { (0.0, 0.0) } else { (lo, hi) }
    }

    /// Approximate percentiles (`p` in 0..=100) from a 4096-bin histogram: O(n), no sort.
    pub fn percentiles(&self, ps: &[f64]) -> Vec<f32> {
        let (lo, hi) = self.min_max();
        if hi <= lo {
            return ps.iter().map(|_| lo).collect();
        }
        const BINS: usize = 4096;
        let mut hist = vec![0u64; BINS];
        let scale = (BINS as f32 - 1.0) / (hi - lo);
        let mut n = 0u64;
        for &v in &self.data {
            if v.is_finite() {
                hist[((v - lo) * scale) as usize] += 1;
                n += 1;
            }
        }
        ps.iter()
            .map(|&p| {
                let target = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil().max(1.0) as u64;
                let mut acc = 0u64;
                for (i, &c) in hist.iter().enumerate() {
                    acc += c;
                    if acc >= target {
                        return lo + (i as f32 + 0.5) / scale;
                    }
                }
                hi
            })
            .collect()
    }

    /// The intensity window used for every 8-bit image a model sees, in training (exported
    /// PNGs) and in detection alike: percentiles [`MODEL_WINDOW_PERCENTILES`] of the raw values.
    pub fn model_window(&self) -> (f32, f32) {
        let p = self.percentiles(&[MODEL_WINDOW_PERCENTILES.0, MODEL_WINDOW_PERCENTILES.1]);
        (p[0], p[1])
    }

    /// Maps `[lo, hi]` linearly to 0..=255 with clipping.
    pub fn to_u8(&self, lo: f32, hi: f32) -> Vec<u8> {
        let s = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
        self.data
            .iter()
            .map(|&v| ((v - lo) * s).round().clamp(0.0, 255.0) as u8)
            .collect()
    }

    /// Maps `[lo, hi]` linearly to 0..=65535 with clipping.
    pub fn to_u16(&self, lo: f32, hi: f32) -> Vec<u16> {
        let s = if hi > lo { 65535.0 / (hi - lo) } else { 0.0 };
        self.data
            .iter()
            .map(|&v| ((v - lo) * s).round().clamp(0.0, 65535.0) as u16)
            .collect()
    }
}

/// A physical pixel size. Stored in nanometres; the unit the file used is kept for display.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PixelSize {
    pub nm_per_px: f64,
}

impl PixelSize {
    pub fn from_pm(pm: f64) -> Self {
        Self {
            nm_per_px: pm / 1000.0,
        }
    }
    pub fn pm(&self) -> f64 {
        self.nm_per_px * 1000.0
    }
    pub fn angstrom(&self) -> f64 {
        self.nm_per_px * 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_ramp() {
        let img = ImageF32::from_vec(100, 10, (0..1000).map(|v| v as f32).collect());
        let p = img.percentiles(&[0.0, 50.0, 100.0]);
        assert!((p[0] - 0.0).abs() < 1.0);
        assert!((p[1] - 500.0).abs() < 2.0, "{p:?}");
        assert!((p[2] - 999.0).abs() < 1.0);
    }

    #[test]
    fn min_max_ignores_nan() {
        let img = ImageF32::from_vec(3, 1, vec![f32::NAN, 2.0, -1.0]);
        assert_eq!(img.min_max(), (-1.0, 2.0));
    }
}
