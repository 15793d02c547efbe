//! Oriented boxes, polygon IoU, ProbIoU, rotated NMS and the dihedral group of the square.
//!
//! Coordinate convention used everywhere in the crate: continuous pixel coordinates with the
//! origin at the top-left *corner* of the image, x to the right, y down. Pixel `(i, j)` covers
//! `[i, i+1) x [j, j+1)`, so its centre is `(i + 0.5, j + 0.5)`. Normalised YOLO coordinates are
//! these divided by the image width and height. With this convention every symmetry of the
//! image maps the rectangle `[0, W] x [0, H]` onto itself exactly and pixel centres onto pixel
//! centres, so labels can be transformed without half-pixel drift.

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// A point in pixel (or any planar) coordinates.
pub type Pt = [f64; 2];

/// An oriented rectangle in the Ultralytics `xywhr` convention: corners are
/// `c ± (w/2)(cos t, sin t) ± (h/2)(−sin t, cos t)` with y pointing down, so a positive angle
/// turns clockwise on screen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrientedBox {
    pub cx: f64,
    pub cy: f64,
    pub w: f64,
    pub h: f64,
    /// Radians.
    pub angle: f64,
}

impl OrientedBox {
    pub fn new(cx: f64, cy: f64, w: f64, h: f64, angle: f64) -> Self {
        Self {
            cx,
            cy,
            w,
            h,
            angle,
        }
    }

    /// Corners in order: the polygon is traversed consistently (clockwise on screen for w, h > 0).
    pub fn corners(&self) -> [Pt; 4] {
        let (s, c) = self.angle.sin_cos();
        let (ux, uy) = (c * self.w / 2.0, s * self.w / 2.0);
        let (vx, vy) = (-s * self.h / 2.0, c * self.h / 2.0);
        [
            [self.cx - ux - vx, self.cy - uy - vy],
            [self.cx + ux - vx, self.cy + uy - vy],
            [self.cx + ux + vx, self.cy + uy + vy],
            [self.cx - ux + vx, self.cy - uy + vy],
        ]
    }

    pub fn area(&self) -> f64 {
        self.w * self.h
    }

    /// The long axis: its direction (radians; `angle` when `w >= h`, else turned by 90°) and
    /// its length.
    pub fn long_axis(&self) -> (f64, f64) {
        if self.w >= self.h {
            (self.angle, self.w)
        } else {
            (self.angle + std::f64::consts::FRAC_PI_2, self.h)
        }
    }

    pub fn center(&self) -> Pt {
        [self.cx, self.cy]
    }

    /// Ultralytics' canonical form: `w >= h` and angle in `[0, pi)`. The same rectangle.
    pub fn canonical(&self) -> Self {
        let (w, h, mut t) = if self.w >= self.h {
            (self.w, self.h, self.angle)
        } else {
            (self.h, self.w, self.angle + PI / 2.0)
        };
        t = t.rem_euclid(PI);
        if t >= PI - 1e-12 {
            t = 0.0;
        }
        Self::new(self.cx, self.cy, w, h, t)
    }

    /// The minimum-area rectangle around four points (for rectangles: exact, whatever the
    /// corner order). Degenerate input yields a zero-area box rather than NaN.
    pub fn from_corners(pts: &[Pt; 4]) -> Self {
        min_area_rect(pts)
    }

    pub fn contains(&self, p: Pt) -> bool {
        let (s, c) = self.angle.sin_cos();
        let dx = p[0] - self.cx;
        let dy = p[1] - self.cy;
        let u = dx * c + dy * s;
        let v = -dx * s + dy * c;
        u.abs() <= self.w / 2.0 + 1e-9 && v.abs() <= self.h / 2.0 + 1e-9
    }

    /// Axis-aligned bounds `[xmin, ymin, xmax, ymax]`.
    pub fn aabb(&self) -> [f64; 4] {
        let c = self.corners();
        let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        for p in c {
            b[0] = b[0].min(p[0]);
            b[1] = b[1].min(p[1]);
            b[2] = b[2].max(p[0]);
            b[3] = b[3].max(p[1]);
        }
        b
    }

    /// Maps the rectangle through `f` (a similarity, or an affine map close to one such as
    /// slow-scan drift) and returns the rectangle whose `w` side follows the image of the old
    /// `w` side: exact for similarities, and for slight shears the rectangle with the mean side
    /// lengths (labels stay rectangles, never parallelograms).
    pub fn map(&self, f: impl Fn(Pt) -> Pt) -> Self {
        let c = self.corners().map(&f);
        let len = |a: Pt, b: Pt| ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        let w = 0.5 * (len(c[0], c[1]) + len(c[3], c[2]));
        let h = 0.5 * (len(c[0], c[3]) + len(c[1], c[2]));
        let centre = f(self.center());
        let dx = (c[1][0] - c[0][0]) + (c[2][0] - c[3][0]);
        let dy = (c[1][1] - c[0][1]) + (c[2][1] - c[3][1]);
        Self::new(centre[0], centre[1], w, h, dy.atan2(dx))
    }
}

/// Clips the line `point + t·dir` to the rectangle `[lo, hi]`: the parameter interval
/// `(t0, t1)` of the part inside, if any.
pub fn clip_line(point: Pt, dir: Pt, lo: Pt, hi: Pt) -> Option<(f64, f64)> {
    let (mut t0, mut t1) = (f64::NEG_INFINITY, f64::INFINITY);
    for k in 0..2 {
        if dir[k].abs() < 1e-12 {
            if point[k] < lo[k] || point[k] > hi[k] {
                return None;
            }
        } else {
            let a = (lo[k] - point[k]) / dir[k];
            let b = (hi[k] - point[k]) / dir[k];
            t0 = t0.max(a.min(b));
            t1 = t1.min(a.max(b));
        }
    }
    (t1 > t0).then_some((t0, t1))
}

fn cross(o: Pt, a: Pt, b: Pt) -> f64 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// Convex hull (Andrew's monotone chain), counter-clockwise in a y-up frame.
pub fn convex_hull(points: &[Pt]) -> Vec<Pt> {
    let mut p: Vec<Pt> = points.to_vec();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let mut lower: Vec<Pt> = Vec::new();
    for &q in &p {
        while lower.len() >= 2 && cross(lower[lower.len() - 2], lower[lower.len() - 1], q) <= 0.0 {
            lower.pop();
        }
        lower.push(q);
    }
    let mut upper: Vec<Pt> = Vec::new();
    for &q in p.iter().rev() {
        while upper.len() >= 2 && cross(upper[upper.len() - 2], upper[upper.len() - 1], q) <= 0.0 {
            upper.pop();
        }
        upper.push(q);
    }
    lower.pop();
    upper.pop();
    lower.extend(upper);
    lower
}

fn min_area_rect(pts: &[Pt; 4]) -> OrientedBox {
    let hull = convex_hull(pts);
    let cx = pts.iter().map(|p| p[0]).sum::<f64>() / 4.0;
    let cy = pts.iter().map(|p| p[1]).sum::<f64>() / 4.0;
    if hull.len() < 2 {
        return OrientedBox::new(cx, cy, 0.0, 0.0, 0.0);
    }
    let mut best: Option<(f64, OrientedBox)> = None;
    for i in 0..hull.len() {
        let a = hull[i];
        let b = hull[(i + 1) % hull.len()];
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt();
        if len < 1e-12 {
            continue;
        }
        let (c, s) = (dx / len, dy / len);
        let (mut umin, mut umax, mut vmin, mut vmax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &hull {
            let u = p[0] * c + p[1] * s;
            let v = -p[0] * s + p[1] * c;
            umin = umin.min(u);
            umax = umax.max(u);
            vmin = vmin.min(v);
            vmax = vmax.max(v);
        }
        let area = (umax - umin) * (vmax - vmin);
        let (uc, vc) = ((umin + umax) / 2.0, (vmin + vmax) / 2.0);
        let bx = OrientedBox::new(
            uc * c - vc * s,
            uc * s + vc * c,
            umax - umin,
            vmax - vmin,
            s.atan2(c),
        );
        if best.as_ref().is_none_or(|(a0, _)| area < *a0 - 1e-12) {
            best = Some((area, bx));
        }
    }
    best.map(|(_, b)| b)
        .unwrap_or(OrientedBox::new(cx, cy, 0.0, 0.0, 0.0))
}

/// Signed area (shoelace); positive for counter-clockwise in a y-up frame.
pub fn polygon_signed_area(poly: &[Pt]) -> f64 {
    let n = poly.len();
    let mut s = 0.0;
    for i in 0..n {
        let a = poly[i];
        let b = poly[(i + 1) % n];
        s += a[0] * b[1] - b[0] * a[1];
    }
    s / 2.0
}

/// Intersection of two convex polygons (Sutherland–Hodgman). Both must have the same
/// orientation; the result has it too.
pub fn convex_intersection(subject: &[Pt], clip: &[Pt]) -> Vec<Pt> {
    let orient = polygon_signed_area(clip).signum();
    let mut out: Vec<Pt> = subject.to_vec();
    let n = clip.len();
    for i in 0..n {
        if out.is_empty() {
            break;
        }
        let a = clip[i];
        let b = clip[(i + 1) % n];
        let inside = |p: Pt| cross(a, b, p) * orient >= 0.0;
        let input = std::mem::take(&mut out);
        for j in 0..input.len() {
            let p = input[j];
            let q = input[(j + 1) % input.len()];
            let (pin, qin) = (inside(p), inside(q));
            if pin {
                out.push(p);
            }
            if pin != qin {
                // Intersection of segment p-q with the infinite line a-b.
                let d1 = cross(a, b, p);
                let d2 = cross(a, b, q);
                let t = d1 / (d1 - d2);
                out.push([p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])]);
            }
        }
    }
    out
}

#[cfg(test)]
/// Exact IoU of two oriented rectangles by polygon clipping.
pub fn polygon_iou(a: &OrientedBox, b: &OrientedBox) -> f64 {
    let area_a = a.area().abs();
    let area_b = b.area().abs();
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    // Cheap reject on the bounding circles.
    let ra = 0.5 * (a.w * a.w + a.h * a.h).sqrt();
    let rb = 0.5 * (b.w * b.w + b.h * b.h).sqrt();
    let d2 = (a.cx - b.cx).powi(2) + (a.cy - b.cy).powi(2);
    if d2 > (ra + rb).powi(2) {
        return 0.0;
    }
    let inter = polygon_signed_area(&convex_intersection(&a.corners(), &b.corners())).abs();
    let union = area_a + area_b - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Area of the intersection of two oriented rectangles.
pub fn intersection_area(a: &OrientedBox, b: &OrientedBox) -> f64 {
    polygon_signed_area(&convex_intersection(&a.corners(), &b.corners())).abs()
}

fn covariance(b: &OrientedBox) -> (f64, f64, f64) {
    let a = b.w * b.w / 12.0;
    let bb = b.h * b.h / 12.0;
    let (s, c) = b.angle.sin_cos();
    (
        a * c * c + bb * s * s,
        a * s * s + bb * c * c,
        (a - bb) * c * s,
    )
}

/// Ultralytics' ProbIoU (`utils/metrics.py::probiou`): boxes as Gaussians, 1 − Hellinger
/// distance of their Bhattacharyya overlap. Used by Ultralytics for OBB NMS and matching.
pub fn probiou(b1: &OrientedBox, b2: &OrientedBox) -> f64 {
    const EPS: f64 = 1e-7;
    let (a1, bb1, c1) = covariance(b1);
    let (a2, bb2, c2) = covariance(b2);
    let (x1, y1, x2, y2) = (b1.cx, b1.cy, b2.cx, b2.cy);
    let den = (a1 + a2) * (bb1 + bb2) - (c1 + c2).powi(2) + EPS;
    let t1 = ((a1 + a2) * (y1 - y2).powi(2) + (bb1 + bb2) * (x1 - x2).powi(2)) / den * 0.25;
    let t2 = ((c1 + c2) * (x2 - x1) * (y1 - y2)) / den * 0.5;
    let t3 = (((a1 + a2) * (bb1 + bb2) - (c1 + c2).powi(2))
        / (4.0 * ((a1 * bb1 - c1 * c1).max(0.0) * (a2 * bb2 - c2 * c2).max(0.0)).sqrt() + EPS)
        + EPS)
        .ln()
        * 0.5;
    let bd = (t1 + t2 + t3).clamp(EPS, 100.0);
    let hd = (1.0 - (-bd).exp() + EPS).sqrt();
    1.0 - hd
}

#[cfg(test)]
/// Which overlap measure NMS and matching use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum IouKind {
    /// Ultralytics' choice.
    #[default]
    ProbIou,
    /// Exact polygon IoU.
    Polygon,
}

#[cfg(test)]
impl IouKind {
    pub fn iou(self, a: &OrientedBox, b: &OrientedBox) -> f64 {
        match self {
            IouKind::ProbIou => probiou(a, b),
            IouKind::Polygon => polygon_iou(a, b),
        }
    }
}

/// Greedy rotated NMS. `items` are (box, score, class); with `class_aware` boxes of different
/// classes never suppress each other. Returns kept indices, best score first. A test reference:
/// the detector uses Ultralytics' Fast-NMS (`detect::post`), which tests check against this.
#[cfg(test)]
pub fn nms_rotated(
    items: &[(OrientedBox, f32, usize)],
    iou_threshold: f64,
    kind: IouKind,
    class_aware: bool,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[b].1.total_cmp(&items[a].1).then(a.cmp(&b)));
    let mut kept: Vec<usize> = Vec::new();
    for &i in &order {
        let (bi, _, ci) = &items[i];
        let suppressed = kept.iter().any(|&k| {
            let (bk, _, ck) = &items[k];
            (!class_aware || ci == ck) && kind.iou(bi, bk) > iou_threshold
        });
        if !suppressed {
            kept.push(i);
        }
    }
    kept
}

/// One of the 8 symmetries of the square acting on an image: first an optional horizontal
/// flip (x -> W - x), then `quarter_turns` clockwise quarter turns (as seen on screen, y down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dihedral {
    pub flip: bool,
    pub quarter_turns: u8,
}

impl Dihedral {
    pub const IDENTITY: Dihedral = Dihedral {
        flip: false,
        quarter_turns: 0,
    };

    /// All 8 distinct elements, identity first.
    pub fn all() -> [Dihedral; 8] {
        let mut out = [Self::IDENTITY; 8];
        for (i, o) in out.iter_mut().enumerate() {
            *o = Dihedral {
                flip: i >= 4,
                quarter_turns: (i % 4) as u8,
            };
        }
        out
    }

    /// Short stable name used in file names and manifests, e.g. `r90`, `f_r180`.
    pub fn name(&self) -> String {
        let r = format!("r{}", 90 * self.quarter_turns as u32);
        if self.flip { format!("f_{r}") } else { r }
    }

    /// The name a person reads, e.g. "mirrored + rotated 90°" for `f_r90` (the mirror is
    /// left–right and comes first, turns are clockwise, as in [`Dihedral`]).
    pub fn describe(&self) -> String {
        let turn = 90 * self.quarter_turns as u32 % 360;
        match (self.flip, turn) {
            (false, 0) => "original".into(),
            (false, t) => format!("rotated {t}°"),
            (true, 0) => "mirrored".into(),
            (true, t) => format!("mirrored + rotated {t}°"),
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::all().into_iter().find(|d| d.name() == s)
    }

    /// Output image size for an input of `w x h`.
    pub fn output_size(&self, w: usize, h: usize) -> (usize, usize) {
        if !self.quarter_turns.is_multiple_of(2) {
            (h, w)
        } else {
            (w, h)
        }
    }

    /// Maps a continuous point of an image of size `w x h` (corner-origin convention).
    pub fn map_point(&self, p: Pt, w: f64, h: f64) -> Pt {
        let (mut x, mut y) = (p[0], p[1]);
        if self.flip {
            x = w - x;
        }
        let (mut cw, mut ch) = (w, h);
        for _ in 0..self.quarter_turns % 4 {
            // Clockwise quarter turn on screen: (x, y) -> (H - y, x); size (W, H) -> (H, W).
            let nx = ch - y;
            let ny = x;
            x = nx;
            y = ny;
            std::mem::swap(&mut cw, &mut ch);
        }
        [x, y]
    }

    /// Source pixel index `(sx, sy)` for destination pixel `(dx, dy)`.
    fn source_pixel(&self, dx: usize, dy: usize, w: usize, h: usize) -> (usize, usize) {
        let inv = self.inverse();
        let (ow, oh) = self.output_size(w, h);
        let p = inv.map_point([dx as f64 + 0.5, dy as f64 + 0.5], ow as f64, oh as f64);
        (p[0].floor() as usize, p[1].floor() as usize)
    }

    pub fn inverse(&self) -> Dihedral {
        if self.flip {
            // A reflection is its own inverse.
            *self
        } else {
            Dihedral {
                flip: false,
                quarter_turns: (4 - self.quarter_turns % 4) % 4,
            }
        }
    }

    /// Applies the symmetry to a row-major image buffer.
    pub fn apply_image<T: Copy>(&self, data: &[T], w: usize, h: usize) -> Vec<T> {
        let (ow, oh) = self.output_size(w, h);
        let mut out = Vec::with_capacity(ow * oh);
        if self.quarter_turns.is_multiple_of(4) && !self.flip {
            out.extend_from_slice(data);
            return out;
        }
        for dy in 0..oh {
            for dx in 0..ow {
                let (sx, sy) = self.source_pixel(dx, dy, w, h);
                out.push(data[sy * w + sx]);
            }
        }
        out
    }

    /// Maps a box of an image of size `w x h`.
    pub fn map_box(&self, b: &OrientedBox, w: f64, h: f64) -> OrientedBox {
        b.map(|p| self.map_point(p, w, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn corners_round_trip_through_min_area_rect() {
        for &t in &[0.0, 0.3, 1.2, -0.7, 2.9] {
            let b = OrientedBox::new(10.0, 20.0, 8.0, 3.0, t);
            let r = OrientedBox::from_corners(&b.corners());
            let (bc, rc) = (b.canonical(), r.canonical());
            assert!(close(bc.cx, rc.cx, 1e-9) && close(bc.cy, rc.cy, 1e-9));
            assert!(close(bc.w, rc.w, 1e-9) && close(bc.h, rc.h, 1e-9));
            let dt = (bc.angle - rc.angle).rem_euclid(PI);
            assert!(dt < 1e-9 || PI - dt < 1e-9, "angle {t}: {bc:?} vs {rc:?}");
        }
    }

    #[test]
    fn polygon_iou_known_values() {
        let a = OrientedBox::new(0.0, 0.0, 2.0, 2.0, 0.0);
        assert!(close(polygon_iou(&a, &a), 1.0, 1e-12));
        let b = OrientedBox::new(1.0, 0.0, 2.0, 2.0, 0.0);
        assert!(close(polygon_iou(&a, &b), 2.0 / 6.0, 1e-12));
        // A square and the same square turned 45°: intersection is a regular octagon.
        let c = OrientedBox::new(0.0, 0.0, 2.0, 2.0, PI / 4.0);
        let octagon = 8.0 * (2f64.sqrt() - 1.0);
        assert!(close(polygon_iou(&a, &c), octagon / (8.0 - octagon), 1e-9));
        let far = OrientedBox::new(10.0, 0.0, 2.0, 2.0, 0.3);
        assert_eq!(polygon_iou(&a, &far), 0.0);
    }

    #[test]
    fn probiou_is_one_for_identical_and_small_for_distant() {
        let a = OrientedBox::new(5.0, 5.0, 4.0, 2.0, 0.4);
        assert!(probiou(&a, &a) > 0.99);
        let b = OrientedBox::new(50.0, 5.0, 4.0, 2.0, 0.4);
        assert!(probiou(&a, &b) < 1e-3);
        // Symmetric in its arguments.
        let c = OrientedBox::new(6.0, 5.5, 3.0, 2.5, 1.0);
        assert!(close(probiou(&a, &c), probiou(&c, &a), 1e-12));
    }

    #[test]
    fn nms_keeps_best_of_overlapping_and_respects_classes() {
        let b = OrientedBox::new(10.0, 10.0, 6.0, 4.0, 0.2);
        let shifted = OrientedBox::new(10.5, 10.2, 6.0, 4.0, 0.25);
        let other = OrientedBox::new(40.0, 10.0, 6.0, 4.0, 0.2);
        let items = vec![(b, 0.8, 0), (shifted, 0.9, 0), (other, 0.5, 0), (b, 0.7, 1)];
        for kind in [IouKind::ProbIou, IouKind::Polygon] {
            let kept = nms_rotated(&items, 0.5, kind, true);
            assert_eq!(kept, vec![1, 3, 2]);
            let kept = nms_rotated(&items, 0.5, kind, false);
            assert_eq!(kept, vec![1, 2]);
        }
    }

    #[test]
    fn dihedral_group_is_closed_and_consistent_with_images() {
        let (w, h) = (5usize, 3usize);
        let data: Vec<u32> = (0..(w * h) as u32).collect();
        for d in Dihedral::all() {
            let img = d.apply_image(&data, w, h);
            let (ow, oh) = d.output_size(w, h);
            // Pixel centres map to the pixel that holds the same value.
            for y in 0..h {
                for x in 0..w {
                    let p = d.map_point([x as f64 + 0.5, y as f64 + 0.5], w as f64, h as f64);
                    let (px, py) = (p[0].floor() as usize, p[1].floor() as usize);
                    assert!(px < ow && py < oh);
                    assert_eq!(img[py * ow + px], data[y * w + x], "{d:?}");
                }
            }
            let back = d.inverse().apply_image(&img, ow, oh);
            assert_eq!(back, data);
        }
        let names: std::collections::HashSet<_> =
            Dihedral::all().iter().map(|d| d.name()).collect();
        assert_eq!(names.len(), 8);
        for d in Dihedral::all() {
            assert_eq!(Dihedral::from_name(&d.name()), Some(d));
        }
    }

    /// Named `augment…` so the augmentation tests (`cargo test augment`) include it.
    #[test]
    fn augmentation_symmetries_are_described_as_they_act() {
        let words: Vec<String> = Dihedral::all().iter().map(|d| d.describe()).collect();
        assert_eq!(
            words,
            [
                "original",
                "rotated 90°",
                "rotated 180°",
                "rotated 270°",
                "mirrored",
                "mirrored + rotated 90°",
                "mirrored + rotated 180°",
                "mirrored + rotated 270°",
            ]
        );
        // The words' claims: a turn is clockwise on screen, the mirror is left–right and comes
        // before the turn. A point near the top-left corner of a 10×10 image:
        let top_left = [1.0, 2.0];
        let at = |name: &str| {
            Dihedral::from_name(name)
                .unwrap()
                .map_point(top_left, 10.0, 10.0)
        };
        assert!(close(at("r90")[0], 8.0, 1e-12) && close(at("r90")[1], 1.0, 1e-12));
        assert!(close(at("f_r0")[0], 9.0, 1e-12) && close(at("f_r0")[1], 2.0, 1e-12));
        // Mirrored to the top right, then turned clockwise to the bottom right.
        assert!(close(at("f_r90")[0], 8.0, 1e-12) && close(at("f_r90")[1], 9.0, 1e-12));
    }

    #[test]
    fn dihedral_maps_boxes_with_their_pixels() {
        let b = OrientedBox::new(3.0, 1.5, 2.0, 1.0, 0.3);
        for d in Dihedral::all() {
            let m = d.map_box(&b, 8.0, 4.0);
            let c = d.map_point(b.center(), 8.0, 4.0);
            assert!(close(m.cx, c[0], 1e-9) && close(m.cy, c[1], 1e-9));
            assert!(close(m.area(), b.area(), 1e-9));
        }
    }
}
