//! `defect-detector info FILE [--page N]`: what the viewer would load, as one JSON object.

use std::path::PathBuf;

use clap::Args;
use defect_detector::formats;

#[derive(Args)]
pub struct InfoArgs {
    /// Microscopy image (TIFF, PNG, JPEG, DM3/DM4, SER/EMI, EMD, MRC).
    pub file: PathBuf,
    /// Which image of a multi-image file (0-based).
    #[arg(long, default_value_t = 0)]
    pub page: usize,
}

pub fn run(a: InfoArgs) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&info_json(&a)?)?);
    Ok(())
}

fn info_json(a: &InfoArgs) -> anyhow::Result<serde_json::Value> {
    let img = formats::load_page(&a.file, a.page)?;
    let (lo, hi) = img.image.min_max();
    let mut v = serde_json::to_value(img.info())?;
    let nan = img.image.data.iter().filter(|x| x.is_nan()).count();
    let inf = img.image.data.iter().filter(|x| x.is_infinite()).count();
    let finite = img.image.data.len() - nan - inf;
    // value range: the first thing to check when an image shows black or saturated. It is
    // over the finite pixels; with none, there is no range (not 0..0).
    v["min"] = if finite > 0 {
        serde_json::json!(lo)
    } else {
        serde_json::Value::Null
    };
    v["max"] = if finite > 0 {
        serde_json::json!(hi)
    } else {
        serde_json::Value::Null
    };
    v["nan_pixels"] = serde_json::json!(nan);
    v["infinite_pixels"] = serde_json::json!(inf);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_reports_size_type_calibration_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(8, 4, |x, y| {
            image::Luma([(x + 10 * y) as u16])
        });
        img.save(&path).unwrap();
        let v = info_json(&InfoArgs {
            file: path.clone(),
            page: 0,
        })
        .unwrap();
        assert_eq!(v["width"], 8);
        assert_eq!(v["height"], 4);
        assert_eq!(v["pixel_type"], "u16");
        assert_eq!(v["format"], "PNG");
        assert_eq!(v["pages"], 1);
        assert!(v["pixel_size"].is_null());
        assert_eq!(v["min"], 0.0);
        assert_eq!(v["max"], 37.0);
        assert_eq!(
            (v["nan_pixels"].as_u64(), v["infinite_pixels"].as_u64()),
            (Some(0), Some(0))
        );
        let e = info_json(&InfoArgs {
            file: path,
            page: 1,
        })
        .unwrap_err();
        assert!(e.to_string().contains("page 1"), "{e}");
    }

    fn float_tiff(path: &std::path::Path, data: &[f32]) {
        let f = std::fs::File::create(path).unwrap();
        let mut enc = tiff::encoder::TiffEncoder::new(f).unwrap();
        enc.write_image::<tiff::encoder::colortype::Gray32Float>(data.len() as u32, 1, data)
            .unwrap();
    }

    #[test]
    fn info_counts_non_finite_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.tif");
        float_tiff(&path, &[f32::NAN, 2.0, f32::INFINITY, -1.0, f32::NAN]);
        let v = info_json(&InfoArgs {
            file: path.clone(),
            page: 0,
        })
        .unwrap();
        assert_eq!(
            (v["min"].as_f64(), v["max"].as_f64()),
            (Some(-1.0), Some(2.0))
        );
        assert_eq!(v["nan_pixels"], 2);
        assert_eq!(v["infinite_pixels"], 1);
        // All NaN: no range at all rather than 0..0.
        float_tiff(&path, &[f32::NAN; 4]);
        let v = info_json(&InfoArgs {
            file: path,
            page: 0,
        })
        .unwrap();
        assert!(v["min"].is_null() && v["max"].is_null(), "{v}");
        assert_eq!(v["nan_pixels"], 4);
    }
}
