//! Pre-processing: intensity window and 8-bit quantisation (as the training PNGs), optional
//! resampling to the model's pixel size, letterboxing and tiling.

use crate::raster::ImageF32;
/// The app's resampling, in `raster` so the synthesizer can show frames as the app feeds them.
pub use crate::raster::{Filter, resample};

/// Ultralytics' letterbox fill, 114 of 255.
pub const PAD_VALUE: f32 = 114.0 / 255.0;

/// How raw intensities become the 0..255 values the model was trained on.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Intensity {
    /// The shared model window (`ImageF32::model_window`, 0.1/99.9 percentiles): raw data.
    #[default]
    ModelWindow,
    /// A fixed window; `Fixed { lo: 0.0, hi: 255.0 }` feeds an 8-bit image unchanged.
    Fixed { lo: f32, hi: f32 },
}

/// Quantises like [`ImageF32::to_u8`] (the training exporter) and scales to 0..1, so the
/// detector sees exactly the values a training PNG holds.
#[derive(Clone, Copy, Debug)]
pub struct Quantizer {
    lo: f32,
    scale: f32,
}

impl Quantizer {
    pub fn new(lo: f32, hi: f32) -> Self {
        Self {
            lo,
            scale: if hi > lo { 255.0 / (hi - lo) } else { 0.0 },
        }
    }

    pub fn for_image(img: &ImageF32, intensity: Intensity) -> Self {
        let (lo, hi) = match intensity {
            Intensity::ModelWindow => model_window_par(img),
            Intensity::Fixed { lo, hi } => (lo, hi),
        };
        Self::new(lo, hi)
    }

    /// The 8-bit level of a raw value: `round` (half away from zero) then clamp, as
    /// `ImageF32::to_u8`, but without a libm call per pixel. NaN maps to 0 like `NaN as u8`.
    #[inline(always)]
    pub fn level(&self, v: f32) -> u8 {
        let x = ((v - self.lo) * self.scale).clamp(0.0, 255.0);
        // x in [0, 255] (or NaN -> 0): truncation plus an exact fraction test is round().
        // i32 rather than u32: one SIMD conversion instruction, same values on this range.
        let t = x as i32;
        (t + ((x - t as f32) >= 0.5) as i32) as u8
    }

    /// `level / 255` as f32, exactly as `uint8 tensor / 255` in Ultralytics; arithmetic
    /// rather than a table so the row loop vectorises.
    #[inline(always)]
    pub fn unit(&self, v: f32) -> f32 {
        self.level(v) as f32 / 255.0
    }
}

/// The shared model window (`ImageF32::model_window`, which already runs on all cores).
pub fn model_window_par(img: &ImageF32) -> (f32, f32) {
    img.model_window()
}

/// An axis-aligned window of the (possibly resampled) image fed to the model as one input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tile {
    /// Top-left corner in the working image (pixels).
    pub x0: usize,
    pub y0: usize,
    /// Size taken from the working image (at most the model size).
    pub w: usize,
    pub h: usize,
    /// Letterbox padding (left, top) inside the model input, in model pixels.
    pub pad_x: usize,
    pub pad_y: usize,
    /// The model input this tile fills (width, height): the model's square size, or for a
    /// model exported with a dynamic input the whole frame rounded up to the stride.
    pub in_w: usize,
    pub in_h: usize,
    /// Half-open ranges of working-image coordinates this tile is responsible for: a
    /// detection whose centre lies in another tile's core is dropped here, so each object is
    /// reported by the tile that sees it farthest from its edges.
    pub core_x: [f64; 2],
    pub core_y: [f64; 2],
}

impl Tile {
    pub fn core_contains(&self, x: f64, y: f64) -> bool {
        x >= self.core_x[0] && x < self.core_x[1] && y >= self.core_y[0] && y < self.core_y[1]
    }
}

/// Start positions of windows of length `s` covering `len` with at least `overlap` pixels of
/// overlap, spread evenly so the first starts at 0 and the last ends at `len`.
pub fn tile_starts(len: usize, s: usize, overlap: usize) -> Vec<usize> {
    if len <= s {
        return vec![0];
    }
    let step = s.saturating_sub(overlap).max(1);
    let n = (len - s).div_ceil(step) + 1;
    (0..n)
        .map(|i| ((i as f64) * (len - s) as f64 / (n - 1) as f64).round() as usize)
        .collect()
}

/// Core boundaries: the middle of each overlap between neighbouring windows.
fn cores(starts: &[usize], s: usize) -> Vec<[f64; 2]> {
    (0..starts.len())
        .map(|i| {
            let lo = if i == 0 {
                f64::NEG_INFINITY
            } else {
                (starts[i - 1] + s + starts[i]) as f64 / 2.0
            };
            let hi = if i + 1 == starts.len() {
                f64::INFINITY
            } else {
                (starts[i] + s + starts[i + 1]) as f64 / 2.0
            };
            [lo, hi]
        })
        .collect()
}

/// Ultralytics' centred letterbox padding: `round(d/2 - 0.1)` before, the rest after.
pub fn letterbox_pad(content: usize, s: usize) -> usize {
    let d = s.saturating_sub(content) as f64 / 2.0;
    (d - 0.1).round().max(0.0) as usize
}

/// Tiles of size `s` covering a `w x h` image with fractional `overlap` (0..0.9).
pub fn plan_tiles(w: usize, h: usize, s: usize, overlap: f64) -> Vec<Tile> {
    let ov = (overlap.clamp(0.0, 0.9) * s as f64).round() as usize;
    let xs = tile_starts(w, s, ov);
    let ys = tile_starts(h, s, ov);
    let cx = cores(&xs, s);
    let cy = cores(&ys, s);
    let mut out = Vec::with_capacity(xs.len() * ys.len());
    for (j, &y0) in ys.iter().enumerate() {
        for (i, &x0) in xs.iter().enumerate() {
            let tw = s.min(w);
            let th = s.min(h);
            out.push(Tile {
                x0,
                y0,
                w: tw,
                h: th,
                pad_x: letterbox_pad(tw, s),
                pad_y: letterbox_pad(th, s),
                in_w: s,
                in_h: s,
                core_x: cx[i],
                core_y: cy[j],
            });
        }
    }
    out
}

/// Largest side a model with a dynamic input runs in one pass: a 1024 x 1024 frame is one
/// `session.run` (a quarter of the work of 4 overlapping 512 tiles plus their seams); larger
/// frames are tiled so memory stays bounded.
pub const MAX_ONE_PASS: usize = 1024;

/// The whole `w x h` image as one input, each side rounded up to a multiple of `stride`
/// (Ultralytics' minimal rectangular letterbox: the spare pixels split around the image).
/// `None` when a side exceeds [`MAX_ONE_PASS`].
pub fn plan_one_pass(w: usize, h: usize, stride: usize) -> Option<Tile> {
    if w == 0 || h == 0 || w > MAX_ONE_PASS || h > MAX_ONE_PASS {
        return None;
    }
    let stride = stride.max(1);
    let (in_w, in_h) = (w.div_ceil(stride) * stride, h.div_ceil(stride) * stride);
    Some(Tile {
        x0: 0,
        y0: 0,
        w,
        h,
        pad_x: letterbox_pad(w, in_w),
        pad_y: letterbox_pad(h, in_h),
        in_w,
        in_h,
        core_x: [f64::NEG_INFINITY, f64::INFINITY],
        core_y: [f64::NEG_INFINITY, f64::INFINITY],
    })
}

/// Writes one tile into a `[3, in_h, in_w]` input buffer: padding, quantised grey copied to 3
/// planes. One pass over the output: each row is quantised once and copied to G and B while it
/// is still in cache (writing the planes separately costs a second sweep over 2/3 of the
/// buffer).
pub fn fill_input(buf: &mut [f32], img: &ImageF32, tile: &Tile, q: &Quantizer) {
    use rayon::prelude::*;
    const ROWS: usize = 32;
    let s = tile.in_w;
    let plane = tile.in_w * tile.in_h;
    debug_assert_eq!(buf.len(), 3 * plane);
    let (r_plane, rest) = buf.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    r_plane
        .par_chunks_mut(s * ROWS)
        .zip(g_plane.par_chunks_mut(s * ROWS))
        .zip(b_plane.par_chunks_mut(s * ROWS))
        .enumerate()
        .for_each(|(k, ((r_block, g_block), b_block))| {
            let rows = r_block
                .chunks_mut(s)
                .zip(g_block.chunks_mut(s))
                .zip(b_block.chunks_mut(s));
            for (j, ((r, g), b)) in rows.enumerate() {
                let y = k * ROWS + j;
                if y < tile.pad_y || y >= tile.pad_y + tile.h {
                    r.fill(PAD_VALUE);
                } else {
                    let src =
                        &img.data[(tile.y0 + y - tile.pad_y) * img.width + tile.x0..][..tile.w];
                    let (left, content) = r.split_at_mut(tile.pad_x);
                    let (content, right) = content.split_at_mut(tile.w);
                    left.fill(PAD_VALUE);
                    right.fill(PAD_VALUE);
                    for (d, &v) in content.iter_mut().zip(src) {
                        *d = q.unit(v);
                    }
                }
                // A grey image is the same in R, G and B.
                g.copy_from_slice(r);
                b.copy_from_slice(r);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiser_matches_training_export() {
        let img = ImageF32::from_vec(5, 1, vec![-3.0, 0.0, 0.5, 1.0, 9.0]);
        let q = Quantizer::new(0.0, 1.0);
        let bytes = img.to_u8(0.0, 1.0);
        for (v, b) in img.data.iter().zip(bytes) {
            assert_eq!(q.level(*v), b);
            assert_eq!(q.unit(*v), b as f32 / 255.0);
        }
    }

    #[test]
    fn fast_rounding_matches_round_everywhere_that_matters() {
        let q = Quantizer::new(0.0, 255.0);
        let mut v = -2.0f32;
        while v < 258.0 {
            for x in [
                v,
                v.next_up(),
                v.next_down(),
                v + 0.5,
                (v + 0.5).next_down(),
            ] {
                let slow = (x.round().clamp(0.0, 255.0)) as u8;
                assert_eq!(q.level(x), slow, "{x}");
            }
            v += 0.25;
        }
        assert_eq!(q.level(f32::NAN), 0);
        assert_eq!(q.level(f32::INFINITY), 255);
        assert_eq!(q.level(f32::NEG_INFINITY), 0);
    }

    #[test]
    fn model_window_does_not_depend_on_the_thread_count() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        for (w, h) in [(1, 1), (3, 2), (300, 301), (1024, 700)] {
            let mut img = ImageF32::new(w, h);
            for v in &mut img.data {
                *v = rng.random_range(-50.0f32..3000.0).powf(1.3);
            }
            if w * h > 10 {
                img.data[5] = f32::NAN;
                img.data[7] = f32::INFINITY;
            }
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let serial = one.install(|| img.model_window());
            assert_eq!(model_window_par(&img), serial, "{w}x{h}");
            assert!(
                serial.0.is_finite() && (w * h == 1 || serial.1 > serial.0),
                "{w}x{h}: {serial:?}"
            );
        }
        let flat = ImageF32::from_vec(4, 4, vec![7.0; 16]);
        assert_eq!(model_window_par(&flat), (7.0, 7.0));
    }

    #[test]
    fn tiles_cover_with_overlap_and_cores_partition() {
        assert_eq!(tile_starts(64, 64, 13), vec![0]);
        assert_eq!(tile_starts(96, 64, 13), vec![0, 32]);
        let s = tile_starts(1000, 256, 51);
        assert_eq!(*s.first().unwrap(), 0);
        assert_eq!(*s.last().unwrap(), 1000 - 256);
        for w in s.windows(2) {
            assert!(w[0] + 256 - w[1] >= 51, "{s:?}");
        }
        // Every point belongs to exactly one core, and that core lies inside its tile.
        let tiles = plan_tiles(1000, 300, 256, 0.2);
        for x in (0..1000).step_by(7) {
            for y in (0..300).step_by(11) {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let owners: Vec<&Tile> = tiles.iter().filter(|t| t.core_contains(px, py)).collect();
                assert_eq!(owners.len(), 1, "({px},{py})");
                let t = owners[0];
                assert!(px >= t.x0 as f64 && px <= (t.x0 + t.w) as f64);
                assert!(py >= t.y0 as f64 && py <= (t.y0 + t.h) as f64);
            }
        }
    }

    #[test]
    fn letterbox_padding_is_centred_like_ultralytics() {
        assert_eq!(letterbox_pad(64, 64), 0);
        assert_eq!(letterbox_pad(60, 64), 2);
        // 5 spare pixels: 2 before, 3 after (round(2.4), round(2.6)).
        assert_eq!(letterbox_pad(59, 64), 2);
        let t = plan_tiles(40, 100, 64, 0.2);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].w, t[0].pad_x, t[0].pad_y), (40, 12, 0));
    }

    #[test]
    fn fill_input_pads_and_copies_planes() {
        let img = ImageF32::from_vec(2, 2, vec![0.0, 1.0, 1.0, 0.0]);
        let t = plan_tiles(2, 2, 4, 0.2)[0];
        let mut buf = vec![-1.0; 3 * 16];
        fill_input(&mut buf, &img, &t, &Quantizer::new(0.0, 1.0));
        let p = &buf[..16];
        assert_eq!(p[5], 0.0);
        assert_eq!(p[6], 1.0);
        assert_eq!(p[0], PAD_VALUE);
        assert_eq!(&buf[16..32], p);
        assert_eq!(&buf[32..48], p);
    }

    #[test]
    fn one_pass_rounds_each_side_up_to_the_stride() {
        let t = plan_one_pass(700, 500, 32).unwrap();
        assert_eq!((t.in_w, t.in_h), (704, 512));
        assert_eq!((t.pad_x, t.pad_y), (2, 6));
        assert!(t.core_contains(0.0, 499.5));
        assert!(plan_one_pass(1025, 10, 32).is_none());
        assert!(plan_one_pass(0, 10, 32).is_none());
        // A rectangular input: rows are in_w long, padding columns on both sides.
        let img = ImageF32::from_vec(3, 2, vec![1.0; 6]);
        let t = plan_one_pass(3, 2, 4).unwrap();
        assert_eq!((t.in_w, t.in_h, t.pad_x, t.pad_y), (4, 4, 0, 1));
        let mut buf = vec![-1.0; 3 * 16];
        fill_input(&mut buf, &img, &t, &Quantizer::new(0.0, 1.0));
        let ones = buf[..16].iter().filter(|v| **v == 1.0).count();
        assert_eq!(ones, 6);
        assert_eq!(&buf[4..8], &[1.0, 1.0, 1.0, PAD_VALUE]);
    }

    #[test]
    fn resampling_preserves_mean_and_ramps() {
        // Area halving of a ramp averages neighbour pairs exactly.
        let img = ImageF32::from_vec(8, 2, (0..16).map(|v| (v % 8) as f32).collect());
        let r = resample(&img, 4, 1, 0.5, 0.5);
        assert_eq!(r.data, vec![0.5, 2.5, 4.5, 6.5]);
        // Bilinear doubling of a ramp stays a ramp in the interior.
        let r = resample(&img, 16, 4, 2.0, 2.0);
        for x in 1..15 {
            let expect = ((x as f64 + 0.5) / 2.0 - 0.5) as f32;
            assert!((r.data[x] - expect).abs() < 1e-6, "{x}: {}", r.data[x]);
        }
        // A constant image stays constant at any factor.
        let c = ImageF32::from_vec(7, 5, vec![3.0; 35]);
        for (w, h, s) in [(3, 2, 0.43), (10, 7, 1.43)] {
            let r = resample(&c, w, h, s, s);
            assert!(r.data.iter().all(|v| (v - 3.0).abs() < 1e-5));
        }
    }
}
