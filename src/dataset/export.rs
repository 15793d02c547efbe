//! Writing YOLO-OBB training datasets from the synthesizer, with honest splits.
//!
//! The published pipeline wrote 16 "augmentations" of which only 8 were distinct and then
//! shuffled all of them into train/validation, so copies of one image sat on both sides and
//! validation scores were inflated. Here the unit of splitting is the *base image*: every
//! variant (symmetry, crop) of a base image lands in the split its base image was assigned to.
//!
//! Output is streamed: base images are synthesized and written in parallel (rayon), each one
//! is dropped as soon as its variants are on disk, so memory does not grow with N. The whole
//! dataset is built in a hidden sibling folder and renamed into place at the end (`staging`).
//!
//! Sharding (`ShardSpec`) lets n cluster jobs each write base images `index % n == i`;
//! [`merge`](super::merge::merge) combines their folders into exactly the dataset a single run
//! would have written.
//!
//! This module owns the pipeline only: what a dataset is made of is `config`, what describes it
//! on disk is `manifest`, the folder handling is `staging`. It must not grow its own copies of
//! them; the names below are re-exported so `dataset::export::*` stays the one import for
//! callers.

pub use super::config::{
    CropOptions, DatasetConfig, ShardSpec, Split, SplitRatios, assign_splits, parse_augment,
};
pub use super::manifest::{
    BaseRecord, ClassCounts, ImageRecord, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION,
    Manifest, SplitSummary,
};
pub use super::staging::{absolute_path, target_is_nonempty, target_problem};

use super::augment::{CropWindow, apply_symmetry, crop_box};
use super::manifest::{data_yaml, readme};
use super::randomize::{Strata, base_image_seed, draw_params_in, mix64};
use super::staging::{Staging, create_layout, write_file};
use crate::classes::DefectClass;
use crate::dataset::yolo::{ObbLabel, format_labels};
use crate::geometry::{Dihedral, OrientedBox};
use crate::jobs::JobControl;
use crate::synth;
use crate::synth::scene::{DefectLabel, rng_from_seed};
use anyhow::Context;
use rand::RngExt;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// Keeps the crop stream independent of the base-image streams.
const CROP_SALT: u64 = 0xC809_0000_0000_0002;

/// What an export or merge produced.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub shard: Option<ShardSpec>,
    pub base_images: usize,
    pub images: usize,
    pub splits: BTreeMap<Split, SplitSummary>,
    pub bytes: u64,
    pub seconds: f64,
}

impl ExportSummary {
    pub(super) fn from_manifest(out: &Path, m: &Manifest, bytes: u64, t0: Instant) -> Self {
        Self {
            out: out.to_path_buf(),
            shard: m.shard,
            base_images: m.base_images.len(),
            images: m.images.len(),
            splits: m.splits.clone(),
            bytes,
            seconds: t0.elapsed().as_secs_f64(),
        }
    }

    /// A small table: images and boxes per split and class.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<6} {:>6} {:>7} {:>15} {:>8} {:>13}\n",
            "split", "bases", "images", "grain_boundary", "vacancy", "interstitial"
        );
        for (k, v) in &self.splits {
            s += &format!(
                "{:<6} {:>6} {:>7} {:>15} {:>8} {:>13}\n",
                k.name(),
                v.base_images,
                v.images,
                v.labels.grain_boundary,
                v.labels.vacancy,
                v.labels.interstitial
            );
        }
        s
    }
}

/// Where the export goes and how.
#[derive(Clone, Debug, Default)]
pub struct ExportTarget {
    pub shard: Option<ShardSpec>,
    /// Replace an existing dataset folder.
    pub overwrite: bool,
}

fn base_stem(index: usize) -> String {
    format!("b{index:06}")
}

struct BaseOutput {
    base: BaseRecord,
    images: Vec<ImageRecord>,
    bytes: u64,
}

fn counts_of<'a>(classes: impl Iterator<Item = &'a DefectClass>) -> ClassCounts {
    let mut c = ClassCounts::default();
    for cl in classes {
        c.add(*cl, 1);
    }
    c
}

struct Variant<'a> {
    base: &'a BaseRecord,
    transform: String,
    stem: String,
    crop: Option<CropWindow>,
}

fn write_variant(
    root: &Path,
    v: &Variant,
    img: &[u8],
    w: usize,
    h: usize,
    boxes: &[(DefectClass, OrientedBox)],
) -> anyhow::Result<(ImageRecord, u64)> {
    let split = v.base.split.name();
    let file = format!("images/{split}/{}.png", v.stem);
    let label_file = format!("labels/{split}/{}.txt", v.stem);
    let png = synth::encode_png_gray8(img, w, h)?;
    write_file(&root.join(&file), &png)?;
    let labels: Vec<ObbLabel> = boxes
        .iter()
        .map(|(c, b)| ObbLabel::from_box_px(c.id(), b, w as f64, h as f64))
        .collect();
    let text = format_labels(&labels);
    write_file(&root.join(&label_file), text.as_bytes())?;
    let rec = ImageRecord {
        file,
        label_file,
        split: v.base.split,
        base_index: v.base.index,
        base_seed: v.base.seed,
        transform: v.transform.clone(),
        crop: v.crop,
        sidecar: v.base.sidecar.clone(),
        width: w,
        height: h,
        labels: counts_of(boxes.iter().map(|(c, _)| c)),
    };
    Ok((rec, (png.len() + text.len()) as u64))
}

fn export_base(
    cfg: &DatasetConfig,
    strata: Option<&Strata>,
    syms: &[(usize, Dihedral)],
    index: usize,
    split: Split,
    root: &Path,
) -> anyhow::Result<BaseOutput> {
    let seed = base_image_seed(cfg.seed, index);
    let p = cfg.as_fed(draw_params_in(
        &cfg.base_params(),
        &cfg.randomization,
        seed,
        strata.map(|s| s.of(index)),
    ));
    let mut s = synth::generate(&p)
        .with_context(|| format!("base image {index} (seed {seed}) could not be synthesized"))?;
    if cfg.min_detectability.is_some() {
        s.measure_detectability();
    }
    // What the label files hold: every label, or those the dose lets an observer see.
    let labels: Vec<&DefectLabel> = s
        .labels
        .iter()
        .filter(|l| !l.hidden_by_noise(cfg.min_detectability))
        .collect();
    let (w, h) = (s.image.width, s.image.height);
    let gray = s.to_u8();
    let stem = base_stem(index);
    let sidecar = format!("sidecars/{stem}.json");
    let json = serde_json::to_vec_pretty(&s.sidecar())?;
    write_file(&root.join(&sidecar), &json)?;
    let base = BaseRecord {
        index,
        seed,
        split,
        sidecar,
        preset: p.crystal.preset.cli_name().into(),
        pixel_size_pm: p.output_pixel_size_pm(),
        rotation_deg: s.scene.rotation_deg,
        dose_e_per_a2: p.noise.dose_e_per_a2,
        probe: serde_json::to_value(p.probe.model)?
            .as_str()
            .unwrap_or_default()
            .to_string(),
        labels: counts_of(labels.iter().map(|l| &l.class)),
        unplaced: s.scene.unplaced.clone(),
    };
    let per_sym: Vec<anyhow::Result<Vec<(ImageRecord, u64)>>> = syms
        .par_iter()
        .map(|&(k, d)| {
            let img = apply_symmetry(d, &gray, w, h);
            let (tw, th) = d.output_size(w, h);
            let boxes: Vec<(DefectClass, OrientedBox)> = labels
                .iter()
                .map(|l| (l.class, d.map_box(&l.obb, w as f64, h as f64)))
                .collect();
            let name = d.name();
            let Some(c) = &cfg.crop else {
                let v = Variant {
                    base: &base,
                    transform: name.clone(),
                    stem: format!("{stem}_{name}"),
                    crop: None,
                };
                return Ok(vec![write_variant(root, &v, &img, tw, th, &boxes)?]);
            };
            let mut out = Vec::with_capacity(c.per_image);
            for j in 0..c.per_image {
                let mut rng = rng_from_seed(mix64(seed ^ CROP_SALT ^ mix64((k * 1024 + j) as u64)));
                let win = CropWindow {
                    x: rng.random_range(0..=tw - c.tile),
                    y: rng.random_range(0..=th - c.tile),
                    size: c.tile,
                };
                let tile = win.extract(&img, tw);
                let min_len = c.min_boundary_frac * c.tile as f64;
                let kept: Vec<(DefectClass, OrientedBox)> = boxes
                    .iter()
                    .filter_map(|(cl, b)| crop_box(*cl, b, &win, min_len).map(|nb| (*cl, nb)))
                    .collect();
                let v = Variant {
                    base: &base,
                    transform: name.clone(),
                    stem: format!("{stem}_{name}_c{j}"),
                    crop: Some(win),
                };
                out.push(write_variant(root, &v, &tile, c.tile, c.tile, &kept)?);
            }
            Ok(out)
        })
        .collect();
    let mut images = Vec::new();
    let mut bytes = json.len() as u64;
    for r in per_sym {
        for (rec, b) in r? {
            images.push(rec);
            bytes += b;
        }
    }
    Ok(BaseOutput {
        base,
        images,
        bytes,
    })
}

/// `manifest.json`, and for a complete dataset (not a shard) `data.yaml` and `README.md`: a shard
/// alone is not a dataset Ultralytics should train on.
pub(super) fn write_dataset_files(
    root: &Path,
    final_out: &Path,
    m: &Manifest,
    with_yaml: bool,
) -> anyhow::Result<u64> {
    let json = serde_json::to_vec_pretty(m)?;
    write_file(&root.join(MANIFEST_FILE), &json)?;
    let mut bytes = json.len() as u64;
    if with_yaml {
        let y = data_yaml(final_out);
        write_file(&root.join("data.yaml"), y.as_bytes())?;
        let r = readme(m);
        write_file(&root.join("README.md"), r.as_bytes())?;
        bytes += (y.len() + r.len()) as u64;
    }
    Ok(bytes)
}

/// Exports a dataset (or one shard of it) to `out`. See the module docs.
pub fn export(
    cfg: &DatasetConfig,
    out: &Path,
    target: &ExportTarget,
    control: &JobControl,
) -> anyhow::Result<ExportSummary> {
    let t0 = Instant::now();
    cfg.validate()?;
    let syms = cfg.symmetries()?;
    let out = absolute_path(out)?;
    if let Some(p) = target_problem(&out, target.overwrite) {
        anyhow::bail!(p);
    }
    let staging = Staging::create(&out)?;
    create_layout(&staging.dir)?;
    let splits = assign_splits(cfg.n, cfg.seed, &cfg.split);
    // Strata span the whole dataset, so every shard draws the same images.
    let strata = cfg.sampling.strata(cfg.seed, cfg.n);
    let indices: Vec<usize> = (0..cfg.n)
        .filter(|i| target.shard.is_none_or(|s| s.contains(*i)))
        .collect();
    let total = indices.len();
    let done = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    control.set_progress(0.0, format!("0/{total} base images"));
    let outputs: Vec<BaseOutput> = indices
        .par_iter()
        .map(|&i| {
            control.check()?;
            let o = export_base(cfg, strata.as_ref(), &syms, i, splits[i], &staging.dir)?;
            bytes.fetch_add(o.bytes, Ordering::Relaxed);
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            control.set_progress(
                d as f64 / total.max(1) as f64,
                format!("{d}/{total} base images"),
            );
            Ok(o)
        })
        .collect::<anyhow::Result<_>>()?;
    control.check()?;
    let mut base = Vec::with_capacity(outputs.len());
    let mut images = Vec::new();
    for o in outputs {
        base.push(o.base);
        images.extend(o.images);
    }
    let m = Manifest::new(cfg.clone(), target.shard, base, images);
    let extra = write_dataset_files(&staging.dir, &out, &m, target.shard.is_none())?;
    staging.commit(&out, target.overwrite)?;
    Ok(ExportSummary::from_manifest(
        &out,
        &m,
        bytes.load(Ordering::Relaxed) + extra,
        t0,
    ))
}
#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
