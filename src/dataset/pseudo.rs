//! `export --pseudo FRAME...`: real frames labelled by the lattice analysis, written as a
//! YOLO-OBB dataset for a person to check in the Review tab and then to fine-tune the detector
//! on (`training/train.py --from`). Fine-tuning on real frames is the strongest known fix for
//! the synthetic-to-real gap; with proposals from the crystal itself it no longer needs hand
//! labels from scratch.
//!
//! Each frame is calibrated (its file, else its lattice), optionally resampled to the model's
//! pixel size, windowed to 8 bits exactly as the detector sees it, and labelled with the
//! lattice analysis's boundaries, vacancies and interstitials at or above a confidence. The
//! folder is written beside its final place and renamed into it, so a failure leaves nothing
//! half-written.

use super::yolo::{ObbLabel, format_labels};
use crate::classes::DefectClass;
use crate::frame::{LatticeUse, calibrate};
use crate::raster::PixelSize;
use crate::synth::crystal::CrystalSpec;
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Options of [`export_pseudo`].
#[derive(Clone, Debug)]
pub struct PseudoOptions {
    pub crystal: CrystalSpec,
    /// Resample calibrated frames to this pixel size (the model's); `None` keeps each frame's.
    pub nm_per_px: Option<f64>,
    /// Lowest lattice-analysis score written as a label.
    pub conf: f32,
    /// Every `val_every`-th frame goes to the validation split (0: none; then `val` points at
    /// the training images so Ultralytics still finds one).
    pub val_every: usize,
}

/// What was written for one frame.
#[derive(Clone, Debug, Serialize)]
pub struct PseudoFrame {
    pub source: PathBuf,
    pub image: String,
    pub split: &'static str,
    pub width: usize,
    pub height: usize,
    /// The frame's own pixel size and where it came from (`file`, `lattice`, `none`).
    pub source_nm_per_px: Option<f64>,
    pub calibration: &'static str,
    /// Pixel size of the written image.
    pub nm_per_px: Option<f64>,
    pub labels: [usize; 3],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The summary written as `pseudo.json`.
#[derive(Clone, Debug, Serialize)]
pub struct PseudoSummary {
    pub generator: String,
    pub method: &'static str,
    pub crystal: String,
    pub conf: f32,
    pub frames: Vec<PseudoFrame>,
}

impl PseudoSummary {
    pub fn written(&self) -> usize {
        self.frames.iter().filter(|f| f.error.is_none()).count()
    }
}

fn data_yaml(out: &Path, has_val: bool) -> String {
    let mut s = String::from(
        "# YOLO-OBB dataset of real frames labelled by the lattice analysis (pseudo labels):\n\
         # check them in the Review tab before training on them. See pseudo.json.\n",
    );
    s += &format!("path: '{}'\n", out.to_string_lossy().replace('\'', "''"));
    s += "train: images/train\n";
    s += if has_val {
        "val: images/val\n"
    } else {
        "val: images/train\n"
    };
    s += "names:\n";
    for c in DefectClass::ALL {
        s += &format!("  {}: {}\n", c.id(), c.name());
    }
    s
}

/// Writes the pseudo-labelled dataset into `out` (which must not exist or be empty).
pub fn export_pseudo(
    frames: &[PathBuf],
    out: &Path,
    opts: &PseudoOptions,
) -> anyhow::Result<PseudoSummary> {
    anyhow::ensure!(!frames.is_empty(), "no frames to label");
    if out.exists()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some()
    {
        anyhow::bail!("{} exists and is not empty", out.display());
    }
    let out = super::staging::absolute_path(out)?;
    let parent = out
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no parent folder", out.display()))?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = parent.join(format!(
        ".{}.pseudo-{}",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    let result = write_all(frames, &staging, &out, opts);
    match result {
        Ok(summary) if summary.written() > 0 => {
            if out.exists() {
                std::fs::remove_dir(&out)
                    .with_context(|| format!("cannot replace the empty {}", out.display()))?;
            }
            std::fs::rename(&staging, &out)
                .with_context(|| format!("cannot move the dataset to {}", out.display()))?;
            Ok(summary)
        }
        Ok(summary) => {
            let _ = std::fs::remove_dir_all(&staging);
            let why: Vec<String> = summary
                .frames
                .iter()
                .filter_map(|f| {
                    f.error
                        .as_ref()
                        .map(|e| format!("{}: {e}", f.source.display()))
                })
                .collect();
            anyhow::bail!("no frame could be labelled:\n{}", why.join("\n"))
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn write_all(
    frames: &[PathBuf],
    dir: &Path,
    out: &Path,
    opts: &PseudoOptions,
) -> anyhow::Result<PseudoSummary> {
    let has_val = opts.val_every > 0 && frames.len() >= opts.val_every;
    for split in ["train", "val"] {
        for top in ["images", "labels"] {
            std::fs::create_dir_all(dir.join(top).join(split))?;
        }
    }
    let mut used = std::collections::BTreeSet::new();
    let mut written = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let split = if has_val && (i + 1) % opts.val_every == 0 {
            "val"
        } else {
            "train"
        };
        // Unique stems: frames of the same name from different folders keep both.
        let stem0 = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("frame{i}"));
        let mut stem = stem0.clone();
        let mut k = 1;
        while !used.insert(stem.clone()) {
            stem = format!("{stem0}-{k}");
            k += 1;
        }
        written.push(
            label_frame(f, dir, &stem, split, opts).unwrap_or_else(|e| PseudoFrame {
                source: f.clone(),
                image: String::new(),
                split,
                width: 0,
                height: 0,
                source_nm_per_px: None,
                calibration: "none",
                nm_per_px: None,
                labels: [0; 3],
                error: Some(format!("{e:#}")),
            }),
        );
    }
    let summary = PseudoSummary {
        generator: format!("defect-detector {}", env!("CARGO_PKG_VERSION")),
        method: "lattice analysis (training-free): boundaries from lattice discontinuities, point defects from the lattice-translated residual",
        crystal: opts.crystal.name.clone(),
        conf: opts.conf,
        frames: written,
    };
    crate::fsio::atomic_write(&dir.join("data.yaml"), data_yaml(out, has_val).as_bytes())?;
    let mut json = serde_json::to_vec_pretty(&summary)?;
    json.push(b'\n');
    crate::fsio::atomic_write(&dir.join("pseudo.json"), &json)?;
    Ok(summary)
}

fn label_frame(
    f: &Path,
    dir: &Path,
    stem: &str,
    split: &'static str,
    opts: &PseudoOptions,
) -> anyhow::Result<PseudoFrame> {
    let s = crate::formats::load(f)?;
    let lattice = LatticeUse {
        crystal: opts.crystal.clone(),
        calibrate: true,
        method: crate::detect::combine::DetectMethod::Lattice,
        fit_cells: None,
        tta: None,
        ..Default::default()
    };
    let cal = calibrate(&s.image, s.pixel_size, &lattice);
    let (img, px) = match (cal.pixel_size(), opts.nm_per_px) {
        (Some(p), Some(target)) => {
            let factor = crate::detect::check_scale(&s.image, p.nm_per_px, target)?;
            let w = ((s.image.width as f64 * factor).round() as usize).max(1);
            let h = ((s.image.height as f64 * factor).round() as usize).max(1);
            (
                crate::detect::pre::resample(&s.image, w, h, factor, factor),
                Some(PixelSize { nm_per_px: target }),
            )
        }
        (p, _) => (s.image.clone(), p),
    };
    let r = crate::lattice::analyse(
        &img,
        &crate::lattice::LatticeParams::new(opts.crystal.clone(), px.map(|p| p.nm_per_px)),
    )?;
    let boxes: Vec<(DefectClass, crate::geometry::OrientedBox)> = r
        .detections()
        .into_iter()
        .filter(|d| d.2 >= opts.conf)
        .map(|(c, b, _)| (c, b))
        .collect();
    let (w, h) = (img.width, img.height);
    let boxes: Vec<(DefectClass, crate::geometry::OrientedBox)> = boxes
        .into_iter()
        .filter_map(|(c, b)| Some((c, inside(c, &b, w as f64, h as f64)?)))
        .collect();
    let labels: Vec<ObbLabel> = boxes
        .iter()
        .map(|(c, b)| ObbLabel::from_box_px(c.id(), b, w as f64, h as f64))
        .collect();
    let mut counts = [0usize; 3];
    for (c, _) in &boxes {
        counts[c.id()] += 1;
    }
    let (lo, hi) = img.model_window();
    let gray = image::GrayImage::from_raw(w as u32, h as u32, img.to_u8(lo, hi))
        .ok_or_else(|| anyhow::anyhow!("{w}x{h} does not fit a PNG"))?;
    let png = dir.join("images").join(split).join(format!("{stem}.png"));
    let mut bytes = Vec::new();
    gray.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| anyhow::anyhow!("cannot encode {}: {e}", png.display()))?;
    crate::fsio::atomic_write(&png, &bytes)?;
    crate::fsio::atomic_write(
        &dir.join("labels").join(split).join(format!("{stem}.txt")),
        format_labels(&labels).as_bytes(),
    )?;
    Ok(PseudoFrame {
        source: f.to_path_buf(),
        image: format!("images/{split}/{stem}.png"),
        split,
        width: w,
        height: h,
        source_nm_per_px: cal.pixel_size().map(|p| p.nm_per_px),
        calibration: cal.source(),
        nm_per_px: px.map(|p| p.nm_per_px),
        labels: counts,
        error: None,
    })
}

/// A label inside the `w x h` frame: a boundary box is shortened to the part of its centre
/// line whose box stays inside (the analysis draws boundaries across the whole frame); a
/// point-defect box must already lie inside.
fn inside(
    class: DefectClass,
    b: &crate::geometry::OrientedBox,
    w: f64,
    h: f64,
) -> Option<crate::geometry::OrientedBox> {
    if class != DefectClass::GrainBoundary {
        let ok = b
            .corners()
            .iter()
            .all(|p| p[0] >= 0.0 && p[1] >= 0.0 && p[0] <= w && p[1] <= h);
        return ok.then_some(*b);
    }
    let c = b.canonical();
    let (sn, cs) = c.angle.sin_cos();
    let dir = [cs, sn];
    let (hx, hy) = (c.h / 2.0 * sn.abs(), c.h / 2.0 * cs.abs());
    if 2.0 * hx >= w || 2.0 * hy >= h {
        return None;
    }
    let (t0, t1) = crate::geometry::clip_line([c.cx, c.cy], dir, [hx, hy], [w - hx, h - hy])?;
    let (t0, t1) = (t0.max(-c.w / 2.0), t1.min(c.w / 2.0));
    // Shorter than its own width: not a boundary worth a label.
    if t1 - t0 < c.h {
        return None;
    }
    let mid = (t0 + t1) / 2.0;
    Some(crate::geometry::OrientedBox::new(
        c.cx + mid * dir[0],
        c.cy + mid * dir[1],
        t1 - t0,
        c.h,
        c.angle,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_frame_becomes_a_reviewable_dataset_and_a_broken_one_is_reported() {
        use crate::synth::{ImageFormat, SynthParams, generate, params::CountRange, write_outputs};
        let t = tempfile::tempdir().unwrap();
        let mut p = SynthParams {
            width: 384,
            height: 384,
            pixel_size_pm: 16.0,
            ..Default::default()
        };
        p.defects.twin_boundaries = CountRange::new(1, 1);
        p.defects.tilt_boundaries = CountRange::new(0, 0);
        let s = generate(&p).unwrap();
        let tif = write_outputs(&s, t.path(), "frame", ImageFormat::Tiff16)
            .unwrap()
            .image;
        let broken = t.path().join("broken.dm3");
        std::fs::write(&broken, b"not a dm3").unwrap();
        let out = t.path().join("pseudo");
        let opts = PseudoOptions {
            crystal: p.crystal.spec(),
            nm_per_px: Some(0.02),
            conf: 0.25,
            val_every: 0,
        };
        let summary = export_pseudo(&[tif, broken], &out, &opts).unwrap();
        assert_eq!(summary.written(), 1);
        let f = &summary.frames[0];
        // The 16 pm TIFF carries its calibration; it is resampled to 20 pm (384 * 16/20 =
        // 307 px).
        assert_eq!(f.calibration, "file");
        assert!((f.width as i64 - 307).abs() <= 3, "{}", f.width);
        assert!(f.labels[0] >= 1, "the twin is labelled: {:?}", f.labels);
        assert!(summary.frames[1].error.is_some());
        // A dataset the Review tab and Ultralytics read.
        let spec = crate::dataset::spec::DatasetSpec::read(&out.join("data.yaml")).unwrap();
        assert_eq!(spec.images("train").unwrap().len(), 1);
        let labels = crate::dataset::yolo::read_labels(
            &out.join("labels/train/frame.txt"),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(labels.len(), f.labels.iter().sum::<usize>());
        // Never over a non-empty folder.
        assert!(export_pseudo(&[t.path().join("frame.tif")], &out, &opts).is_err());
        // Nothing written when no frame can be labelled.
        let none = t.path().join("none");
        assert!(export_pseudo(&[t.path().join("broken.dm3")], &none, &opts).is_err());
        assert!(!none.exists());
    }
}
