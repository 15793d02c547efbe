//! The files that describe a dataset: `manifest.json` (how it was made and every base image and
//! image in it), and the `data.yaml` and `README.md` written from it.
//!
//! Records and text only: the manifest is read here, but writing it belongs to the pipeline
//! (`export`, `merge`) and replacing folders to `staging`.

use super::augment::CropWindow;
use super::config::{DatasetConfig, ShardSpec, Split};
use crate::classes::DefectClass;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

pub const MANIFEST_FORMAT: &str = "defect-detector-yolo-obb-dataset";
pub const MANIFEST_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";

/// Boxes per class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCounts {
    pub grain_boundary: usize,
    pub vacancy: usize,
    pub interstitial: usize,
}

impl ClassCounts {
    pub fn add(&mut self, class: DefectClass, k: usize) {
        match class {
            DefectClass::GrainBoundary => self.grain_boundary += k,
            DefectClass::Vacancy => self.vacancy += k,
            DefectClass::Interstitial => self.interstitial += k,
        }
    }

    pub fn get(&self, class: DefectClass) -> usize {
        match class {
            DefectClass::GrainBoundary => self.grain_boundary,
            DefectClass::Vacancy => self.vacancy,
            DefectClass::Interstitial => self.interstitial,
        }
    }

    pub fn total(&self) -> usize {
        self.grain_boundary + self.vacancy + self.interstitial
    }

    pub(super) fn merge(&mut self, o: &ClassCounts) {
        for c in DefectClass::ALL {
            self.add(c, o.get(c));
        }
    }
}

/// One base image: where it went and its main draws (all draws are in its sidecar).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaseRecord {
    pub index: usize,
    pub seed: u64,
    pub split: Split,
    /// `sidecars/<stem>.json`: the full synthesis parameters and every random draw.
    pub sidecar: String,
    pub preset: String,
    pub pixel_size_pm: f64,
    pub rotation_deg: f64,
    pub dose_e_per_a2: f64,
    pub probe: String,
    pub labels: ClassCounts,
    /// Requested defects that found no room.
    pub unplaced: Vec<String>,
}

/// One written image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub file: String,
    pub label_file: String,
    pub split: Split,
    pub base_index: usize,
    pub base_seed: u64,
    pub transform: String,
    pub crop: Option<CropWindow>,
    pub sidecar: String,
    pub width: usize,
    pub height: usize,
    pub labels: ClassCounts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSummary {
    pub base_images: usize,
    pub images: usize,
    pub labels: ClassCounts,
}

/// `manifest.json`: how the dataset was made and what is in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub generator: String,
    pub config: DatasetConfig,
    /// Set in a shard's partial manifest; `None` for a complete dataset.
    pub shard: Option<ShardSpec>,
    pub splits: BTreeMap<Split, SplitSummary>,
    pub base_images: Vec<BaseRecord>,
    pub images: Vec<ImageRecord>,
}

fn generator() -> String {
    format!("defect-detector {}", env!("CARGO_PKG_VERSION"))
}

fn summarize(base: &[BaseRecord], images: &[ImageRecord]) -> BTreeMap<Split, SplitSummary> {
    let mut m: BTreeMap<Split, SplitSummary> = Split::ALL
        .iter()
        .map(|s| (*s, Default::default()))
        .collect();
    for b in base {
        m.entry(b.split).or_default().base_images += 1;
    }
    for i in images {
        let e = m.entry(i.split).or_default();
        e.images += 1;
        e.labels.merge(&i.labels);
    }
    m
}

impl Manifest {
    pub(super) fn new(
        config: DatasetConfig,
        shard: Option<ShardSpec>,
        base: Vec<BaseRecord>,
        images: Vec<ImageRecord>,
    ) -> Self {
        Self {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            generator: generator(),
            config,
            shard,
            splits: summarize(&base, &images),
            base_images: base,
            images,
        }
    }

    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a dataset manifest", path.display()))?;
        anyhow::ensure!(
            m.format == MANIFEST_FORMAT && m.version == MANIFEST_VERSION,
            "{}: format '{}' version {} is not supported (expected '{MANIFEST_FORMAT}' {MANIFEST_VERSION})",
            path.display(),
            m.format,
            m.version
        );
        Ok(m)
    }

    /// Every file the export wrote, relative to the dataset folder. Anything else in the folder
    /// (training runs, notes, caches) belongs to someone else.
    pub(super) fn written_files(&self) -> HashSet<PathBuf> {
        let mut out: HashSet<PathBuf> = [MANIFEST_FILE, "data.yaml", "README.md"]
            .iter()
            .map(PathBuf::from)
            .collect();
        for b in &self.base_images {
            out.insert(PathBuf::from(&b.sidecar));
        }
        for i in &self.images {
            out.insert(PathBuf::from(&i.file));
            out.insert(PathBuf::from(&i.label_file));
            out.insert(PathBuf::from(&i.sidecar));
        }
        out
    }
}

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `data.yaml` as Ultralytics reads it, pointing at the dataset's final folder `out`.
pub(super) fn data_yaml(out: &Path) -> String {
    let mut s = format!(
        "# YOLO-OBB dataset written by {} (see README.md and manifest.json).\n\
         # If you move this folder, update 'path' (or delete it: Ultralytics then uses the\n\
         # folder holding this file).\n",
        generator()
    );
    s += &format!("path: {}\n", yaml_quote(&out.to_string_lossy()));
    for sp in Split::ALL {
        s += &format!("{}: images/{}\n", sp.name(), sp.name());
    }
    s += "names:\n";
    for c in DefectClass::ALL {
        s += &format!("  {}: {}\n", c.id(), c.name());
    }
    s
}

/// `README.md`: what the dataset holds and why its splits are honest, readable without this
/// program.
pub(super) fn readme(m: &Manifest) -> String {
    let c = &m.config;
    let mut s = String::new();
    s += "# Synthetic STEM defect dataset (YOLO-OBB)\n\n";
    s += &format!(
        "Written by {}. {} base images of {}×{} px from seed {}, {} symmetries ({}){}.\n\n",
        m.generator,
        c.n,
        c.size,
        c.size,
        c.seed,
        c.augment.len(),
        c.augment.join(", "),
        match &c.crop {
            Some(cr) => format!(
                ", {} random {}×{} crop(s) each",
                cr.per_image, cr.tile, cr.tile
            ),
            None => String::new(),
        }
    );
    s += "Splits are made **by base image**: every variant of a base image is in the same \
          split, so no image (or a rotated/mirrored copy of it) is in two splits.\n\n";
    if let Some(d) = c.min_detectability {
        s += &format!(
            "Only the vacancies and interstitials the dose lets an observer see are labelled: \
             those whose ideal-observer signal-to-noise ratio d′ is at least {d}. The sidecars \
             hold every label with its d′ (`detectability`).\n\n"
        );
    }
    if let Some(pm) = c.resample_to_pm {
        s += &format!(
            "Every frame is shown as the app feeds it to a model of {pm} pm/px: recorded at the \
             pixel size it was drawn at (`params.pixel_size_pm` in its sidecar) over the field of \
             view that fills {} px at {pm} pm/px, then resampled to it (area filter when \
             shrinking, bilinear when enlarging; `params.resample_to`).\n\n",
            c.size
        );
    }
    s += "| split | base images | images | grain_boundary | vacancy | interstitial |\n";
    s += "|---|---|---|---|---|---|\n";
    for (k, v) in &m.splits {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            k.name(),
            v.base_images,
            v.images,
            v.labels.grain_boundary,
            v.labels.vacancy,
            v.labels.interstitial
        );
    }
    s += "\nLayout: `images/<split>/*.png` (8-bit, the model intensity window), \
          `labels/<split>/*.txt` (class x1 y1 ... x4 y4, normalised corners), `data.yaml`, \
          `manifest.json` (per image: split, base image, transform, crop, label counts), \
          `sidecars/b<index>.json` (all synthesis parameters and random draws of a base image; \
          `defect-detector synth --from-sidecar` regenerates it exactly).\n\n";
    s += "Classes: 0 grain_boundary, 1 vacancy, 2 interstitial.\n";
    s
}
