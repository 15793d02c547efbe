//! Writing detections: JSON (pixels and, when calibrated, nanometres), CSV and YOLO-OBB labels.

use super::{Detection, DetectionResult};
use crate::formats::yolo::{ObbLabel, format_labels};
use crate::fsio::csv_field;
use crate::raster::PixelSize;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Context written next to the detections.
#[derive(Clone, Debug, Default)]
pub struct ExportMeta<'a> {
    pub image: Option<&'a Path>,
    pub model: Option<&'a Path>,
    pub conf: f32,
    pub iou: f64,
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

fn detection_json(d: &Detection, px: Option<PixelSize>) -> Value {
    let b = &d.obb;
    let corners: Vec<[f64; 2]> = d
        .corners()
        .iter()
        .map(|p| [round(p[0], 3), round(p[1], 3)])
        .collect();
    let mut v = json!({
        "class": d.class,
        "class_name": &*d.class_name,
        "confidence": round(d.confidence as f64, 5),
        "source": d.source.name(),
        "obb_px": {
            "cx": round(b.cx, 3), "cy": round(b.cy, 3),
            "w": round(b.w, 3), "h": round(b.h, 3),
            "angle_rad": round(b.angle, 6),
        },
        "corners_px": corners,
    });
    if let Some(p) = px {
        let s = p.nm_per_px;
        v["obb_nm"] = json!({
            "cx": round(b.cx * s, 4), "cy": round(b.cy * s, 4),
            "w": round(b.w * s, 4), "h": round(b.h * s, 4),
            "angle_rad": round(b.angle, 6),
        });
        v["corners_nm"] = json!(
            d.corners()
                .iter()
                .map(|c| [round(c[0] * s, 4), round(c[1] * s, 4)])
                .collect::<Vec<_>>()
        );
    }
    v
}

/// Per-class counts of `dets`, by class id for every class the model knows.
pub fn class_counts(dets: &[Detection], n_classes: usize) -> Vec<usize> {
    let mut c = vec![0usize; n_classes];
    for d in dets {
        if d.class >= c.len() {
            c.resize(d.class + 1, 0);
        }
        c[d.class] += 1;
    }
    c
}

/// A JSON document for the final detections `dets` of `result`.
pub fn detections_json(result: &DetectionResult, dets: &[Detection], meta: &ExportMeta) -> Value {
    let counts = class_counts(dets, result.class_names.len());
    let per_class: serde_json::Map<String, Value> = result
        .class_names
        .iter()
        .zip(&counts)
        .map(|(n, c)| (n.clone(), json!(c)))
        .collect();
    json!({
        "image": meta.image.map(|p| p.display().to_string()),
        "model": meta.model.map(|p| p.display().to_string()),
        "width": result.width,
        "height": result.height,
        "nm_per_px": result.pixel_size.map(|p| p.nm_per_px),
        "coordinates": "pixel corner origin, x right, y down; angle in radians, Ultralytics xywhr",
        "conf": round(meta.conf as f64, 6),
        "iou": meta.iou,
        "provider": result.provider,
        "tiles": result.tiles,
        "timings_ms": result.timings,
        "counts": per_class,
        "detections": dets.iter().map(|d| detection_json(d, result.pixel_size)).collect::<Vec<_>>(),
    })
}

/// CSV, one row per detection; the nanometre columns are empty when the pixel size is unknown.
pub fn detections_csv(dets: &[Detection], px: Option<PixelSize>) -> String {
    let mut s = String::from(
        "class,class_name,confidence,cx_px,cy_px,w_px,h_px,angle_deg,\
         x1_px,y1_px,x2_px,y2_px,x3_px,y3_px,x4_px,y4_px,cx_nm,cy_nm,w_nm,h_nm,source\n",
    );
    for d in dets {
        let b = &d.obb;
        let _ = write!(
            s,
            "{},{},{:.5},{:.3},{:.3},{:.3},{:.3},{:.4}",
            d.class,
            csv_field(&d.class_name),
            d.confidence,
            b.cx,
            b.cy,
            b.w,
            b.h,
            b.angle.to_degrees()
        );
        for p in d.corners() {
            let _ = write!(s, ",{:.3},{:.3}", p[0], p[1]);
        }
        match px {
            Some(p) => {
                let k = p.nm_per_px;
                let _ = write!(
                    s,
                    ",{:.4},{:.4},{:.4},{:.4}",
                    b.cx * k,
                    b.cy * k,
                    b.w * k,
                    b.h * k
                );
            }
            None => s.push_str(",,,,"),
        }
        s.push(',');
        s.push_str(d.source.name());
        s.push('\n');
    }
    s
}

/// YOLO-OBB label text (normalised corners), e.g. to correct and reuse as training labels.
pub fn detections_yolo(dets: &[Detection], width: usize, height: usize) -> String {
    let labels: Vec<ObbLabel> = dets
        .iter()
        .map(|d| ObbLabel::from_box_px(d.class, &d.obb, width as f64, height as f64))
        .collect();
    format_labels(&labels)
}

/// Writes `<base>.json`, `<base>.csv` and `<base>.txt` atomically; returns the paths.
pub fn write_all(
    base: &Path,
    result: &DetectionResult,
    dets: &[Detection],
    meta: &ExportMeta,
) -> anyhow::Result<Vec<PathBuf>> {
    let with_ext = |ext: &str| {
        let mut name = base.file_name().unwrap_or_default().to_os_string();
        name.push(".");
        name.push(ext);
        base.with_file_name(name)
    };
    let json_path = with_ext("json");
    let csv_path = with_ext("csv");
    let txt_path = with_ext("txt");
    let doc = serde_json::to_vec_pretty(&detections_json(result, dets, meta))?;
    crate::fsio::atomic_write(&json_path, &doc)?;
    crate::fsio::atomic_write(
        &csv_path,
        detections_csv(dets, result.pixel_size).as_bytes(),
    )?;
    crate::fsio::atomic_write(
        &txt_path,
        detections_yolo(dets, result.width, result.height).as_bytes(),
    )?;
    Ok(vec![json_path, csv_path, txt_path])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::OrientedBox;
    use std::sync::Arc;

    fn result(dets: Vec<Detection>, px: Option<PixelSize>) -> DetectionResult {
        DetectionResult {
            candidates: dets,
            width: 200,
            height: 100,
            pixel_size: px,
            class_names: vec![
                "grain_boundary".into(),
                "vacancy".into(),
                "interstitial".into(),
            ],
            provider: "CPUExecutionProvider".into(),
            timings: Default::default(),
            tiles: 1,
            scale: 1.0,
        }
    }

    fn sample() -> Vec<Detection> {
        vec![Detection {
            class: 1,
            class_name: Arc::from("vacancy"),
            confidence: 0.875,
            obb: OrientedBox::new(50.0, 20.0, 10.0, 4.0, 0.0),
            source: super::super::DetectionSource::Model,
        }]
    }

    #[test]
    fn json_has_pixels_and_nanometres_when_calibrated() {
        let dets = sample();
        let r = result(dets.clone(), Some(PixelSize { nm_per_px: 0.02 }));
        let v = detections_json(&r, &dets, &ExportMeta::default());
        let d = &v["detections"][0];
        assert_eq!(d["class_name"], "vacancy");
        assert_eq!(d["obb_px"]["cx"], 50.0);
        assert_eq!(d["obb_nm"]["cx"], 1.0);
        assert_eq!(d["corners_px"][0], json!([45.0, 18.0]));
        assert_eq!(v["counts"]["vacancy"], 1);
        assert_eq!(v["counts"]["interstitial"], 0);
        let r = result(dets.clone(), None);
        let v = detections_json(&r, &dets, &ExportMeta::default());
        assert!(v["detections"][0].get("obb_nm").is_none());
    }

    #[test]
    fn csv_and_yolo_text() {
        let dets = sample();
        let csv = detections_csv(&dets, None);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1]
                .starts_with("1,vacancy,0.87500,50.000,20.000,10.000,4.000,0.0000,45.000,18.000")
        );
        assert!(lines[1].ends_with(",,,,,model"), "{}", lines[1]);
        let txt = detections_yolo(&dets, 200, 100);
        assert_eq!(
            txt,
            "1 0.225000 0.180000 0.275000 0.180000 0.275000 0.220000 0.225000 0.220000\n"
        );
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }

    #[test]
    fn write_all_writes_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let dets = sample();
        let r = result(dets.clone(), None);
        let paths = write_all(&dir.path().join("img"), &r, &dets, &ExportMeta::default()).unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["img.json", "img.csv", "img.txt"]);
        let v: Value = serde_json::from_slice(&std::fs::read(&paths[0]).unwrap()).unwrap();
        assert_eq!(v["detections"].as_array().unwrap().len(), 1);
    }
}
