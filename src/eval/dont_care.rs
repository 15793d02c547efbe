//! Point defects a test set holds but does not label: "don't care" regions, as KITTI's
//! `DontCare` boxes.
//!
//! `export --min-detectability D` leaves out of the label files every vacancy and interstitial
//! whose ideal-observer SNR is below `D`: the dose hides it, so missing it must not cost
//! recall. The defect is still in the crystal, though, and a detector that does see it (an
//! SNR of 4 is often visible) is not reporting something false. Ultralytics' `val` scores such
//! a box as a false positive. With these regions a detection that matches a hidden defect of
//! its own class, and no labelled one, is left out of the scoring: neither true nor false.
//! The hidden defects come from the dataset's own sidecars (through `manifest.json`), mapped
//! through each image's symmetry and crop exactly as its labels were.

use crate::dataset::augment::crop_box;
use crate::dataset::export::Manifest;
use crate::detect::Detection;
use crate::geometry::{Dihedral, OrientedBox, probiou};
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A detection matching a hidden defect this well (ProbIoU) is not scored: the loosest IoU
/// the mAP counts a match at.
pub const DONT_CARE_IOU: f64 = 0.5;

/// The hidden point defects of every image of a dataset, keyed by the image's canonical path.
#[derive(Clone, Debug, Default)]
pub struct DontCare {
    /// The detectability below which the export hid a defect (`export --min-detectability`).
    pub min_detectability: f64,
    by_image: HashMap<PathBuf, Vec<(OrientedBox, usize)>>,
}

impl DontCare {
    /// Reads the hidden defects of the dataset in `dir`. Fails when the dataset was exported
    /// without `--min-detectability` (it hides nothing) or its manifest or a sidecar cannot be
    /// read: a silently empty set would score as if nothing were hidden.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let m = Manifest::read(dir).context(
            "don't-care regions need the dataset's manifest.json (a dataset written by `export`)",
        )?;
        let min = m.config.min_detectability.with_context(|| {
            format!(
                "{} was exported without --min-detectability: it labels every defect, so none is \
                 a don't-care region",
                dir.display()
            )
        })?;
        // A crop cuts the hidden defects by the labels' own rule (`crop_box`).
        let min_len = m
            .config
            .crop
            .as_ref()
            .map_or(0.0, |c| c.min_boundary_frac * c.tile as f64);
        let mut sidecars = HashMap::new();
        let mut by_image = HashMap::new();
        for rec in &m.images {
            if !sidecars.contains_key(&rec.sidecar) {
                let sc = crate::synth::read_sidecar(&dir.join(&rec.sidecar))?;
                sidecars.insert(rec.sidecar.clone(), sc);
            }
            let sc = &sidecars[&rec.sidecar];
            let d = Dihedral::from_name(&rec.transform).with_context(|| {
                format!(
                    "{}: unknown transform '{}' for {}",
                    dir.display(),
                    rec.transform,
                    rec.file
                )
            })?;
            let (w, h) = (sc.params.width as f64, sc.params.height as f64);
            let hidden: Vec<(OrientedBox, usize)> = sc
                .labels
                .iter()
                .filter(|l| l.hidden_by_noise(Some(min)))
                .filter_map(|l| {
                    let b = d.map_box(&l.obb, w, h);
                    let b = match &rec.crop {
                        Some(win) => crop_box(l.class, &b, win, min_len)?,
                        None => b,
                    };
                    Some((b, l.class.id()))
                })
                .collect();
            by_image.insert(super::same_file_key(&dir.join(&rec.file)), hidden);
        }
        Ok(Self {
            min_detectability: min,
            by_image,
        })
    }

    /// The hidden defects of one image (none for an image the manifest does not list).
    pub fn of(&self, image: &Path) -> &[(OrientedBox, usize)] {
        self.by_image
            .get(&super::same_file_key(image))
            .map_or(&[], Vec::as_slice)
    }

    /// How many hidden defects the dataset holds in all.
    pub fn len(&self) -> usize {
        self.by_image.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes the detections that match a hidden defect of their own class and no labelled
/// defect of that class (a box on a labelled defect is scored whatever lies near it). Returns
/// how many were removed.
pub fn drop_dont_care(
    dets: &mut Vec<Detection>,
    labels: &[(OrientedBox, usize)],
    hidden: &[(OrientedBox, usize)],
) -> usize {
    let matches = |set: &[(OrientedBox, usize)], d: &Detection| {
        set.iter()
            .any(|(b, c)| *c == d.class && probiou(b, &d.obb) >= DONT_CARE_IOU)
    };
    let before = dets.len();
    dets.retain(|d| !matches(hidden, d) || matches(labels, d));
    before - dets.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectionSource;

    fn det(class: usize, cx: f64, cy: f64) -> Detection {
        Detection {
            class,
            class_name: "x".into(),
            confidence: 0.9,
            obb: OrientedBox {
                cx,
                cy,
                w: 10.0,
                h: 10.0,
                angle: 0.0,
            },
            source: DetectionSource::Model,
        }
    }

    fn bx(cx: f64, cy: f64) -> OrientedBox {
        OrientedBox {
            cx,
            cy,
            w: 10.0,
            h: 10.0,
            angle: 0.0,
        }
    }

    #[test]
    fn only_a_box_on_a_hidden_defect_of_its_own_class_and_no_label_is_left_out() {
        let labels = [(bx(100.0, 100.0), 1)];
        let hidden = [
            (bx(50.0, 50.0), 1),
            (bx(101.0, 100.0), 1),
            (bx(200.0, 50.0), 2),
        ];
        let mut dets = vec![
            det(1, 51.0, 50.0),   // on a hidden vacancy: left out
            det(1, 100.0, 100.0), // on a labelled vacancy (and a hidden one): scored
            det(1, 200.0, 50.0),  // a vacancy on a hidden interstitial: a wrong class, scored
            det(2, 300.0, 300.0), // nowhere: a false positive, scored
        ];
        assert_eq!(drop_dont_care(&mut dets, &labels, &hidden), 1);
        let left: Vec<(usize, f64)> = dets.iter().map(|d| (d.class, d.obb.cx)).collect();
        assert_eq!(left, vec![(1, 100.0), (1, 200.0), (2, 300.0)]);
    }

    /// With every point defect hidden, the don't-care boxes of each image are exactly the
    /// point labels the same export writes without a threshold: the symmetry maps them alike.
    #[test]
    fn hidden_defects_land_where_the_labels_would_have_been() {
        use crate::dataset::export::{DatasetConfig, ExportTarget, export};
        use crate::dataset::yolo::{Validation, read_labels};
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = DatasetConfig {
            n: 3,
            seed: 5,
            size: 160,
            augment: vec!["r0".into(), "f_r90".into()],
            ..Default::default()
        };
        let ctl = crate::jobs::JobControl::detached();
        let all = dir.path().join("all");
        export(&cfg, &all, &ExportTarget::default(), &ctl).unwrap();
        let e = DontCare::read(&all).unwrap_err();
        assert!(
            format!("{e:#}").contains("without --min-detectability"),
            "{e:#}"
        );
        cfg.min_detectability = Some(f64::MAX);
        let none = dir.path().join("none");
        export(&cfg, &none, &ExportTarget::default(), &ctl).unwrap();
        let dc = DontCare::read(&none).unwrap();
        let m = Manifest::read(&all).unwrap();
        let v = Validation::default();
        let mut points = 0;
        for rec in &m.images {
            let (w, h) = (rec.width as f64, rec.height as f64);
            let labelled: Vec<(OrientedBox, usize)> = read_labels(&all.join(&rec.label_file), &v)
                .unwrap()
                .iter()
                .filter(|l| l.class != 0)
                .map(|l| (l.to_box_px(w, h), l.class))
                .collect();
            let hidden = dc.of(&none.join(&rec.file));
            assert_eq!(hidden.len(), labelled.len(), "{}", rec.file);
            for (b, c) in &labelled {
                assert!(
                    hidden
                        .iter()
                        .any(|(hb, hc)| hc == c && probiou(hb, b) > 0.99),
                    "{}: no hidden box at {b:?}",
                    rec.file
                );
            }
            points += labelled.len();
        }
        assert!(points > 0, "the draw placed no point defects");
        assert_eq!(dc.len(), points);
    }
}
