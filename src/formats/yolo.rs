//! Ultralytics YOLO-OBB label files: one line per object, `class x1 y1 x2 y2 x3 y3 x4 y4`,
//! corners normalised by the image width and height (corner-origin pixel convention, see
//! [`crate::geometry`]).

use crate::geometry::{OrientedBox, Pt};
use std::fmt::Write as _;
use std::path::Path;

/// One labelled object in normalised coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct ObbLabel {
    pub class: usize,
    pub corners: [Pt; 4],
}

impl ObbLabel {
    /// From a box in pixels of an image `w x h`.
    pub fn from_box_px(class: usize, b: &OrientedBox, w: f64, h: f64) -> Self {
        let c = b.corners();
        Self {
            class,
            corners: c.map(|p| [p[0] / w, p[1] / h]),
        }
    }

    /// The corners in pixels.
    pub fn corners_px(&self, w: f64, h: f64) -> [Pt; 4] {
        self.corners.map(|p| [p[0] * w, p[1] * h])
    }

    /// The oriented box in pixels (min-area rectangle through the corners).
    pub fn to_box_px(&self, w: f64, h: f64) -> OrientedBox {
        OrientedBox::from_corners(&self.corners_px(w, h))
    }
}

/// A label file problem, naming the file and 1-based line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct LabelError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// How strictly to validate.
#[derive(Clone, Copy, Debug)]
pub struct Validation {
    /// Number of classes; ids must be below it.
    pub num_classes: usize,
    /// Coordinates may stray this far outside `[0, 1]`.
    pub tolerance: f64,
    /// Minimum box area in normalised units (degenerate boxes are errors).
    pub min_area: f64,
}

impl Default for Validation {
    fn default() -> Self {
        Self {
            num_classes: crate::classes::DefectClass::ALL.len(),
            tolerance: 0.01,
            min_area: 1e-8,
        }
    }
}

/// Formats labels as a YOLO-OBB file (6 decimals, as Ultralytics writes them).
pub fn format_labels(labels: &[ObbLabel]) -> String {
    let mut s = String::new();
    for l in labels {
        let _ = write!(s, "{}", l.class);
        for p in &l.corners {
            let _ = write!(s, " {:.6} {:.6}", p[0], p[1]);
        }
        s.push('\n');
    }
    s
}

/// Parses and validates a label file's text. `file` is used in error messages.
pub fn parse_labels(text: &str, file: &str, v: &Validation) -> Result<Vec<ObbLabel>, LabelError> {
    // Windows editors start UTF-8 files with a byte-order mark, which would otherwise be an
    // invisible part of the first class id.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |message: String| LabelError {
            file: file.to_string(),
            line: i + 1,
            message,
        };
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 9 {
            return Err(err(format!(
                "expected 9 fields (class x1 y1 x2 y2 x3 y3 x4 y4), found {}",
                fields.len()
            )));
        }
        let class: usize = fields[0].parse().map_err(|_| {
            err(format!(
                "class '{}' is not a non-negative integer",
                fields[0]
            ))
        })?;
        if class >= v.num_classes {
            return Err(err(format!(
                "class {class} out of range (dataset has {} classes)",
                v.num_classes
            )));
        }
        let mut nums = [0f64; 8];
        for (k, f) in fields[1..].iter().enumerate() {
            let x: f64 = f
                .parse()
                .map_err(|_| err(format!("coordinate '{f}' is not a number")))?;
            if !x.is_finite() {
                return Err(err(format!("coordinate '{f}' is not finite")));
            }
            if x < -v.tolerance || x > 1.0 + v.tolerance {
                return Err(err(format!(
                    "coordinate {x} outside [0, 1] (normalised coordinates expected)"
                )));
            }
            nums[k] = x;
        }
        let corners = [
            [nums[0], nums[1]],
            [nums[2], nums[3]],
            [nums[4], nums[5]],
            [nums[6], nums[7]],
        ];
        let area = crate::geometry::polygon_signed_area(&corners).abs();
        if area < v.min_area {
            return Err(err(format!("degenerate box (area {area:.2e})")));
        }
        out.push(ObbLabel { class, corners });
    }
    Ok(out)
}

/// Reads and validates a label file.
pub fn read_labels(path: &Path, v: &Validation) -> anyhow::Result<Vec<ObbLabel>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(parse_labels(&text, &path.display().to_string(), v)?)
}

/// Writes a label file atomically.
pub fn write_labels(path: &Path, labels: &[ObbLabel]) -> anyhow::Result<()> {
    crate::fsio::atomic_write(path, format_labels(labels).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_class() {
        let line = "1 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3";
        let v = Validation::default();
        let l = parse_labels(&format!("\u{feff}{line}\n"), "f.txt", &v).unwrap();
        assert_eq!(l, parse_labels(line, "f.txt", &v).unwrap());
        // Elsewhere it is still an error.
        assert!(parse_labels(&format!("{line}\n\u{feff}{line}"), "f.txt", &v).is_err());
    }

    #[test]
    fn round_trip_within_1e6() {
        let b = OrientedBox::new(100.3, 50.7, 30.0, 12.0, 0.61);
        let l = ObbLabel::from_box_px(2, &b, 640.0, 480.0);
        let text = format_labels(std::slice::from_ref(&l));
        let back = parse_labels(&text, "t.txt", &Validation::default()).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].class, 2);
        for (p, q) in back[0].corners.iter().zip(l.corners.iter()) {
            assert!((p[0] - q[0]).abs() <= 1e-6 && (p[1] - q[1]).abs() <= 1e-6);
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let v = Validation::default();
        let text = "0 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n\n7 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n";
        let e = parse_labels(text, "lab.txt", &v).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("lab.txt", 3));
        assert!(e.to_string().contains("out of range"));
        for bad in [
            "1 0.1 0.1 0.2",
            "x 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2",
            "1 0.1 0.1 0.2 0.1 0.2 0.2 0.1 NaN",
            "1 0.1 0.1 0.2 0.1 0.2 0.2 0.1 3.0",
            "1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1",
        ] {
            let e = parse_labels(bad, "f", &v).unwrap_err();
            assert_eq!(e.line, 1, "{bad}");
        }
    }
}
