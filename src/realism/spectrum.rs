//! One Hann-windowed FFT of a square central crop, shared by the lattice fit, the noise floor,
//! the autocorrelation and the lattice-filtered reference.

use rayon::prelude::*;
use rustfft::num_complex::Complex32;

use crate::formats::fft::fft_2d;
use crate::raster::ImageF32;

/// Largest crop side used for the statistics (a 1024² crop holds ~10⁴ columns at 15 pm/px).
pub const MAX_SIDE: usize = 1024;

pub(crate) struct Spectrum {
    /// Side of the square crop and transform.
    pub n: usize,
    /// The 1-D Hann window (the 2-D window is `w[x] * w[y]`).
    pub w: Vec<f32>,
    /// The windowed, mean-subtracted crop (row-major, `n * n`).
    pub windowed: Vec<f32>,
    /// Its FFT, unshifted (bin `(kx, ky)` at `(ky mod n) * n + (kx mod n)`).
    pub f: Vec<Complex32>,
    /// `|F|²`, same layout.
    pub power: Vec<f32>,
    /// `Σ w²` over the 2-D window: white noise of variance σ² has mean power `σ² · win2`.
    pub win2: f64,
}

impl Spectrum {
    /// The central square crop, at most [`MAX_SIDE`].
    pub fn new(img: &ImageF32) -> anyhow::Result<Self> {
        let n = img.width.min(img.height).min(MAX_SIDE);
        anyhow::ensure!(
            n >= 64,
            "image is {}x{}: too small for lattice statistics (at least 64x64)",
            img.width,
            img.height
        );
        // an even side keeps the Nyquist bin unique
        let n = n & !1;
        Self::of_crop(img, (img.width - n) / 2, (img.height - n) / 2, n)
    }

    /// The square crop of side `n` (even, at least 64) at `(x0, y0)`, inside the image.
    pub fn of_crop(img: &ImageF32, x0: usize, y0: usize, n: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            n >= 64 && n.is_multiple_of(2) && x0 + n <= img.width && y0 + n <= img.height,
            "crop {n} px at ({x0}, {y0}) does not fit a {}x{} image",
            img.width,
            img.height
        );
        let mut sum = 0.0f64;
        let mut count = 0usize;
        for y in y0..y0 + n {
            for &v in &img.row(y)[x0..x0 + n] {
                if v.is_finite() {
                    sum += f64::from(v);
                    count += 1;
                }
            }
        }
        anyhow::ensure!(count > 0, "image holds no finite values");
        let mean = (sum / count as f64) as f32;
        let w = hann(n);
        let mut windowed = vec![0.0f32; n * n];
        windowed.par_chunks_mut(n).enumerate().for_each(|(j, dst)| {
            let src = &img.row(y0 + j)[x0..x0 + n];
            for (i, (d, &v)) in dst.iter_mut().zip(src).enumerate() {
                let v = if v.is_finite() { v - mean } else { 0.0 };
                *d = v * w[i] * w[j];
            }
        });
        let mut f: Vec<Complex32> = windowed.iter().map(|&v| Complex32::new(v, 0.0)).collect();
        fft_2d(&mut f, n, false);
        let power: Vec<f32> = f.par_iter().map(|c| c.norm_sqr()).collect();
        let w2: f64 = w.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        Ok(Self {
            n,
            w,
            windowed,
            f,
            power,
            win2: w2 * w2,
        })
    }

    /// Flat index of the signed bin `(kx, ky)`.
    #[inline]
    pub fn idx(&self, kx: i64, ky: i64) -> usize {
        let n = self.n as i64;
        (ky.rem_euclid(n) * n + kx.rem_euclid(n)) as usize
    }

    /// The circular autocorrelation `Σ_x a(x) a(x + d)` of the windowed crop, divided by the
    /// window's own autocorrelation so that it estimates the autocovariance at lag `d`
    /// (unbiased for a stationary image). Same unshifted layout as `power`.
    pub fn autocovariance(&self) -> Vec<f32> {
        let n = self.n;
        let mut buf: Vec<Complex32> = self.power.iter().map(|&p| Complex32::new(p, 0.0)).collect();
        fft_2d(&mut buf, n, true);
        let scale = 1.0 / (n * n) as f64;
        // separable window autocorrelation, for lags -n/2..n/2
        let wa: Vec<f64> = (0..n)
            .map(|d| {
                let d = if d > n / 2 { n - d } else { d };
                (0..n - d)
                    .map(|i| f64::from(self.w[i]) * f64::from(self.w[i + d]))
                    .sum::<f64>()
                    .max(1e-9)
            })
            .collect();
        let mut out = vec![0.0f32; n * n];
        out.par_chunks_mut(n).enumerate().for_each(|(y, row)| {
            for (x, o) in row.iter_mut().enumerate() {
                *o = (f64::from(buf[y * n + x].re) * scale / (wa[x] * wa[y])) as f32;
            }
        });
        out
    }

    /// Inverse transform of a masked copy of the spectrum: real part, row-major `n * n`.
    pub fn filtered(&self, keep: &[bool]) -> Vec<f32> {
        let n = self.n;
        let mut buf: Vec<Complex32> = self
            .f
            .iter()
            .zip(keep)
            .map(|(&c, &k)| if k { c } else { Complex32::new(0.0, 0.0) })
            .collect();
        fft_2d(&mut buf, n, true);
        let scale = 1.0 / (n * n) as f32;
        buf.iter().map(|c| c.re * scale).collect()
    }
}

/// Symmetric periodic Hann window (exactly zero at the first sample).
fn hann(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let t = std::f64::consts::TAU * i as f64 / n as f64;
            (0.5 - 0.5 * t.cos()) as f32
        })
        .collect()
}
