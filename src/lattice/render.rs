//! Colour renderings of the lattice maps (one pixel per map cell), for the CLI's PNGs and the
//! Viewer's overlay: orientation on a colour wheel (hue = `u`-axis direction mod 180°),
//! discontinuity, spacing and strength as a black-red-yellow-white heat scale.

use super::LatticeMaps;

/// Which map to draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapKind {
    Orientation,
    Discontinuity,
    Spacing,
    Strength,
}

impl MapKind {
    pub const ALL: [MapKind; 4] = [
        MapKind::Orientation,
        MapKind::Discontinuity,
        MapKind::Spacing,
        MapKind::Strength,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MapKind::Orientation => "orientation",
            MapKind::Discontinuity => "discontinuity",
            MapKind::Spacing => "spacing",
            MapKind::Strength => "strength",
        }
    }

    /// What the colours mean, for a legend or tooltip.
    pub fn legend(self) -> &'static str {
        match self {
            MapKind::Orientation => {
                "hue = direction of the lattice [1-10] axis (mod 180°); transparent: no lattice"
            }
            MapKind::Discontinuity => {
                "black, red, yellow to white: how much the lattice changes across a window (0–1)"
            }
            MapKind::Spacing => "{111} spacing against nominal: red-yellow = ±10 % strain scale",
            MapKind::Strength => "visibility of the {111} reflections (peak-to-mean power)",
        }
    }
}

/// Black → red → yellow → white for `v` in `[0, 1]`.
pub fn heat(v: f32) -> [u8; 3] {
    let v = if v.is_finite() {
        v.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let r = (255.0 * (1.5 * v).min(1.0)) as u8;
    let g = (255.0 * (1.5 * v - 0.5).clamp(0.0, 1.0)) as u8;
    let b = (255.0 * (3.0 * v - 2.0).clamp(0.0, 1.0)) as u8;
    [r, g, b]
}

/// A colour wheel over 180° (a lattice direction has no sign); black for NaN.
pub fn hue(deg: f32) -> [u8; 3] {
    if !deg.is_finite() {
        return [0, 0, 0];
    }
    let h = deg.rem_euclid(180.0) / 30.0; // 0..6
    let x = 1.0 - ((h % 2.0) - 1.0).abs();
    let (r, g, b) = match h as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    [(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8]
}

/// The colour of map cell `i` and whether the cell has a value (no lattice: transparent).
pub fn cell_color(m: &LatticeMaps, kind: MapKind, i: usize) -> Option<[u8; 3]> {
    match kind {
        MapKind::Orientation => {
            let d = m.orientation_deg[i];
            d.is_finite().then(|| hue(d))
        }
        MapKind::Discontinuity => Some(heat(m.discontinuity[i])),
        MapKind::Spacing => {
            let s = m.spacing_ratio[i];
            s.is_finite().then(|| heat(0.5 + 5.0 * (s - 1.0)))
        }
        MapKind::Strength => Some(heat(m.strength[i] / 40.0)),
    }
}

/// The map as `cols x rows` RGBA pixels (cells without a value are transparent), and the
/// image rectangle `[x0, y0, x1, y1]` (pixels) the grid covers: each cell is a step-sized
/// square centred on its centre.
pub fn map_rgba(m: &LatticeMaps, kind: MapKind) -> (Vec<u8>, [f64; 4]) {
    let mut out = Vec::with_capacity(m.len() * 4);
    for i in 0..m.len() {
        match cell_color(m, kind, i) {
            Some([r, g, b]) => out.extend_from_slice(&[r, g, b, 255]),
            None => out.extend_from_slice(&[0, 0, 0, 0]),
        }
    }
    let half = m.step_px as f64 / 2.0;
    let rect = [
        m.origin_px[0] as f64 - half,
        m.origin_px[1] as f64 - half,
        m.origin_px[0] as f64 + (m.cols as f64 - 0.5) * m.step_px as f64,
        m.origin_px[1] as f64 + (m.rows as f64 - 0.5) * m.step_px as f64,
    ];
    (out, rect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_the_covered_rectangle() {
        assert_eq!(heat(0.0), [0, 0, 0]);
        assert_eq!(heat(1.0), [255, 255, 255]);
        assert_eq!(hue(0.0), hue(180.0));
        assert_ne!(hue(0.0), hue(90.0));
        let m = LatticeMaps {
            step_px: 8,
            origin_px: [16, 16],
            cols: 2,
            rows: 1,
            window_px: 32,
            window_span: crate::lattice::WindowSpan::Standard,
            bin: 1,
            orientation_deg: vec![10.0, f32::NAN],
            rotation_deg: vec![10.0, f32::NAN],
            discontinuity: vec![0.0, 1.0],
            discontinuity_normal_deg: vec![0.0; 2],
            spacing_ratio: vec![1.0; 2],
            strength: vec![10.0; 2],
            primitive: vec![[0.0; 4]; 2],
        };
        let (px, rect) = map_rgba(&m, MapKind::Orientation);
        assert_eq!(px.len(), 8);
        assert_eq!((px[3], px[7]), (255, 0), "no lattice is transparent");
        assert_eq!(rect, [12.0, 12.0, 28.0, 20.0]);
        let (px, _) = map_rgba(&m, MapKind::Discontinuity);
        assert_eq!(&px[4..8], &[255, 255, 255, 255]);
    }
}
