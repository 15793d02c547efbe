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

/// Spectrum bins around zero frequency that a click never snaps to: the mean and the slow
/// intensity ramps left after the Hann window pile up there, brighter than any lattice spot.
const CENTRE_EXCLUSION: f64 = 2.5;

/// A lattice spot in a power spectrum, at sub-pixel spectrum coordinates (pixel centres at
/// integers, as [`spatial_frequency`] takes them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpectrumSpot {
    pub x: f64,
    pub y: f64,
}

impl SpectrumSpot {
    /// Distance from zero frequency in spectrum bins.
    pub fn radius(&self, spectrum_size: usize) -> f64 {
        let c = (spectrum_size / 2) as f64;
        (self.x - c).hypot(self.y - c)
    }

    /// The spot's frequency: in 1/nm with a pixel size, in cycles per image pixel without
    /// (then `d_spacing_nm` is the period in pixels).
    pub fn frequency(&self, spectrum_size: usize, nm_per_px: Option<f64>) -> SpatialFrequency {
        spatial_frequency(self.x, self.y, spectrum_size, nm_per_px.unwrap_or(1.0))
    }
}

/// The spot a click at `(x, y)` means: the brightest spectrum pixel within `radius` bins
/// (never the zero-frequency peak), refined to sub-pixel precision by a parabola through it and
/// its two neighbours along each axis. A log power spectrum is close to a parabola at a peak,
/// so the refinement recovers periods that fall between bins. `None` when nothing qualifies
/// (a click outside the spectrum or on its centre).
pub fn snap_to_spot(spectrum: &ImageF32, x: f64, y: f64, radius: usize) -> Option<SpectrumSpot> {
    let n = spectrum.width.min(spectrum.height);
    if n < 3 || !x.is_finite() || !y.is_finite() {
        return None;
    }
    let c = (n / 2) as f64;
    let r = radius as f64;
    let (xi, yi) = (x.round() as i64, y.round() as i64);
    let mut best: Option<(usize, usize, f32)> = None;
    for py in yi - radius as i64..=yi + radius as i64 {
        for px in xi - radius as i64..=xi + radius as i64 {
            // Edge pixels have no neighbour on one side to refine with.
            if px < 1 || py < 1 || px >= n as i64 - 1 || py >= n as i64 - 1 {
                continue;
            }
            let (fx, fy) = (px as f64, py as f64);
            if (fx - x).hypot(fy - y) > r + 0.5 || (fx - c).hypot(fy - c) < CENTRE_EXCLUSION {
                continue;
            }
            let v = spectrum.get(px as usize, py as usize);
            if v.is_finite() && best.is_none_or(|b| v > b.2) {
                best = Some((px as usize, py as usize, v));
            }
        }
    }
    let (px, py, v) = best?;
    let offset = |before: f32, after: f32| {
        let curvature = f64::from(before) - 2.0 * f64::from(v) + f64::from(after);
        if curvature < 0.0 {
            (0.5 * f64::from(before - after) / curvature).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    Some(SpectrumSpot {
        x: px as f64 + offset(spectrum.get(px - 1, py), spectrum.get(px + 1, py)),
        y: py as f64 + offset(spectrum.get(px, py - 1), spectrum.get(px, py + 1)),
    })
}

/// The angle between two frequency vectors in degrees, 0 to 180 (the angle between the two
/// sets of lattice planes' normals).
pub fn angle_between_deg(a: &SpatialFrequency, b: &SpatialFrequency) -> f64 {
    let dot = a.fx * b.fx + a.fy * b.fy;
    let cross = a.fx * b.fy - a.fy * b.fx;
    cross.abs().atan2(dot).to_degrees()
}

/// The pixel size (nm/px) that makes a spot `radius` bins from zero frequency in a spectrum of
/// side `spectrum_size` the reflection of planes `d_nm` apart: the spot's period is
/// `spectrum_size / radius` pixels. `None` for a spot at the centre or a non-positive spacing.
pub fn pixel_size_from_spacing(radius: f64, spectrum_size: usize, d_nm: f64) -> Option<f64> {
    let nm = d_nm * radius / spectrum_size as f64;
    (radius > 0.0 && d_nm > 0.0 && nm.is_finite()).then_some(nm)
}

/// Highest and lowest spectrum zoom (the zoomed view shows the central `1/zoom` of each axis).
pub const MAX_SPECTRUM_ZOOM: f64 = 16.0;
pub const MIN_SPECTRUM_ZOOM: f64 = 1.0;

/// The zoom at which a spectrum of an image with `nm_per_px` shows frequencies up to a quarter
/// beyond `highest_per_nm` (the finest lattice spot of interest) at its edge, so those spots
/// sit well inside the view: the edge of the full spectrum is the Nyquist frequency
/// `1 / (2 nm_per_px)`.
pub fn auto_zoom(nm_per_px: f64, highest_per_nm: f64) -> f64 {
    let nyquist = 0.5 / nm_per_px;
    let zoom = nyquist / (1.25 * highest_per_nm);
    if zoom.is_finite() {
        zoom.clamp(MIN_SPECTRUM_ZOOM, MAX_SPECTRUM_ZOOM)
    } else {
        MIN_SPECTRUM_ZOOM
    }
}

/// Tick positions for a frequency axis from `-half_range` to `half_range`: a 1-2-5 step that
/// gives close to `target` ticks on each side of zero, and the ticks themselves (zero included).
pub fn axis_ticks(half_range: f64, target: usize) -> Vec<f64> {
    if !(half_range > 0.0 && half_range.is_finite()) || target == 0 {
        return vec![0.0];
    }
    let raw = half_range / target as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .min_by(|a, b| (a / raw).ln().abs().total_cmp(&(b / raw).ln().abs()))
        .unwrap_or(mag);
    let k = (half_range / step).floor() as i64;
    (-k..=k).map(|i| i as f64 * step).collect()
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

    /// A square lattice of Gaussian columns, period `a` px, rotated by `deg` (HAADF-like).
    fn column_lattice(n: usize, a: f64, deg: f64) -> ImageF32 {
        let (s, c) = deg.to_radians().sin_cos();
        let mut img = ImageF32::new(n, n);
        for y in 0..n {
            for x in 0..n {
                // lattice coordinates of the pixel, in periods
                let (u, v) = (
                    (c * x as f64 + s * y as f64) / a,
                    (-s * x as f64 + c * y as f64) / a,
                );
                let (du, dv) = ((u - u.round()) * a, (v - v.round()) * a);
                img.data[y * n + x] = (10.0 + 100.0 * (-(du * du + dv * dv) / 4.0).exp()) as f32;
            }
        }
        img
    }

    #[test]
    fn a_click_near_a_spot_reads_the_lattice_period_within_one_percent() {
        let (n, a, deg, nm) = (256, 9.7, 17.0f64, 0.02);
        let s = power_spectrum(&column_lattice(n, a, deg), None);
        // The first-order spot along the rotated u axis: n / a bins from the centre.
        let r = n as f64 / a;
        let (cx, cy) = (
            128.0 + r * deg.to_radians().cos(),
            128.0 + r * deg.to_radians().sin(),
        );
        // a click three bins off still finds it
        let spot = snap_to_spot(&s, cx + 2.0, cy - 2.0, 4).expect("spot");
        assert!(
            (spot.x - cx).abs() < 0.3 && (spot.y - cy).abs() < 0.3,
            "{spot:?} vs {cx:.2},{cy:.2}"
        );
        let f = spot.frequency(n, Some(nm));
        let d = a * nm;
        assert!(
            (f.d_spacing_nm - d).abs() / d < 0.01,
            "{} vs {d}",
            f.d_spacing_nm
        );
        // y is down in the image: a spot below +x is at a negative screen angle
        assert!((f.angle_deg + deg).abs() < 1.0, "{}", f.angle_deg);
        // the perpendicular spot is 90° away, and pixel units work without a pixel size
        let (px, py) = (
            128.0 - r * deg.to_radians().sin(),
            128.0 + r * deg.to_radians().cos(),
        );
        let other = snap_to_spot(&s, px, py, 3).expect("second spot");
        let g = other.frequency(n, None);
        assert!(
            (g.d_spacing_nm - a).abs() / a < 0.01,
            "{} px",
            g.d_spacing_nm
        );
        assert!((angle_between_deg(&f, &g) - 90.0).abs() < 1.0);
    }

    #[test]
    fn snapping_never_picks_zero_frequency_or_leaves_the_spectrum() {
        let s = power_spectrum(&column_lattice(128, 8.0, 0.0), None);
        let spot = snap_to_spot(&s, 64.0, 64.0, 3);
        assert!(
            spot.is_none_or(|p| p.radius(128) >= CENTRE_EXCLUSION),
            "{spot:?}"
        );
        assert!(snap_to_spot(&s, -40.0, 500.0, 3).is_none());
        assert!(snap_to_spot(&s, f64::NAN, 3.0, 3).is_none());
    }

    #[test]
    fn calibration_from_a_known_spacing_inverts_the_reading() {
        // A spot 20 bins out on a 512 spectrum is a 25.6 px period; if those planes are
        // 0.3742 nm apart ({111} of CdTe) the pixel is 0.3742 / 25.6 nm.
        let nm = pixel_size_from_spacing(20.0, 512, 0.3742).unwrap();
        assert!((nm - 0.3742 / 25.6).abs() < 1e-12);
        let f = spatial_frequency(256.0 + 12.0, 256.0 + 16.0, 512, nm);
        assert!((f.d_spacing_nm - 0.3742).abs() < 1e-9);
        assert!(pixel_size_from_spacing(0.0, 512, 0.3).is_none());
        assert!(pixel_size_from_spacing(5.0, 512, -1.0).is_none());
    }

    #[test]
    fn auto_zoom_puts_the_finest_spot_inside_and_ticks_are_round() {
        // 10 pm/px: Nyquist 50 /nm; the CdTe dumbbell {004} spot at 6.17 /nm
        let z = auto_zoom(0.01, 6.17);
        let edge = 50.0 / z;
        assert!(edge > 6.17 && edge < 9.0, "{edge}");
        assert_eq!(auto_zoom(0.2, 6.17), MIN_SPECTRUM_ZOOM);
        assert_eq!(auto_zoom(0.0005, 6.17), MAX_SPECTRUM_ZOOM);
        let t = axis_ticks(7.7, 3);
        assert_eq!(t, vec![-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0]);
        assert_eq!(axis_ticks(0.0, 3), vec![0.0]);
    }
}
