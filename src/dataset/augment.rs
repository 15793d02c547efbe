//! Label-exact augmentations: the 8 symmetries of the square and crops to tiles.
//!
//! Images and boxes use the corner-origin pixel convention of [`crate::geometry`], under which
//! every symmetry maps pixel centres onto pixel centres, so labels move exactly with pixels.

use crate::classes::DefectClass;
use crate::geometry::{Dihedral, OrientedBox, clip_line};
use serde::{Deserialize, Serialize};

/// Applies a symmetry to a row-major image. Same result as [`Dihedral::apply_image`], but the
/// source index is an affine function of the destination pixel, so it is computed with two
/// integer steps instead of a float transform per pixel (this runs 8× per exported image).
pub fn apply_symmetry<T: Copy>(d: Dihedral, data: &[T], w: usize, h: usize) -> Vec<T> {
    assert_eq!(data.len(), w * h, "image buffer does not match {w}x{h}");
    let (ow, oh) = d.output_size(w, h);
    if d == Dihedral::IDENTITY {
        return data.to_vec();
    }
    let inv = d.inverse();
    let src = |x: usize, y: usize| -> isize {
        let p = inv.map_point([x as f64 + 0.5, y as f64 + 0.5], ow as f64, oh as f64);
        p[1].floor() as isize * w as isize + p[0].floor() as isize
    };
    let origin = src(0, 0);
    let step_x = if ow > 1 { src(1, 0) - origin } else { 0 };
    let step_y = if oh > 1 { src(0, 1) - origin } else { 0 };
    let mut out = Vec::with_capacity(ow * oh);
    for y in 0..oh {
        let row = origin + y as isize * step_y;
        out.extend((0..ow).map(|x| data[(row + x as isize * step_x) as usize]));
    }
    out
}

/// A square crop window in pixels of the (transformed) image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropWindow {
    pub x: usize,
    pub y: usize,
    pub size: usize,
}

impl CropWindow {
    pub fn extract<T: Copy>(&self, data: &[T], w: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(self.size * self.size);
        for row in self.y..self.y + self.size {
            let start = row * w + self.x;
            out.extend_from_slice(&data[start..start + self.size]);
        }
        out
    }
}

/// A box moved into crop coordinates, or `None` when it does not survive the crop.
///
/// Point defects are kept only when the whole box is inside the tile (a partial vacancy box
/// would teach the model half-defects). Grain boundaries are long: their box is shortened
/// along its length to the stretch whose full width lies inside the tile (still a true
/// rectangle), and kept when that stretch is at least `min_boundary_len` px long.
pub fn crop_box(
    class: DefectClass,
    b: &OrientedBox,
    win: &CropWindow,
    min_boundary_len: f64,
) -> Option<OrientedBox> {
    let s = win.size as f64;
    let moved = OrientedBox {
        cx: b.cx - win.x as f64,
        cy: b.cy - win.y as f64,
        ..*b
    };
    const EPS: f64 = 1e-9;
    match class {
        DefectClass::GrainBoundary => {
            // Work with the long axis whatever the box's w/h order.
            let c = moved.canonical();
            let (sn, cs) = c.angle.sin_cos();
            let dir = [cs, sn];
            let n = [-sn, cs];
            let (hx, hy) = (c.h / 2.0 * n[0].abs(), c.h / 2.0 * n[1].abs());
            if 2.0 * hx >= s || 2.0 * hy >= s {
                return None;
            }
            let (t0, t1) = clip_line([c.cx, c.cy], dir, [hx, hy], [s - hx, s - hy])?;
            let (t0, t1) = (t0.max(-c.w / 2.0), t1.min(c.w / 2.0));
            let len = t1 - t0;
            if len < min_boundary_len.max(EPS) {
                return None;
            }
            let mid = (t0 + t1) / 2.0;
            Some(OrientedBox::new(
                c.cx + mid * dir[0],
                c.cy + mid * dir[1],
                len,
                c.h,
                c.angle,
            ))
        }
        _ => moved
            .corners()
            .iter()
            .all(|p| p[0] >= -EPS && p[1] >= -EPS && p[0] <= s + EPS && p[1] <= s + EPS)
            .then_some(moved),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_symmetry_matches_the_reference_on_non_square_images() {
        let (w, h) = (7, 4);
        let data: Vec<u32> = (0..(w * h) as u32).collect();
        for d in Dihedral::all() {
            assert_eq!(
                apply_symmetry(d, &data, w, h),
                d.apply_image(&data, w, h),
                "{}",
                d.name()
            );
        }
    }

    #[test]
    fn point_defect_boxes_partly_outside_are_dropped() {
        let win = CropWindow {
            x: 10,
            y: 10,
            size: 20,
        };
        let inside = OrientedBox::new(20.0, 20.0, 4.0, 4.0, 0.3);
        let edge = OrientedBox::new(11.0, 20.0, 4.0, 4.0, 0.0);
        let k = crop_box(DefectClass::Vacancy, &inside, &win, 0.0).unwrap();
        assert!((k.cx - 10.0).abs() < 1e-12 && (k.cy - 10.0).abs() < 1e-12);
        assert!(crop_box(DefectClass::Interstitial, &edge, &win, 0.0).is_none());
    }

    #[test]
    fn boundary_boxes_are_shortened_to_the_tile() {
        let win = CropWindow {
            x: 0,
            y: 0,
            size: 100,
        };
        // A diagonal boundary 4 px wide running far beyond the tile on both ends.
        let b = OrientedBox::new(50.0, 50.0, 400.0, 4.0, std::f64::consts::FRAC_PI_4);
        let c = crop_box(DefectClass::GrainBoundary, &b, &win, 10.0).unwrap();
        for p in c.corners() {
            assert!((-1e-9..=100.0 + 1e-9).contains(&p[0]), "{p:?}");
            assert!((-1e-9..=100.0 + 1e-9).contains(&p[1]), "{p:?}");
        }
        assert!((c.h - 4.0).abs() < 1e-12 && (c.angle - b.angle).abs() < 1e-12);
        // The diagonal is 141 px; the inset loses ~2 px per end.
        assert!(c.w > 135.0 && c.w < 141.5, "{}", c.w);
        // A boundary that only grazes a corner is too short to keep.
        let graze = OrientedBox::new(0.0, 0.0, 400.0, 4.0, -std::f64::consts::FRAC_PI_4);
        assert!(crop_box(DefectClass::GrainBoundary, &graze, &win, 10.0).is_none());
        // Width-first boxes (h > w) are handled via their long axis.
        let tall = OrientedBox::new(50.0, 50.0, 4.0, 400.0, 0.0);
        let c = crop_box(DefectClass::GrainBoundary, &tall, &win, 10.0).unwrap();
        assert!((c.w - 100.0).abs() < 1e-9 && (c.h - 4.0).abs() < 1e-12);
    }
}
