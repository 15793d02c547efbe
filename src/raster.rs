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

    /// Percentiles (`p` in 0..=100) by histogram refinement: a 4096-bin histogram over the
    /// finite range, then, while the bin holding the wanted rank is still crowded (a hot pixel
    /// or a saturated stripe stretches the range so that real values share a few bins), a new
    /// histogram over that bin alone. O(n) per pass, on all cores, and exact integer counts,
    /// so the result does not depend on the thread count.
    pub fn percentiles(&self, ps: &[f64]) -> Vec<f32> {
        use rayon::prelude::*;
        const BINS: usize = 4096;
        const CHUNK: usize = 1 << 16;
        let (lo, hi) = self.min_max();
        if hi <= lo {
            return ps.iter().map(|_| lo).collect();
        }
        let n = self
            .data
            .par_chunks(CHUNK)
            .map(|c| c.iter().filter(|v| v.is_finite()).count() as u64)
            .sum::<u64>();
        // Histogram of the finite values in [a, b].
        let hist = |a: f32, b: f32| -> Vec<u64> {
            let scale = BINS as f64 / (b as f64 - a as f64);
            self.data
                .par_chunks(CHUNK)
                .map(|c| {
                    let mut h = vec![0u64; BINS];
                    for &v in c {
                        if v.is_finite() && v >= a && v <= b {
                            h[(((v - a) as f64 * scale) as usize).min(BINS - 1)] += 1;
                        }
                    }
                    h
                })
                .reduce(
                    || vec![0u64; BINS],
                    |mut x, y| {
                        for (p, q) in x.iter_mut().zip(&y) {
                            *p += q;
                        }
                        x
                    },
                )
        };
        let first = hist(lo, hi);
        ps.iter()
            .map(|&p| {
                let target = (p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil().max(1.0) as u64;
                let (mut a, mut b) = (lo, hi);
                let mut below = 0u64;
                let mut h = first.clone();
                for pass in 0..4 {
                    let width = (b as f64 - a as f64) / BINS as f64;
                    let mut acc = below;
                    let mut idx = BINS - 1;
                    for (i, &c) in h.iter().enumerate() {
                        if acc + c >= target {
                            idx = i;
                            break;
                        }
                        acc += c;
                    }
                    let (na, nb) = (
                        (a as f64 + idx as f64 * width) as f32,
                        (a as f64 + (idx + 1) as f64 * width) as f32,
                    );
                    // Fine enough: the bin holds few values, or cannot be split further.
                    if h[idx] <= (n / BINS as u64).max(1) || nb <= na || pass == 3 {
                        return ((na as f64 + nb as f64) / 2.0) as f32;
                    }
                    below = acc;
                    a = na;
                    b = nb;
                    // Values exactly at the old bin's upper edge belong to the next bin.
                    h = hist(a, b);
                    let in_range: u64 = h.iter().sum();
                    if in_range == 0 {
                        return ((na as f64 + nb as f64) / 2.0) as f32;
                    }
                }
                (a + b) / 2.0
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
    fn one_hot_pixel_does_not_collapse_the_window() {
        // A dead-flat detector offset with real signal 1000..2000 and one hot pixel at 1e9.
        let mut data: Vec<f32> = (0..100_000).map(|i| 1000.0 + (i % 1000) as f32).collect();
        data[5] = 1e9;
        let img = ImageF32::from_vec(1000, 100, data);
        let p = img.percentiles(&[1.0, 50.0, 99.0]);
        assert!((p[0] - 1010.0).abs() < 2.0, "{p:?}");
        assert!((p[1] - 1500.0).abs() < 2.0, "{p:?}");
        assert!((p[2] - 1990.0).abs() < 2.0, "{p:?}");
    }

    #[test]
    fn min_max_ignores_nan() {
        let img = ImageF32::from_vec(3, 1, vec![f32::NAN, 2.0, -1.0]);
        assert_eq!(img.min_max(), (-1.0, 2.0));
    }
}
