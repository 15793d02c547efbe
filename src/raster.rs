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

    /// The `w x h` window whose top-left pixel is `(x0, y0)`; it must lie inside the image.
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> ImageF32 {
        assert!(
            x0 + w <= self.width && y0 + h <= self.height,
            "crop outside the image"
        );
        let mut data = Vec::with_capacity(w * h);
        for y in y0..y0 + h {
            data.extend_from_slice(&self.row(y)[x0..x0 + w]);
        }
        ImageF32::from_vec(w, h, data)
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

    /// Percentiles (`p` in 0..=100) of the finite values: exact order statistics (the value of
    /// rank `ceil(p/100 * n)`, at least 1; 0 when there are no finite values). Usually one pass:
    /// a small sample brackets each wanted rank, one sweep counts the values below each bracket
    /// and keeps the few inside it, and a selection inside the bracket gives the exact value. If
    /// a bracket missed (improbable), [`Self::percentiles_radix`] answers in two passes. Both are
    /// deterministic and independent of the thread count.
    pub fn percentiles(&self, ps: &[f64]) -> Vec<f32> {
        self.percentiles_bracketed(ps)
            .unwrap_or_else(|| self.percentiles_radix(ps))
    }

    /// The finite values among `draws` pixels at fixed pseudo-random positions (xorshift, the
    /// same positions every call): a regular stride could alias with the atomic lattice.
    pub fn random_sample(&self, draws: usize) -> Vec<f32> {
        let len = self.data.len() as u64;
        if len == 0 {
            return Vec::new();
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..draws)
            .filter_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = self.data[(state % len) as usize];
                v.is_finite().then_some(v)
            })
            .collect()
    }

    fn percentiles_bracketed(&self, ps: &[f64]) -> Option<Vec<f32>> {
        use rayon::prelude::*;
        const SAMPLE: usize = 4096;
        let len = self.data.len();
        if len < 16 * SAMPLE {
            return None;
        }
        let mut sample = self.random_sample(SAMPLE);
        if sample.len() < SAMPLE / 2 {
            return None;
        }
        let m = sample.len() as f64;
        // A few order statistics of the sample: selections, cheaper than sorting it.
        let mut order_stat = |k: usize| *sample.select_nth_unstable_by(k, f32::total_cmp).1;
        // Brackets: the sample quantile +- 4 standard deviations of its rank (plus slack).
        let brackets: Vec<(f32, f32)> = ps
            .iter()
            .map(|&p| {
                let q = p.clamp(0.0, 100.0) / 100.0;
                let r = q * m;
                let d = 4.0 * (m * q * (1.0 - q)).sqrt() + 8.0;
                let lo = (r - d).floor();
                let hi = (r + d).ceil();
                (
                    if lo < 0.0 {
                        f32::NEG_INFINITY
                    } else {
                        order_stat(lo as usize)
                    },
                    if hi >= m - 1.0 {
                        f32::INFINITY
                    } else {
                        order_stat(hi as usize)
                    },
                )
            })
            .collect();
        #[derive(Clone, Default)]
        struct Part {
            n: u64,
            below: Vec<u64>,
            inside: Vec<Vec<f32>>,
        }
        let k = ps.len();
        let part = len.div_ceil(rayon::current_num_threads()).max(1 << 14);
        let merged = self
            .data
            .par_chunks(part)
            .map(|c| {
                let mut r = Part {
                    n: 0,
                    below: vec![0; k],
                    inside: vec![Vec::new(); k],
                };
                // Blocks small enough for L1: branch-free counting that vectorises, and a
                // scalar look only at the (few) blocks holding bracketed values.
                for block in c.chunks(32) {
                    let mut finite = 0u32;
                    for &v in block {
                        finite += (v.abs() < f32::INFINITY) as u32;
                    }
                    r.n += finite as u64;
                    for (j, &(lo, hi)) in brackets.iter().enumerate() {
                        let (mut below, mut hit) = (0u32, false);
                        for &v in block {
                            let fin = v.abs() < f32::INFINITY;
                            below += ((v < lo) & fin) as u32;
                            hit |= (v >= lo) & (v <= hi) & fin;
                        }
                        r.below[j] += below as u64;
                        if hit {
                            r.inside[j].extend(
                                block
                                    .iter()
                                    .filter(|&&v| v.is_finite() && v >= lo && v <= hi),
                            );
                        }
                    }
                }
                r
            })
            .reduce(
                || Part {
                    n: 0,
                    below: vec![0; k],
                    inside: vec![Vec::new(); k],
                },
                |mut a, b| {
                    a.n += b.n;
                    for j in 0..k {
                        a.below[j] += b.below[j];
                        a.inside[j].extend_from_slice(&b.inside[j]);
                    }
                    a
                },
            );
        let n = merged.n;
        ps.iter()
            .zip(merged.below)
            .zip(merged.inside)
            .map(|((&p, below), mut inside)| {
                let target = ((p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as u64).clamp(1, n);
                if target <= below || target > below + inside.len() as u64 {
                    return None;
                }
                let idx = (target - below - 1) as usize;
                Some(*inside.select_nth_unstable_by(idx, f32::total_cmp).1)
            })
            .collect()
    }

    /// Exact percentiles by a two-pass radix select on the float bits: pass 1 histograms the
    /// high 16 bits of an order-preserving key, pass 2 keeps the low 16 bits of the values in
    /// the buckets that hold the wanted ranks. O(n) whatever the data (hot pixels, saturated
    /// stripes), integer counts only.
    fn percentiles_radix(&self, ps: &[f64]) -> Vec<f32> {
        use rayon::prelude::*;
        const B: usize = 1 << 16;
        // Order-preserving map of float bits to u32 (negatives reversed below positives).
        #[inline(always)]
        fn key(u: u32) -> u32 {
            if u & 0x8000_0000 != 0 {
                !u
            } else {
                u | 0x8000_0000
            }
        }
        #[inline(always)]
        fn finite(u: u32) -> bool {
            u & 0x7F80_0000 != 0x7F80_0000
        }
        fn value(k: u32) -> f32 {
            f32::from_bits(if k & 0x8000_0000 != 0 {
                k ^ 0x8000_0000
            } else {
                !k
            })
        }
        // One contiguous part per thread: few histograms to clear and add up.
        let part = self
            .data
            .len()
            .div_ceil(rayon::current_num_threads())
            .max(1 << 14);
        let high: Vec<u64> = self
            .data
            .par_chunks(part)
            .map(|c| {
                let mut h = vec![0u32; B];
                for &v in c {
                    let u = v.to_bits();
                    // Branch-free: non-finite values are counted as zero.
                    h[(key(u) >> 16) as usize] += finite(u) as u32;
                }
                h
            })
            .fold(
                || vec![0u64; B],
                |mut acc, h| {
                    for (a, &c) in acc.iter_mut().zip(&h) {
                        *a += c as u64;
                    }
                    acc
                },
            )
            .reduce(
                || vec![0u64; B],
                |mut x, y| {
                    for (p, q) in x.iter_mut().zip(&y) {
                        *p += q;
                    }
                    x
                },
            );
        let n: u64 = high.iter().sum();
        if n == 0 {
            return vec![0.0; ps.len()];
        }
        // For each percentile: its bucket and the rank it has inside that bucket.
        let wanted: Vec<(u32, u64)> = ps
            .iter()
            .map(|&p| {
                let target = ((p.clamp(0.0, 100.0) / 100.0 * n as f64).ceil() as u64).clamp(1, n);
                let mut below = 0u64;
                for (b, &c) in high.iter().enumerate() {
                    if below + c >= target {
                        return (b as u32, target - below);
                    }
                    below += c;
                }
                unreachable!("the bucket counts add up to n")
            })
            .collect();
        let mut buckets: Vec<u32> = wanted.iter().map(|w| w.0).collect();
        buckets.sort_unstable();
        buckets.dedup();
        // Pass 2: the low 16 bits of the (few) values in the wanted buckets.
        let lows: Vec<Vec<u16>> = self
            .data
            .par_chunks(part)
            .map(|c| {
                let mut out = vec![Vec::new(); buckets.len()];
                for &v in c {
                    let u = v.to_bits();
                    let k = key(u);
                    if finite(u)
                        && let Some(i) = buckets.iter().position(|&b| b == k >> 16)
                    {
                        out[i].push(k as u16);
                    }
                }
                out
            })
            .reduce(
                || vec![Vec::new(); buckets.len()],
                |mut x, y| {
                    for (a, b) in x.iter_mut().zip(y) {
                        a.extend(b);
                    }
                    x
                },
            );
        wanted
            .iter()
            .map(|&(bucket, rank)| {
                let i = buckets.iter().position(|&b| b == bucket).unwrap_or(0);
                let mut low = lows[i].clone();
                let (_, &mut k, _) = low.select_nth_unstable(rank as usize - 1);
                value((bucket << 16) | k as u32)
            })
            .collect()
    }

    /// The intensity window used for every 8-bit image a model sees, in training (exported
    /// PNGs) and in detection alike: percentiles [`MODEL_WINDOW_PERCENTILES`] of the raw values.
    pub fn model_window(&self) -> (f32, f32) {
        let p = self.percentiles(&[MODEL_WINDOW_PERCENTILES.0, MODEL_WINDOW_PERCENTILES.1]);
        (p[0], p[1])
    }

    /// Bilinear sample at a continuous point `p` (pixel centres at half-integers), clamped at
    /// the border.
    pub fn bilinear(&self, p: [f64; 2]) -> f64 {
        let fx = (p[0] - 0.5).clamp(0.0, (self.width - 1) as f64);
        let fy = (p[1] - 0.5).clamp(0.0, (self.height - 1) as f64);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (tx, ty) = (fx - x0 as f64, fy - y0 as f64);
        let g = |x: usize, y: usize| self.data[y * self.width + x] as f64;
        (1.0 - ty) * ((1.0 - tx) * g(x0, y0) + tx * g(x1, y0))
            + ty * ((1.0 - tx) * g(x0, y1) + tx * g(x1, y1))
    }

    /// Mean of `f × f` blocks, for showing a large image small: the last row and column of
    /// blocks are partial rather than dropped (every pixel stays visible), and non-finite pixels
    /// are left out of a block's mean (0 when none is finite) so one NaN does not blank a block.
    pub fn bin_mean(&self, f: usize) -> ImageF32 {
        let (w, h) = (self.width.div_ceil(f), self.height.div_ceil(f));
        let mut out = ImageF32::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let (mut s, mut n) = (0.0f64, 0u32);
                for yy in y * f..((y + 1) * f).min(self.height) {
                    for xx in x * f..((x + 1) * f).min(self.width) {
                        let v = self.get(xx, yy);
                        if v.is_finite() {
                            s += v as f64;
                            n += 1;
                        }
                    }
                }
                out.data[y * w + x] = if n > 0 { (s / n as f64) as f32 } else { 0.0 };
            }
        }
        out
    }

    /// The image binned ([`Self::bin_mean`]) by the smallest factor that brings both sides to
    /// `max_side` or below (a texture size limit, a thumbnail); the image itself when it fits.
    pub fn shrink_to_fit(self, max_side: usize) -> ImageF32 {
        let f = self.width.max(self.height).div_ceil(max_side);
        if f > 1 { self.bin_mean(f) } else { self }
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

/// The frame in grey (its model window) with box outlines drawn one pixel wide, for looking
/// at what a detector or a label says about a frame outside the app.
pub fn overlay_rgb(
    img: &ImageF32,
    boxes: &[(crate::geometry::OrientedBox, [u8; 3])],
) -> image::RgbImage {
    let (w, h) = (img.width as u32, img.height as u32);
    let (lo, hi) = img.model_window();
    let g = img.to_u8(lo, hi);
    let mut ov = image::RgbImage::from_fn(w, h, |x, y| {
        let v = g[(y * w + x) as usize];
        image::Rgb([v, v, v])
    });
    for (b, col) in boxes {
        let c = b.corners();
        for k in 0..4 {
            let (p, q) = (c[k], c[(k + 1) % 4]);
            let n = ((q[0] - p[0]).hypot(q[1] - p[1]).ceil() as usize).max(1);
            for s in 0..=n {
                let t = s as f64 / n as f64;
                let (x, y) = (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]));
                if x >= 0.0 && y >= 0.0 && (x as u32) < w && (y as u32) < h {
                    ov.put_pixel(x as u32, y as u32, image::Rgb(*col));
                }
            }
        }
    }
    ov
}

/// [`overlay_rgb`] written as a PNG (temporary file, then renamed).
pub fn save_overlay_png(
    path: &std::path::Path,
    img: &ImageF32,
    boxes: &[(crate::geometry::OrientedBox, [u8; 3])],
) -> anyhow::Result<()> {
    let ov = overlay_rgb(img, boxes);
    crate::fsio::atomic_write_with(path, |f| {
        ov.write_to(f, image::ImageFormat::Png)?;
        Ok(())
    })
}

/// The frame as a 16-bit grey PNG, its minimum to maximum spread over 0–65535 (temporary
/// file, then renamed): the intensities' shape kept for a detector, not their units.
pub fn save_gray16_png(path: &std::path::Path, img: &ImageF32) -> anyhow::Result<()> {
    let (lo, hi) = img.min_max();
    let k = if hi > lo { 65535.0 / (hi - lo) } else { 0.0 };
    let px: Vec<u16> = img
        .data
        .iter()
        .map(|&v| ((v - lo) * k).round().clamp(0.0, 65535.0) as u16)
        .collect();
    let g = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_raw(
        img.width as u32,
        img.height as u32,
        px,
    )
    .ok_or_else(|| {
        anyhow::anyhow!(
            "a {}×{} frame has no pixels to write",
            img.width,
            img.height
        )
    })?;
    crate::fsio::atomic_write_with(path, |f| {
        g.write_to(f, image::ImageFormat::Png)?;
        Ok(())
    })
}

/// Median of a sample (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Bilinear with pixel-centre alignment (OpenCV `INTER_LINEAR` geometry), for enlarging.
    Bilinear,
    /// Box average over each destination pixel's footprint (OpenCV `INTER_AREA`), for shrinking.
    Area,
}

/// One destination pixel's source taps along an axis.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<f32>,
}

fn taps(src_len: usize, dst_len: usize, scale: f64, filter: Filter) -> Taps {
    let mut start = Vec::with_capacity(dst_len);
    let mut len = Vec::with_capacity(dst_len);
    let mut weights = Vec::new();
    for d in 0..dst_len {
        let mut taps_here: Vec<(usize, f64)> = Vec::new();
        match filter {
            Filter::Bilinear => {
                let x = ((d as f64 + 0.5) / scale - 0.5).clamp(0.0, (src_len - 1) as f64);
                let i0 = x.floor() as usize;
                let i1 = (i0 + 1).min(src_len - 1);
                let f = x - i0 as f64;
                taps_here.push((i0, 1.0 - f));
                if i1 != i0 {
                    taps_here.push((i1, f));
                }
            }
            Filter::Area => {
                let a = d as f64 / scale;
                let b = ((d + 1) as f64 / scale).min(src_len as f64);
                let mut i = a.floor() as usize;
                while (i as f64) < b && i < src_len {
                    let lo = a.max(i as f64);
                    let hi = b.min((i + 1) as f64);
                    if hi > lo {
                        taps_here.push((i, (hi - lo) * scale));
                    }
                    i += 1;
                }
                if taps_here.is_empty() {
                    taps_here.push(((a.floor() as usize).min(src_len - 1), 1.0));
                }
            }
        }
        let total: f64 = taps_here.iter().map(|t| t.1).sum();
        start.push(taps_here[0].0);
        len.push(taps_here.len());
        for (k, (i, w)) in taps_here.iter().enumerate() {
            debug_assert_eq!(*i, taps_here[0].0 + k);
            weights.push((*w / total) as f32);
        }
    }
    Taps {
        start,
        len,
        weights,
    }
}

/// Resamples to `new_w x new_h` with scale factors `sx = new/old` (given separately from the
/// sizes so a physical rescale keeps its exact factor although sizes are whole pixels).
pub fn resample(img: &ImageF32, new_w: usize, new_h: usize, sx: f64, sy: f64) -> ImageF32 {
    let fx = if sx < 1.0 {
        Filter::Area
    } else {
        Filter::Bilinear
    };
    let fy = if sy < 1.0 {
        Filter::Area
    } else {
        Filter::Bilinear
    };
    let tx = taps(img.width, new_w, sx, fx);
    let ty = taps(img.height, new_h, sy, fy);
    // Horizontal pass into a new_w x height buffer, then vertical.
    let mut tmp = vec![0f32; new_w * img.height];
    let offs_x: Vec<usize> = prefix(&tx.len);
    for y in 0..img.height {
        let row = img.row(y);
        let out = &mut tmp[y * new_w..(y + 1) * new_w];
        for (d, o) in out.iter_mut().enumerate() {
            let w = &tx.weights[offs_x[d]..offs_x[d] + tx.len[d]];
            let s = &row[tx.start[d]..tx.start[d] + tx.len[d]];
            *o = w.iter().zip(s).map(|(a, b)| a * b).sum();
        }
    }
    let offs_y: Vec<usize> = prefix(&ty.len);
    let mut out = vec![0f32; new_w * new_h];
    for d in 0..new_h {
        let w = &ty.weights[offs_y[d]..offs_y[d] + ty.len[d]];
        let dst = &mut out[d * new_w..(d + 1) * new_w];
        for (k, &wk) in w.iter().enumerate() {
            let src = &tmp[(ty.start[d] + k) * new_w..][..new_w];
            for (o, &v) in dst.iter_mut().zip(src) {
                *o += wk * v;
            }
        }
    }
    ImageF32::from_vec(new_w, new_h, out)
}

fn prefix(len: &[usize]) -> Vec<usize> {
    let mut acc = 0;
    len.iter()
        .map(|l| {
            let o = acc;
            acc += l;
            o
        })
        .collect()
}

/// The period (px) of the lowest-frequency strong ring of an `n × n` power spectrum (standard
/// FFT layout, zero frequency at index 0): the first local maximum of its whitened radial
/// profile that reaches 60 % of the strongest, between periods of 64 px (or n/3 for small
/// spectra) and 4 px. For a [110] zinc-blende frame this is the {111} ring, whatever the
/// lattice's orientation: a measure of the lattice's scale that no fit of a cell can alias.
/// `None` when no ring stands out of the profile.
pub fn first_ring_period(p: &[f32], n: usize) -> Option<f64> {
    debug_assert_eq!(p.len(), n * n);
    let nb = n / 2;
    let mut sum = vec![0f64; nb];
    let mut cnt = vec![0f64; nb];
    for ky in 0..n {
        for kx in 0..n {
            let fx = if kx > n / 2 {
                kx as f64 - n as f64
            } else {
                kx as f64
            };
            let fy = if ky > n / 2 {
                ky as f64 - n as f64
            } else {
                ky as f64
            };
            let r = (fx * fx + fy * fy).sqrt().round() as usize;
            if r < nb {
                sum[r] += p[ky * n + kx] as f64;
                cnt[r] += 1.0;
            }
        }
    }
    let prof: Vec<f64> = (0..nb)
        .map(|r| (sum[r] / cnt[r].max(1.0)).max(1e-30).ln())
        .collect();
    // Whiten: subtract a running median over ±n/32 bins.
    let h = (n / 32).max(3);
    let lo_r = (n / 64).max(3); // periods up to 64 px
    let hi_r = n / 4; // periods down to 4 px
    let white: Vec<f64> = (0..nb)
        .map(|r| {
            let a = r.saturating_sub(h);
            let b = (r + h + 1).min(nb);
            let mut w: Vec<f64> = prof[a..b].to_vec();
            let m = w.len() / 2;
            let med = *w.select_nth_unstable_by(m, |x, y| x.total_cmp(y)).1;
            prof[r] - med
        })
        .collect();
    let max = (lo_r + 1..hi_r).map(|r| white[r]).fold(f64::MIN, f64::max);
    if max <= 0.5 {
        return None;
    }
    // Lowest-frequency local maximum at least 60 % (in log units) of the strongest. The
    // range's first bin is left out: its lower neighbour is outside the range, where the
    // profile still falls steeply, so it can pass for a maximum that is none (a 418-px crop of
    // the Si tilt frame read its 64-px edge bin as the {111} ring).
    let r = (lo_r + 1..hi_r)
        .find(|&r| white[r] >= 0.6 * max && white[r] >= white[r - 1] && white[r] >= white[r + 1])?;
    // Sub-bin refinement on the whitened profile.
    let (m, c, pl) = (white[r - 1], white[r], white[r + 1]);
    let den = m - 2.0 * c + pl;
    let off = if den < 0.0 {
        (0.5 * (m - pl) / den).clamp(-0.5, 0.5)
    } else {
        0.0
    };
    Some(n as f64 / (r as f64 + off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_outline_boxes_in_their_colour_and_are_written_whole() {
        let img = ImageF32::from_vec(40, 30, (0..1200).map(|i| (i % 40) as f32).collect());
        let b = crate::geometry::OrientedBox::new(20.0, 15.0, 10.0, 6.0, 0.0);
        let ov = overlay_rgb(&img, &[(b, [255, 0, 0])]);
        // The top edge (y = 12) is drawn; the centre and the corner pixels are grey.
        assert_eq!(ov.get_pixel(20, 12).0, [255, 0, 0]);
        let c = ov.get_pixel(20, 15).0;
        assert!(c[0] == c[1] && c[1] == c[2], "{c:?}");
        assert_eq!(ov.get_pixel(0, 0).0, [0, 0, 0]);
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("o.png");
        save_overlay_png(&path, &img, &[(b, [255, 0, 0])]).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back, ov);
    }

    #[test]
    fn binning_keeps_partial_blocks_and_skips_non_finite_pixels() {
        // 5 × 3 binned by 2: blocks of 2 × 2, the last column and row partial.
        let mut img = ImageF32::from_vec(5, 3, (0..15).map(|v| v as f32).collect());
        img.data[1] = f32::NAN;
        let b = img.bin_mean(2);
        assert_eq!((b.width, b.height), (3, 2));
        // Block (0, 0) holds 0, NaN, 5, 6: the NaN is left out.
        assert_eq!(b.get(0, 0), (0.0 + 5.0 + 6.0) / 3.0);
        assert_eq!(b.get(1, 0), (2.0 + 3.0 + 7.0 + 8.0) / 4.0);
        assert_eq!(b.get(2, 0), (4.0 + 9.0) / 2.0);
        assert_eq!(b.get(0, 1), (10.0 + 11.0) / 2.0);
        assert_eq!(b.get(2, 1), 14.0);
        // A block with no finite pixel is 0.
        let nan = ImageF32::from_vec(2, 2, vec![f32::NAN, f32::INFINITY, f32::NAN, f32::NAN]);
        assert_eq!(nan.bin_mean(2).data, vec![0.0]);
    }

    #[test]
    fn shrinking_to_fit_bins_only_images_that_are_too_large() {
        let img = ImageF32::from_vec(4, 2, (0..8).map(|v| v as f32).collect());
        assert_eq!(img.clone().shrink_to_fit(4), img, "fits: unchanged");
        let s = img.clone().shrink_to_fit(3);
        assert_eq!((s.width, s.height), (2, 1));
        assert_eq!(s, img.bin_mean(2));
        // 1000 px on a 96 px limit: factor 11, 91 px.
        assert_eq!(ImageF32::new(1000, 10).shrink_to_fit(96).width, 91);
    }

    #[test]
    fn percentiles_of_a_ramp() {
        let img = ImageF32::from_vec(100, 10, (0..1000).map(|v| v as f32).collect());
        let p = img.percentiles(&[0.0, 50.0, 100.0]);
        assert_eq!(p, vec![0.0, 499.0, 999.0]);
    }

    #[test]
    fn percentiles_are_exact_order_statistics() {
        // Mixed signs, duplicates, tiny and huge magnitudes, NaN and infinities ignored;
        // compared with sorting on sizes spanning several parallel chunks.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [1usize, 7, 1000, 150_001] {
            let data: Vec<f32> = (0..len)
                .map(|i| match next() % 10 {
                    0 => f32::NAN,
                    1 if i % 3 == 0 => f32::INFINITY,
                    2 => -((next() % 5000) as f32) * 1e-3,
                    3 => (next() % 7) as f32,
                    4 => 0.0,
                    5 => -0.0,
                    _ => (next() % 1_000_000) as f32 * 0.37 - 1e4,
                })
                .collect();
            let img = ImageF32::from_vec(len, 1, data.clone());
            let mut finite: Vec<f32> = data.into_iter().filter(|v| v.is_finite()).collect();
            finite.sort_by(f32::total_cmp);
            let ps = [0.0, 0.1, 1.0, 33.3, 50.0, 99.9, 100.0];
            let got = img.percentiles(&ps);
            // The two-pass fallback on its own, and the one-pass path where it applies.
            assert_eq!(img.percentiles_radix(&ps), got);
            if len > 100_000 {
                assert_eq!(img.percentiles_bracketed(&ps), Some(got.clone()));
            }
            for (&p, &g) in ps.iter().zip(&got) {
                if finite.is_empty() {
                    assert_eq!(g, 0.0);
                    continue;
                }
                let k = ((p / 100.0 * finite.len() as f64).ceil() as usize).clamp(1, finite.len());
                assert_eq!(g, finite[k - 1], "len {len}, p {p}");
            }
        }
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
