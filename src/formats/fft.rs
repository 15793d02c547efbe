//! Power spectra of an image or a region, for reading lattice spacings off the FFT.

use rayon::prelude::*;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex32;
use serde::{Deserialize, Serialize};

use crate::raster::ImageF32;

/// Largest transform side: a 1024² spectrum already resolves spacings to 1/1024 of the field,
/// and bigger regions are cropped to their centre to keep the FFT interactive.
pub const MAX_FFT_SIDE: usize = 1024;

/// A region `[x, y, width, height]` in image pixels, clamped to the image.
pub type Region = [usize; 4];

/// `log(1 + |F|²)` of the Hann-windowed, mean-removed region, fftshifted (zero frequency at
/// pixel `(N/2, N/2)`), on a square `N x N` grid with `N` the next power of two above the
/// region's longer side (at most [`MAX_FFT_SIDE`]; larger regions use their central part).
/// Zero padding a short side keeps pixels square in frequency space, so one
/// [`spatial_frequency`] formula serves both axes. An empty region gives a 1 x 1 spectrum.
pub fn power_spectrum(img: &ImageF32, region: Option<Region>) -> ImageF32 {
    let [x0, y0, w, h] = clamp_region(img, region);
    if w == 0 || h == 0 {
        return ImageF32::new(1, 1);
    }
    let n = w.max(h).next_power_of_two().min(MAX_FFT_SIDE);
    // central crop when the region exceeds the transform size
    let (cw, ch) = (w.min(n), h.min(n));
    let (cx, cy) = (x0 + (w - cw) / 2, y0 + (h - ch) / 2);

    let mut sum = 0.0f64;
    let mut count = 0usize;
    for y in cy..cy + ch {
        for &v in &img.row(y)[cx..cx + cw] {
            if v.is_finite() {
                sum += f64::from(v);
                count += 1;
            }
        }
    }
    let mean = if count > 0 { sum / count as f64 } else { 0.0 } as f32;
    let wx = hann(cw);
    let wy = hann(ch);
    // the region sits centred in the padded square
    let (ox, oy) = ((n - cw) / 2, (n - ch) / 2);
    let mut buf = vec![Complex32::new(0.0, 0.0); n * n];
    for j in 0..ch {
        let src = &img.row(cy + j)[cx..cx + cw];
        let dst = &mut buf[(oy + j) * n + ox..(oy + j) * n + ox + cw];
        for (i, (d, &v)) in dst.iter_mut().zip(src).enumerate() {
            let v = if v.is_finite() { v - mean } else { 0.0 };
            *d = Complex32::new(v * wx[i] * wy[j], 0.0);
        }
    }

    fft_2d(&mut buf, n, false);

    let half = n / 2;
    let mut out = ImageF32::new(n, n);
    out.data.par_chunks_mut(n).enumerate().for_each(|(y, row)| {
        let sy = (y + half) % n;
        for (x, o) in row.iter_mut().enumerate() {
            let sx = (x + half) % n;
            *o = buf[sy * n + sx].norm_sqr().ln_1p();
        }
    });
    out
}

fn clamp_region(img: &ImageF32, region: Option<Region>) -> Region {
    let [x, y, w, h] = region.unwrap_or([0, 0, img.width, img.height]);
    let x = x.min(img.width);
    let y = y.min(img.height);
    [x, y, w.min(img.width - x), h.min(img.height - y)]
}

/// Symmetric Hann window; a single sample gets weight 1.
fn hann(n: usize) -> Vec<f32> {
    if n <= 1 {
        return vec![1.0; n];
    }
    (0..n)
        .map(|i| {
            let t = std::f64::consts::TAU * i as f64 / (n - 1) as f64;
            (0.5 - 0.5 * t.cos()) as f32
        })
        .collect()
}

/// In-place 2-D FFT of an `n x n` row-major buffer (unnormalised both ways): rows,
/// transpose, rows, transpose. Shared by the Viewer's spectrum, the realism statistics and the
/// lattice maps.
pub fn fft_2d(buf: &mut [Complex32], n: usize, inverse: bool) {
    let mut planner = FftPlanner::<f32>::new();
    let fft = if inverse {
        planner.plan_fft_inverse(n)
    } else {
        planner.plan_fft_forward(n)
    };
    let rows = |b: &mut [Complex32]| {
        b.par_chunks_mut(n).for_each_init(
            || vec![Complex32::new(0.0, 0.0); fft.get_inplace_scratch_len()],
            |scratch, row| fft.process_with_scratch(row, scratch),
        );
    };
    rows(buf);
    transpose(buf, n);
    rows(buf);
    transpose(buf, n);
}

/// In-place transpose of an `n x n` row-major buffer, in cache-sized tiles.
pub fn transpose(b: &mut [Complex32], n: usize) {
    const T: usize = 32;
    for by in (0..n).step_by(T) {
        for bx in (by..n).step_by(T) {
            for y in by..(by + T).min(n) {
                let x_start = if bx == by { y + 1 } else { bx };
                for x in x_start..(bx + T).min(n) {
                    b.swap(y * n + x, x * n + y);
                }
            }
        }
    }
}

/// Spatial frequency of one spectrum pixel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpatialFrequency {
    /// Components in 1/nm (x to the right, y down, as in the image).
    pub fx: f64,
    pub fy: f64,
    /// |f| in 1/nm.
    pub magnitude: f64,
    /// The lattice spacing 1/|f| in nm (infinite at the centre).
    pub d_spacing_nm: f64,
    /// Direction of the frequency vector in degrees, counter-clockwise from +x as seen on
    /// screen (y down in the image, so the sign of fy is flipped).
    pub angle_deg: f64,
}

/// Spatial frequency at spectrum position `(sx, sy)` (pixel coordinates, may be fractional,
/// pixel centres at integers) of a [`power_spectrum`] of side `spectrum_size` taken from an
/// image with `nm_per_px`.
pub fn spatial_frequency(
    sx: f64,
    sy: f64,
    spectrum_size: usize,
    nm_per_px: f64,
) -> SpatialFrequency {
    let n = spectrum_size.max(1) as f64;
    let c = (spectrum_size / 2) as f64;
    let fx = (sx - c) / (n * nm_per_px);
    let fy = (sy - c) / (n * nm_per_px);
    let magnitude = fx.hypot(fy);
    SpatialFrequency {
        fx,
        fy,
        magnitude,
        d_spacing_nm: 1.0 / magnitude,
        angle_deg: (-fy).atan2(fx).to_degrees(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lattice(w: usize, h: usize, fx: f64, fy: f64) -> ImageF32 {
        let mut img = ImageF32::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let p = std::f64::consts::TAU * (fx * x as f64 + fy * y as f64);
                img.data[y * w + x] = (100.0 + 50.0 * p.cos()) as f32;
            }
        }
        img
    }

    fn argmax_off_centre(s: &ImageF32) -> (usize, usize) {
        let c = s.width / 2;
        let mut best = (0, 0, f32::MIN);
        for y in 0..s.height {
            for x in 0..s.width {
                if x.abs_diff(c) <= 2 && y.abs_diff(c) <= 2 {
                    continue;
                }
                let v = s.get(x, y);
                if v > best.2 {
                    best = (x, y, v);
                }
            }
        }
        (best.0, best.1)
    }

    #[test]
    fn cosine_lattice_peaks_at_its_frequency() {
        // period 16 px along x and 32 px along y: frequency (1/16, 1/32) cycles/px
        let img = lattice(256, 256, 1.0 / 16.0, 1.0 / 32.0);
        let s = power_spectrum(&img, None);
        assert_eq!((s.width, s.height), (256, 256));
        let (x, y) = argmax_off_centre(&s);
        // the peak or its Friedel mate
        let ok = (x, y) == (128 + 16, 128 + 8) || (x, y) == (128 - 16, 128 - 8);
        assert!(ok, "peak at {x},{y}");
        let nm = 0.02;
        let f = spatial_frequency(144.0, 136.0, 256, nm);
        let expect = (1.0f64 / 16.0).hypot(1.0 / 32.0) / nm;
        assert!((f.magnitude - expect).abs() < 1e-9);
        assert!((f.fx - 1.0 / (16.0 * nm)).abs() < 1e-9);
        assert!((f.d_spacing_nm - 1.0 / expect).abs() < 1e-9);
        // mean removal: the centre is not the brightest pixel
        assert!(s.get(128, 128) < s.get(x, y));
    }

    #[test]
    fn regions_are_padded_and_cropped() {
        let img = lattice(300, 200, 1.0 / 10.0, 0.0);
        // 100 x 60 region -> 128 square
        let s = power_spectrum(&img, Some([10, 20, 100, 60]));
        assert_eq!(s.width, 128);
        let (x, y) = argmax_off_centre(&s);
        // 1/10 cycles/px on a 128 grid is 12.8 bins: nearest bin 13
        assert!(x.abs_diff(64) == 13 && y.abs_diff(64) <= 1, "{x},{y}");
        // oversize region is cropped to MAX_FFT_SIDE
        let big = ImageF32::new(1500, 40);
        assert_eq!(power_spectrum(&big, None).width, MAX_FFT_SIDE);
        // a region outside the image is empty, not a panic
        assert_eq!(power_spectrum(&img, Some([400, 400, 10, 10])).width, 1);
    }
}
