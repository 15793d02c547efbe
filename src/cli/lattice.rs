//! `defect-detector lattice FILE...`: training-free boundaries and point defects read from the
//! crystal lattice (see `defect_detector::lattice`).

use anyhow::Context;
use clap::Args;
use defect_detector::formats;
use defect_detector::geometry::OrientedBox;
use defect_detector::lattice::{LatticeParams, LatticeResult, analyse};
use defect_detector::synth::crystal::Preset;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct LatticeArgs {
    /// Microscopy images (TIFF, PNG, JPEG, DM3/DM4, SER/EMI, EMD, MRC).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Crystal preset: cdte110, si110, gaas110.
    #[arg(long, default_value = "cdte110")]
    pub crystal: String,
    /// Pixel size (nm/px); overrides the file's calibration. Without either, the lattice
    /// spacing is estimated from the power spectrum.
    #[arg(long)]
    pub nm_per_px: Option<f64>,
    /// Print the full result (maps included) as JSON, one object per file.
    #[arg(long)]
    pub json: bool,
    /// Skip the vacancy/interstitial search.
    #[arg(long)]
    pub no_point_defects: bool,
    /// Ridge threshold of the discontinuity map (default 0.35).
    #[arg(long)]
    pub boundary_threshold: Option<f32>,
    /// Write the maps and an overlay of the detections as PNG files into this folder.
    #[arg(long)]
    pub maps_png: Option<PathBuf>,
}

pub fn run(a: LatticeArgs) -> anyhow::Result<()> {
    let preset = Preset::named_crystal(&a.crystal)?;
    if let Some(d) = &a.maps_png {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    for f in &a.files {
        let img = formats::load(f)?;
        let nm = a.nm_per_px.or(img.pixel_size.map(|p| p.nm_per_px));
        let mut p = LatticeParams::new(preset.spec(), nm);
        p.point_defects = !a.no_point_defects;
        if let Some(t) = a.boundary_threshold {
            p.boundary_threshold = t;
        }
        let r = analyse(&img.image, &p).with_context(|| format!("{}", f.display()))?;
        if a.json {
            let mut v = serde_json::to_value(&r)?;
            v["file"] = serde_json::json!(f.display().to_string());
            println!("{}", serde_json::to_string(&v)?);
        } else {
            print_summary(f, &r);
        }
        if let Some(d) = &a.maps_png {
            write_pngs(d, f, &img.image, &r)?;
        }
    }
    Ok(())
}

fn print_summary(f: &Path, r: &LatticeResult) {
    let nv = r
        .point_defects
        .iter()
        .filter(|d| d.class == defect_detector::classes::DefectClass::Vacancy)
        .count();
    println!(
        "{}: {:.5} nm/px{}, {{111}} period {:.1} px (nominal {:.1}, measured {}), lattice {}, {} boundaries, {} vacancies, {} interstitials, {:.0} ms",
        f.display(),
        r.nm_per_px,
        if r.scale_estimated {
            " (estimated)"
        } else {
            ""
        },
        r.d111_px,
        r.d111_nominal_px,
        r.d111_measured_px
            .map(|d| format!("{d:.1}"))
            .unwrap_or_else(|| "none".into()),
        r.visibility_label(),
        r.boundaries.len(),
        nv,
        r.point_defects.len() - nv,
        r.timings_ms.total
    );
    for (i, b) in r.boundaries.iter().enumerate() {
        println!(
            "  boundary {i}: centre ({:.0}, {:.0}) length {:.0} px, direction {:.1}°, score {:.2}, \
             misorientation {}, {:?}{}",
            b.obb.cx,
            b.obb.cy,
            b.obb.w,
            b.obb.angle.to_degrees().rem_euclid(180.0),
            b.score,
            b.misorientation_deg
                .map(|m| format!("{m:.1}°"))
                .unwrap_or_else(|| "n/a".into()),
            b.kind,
            b.lamella_with
                .map(|j| format!(", lamella with {j}"))
                .unwrap_or_default()
        );
    }
}

use defect_detector::lattice::render::{MapKind, cell_color};

fn write_pngs(
    dir: &Path,
    f: &Path,
    img: &defect_detector::raster::ImageF32,
    r: &LatticeResult,
) -> anyhow::Result<()> {
    let stem = f
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "image".into());
    let m = &r.maps;
    let (w, h) = (img.width as u32, img.height as u32);
    // Maps drawn at image scale, each cell a step-sized square; black outside the map.
    let map_png = |name: &str, color: &dyn Fn(usize) -> [u8; 3]| -> anyhow::Result<()> {
        let half = m.step_px as i64 / 2;
        let buf = image::RgbImage::from_fn(w, h, |x, y| {
            let c = (x as i64 - m.origin_px[0] as i64 + half).div_euclid(m.step_px as i64);
            let rr = (y as i64 - m.origin_px[1] as i64 + half).div_euclid(m.step_px as i64);
            if c < 0 || rr < 0 || c >= m.cols as i64 || rr >= m.rows as i64 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb(color(rr as usize * m.cols + c as usize))
            }
        });
        let path = dir.join(format!("{stem}_{name}.png"));
        buf.save(&path)
            .with_context(|| format!("cannot write {}", path.display()))
    };
    for kind in MapKind::ALL {
        map_png(kind.label(), &|i| {
            cell_color(m, kind, i).unwrap_or([0, 0, 0])
        })?;
    }
    // Overlay: the frame with the detections.
    let gb = defect_detector::classes::DefectClass::GrainBoundary.overlay_rgb();
    let mut boxes: Vec<(OrientedBox, [u8; 3])> = r.boundaries.iter().map(|b| (b.obb, gb)).collect();
    boxes.extend(
        r.point_defects
            .iter()
            .map(|d| (d.obb, d.class.overlay_rgb())),
    );
    let path = dir.join(format!("{stem}_overlay.png"));
    defect_detector::raster::save_overlay_png(&path, img, &boxes)
        .with_context(|| format!("cannot write {}", path.display()))
}
