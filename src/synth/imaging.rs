//! Incoherent HAADF imaging: columns convolved with the probe, background, shot and read noise,
//! and the artefacts of serial scanning.
//!
//! Speed comes from never convolving whole images: each column is splatted with a precomputed
//! probe kernel sampled at 8×8 sub-pixel phases, row by row, so every scan line can carry its
//! own horizontal offset (jitter, drift, wobble) at no extra cost. A 768² frame with ~3000
//! columns is a few million multiply-adds.

use super::params::{DoseMode, ProbeModel, ProbeParams, SynthParams};
use super::scene::{Column, Scene};
use crate::raster::ImageF32;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;
use std::f64::consts::PI;
use std::sync::{Arc, Mutex};

/// Sub-pixel phases per axis of the kernel bank.
const PHASES: usize = 8;
/// Side of the probe simulation grid and its sampling (Å).
const PROBE_N: usize = 256;
const PROBE_DX_A: f64 = 0.1;
/// The probe kernel is cut where it falls below this fraction of its peak.
const KERNEL_CUTOFF: f64 = 2e-3;

/// Relativistic electron wavelength (Å) at an accelerating voltage (kV).
pub fn electron_wavelength_a(kv: f64) -> f64 {
    let v = kv * 1e3;
    12.264_26 / (v * (1.0 + 0.978_476e-6 * v)).sqrt()
}

/// A probe intensity profile sampled on a square grid (Å), centred, peak 1.
pub struct ProbeProfile {
    pub n: usize,
    pub dx_a: f64,
    pub data: Vec<f64>,
}

impl ProbeProfile {
    /// Bilinear sample at `(x, y)` Å from the probe centre; 0 outside the grid.
    pub fn sample(&self, x: f64, y: f64) -> f64 {
        let c = (self.n / 2) as f64;
        let fx = x / self.dx_a + c;
        let fy = y / self.dx_a + c;
        if fx < 0.0 || fy < 0.0 || fx >= (self.n - 1) as f64 || fy >= (self.n - 1) as f64 {
            return 0.0;
        }
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - ix as f64, fy - iy as f64);
        let at = |i: usize, j: usize| self.data[j * self.n + i];
        (1.0 - ty) * ((1.0 - tx) * at(ix, iy) + tx * at(ix + 1, iy))
            + ty * ((1.0 - tx) * at(ix, iy + 1) + tx * at(ix + 1, iy + 1))
    }

    /// Radius (Å) beyond which the profile stays below `frac` of its peak.
    pub fn radius(&self, frac: f64) -> f64 {
        let c = (self.n / 2) as f64;
        let mut r2max: f64 = 0.0;
        for j in 0..self.n {
            for i in 0..self.n {
                if self.data[j * self.n + i] > frac {
                    let (dx, dy) = (i as f64 - c, j as f64 - c);
                    r2max = r2max.max(dx * dx + dy * dy);
                }
            }
        }
        r2max.sqrt() * self.dx_a
    }

    /// Radius (Å) of the disc around the centre that holds `frac` of the total intensity.
    pub fn radius_holding(&self, frac: f64) -> f64 {
        let c = (self.n / 2) as f64;
        let mut by_r: Vec<(f64, f64)> = Vec::with_capacity(self.data.len());
        for j in 0..self.n {
            for i in 0..self.n {
                let (dx, dy) = (i as f64 - c, j as f64 - c);
                by_r.push(((dx * dx + dy * dy).sqrt(), self.data[j * self.n + i]));
            }
        }
        by_r.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = by_r.iter().map(|x| x.1).sum();
        let mut acc = 0.0;
        for (r, v) in by_r {
            acc += v;
            if acc >= frac * total {
                return r * self.dx_a;
            }
        }
        c * self.dx_a
    }

    /// Full width at half maximum along x through the peak (Å), by linear interpolation.
    pub fn fwhm_a(&self) -> f64 {
        let c = self.n / 2;
        let row = &self.data[c * self.n..(c + 1) * self.n];
        let mut right = 0.0;
        for i in c..self.n - 1 {
            if row[i] >= 0.5 && row[i + 1] < 0.5 {
                right = (i - c) as f64 + (row[i] - 0.5) / (row[i] - row[i + 1]);
                break;
            }
        }
        let mut left = 0.0;
        for i in (1..=c).rev() {
            if row[i] >= 0.5 && row[i - 1] < 0.5 {
                left = (c - i) as f64 + (row[i] - 0.5) / (row[i] - row[i - 1]);
                break;
            }
        }
        (left + right) * self.dx_a
    }
}

fn fft2(data: &mut [Complex<f64>], n: usize, inverse: bool) {
    let mut planner = FftPlanner::<f64>::new();
    let fft = if inverse {
        planner.plan_fft_inverse(n)
    } else {
        planner.plan_fft_forward(n)
    };
    for row in data.chunks_mut(n) {
        fft.process(row);
    }
    let mut col = vec![Complex::new(0.0, 0.0); n];
    for i in 0..n {
        for j in 0..n {
            col[j] = data[j * n + i];
        }
        fft.process(&mut col);
        for j in 0..n {
            data[j * n + i] = col[j];
        }
    }
}

/// Signed spatial frequency of FFT bin `i` on an `n`-point grid with spacing `dx`.
fn freq(i: usize, n: usize, dx: f64) -> f64 {
    let k = if i < n / 2 {
        i as f64
    } else {
        i as f64 - n as f64
    };
    k / (n as f64 * dx)
}

/// The probe intensity (including source-size blur), peak-normalised.
pub fn probe_profile(p: &ProbeParams) -> ProbeProfile {
    let n = PROBE_N;
    let dx = PROBE_DX_A;
    let c = n / 2;
    let mut data = vec![0.0f64; n * n];
    match p.model {
        ProbeModel::Gaussian => {
            let s2 = (p.gaussian_fwhm_a / 2.354_82).powi(2) + p.source_sigma_a.powi(2);
            // Along the directional blur the variances add.
            let (sa, ca) = p.directional_angle_deg.to_radians().sin_cos();
            let s2_along = s2 + p.directional_sigma_a.powi(2);
            for j in 0..n {
                for i in 0..n {
                    let (x, y) = ((i as f64 - c as f64) * dx, (j as f64 - c as f64) * dx);
                    let along = x * ca + y * sa;
                    let across = -x * sa + y * ca;
                    data[j * n + i] =
                        (-(along * along) / (2.0 * s2_along) - across * across / (2.0 * s2)).exp();
                }
            }
        }
        ProbeModel::Aberrations => {
            let lam = electron_wavelength_a(p.voltage_kv);
            let kmax = p.aperture_mrad * 1e-3 / lam;
            let cs = p.cs_um * 1e4;
            let mut psi = vec![Complex::new(0.0, 0.0); n * n];
            for j in 0..n {
                let ky = freq(j, n, dx);
                for i in 0..n {
                    let kx = freq(i, n, dx);
                    let k2 = kx * kx + ky * ky;
                    if k2 <= kmax * kmax {
                        let chi =
                            PI * lam * p.defocus_a * k2 + 0.5 * PI * cs * lam.powi(3) * k2 * k2;
                        psi[j * n + i] = Complex::from_polar(1.0, -chi);
                    }
                }
            }
            fft2(&mut psi, n, true);
            let mut inten: Vec<Complex<f64>> = psi
                .iter()
                .map(|z| Complex::new(z.norm_sqr(), 0.0))
                .collect();
            if p.source_sigma_a > 0.0 || p.directional_sigma_a > 0.0 {
                // Source-size (and directional) blur: multiply by the Gaussians' transform.
                fft2(&mut inten, n, false);
                let s2 = p.source_sigma_a.powi(2);
                let d2 = p.directional_sigma_a.powi(2);
                let (sa, ca) = p.directional_angle_deg.to_radians().sin_cos();
                for j in 0..n {
                    let ky = freq(j, n, dx);
                    for i in 0..n {
                        let kx = freq(i, n, dx);
                        let k_along = kx * ca + ky * sa;
                        let e = s2 * (kx * kx + ky * ky) + d2 * k_along * k_along;
                        inten[j * n + i] *= (-2.0 * PI * PI * e).exp();
                    }
                }
                fft2(&mut inten, n, true);
            }
            // fftshift so the probe sits at the grid centre.
            for j in 0..n {
                for i in 0..n {
                    let (si, sj) = ((i + c) % n, (j + c) % n);
                    data[sj * n + si] = inten[j * n + i].re.max(0.0);
                }
            }
        }
    }
    let peak = data.iter().cloned().fold(0.0, f64::max);
    if peak > 0.0 {
        for v in data.iter_mut() {
            *v /= peak;
        }
    }
    ProbeProfile { n, dx_a: dx, data }
}

/// The probe as the image sees it: the column's own width (a Gaussian, see
/// [`super::params::SpecimenParams::column_sigma_a`]) adds in quadrature to the source-size
/// blur, since both are Gaussian convolutions of the probe intensity.
pub fn effective_probe(p: &SynthParams) -> ProbeParams {
    let mut probe = p.probe.clone();
    probe.source_sigma_a = probe
        .source_sigma_a
        .hypot(p.specimen.column_sigma_a.max(0.0));
    probe
}

/// The probe sampled on the pixel grid at `PHASES × PHASES` sub-pixel offsets.
pub struct KernelBank {
    /// Kernel side (odd).
    pub k: usize,
    /// `[(py * PHASES + px) * k * k + ky * k + kx]`.
    data: Vec<f32>,
}

impl KernelBank {
    pub fn new(profile: &ProbeProfile, px_a: f64) -> Self {
        let radius_a = profile.radius(KERNEL_CUTOFF).clamp(2.0 * px_a, 12.0);
        let half = ((radius_a / px_a).ceil() as usize).clamp(1, 40);
        let k = 2 * half + 1;
        let mut data = vec![0f32; PHASES * PHASES * k * k];
        for py in 0..PHASES {
            for px in 0..PHASES {
                let base = (py * PHASES + px) * k * k;
                for ky in 0..k {
                    let dy = (ky as f64 - half as f64 - py as f64 / PHASES as f64) * px_a;
                    for kx in 0..k {
                        let dx = (kx as f64 - half as f64 - px as f64 / PHASES as f64) * px_a;
                        data[base + ky * k + kx] = profile.sample(dx, dy) as f32;
                    }
                }
            }
        }
        Self { k, data }
    }

    #[inline]
    fn row(&self, py: usize, px: usize, ky: usize) -> &[f32] {
        let base = (py * PHASES + px) * self.k * self.k + ky * self.k;
        &self.data[base..base + self.k]
    }
}

#[derive(PartialEq)]
struct BankKey {
    probe: String,
    px_bits: u64,
}

/// Probe kernels are expensive-ish (FFTs) and shared by every image with the same probe and
/// pixel size: keep the most recent few.
static BANK_CACHE: Mutex<Vec<(BankKey, Arc<KernelBank>)>> = Mutex::new(Vec::new());

pub fn kernel_bank(p: &ProbeParams, px_a: f64) -> Arc<KernelBank> {
    let key = BankKey {
        probe: serde_json::to_string(p).unwrap_or_default(),
        px_bits: px_a.to_bits(),
    };
    if let Ok(cache) = BANK_CACHE.lock()
        && let Some((_, b)) = cache.iter().find(|(k, _)| *k == key)
    {
        return b.clone();
    }
    let bank = Arc::new(KernelBank::new(&probe_profile(p), px_a));
    if let Ok(mut cache) = BANK_CACHE.lock() {
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((key, bank.clone()));
    }
    bank
}

/// Splits a continuous centre coordinate into an integer pixel and a kernel phase.
#[inline]
fn split(coord: f64) -> (i64, usize) {
    let c = coord - 0.5;
    let base = c.floor();
    let ph = ((c - base) * PHASES as f64).round() as usize;
    if ph == PHASES {
        (base as i64 + 1, 0)
    } else {
        (base as i64, ph)
    }
}

/// The noiseless column image (relative intensity: a Z_max column peaks near 1), scan
/// distortions included.
pub fn render_columns(
    columns: &[Column],
    scene: &Scene,
    bank: &KernelBank,
    w: usize,
    h: usize,
) -> ImageF32 {
    let mut img = ImageF32::new(w, h);
    let k = bank.k as i64;
    let half = k / 2;
    let dist = &scene.distortion;
    for col in columns {
        let y_img = col.pos[1] / (1.0 + dist.stretch);
        let (r0, py) = split(y_img);
        if r0 + half < 0 || r0 - half >= h as i64 {
            continue;
        }
        let wgt = col.weight;
        for ky in 0..k {
            let r = r0 + ky - half;
            if r < 0 || r >= h as i64 {
                continue;
            }
            let x_img = dist.line_x(col.pos[0], r as usize);
            let (c0, px) = split(x_img);
            let start = c0 - half;
            if start + k <= 0 || start >= w as i64 {
                continue;
            }
            let kr = bank.row(py, px, ky as usize);
            let row = &mut img.data[r as usize * w..(r as usize + 1) * w];
            let lo = (-start).max(0) as usize;
            let hi = ((w as i64 - start).min(k)) as usize;
            let dst = &mut row[(start + lo as i64) as usize..(start + hi as i64) as usize];
            for (d, s) in dst.iter_mut().zip(&kr[lo..hi]) {
                *d += wgt * s;
            }
        }
    }
    img
}

/// Mean detector counts at the peak of a Z_max column.
pub fn counts_per_unit(p: &SynthParams) -> f64 {
    match p.noise.dose_mode {
        DoseMode::ElectronsPerA2 => {
            let area = p.pixel_size_a().powi(2);
            p.noise.dose_e_per_a2 * area * p.noise.collection_efficiency
        }
        DoseMode::PeakCounts => p.noise.peak_counts,
    }
}

/// Mixes a line index into the noise seed (SplitMix64 finaliser) so every scan line has an
/// independent stream and the result does not depend on how lines are split across threads.
fn line_seed(seed: u64, row: usize) -> u64 {
    let mut z = seed
        ^ (row as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 1/k for the chop-down search (a multiply is several times cheaper than a divide).
const INV_K: [f64; 64] = {
    let mut t = [0.0; 64];
    let mut k = 1;
    while k < 64 {
        t[k] = 1.0 / k as f64;
        k += 1;
    }
    t
};

/// Below this mean Poisson draws are exact (inversion); above it a skew-corrected normal
/// approximation is used.
pub const POISSON_EXACT_BELOW: f64 = 8.0;

/// A Poisson draw. Exact inversion for small means; above [`POISSON_EXACT_BELOW`] the
/// Cornish–Fisher expansion `λ + √λ z + (z² − 1)/6`, rounded, which matches the Poisson mean
/// exactly, its variance to within 0.15 count² and its skewness to first order — far below
/// what a detector can tell apart, at a quarter of the cost of an exact sampler.
#[inline]
pub fn poisson(rng: &mut Xoshiro256PlusPlus, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda < POISSON_EXACT_BELOW {
        let u: f64 = rng.random();
        let mut p = (-lambda).exp();
        let mut f = p;
        let mut k = 0usize;
        while u > f && k < 63 {
            k += 1;
            p *= lambda * INV_K[k];
            f += p;
        }
        k as f64
    } else {
        let z: f64 = StandardNormal.sample(rng);
        (lambda + lambda.sqrt() * z + (z * z - 1.0) / 6.0)
            .round()
            .max(0.0)
    }
}

/// Background, dose, noise and detector artefacts applied line by line, in counts.
pub fn detect(signal: &ImageF32, scene: &Scene, p: &SynthParams) -> ImageF32 {
    let (w, h) = (signal.width, signal.height);
    let scale = counts_per_unit(p);
    let sp = &p.specimen;
    let (gs, gc) = scene.field.gradient_angle.sin_cos();
    let half_extent = 0.5 * (w as f64 * gc.abs() + h as f64 * gs.abs()).max(1.0);
    let bg0 = sp.background;
    let gslope = sp.background * sp.background_gradient / half_extent;
    let sc = &p.scan;
    let afterglow = if sc.afterglow_px > 0.0 {
        (-1.0 / sc.afterglow_px).exp()
    } else {
        0.0
    };
    let fly_len = sc.flyback_length_px.max(1e-9);
    let n_fly = if sc.flyback_amplitude > 0.0 {
        ((fly_len * 6.0).ceil() as usize).min(w)
    } else {
        0
    };
    let flyback: Vec<f64> = (0..n_fly)
        .map(|c| sc.flyback_amplitude * (-(c as f64) / fly_len).exp())
        .collect();
    let read = p.noise.read_noise;
    let noisy = p.noise.enabled;
    let texture = (sp.amorphous > 0.0).then(|| {
        amorphous_texture(
            w,
            h,
            sp.amorphous_length_a / p.pixel_size_a(),
            scene.field.texture_seed,
        )
    });
    let amorphous = sp.amorphous as f32;
    let mut out = ImageF32::new(w, h);
    for r in 0..h {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(line_seed(scene.noise_seed, r));
        let yc = r as f64 + 0.5 - h as f64 / 2.0;
        let src = signal.row(r);
        let dst = &mut out.data[r * w..(r + 1) * w];
        // Expected counts: a separate, branch-free pass the compiler vectorises.
        let bg_start = bg0 + gslope * ((0.5 - w as f64 / 2.0) * gc + yc * gs);
        let step = gslope * gc;
        for (c, (d, &v)) in dst.iter_mut().zip(src).enumerate() {
            let bg = bg_start + step * c as f64;
            *d = (scale * (v as f64 + bg).max(0.0)) as f32;
        }
        if let Some(tex) = &texture {
            // The layer's mass adds counts; where its texture is thin it cannot go below 0.
            let s = scale as f32 * amorphous;
            for (d, &t) in dst.iter_mut().zip(&tex[r * w..(r + 1) * w]) {
                *d = (*d + s * t).max(0.0);
            }
        }
        for (d, f) in dst.iter_mut().zip(&flyback) {
            *d += (scale * f) as f32;
        }
        // Without afterglow between them, shot and read noise of a bright pixel are one draw:
        // the Cornish–Fisher Poisson value plus an independent Gaussian is a normal of the summed
        // variance (with the Poisson skew term), which halves the normal draws of a frame.
        let fused = noisy && read > 0.0 && afterglow == 0.0;
        if fused {
            let r2 = read * read;
            for d in dst.iter_mut() {
                let lambda = *d as f64;
                *d = if lambda < POISSON_EXACT_BELOW {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (poisson(&mut rng, lambda) + read * z) as f32
                } else {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (lambda + (lambda + r2).sqrt() * z + (z * z - 1.0) / 6.0) as f32
                };
            }
        } else if noisy {
            for d in dst.iter_mut() {
                *d = poisson(&mut rng, *d as f64) as f32;
            }
        }
        if afterglow > 0.0 {
            let a = afterglow as f32;
            let mut glow = dst[0];
            for d in dst.iter_mut() {
                glow = (1.0 - a) * *d + a * glow;
                *d = glow;
            }
        }
        if noisy && read > 0.0 && !fused {
            for d in dst.iter_mut() {
                let z: f64 = StandardNormal.sample(&mut rng);
                *d += (read * z) as f32;
            }
        }
    }
    out
}

/// A separable Gaussian blur (sigma in px) with mirrored edges, in place.
pub fn gaussian_blur(img: &mut ImageF32, sigma: f64) {
    if sigma <= 0.0 || img.width == 0 || img.height == 0 {
        return;
    }
    let r = (3.0 * sigma).ceil() as usize;
    let k: Vec<f32> = {
        let raw: Vec<f64> = (0..=2 * r)
            .map(|i| {
                let x = i as f64 - r as f64;
                (-(x * x) / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        let sum: f64 = raw.iter().sum();
        raw.iter().map(|v| (v / sum) as f32).collect()
    };
    let mirror = |i: isize, n: usize| -> usize {
        let n = n as isize;
        let mut i = i;
        // Reflect until inside (kernels may exceed tiny images).
        loop {
            if i < 0 {
                i = -i - 1;
            } else if i >= n {
                i = 2 * n - i - 1;
            } else {
                return i as usize;
            }
        }
    };
    let (w, h) = (img.width, img.height);
    let mut line = vec![0f32; w.max(h) + 2 * r];
    for y in 0..h {
        let row = &mut img.data[y * w..(y + 1) * w];
        for (i, v) in line[..w + 2 * r].iter_mut().enumerate() {
            *v = row[mirror(i as isize - r as isize, w)];
        }
        for (x, d) in row.iter_mut().enumerate() {
            *d = k
                .iter()
                .zip(&line[x..x + 2 * r + 1])
                .map(|(a, b)| a * b)
                .sum();
        }
    }
    let mut col = vec![0f32; h];
    for x in 0..w {
        for (i, v) in line[..h + 2 * r].iter_mut().enumerate() {
            *v = img.data[mirror(i as isize - r as isize, h) * w + x];
        }
        for (y, c) in col.iter_mut().enumerate() {
            *c = k
                .iter()
                .zip(&line[y..y + 2 * r + 1])
                .map(|(a, b)| a * b)
                .sum();
        }
        for (y, c) in col.iter().enumerate() {
            img.data[y * w + x] = *c;
        }
    }
}

/// Cubic B-spline weights of the four knots around fractional position `t` in [0, 1).
#[inline]
fn bspline_weights(t: f32) -> [f32; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    [
        (1.0 - t) * (1.0 - t) * (1.0 - t) / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    ]
}

/// Knot index and weights for each of `n` pixel centres on a grid of spacing `s` px.
fn spline_taps(n: usize, s: f64) -> Vec<(usize, [f32; 4])> {
    (0..n)
        .map(|x| {
            let u = (x as f64 + 0.5) / s;
            let i = u.floor();
            (i as usize, bspline_weights((u - i) as f32))
        })
        .collect()
}

/// The low-frequency texture of amorphous surface layers, mean 0 and RMS about 1: white noise
/// on coarse grids (spacing `length_px` and 3× that) upsampled with cubic B-splines, which
/// are smooth and leave no grid-aligned edges in the power spectrum. Deterministic in `seed`.
/// Separable, so it costs a few multiply-adds per pixel.
pub fn amorphous_texture(w: usize, h: usize, length_px: f64, seed: u64) -> Vec<f32> {
    // (spacing, amplitude): fine speckle plus a coarser undulation.
    let octaves = [
        (length_px.max(1.5), 1.0f32),
        (3.0 * length_px.max(1.5), 0.7f32),
    ];
    // A cubic B-spline of unit-variance knots keeps about 0.48 of the variance per axis, so
    // about 0.48 of the RMS in two dimensions.
    let total: f32 = octaves.iter().map(|o| o.1 * o.1).sum::<f32>().sqrt();
    let norm = 1.0 / (0.48 * total);
    let mut out = vec![0f32; w * h];
    for (k, &(s, amp)) in octaves.iter().enumerate() {
        let gw = (w as f64 / s).ceil() as usize + 4;
        let gh = (h as f64 / s).ceil() as usize + 4;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(super::scene::mix64(seed ^ k as u64));
        let grid: Vec<f32> = (0..gw * gh)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let xt = spline_taps(w, s);
        let yt = spline_taps(h, s);
        // Upsample every knot row along x once, then blend four of them per image row.
        let mut rows = vec![0f32; gh * w];
        for gy in 0..gh {
            let g = &grid[gy * gw..(gy + 1) * gw];
            for (r, &(i, wt)) in rows[gy * w..(gy + 1) * w].iter_mut().zip(&xt) {
                let g4 = &g[i..i + 4];
                *r = wt[0] * g4[0] + wt[1] * g4[1] + wt[2] * g4[2] + wt[3] * g4[3];
            }
        }
        let a = amp * norm;
        for (y, &(i, wt)) in yt.iter().enumerate() {
            let r0 = &rows[i * w..(i + 1) * w];
            let r1 = &rows[(i + 1) * w..(i + 2) * w];
            let r2 = &rows[(i + 2) * w..(i + 3) * w];
            let r3 = &rows[(i + 3) * w..(i + 4) * w];
            let dst = &mut out[y * w..(y + 1) * w];
            let k = [a * wt[0], a * wt[1], a * wt[2], a * wt[3]];
            // Zipped slices: no bounds checks, so the loop vectorises.
            for ((((d, v0), v1), v2), v3) in dst.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                *d += k[0] * v0 + k[1] * v1 + k[2] * v2 + k[3] * v3;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wavelength_at_200kv() {
        assert!((electron_wavelength_a(200.0) - 0.02508).abs() < 2e-5);
        assert!((electron_wavelength_a(300.0) - 0.01969).abs() < 2e-5);
    }

    #[test]
    fn gaussian_probe_has_requested_fwhm() {
        let p = ProbeParams {
            model: ProbeModel::Gaussian,
            gaussian_fwhm_a: 1.0,
            source_sigma_a: 0.0,
            ..Default::default()
        };
        let prof = probe_profile(&p);
        assert!((prof.fwhm_a() - 1.0).abs() < 0.02, "{}", prof.fwhm_a());
    }

    #[test]
    fn aberration_probe_is_near_the_diffraction_limit_and_broadens_with_defocus() {
        let p = ProbeParams {
            model: ProbeModel::Aberrations,
            source_sigma_a: 0.0,
            cs_um: 0.0,
            ..Default::default()
        };
        let f0 = probe_profile(&p).fwhm_a();
        // Airy FWHM = 0.51 λ/α.
        let airy = 0.514 * electron_wavelength_a(200.0) / 0.022;
        assert!((f0 - airy).abs() < 0.08, "{f0} vs {airy}");
        // A defocused probe can keep a sharp on-axis spot, so compare the radius that holds
        // half the intensity rather than the FWHM.
        let r0 = probe_profile(&p).radius_holding(0.5);
        let defocused = probe_profile(&ProbeParams {
            defocus_a: 150.0,
            ..p.clone()
        })
        .radius_holding(0.5);
        assert!(defocused > r0 * 2.0, "{defocused} vs {r0}");
        let blurred = probe_profile(&ProbeParams {
            source_sigma_a: 0.5,
            ..p
        })
        .fwhm_a();
        assert!(blurred > f0 * 1.2);
    }

    #[test]
    fn poisson_mean_and_variance() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for &lam in &[0.5, 4.0, 7.9, 8.0, 19.0, 30.0, 400.0] {
            let n = 200_000;
            let xs: Vec<f64> = (0..n).map(|_| poisson(&mut rng, lam)).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
            // Standard error of the mean is sqrt(λ/n); of the variance about λ sqrt(2/n).
            assert!(
                (mean - lam).abs() < 5.0 * (lam / n as f64).sqrt(),
                "λ={lam} mean={mean}"
            );
            assert!(
                (var - lam).abs() < 6.0 * lam * (2.0 / n as f64).sqrt() + 0.1,
                "λ={lam} var={var}"
            );
        }
    }

    #[test]
    fn kernel_phases_shift_the_peak() {
        let p = ProbeParams {
            model: ProbeModel::Gaussian,
            ..Default::default()
        };
        let bank = KernelBank::new(&probe_profile(&p), 0.15);
        let half = bank.k / 2;
        let centre_row = bank.row(0, 0, half);
        let argmax = |r: &[f32]| {
            r.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
        };
        assert_eq!(argmax(centre_row), half);
        assert!((centre_row[half] - 1.0).abs() < 1e-6);
        // At phase 4/8 the column sits half-way between two pixels: equal values there.
        let r = bank.row(0, 4, half);
        assert!((r[half] - r[half + 1]).abs() < 1e-5);
    }
}
