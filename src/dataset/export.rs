//! Writing YOLO-OBB training datasets from the synthesizer, with honest splits.
//!
//! The published pipeline wrote 16 "augmentations" of which only 8 were distinct and then
//! shuffled all of them into train/validation, so copies of one image sat on both sides and
//! validation scores were inflated. Here the unit of splitting is the *base image*: every
//! variant (symmetry, crop) of a base image lands in the split its base image was assigned to.
//!
//! Output is streamed: base images are synthesized and written in parallel (rayon), each one
//! is dropped as soon as its variants are on disk, so memory does not grow with N. The whole
//! dataset is built in a hidden sibling folder and renamed into place at the end: a cancel,
//! an error or a crash never leaves a partial dataset under the requested name.
//!
//! Sharding (`ShardSpec`) lets n cluster jobs each write base images `index % n == i`; [`merge`]
//! combines their folders into exactly the dataset a single run would have written.

use super::augment::{CropWindow, apply_symmetry, crop_box};
use super::randomize::{DomainRandomization, base_image_seed, draw_params, mix64};
use crate::classes::DefectClass;
use crate::dataset::yolo::{ObbLabel, format_labels};
use crate::geometry::{Dihedral, OrientedBox};
use crate::jobs::JobControl;
use crate::synth::params::MAX_SIDE;
use crate::synth::scene::rng_from_seed;
use crate::synth::{self, SynthParams};
use anyhow::Context;
use rand::RngExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

pub const MANIFEST_FORMAT: &str = "defect-detector-yolo-obb-dataset";
pub const MANIFEST_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";

/// Salts keep the split and crop streams independent of the base-image streams.
const SPLIT_SALT: u64 = 0x5B11_7000_0000_0001;
const CROP_SALT: u64 = 0xC809_0000_0000_0002;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// Fractions of base images per split (normalised by their sum).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitRatios {
    pub train: f64,
    pub val: f64,
    pub test: f64,
}

impl Default for SplitRatios {
    fn default() -> Self {
        Self {
            train: 0.8,
            val: 0.1,
            test: 0.1,
        }
    }
}

impl SplitRatios {
    /// Parses `train,val,test`, e.g. `0.8,0.1,0.1` or `0,0,1` (a pure test set).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let v: Vec<f64> = s
            .split(',')
            .map(|t| {
                t.trim()
                    .parse::<f64>()
                    .map_err(|_| anyhow::anyhow!("split '{s}': '{t}' is not a number"))
            })
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(
            v.len() == 3,
            "split '{s}' must have three numbers: train,val,test"
        );
        let r = Self {
            train: v[0],
            val: v[1],
            test: v[2],
        };
        r.validate()?;
        // Normalising silently would hide a typo such as 0.8,0.1,0.2 (or percentages).
        let sum = r.train + r.val + r.test;
        anyhow::ensure!(
            (sum - 1.0).abs() <= 1e-6,
            "split '{s}' sums to {sum}, not 1 (fractions of the images: train,val,test, e.g. \
             0.8,0.1,0.1)"
        );
        Ok(r)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let v = [self.train, self.val, self.test];
        anyhow::ensure!(
            v.iter().all(|x| x.is_finite() && *x >= 0.0) && v.iter().sum::<f64>() > 0.0,
            "split ratios {}/{}/{} must be non-negative with a positive sum",
            self.train,
            self.val,
            self.test
        );
        Ok(())
    }

    /// Exact base-image counts per split (largest remainder, so a zero ratio gets zero images
    /// and the counts always add up to `n`).
    pub fn counts(&self, n: usize) -> [usize; 3] {
        let r = [self.train, self.val, self.test];
        let sum: f64 = r.iter().sum();
        let exact: Vec<f64> = r.iter().map(|x| x / sum * n as f64).collect();
        let mut c: [usize; 3] = [0, 1, 2].map(|i| exact[i].floor() as usize);
        let mut order = [0usize, 1, 2];
        order.sort_by(|&a, &b| {
            let (fa, fb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
            fb.total_cmp(&fa).then(a.cmp(&b))
        });
        let mut left = n - c.iter().sum::<usize>();
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            if r[i] > 0.0 {
                c[i] += 1;
                left -= 1;
            }
        }
        c
    }

    /// Splits asked for (a positive fraction) that `n` base images leave empty, e.g. 4 base
    /// images at 0.8/0.1/0.1 give no test image.
    pub fn empty_splits(&self, n: usize) -> Vec<Split> {
        let r = [self.train, self.val, self.test];
        let c = self.counts(n);
        Split::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| r[*i] > 0.0 && c[*i] == 0)
            .map(|(_, s)| s)
            .collect()
    }
}

/// The split of every base image: a seeded permutation, the first `counts[0]` to train, the
/// next `counts[1]` to validation, the rest to test. Depends only on `(n, seed, ratios)`, so
/// every shard of a sharded export agrees on it.
pub fn assign_splits(n: usize, seed: u64, ratios: &SplitRatios) -> Vec<Split> {
    let mut perm: Vec<usize> = (0..n).collect();
    let mut rng = rng_from_seed(mix64(seed ^ SPLIT_SALT));
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        perm.swap(i, j);
    }
    let c = ratios.counts(n);
    let mut out = vec![Split::Test; n];
    for (rank, &idx) in perm.iter().enumerate() {
        out[idx] = if rank < c[0] {
            Split::Train
        } else if rank < c[0] + c[1] {
            Split::Val
        } else {
            Split::Test
        };
    }
    out
}

/// Random square crops of every variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CropOptions {
    /// Tile side (px).
    pub tile: usize,
    /// Crops per variant.
    pub per_image: usize,
    /// A cut grain boundary is kept when its shortened box is at least this fraction of the
    /// tile side long.
    pub min_boundary_frac: f64,
}

impl Default for CropOptions {
    fn default() -> Self {
        Self {
            tile: 512,
            per_image: 1,
            min_boundary_frac: 0.25,
        }
    }
}

/// Everything that determines a dataset's content. Stored in the manifest; shards must agree
/// on it to be merged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetConfig {
    /// Number of base images.
    pub n: usize,
    pub seed: u64,
    /// Base image side (px).
    pub size: usize,
    /// Symmetries applied to every base image, by name (`r0`, `r90`, ..., `f_r270`).
    pub augment: Vec<String>,
    pub split: SplitRatios,
    pub crop: Option<CropOptions>,
    pub randomization: DomainRandomization,
    /// Synthesis settings the randomization does not touch (its size is replaced by `size`).
    pub base: SynthParams,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            n: 80,
            seed: 1,
            size: 768,
            augment: Dihedral::all().iter().map(|d| d.name()).collect(),
            split: SplitRatios::default(),
            crop: None,
            randomization: DomainRandomization::default(),
            base: SynthParams::default(),
        }
    }
}

/// Parses `all`, `none` (identity only) or a comma list such as `r0,r90,f_r0`.
pub fn parse_augment(s: &str) -> anyhow::Result<Vec<String>> {
    let all: Vec<String> = Dihedral::all().iter().map(|d| d.name()).collect();
    match s.trim() {
        "all" => Ok(all),
        "none" => Ok(vec![Dihedral::IDENTITY.name()]),
        list => {
            let v: Vec<String> = list.split(',').map(|t| t.trim().to_string()).collect();
            for t in &v {
                anyhow::ensure!(
                    Dihedral::from_name(t).is_some(),
                    "unknown symmetry '{t}' (use all, none or a list of {})",
                    all.join(", ")
                );
            }
            Ok(v)
        }
    }
}

impl DatasetConfig {
    /// The chosen symmetries in canonical order, with their index in `Dihedral::all()`.
    pub fn symmetries(&self) -> anyhow::Result<Vec<(usize, Dihedral)>> {
        let mut out = Vec::new();
        for name in &self.augment {
            let d = Dihedral::from_name(name)
                .ok_or_else(|| anyhow::anyhow!("unknown symmetry '{name}'"))?;
            let k = Dihedral::all().iter().position(|x| *x == d).unwrap_or(0);
            anyhow::ensure!(
                !out.iter().any(|(j, _)| *j == k),
                "symmetry '{name}' is listed twice"
            );
            out.push((k, d));
        }
        anyhow::ensure!(
            !out.is_empty(),
            "choose at least one symmetry (r0 alone means no augmentation)"
        );
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    pub(crate) fn base_params(&self) -> SynthParams {
        SynthParams {
            width: self.size,
            height: self.size,
            ..self.base.clone()
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.n),
            "number of base images {} must be between 1 and 1000000",
            self.n
        );
        anyhow::ensure!(
            (32..=MAX_SIDE).contains(&self.size),
            "image size {} must be between 32 and {MAX_SIDE} px",
            self.size
        );
        self.symmetries()?;
        self.split.validate()?;
        if let Some(c) = &self.crop {
            anyhow::ensure!(
                c.tile >= 16 && c.tile <= self.size,
                "crop tile {} must be between 16 and the image size {}",
                c.tile,
                self.size
            );
            anyhow::ensure!(
                (1..=64).contains(&c.per_image),
                "crops per image {} must be between 1 and 64",
                c.per_image
            );
            anyhow::ensure!(
                (0.0..=1.0).contains(&c.min_boundary_frac),
                "minimum boundary fraction {} must be between 0 and 1",
                c.min_boundary_frac
            );
        }
        self.randomization
            .validate()
            .context("domain randomization")?;
        self.base_params().validate().context("base parameters")?;
        Ok(())
    }

    /// Number of images written per base image.
    pub fn variants_per_base(&self) -> usize {
        self.augment.len() * self.crop.as_ref().map_or(1, |c| c.per_image)
    }
}

/// Part `index` of `count` (base images with `i % count == index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawShardSpec")]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

/// A shard as a manifest states it, before its numbers are checked: an edited or damaged
/// manifest must be refused, not index past the shard list.
#[derive(Deserialize)]
struct RawShardSpec {
    index: usize,
    count: usize,
}

impl TryFrom<RawShardSpec> for ShardSpec {
    type Error = String;
    fn try_from(r: RawShardSpec) -> Result<Self, String> {
        format!("{}/{}", r.index, r.count)
            .parse::<ShardSpec>()
            .map_err(|e| e.to_string())
    }
}

impl std::str::FromStr for ShardSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (a, b) = s
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("shard '{s}' must look like i/n, e.g. 0/4"))?;
        let index: usize = a
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("shard '{s}': '{a}' is not a number"))?;
        let count: usize = b
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("shard '{s}': '{b}' is not a number"))?;
        anyhow::ensure!(
            count >= 1 && index < count,
            "shard '{s}': need 0 <= i < n (shards are numbered from 0)"
        );
        Ok(Self { index, count })
    }
}

impl ShardSpec {
    pub fn contains(&self, base_index: usize) -> bool {
        base_index % self.count == self.index
    }
}

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

    fn merge(&mut self, o: &ClassCounts) {
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
    fn new(
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
}

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
    fn from_manifest(out: &Path, m: &Manifest, bytes: u64, t0: Instant) -> Self {
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

// ---------------------------------------------------------------------------------------------
// Output folder handling

/// `path` made absolute with `.` and `..` resolved lexically (the folder may not exist yet).
pub fn absolute_path(path: &Path) -> anyhow::Result<PathBuf> {
    let abs =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

fn entries_of(dir: &Path) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .count())
}

/// Whether `dir` holds a dataset this program wrote (its manifest reads), the only kind
/// `overwrite` may replace: `images/` + `labels/` without our manifest are hand-annotated data.
fn is_our_dataset(dir: &Path) -> bool {
    Manifest::read(dir).is_ok()
}

impl Manifest {
    /// Every file the export wrote, relative to the dataset folder. Anything else in the folder
    /// (training runs, notes, caches) belongs to someone else.
    fn written_files(&self) -> HashSet<PathBuf> {
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

/// Moves every file under `old` that is not in `ours` to the same place under `new` (a whole
/// folder at once when none of it is ours), so replacing a dataset keeps what others put in
/// it. A file whose place is taken in `new` goes beside it with `.kept` added.
fn carry_over_foreign(
    old: &Path,
    new: &Path,
    rel: &Path,
    ours: &HashSet<PathBuf>,
) -> anyhow::Result<()> {
    let dir = old.join(rel);
    for e in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let r = rel.join(e.file_name());
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && (new.join(&r).exists() || ours.iter().any(|o| o.starts_with(&r))) {
            carry_over_foreign(old, new, &r, ours)?;
            continue;
        }
        if ours.contains(&r) {
            continue;
        }
        let mut to = new.join(&r);
        let mut k = 0;
        while to.exists() {
            k += 1;
            let mut name = e.file_name();
            name.push(if k == 1 {
                ".kept".to_string()
            } else {
                format!(".kept{k}")
            });
            to = new.join(rel).join(name);
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::rename(e.path(), &to).with_context(|| {
            format!(
                "cannot keep {} (move it to {})",
                e.path().display(),
                to.display()
            )
        })?;
    }
    Ok(())
}

/// Why a target folder cannot be written, or `None` when it can. `overwrite` permits replacing
/// an existing dataset, never an unrelated non-empty folder (a typo must not delete a home).
pub fn target_problem(out: &Path, overwrite: bool) -> Option<String> {
    if !out.exists() {
        return None;
    }
    if !out.is_dir() {
        return Some(format!("{} exists and is not a folder", out.display()));
    }
    let n = match entries_of(out) {
        Ok(n) => n,
        Err(e) => return Some(format!("{e:#}")),
    };
    if n == 0 {
        return None;
    }
    if !overwrite {
        return Some(format!(
            "{} is not empty ({n} entries); choose an empty folder or allow overwriting",
            out.display()
        ));
    }
    if !is_our_dataset(out) {
        return Some(format!(
            "{} is not empty and is not a dataset this program wrote (no readable \
             {MANIFEST_FILE}): refusing to replace it",
            out.display()
        ));
    }
    None
}

/// True when `out` exists and is not empty (the GUI asks before overwriting).
pub fn target_is_nonempty(out: &Path) -> bool {
    out.is_dir() && entries_of(out).is_ok_and(|n| n > 0)
}

const STAGING_MARK: &str = ".partial-";

/// A hidden sibling folder the dataset is built in; removed unless committed (also when the
/// export fails, is cancelled or panics).
struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    fn create(out: &Path) -> anyhow::Result<Self> {
        let parent = out
            .parent()
            .ok_or_else(|| anyhow::anyhow!("{} has no parent folder", out.display()))?;
        let name = out
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("{} is not a folder name", out.display()))?
            .to_string_lossy()
            .into_owned();
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        remove_stale_staging(parent, &name);
        let dir = parent.join(format!(".{name}{STAGING_MARK}{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir,
            committed: false,
        })
    }

    /// Moves the finished folder to `out` (replacing an existing dataset when allowed).
    fn commit(mut self, out: &Path, overwrite: bool) -> anyhow::Result<()> {
        if let Some(p) = target_problem(out, overwrite) {
            anyhow::bail!(p);
        }
        if out.is_dir() && entries_of(out)? == 0 {
            std::fs::remove_dir(out)
                .with_context(|| format!("cannot replace empty {}", out.display()))?;
        }
        if out.exists() {
            // target_problem passed, so the manifest reads; it says which files are ours.
            let ours = Manifest::read(out)?.written_files();
            let old = self.dir.with_file_name(format!(
                "{}.old",
                self.dir.file_name().unwrap_or_default().to_string_lossy()
            ));
            std::fs::rename(out, &old)
                .with_context(|| format!("cannot move the old {} aside", out.display()))?;
            if let Err(e) = std::fs::rename(&self.dir, out) {
                let _ = std::fs::rename(&old, out);
                return Err(e).with_context(|| format!("cannot move dataset to {}", out.display()));
            }
            self.committed = true;
            if let Err(e) = carry_over_foreign(&old, out, Path::new(""), &ours) {
                // The staging name is cleaned up by later exports: give the old folder, with
                // whatever was not moved, a name nobody removes.
                let keep = out.with_file_name(format!(
                    "{}.previous-{}",
                    out.file_name().unwrap_or_default().to_string_lossy(),
                    std::process::id()
                ));
                let kept = std::fs::rename(&old, &keep).map_or(old, |()| keep);
                return Err(e).context(format!(
                    "the new dataset is in {}, but not all files of the one it replaced could \
                     be moved into it; they are in {}",
                    out.display(),
                    kept.display()
                ));
            }
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("cannot remove the old dataset {}", old.display()))?;
        } else {
            std::fs::rename(&self.dir, out)
                .with_context(|| format!("cannot move dataset to {}", out.display()))?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes staging folders of `name` left by crashed exports (their process is gone).
fn remove_stale_staging(parent: &Path, name: &str) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let prefix = format!(".{name}{STAGING_MARK}");
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = f.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.trim_end_matches(".old");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Files inside the staging folder are written directly: the folder itself is the atomic unit
/// (nothing is visible under the dataset's name until the final rename), and a per-file
/// temp-and-fsync would cost more than the PNG encoding.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn create_layout(root: &Path) -> anyhow::Result<()> {
    for s in Split::ALL {
        for top in ["images", "labels"] {
            let d = root.join(top).join(s.name());
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
    }
    let d = root.join("sidecars");
    std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))
}

// ---------------------------------------------------------------------------------------------
// Export

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
    syms: &[(usize, Dihedral)],
    index: usize,
    split: Split,
    root: &Path,
) -> anyhow::Result<BaseOutput> {
    let seed = base_image_seed(cfg.seed, index);
    let p = draw_params(&cfg.base_params(), &cfg.randomization, seed);
    let s = synth::generate(&p)
        .with_context(|| format!("base image {index} (seed {seed}) could not be synthesized"))?;
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
        pixel_size_pm: p.pixel_size_pm,
        rotation_deg: s.scene.rotation_deg,
        dose_e_per_a2: p.noise.dose_e_per_a2,
        probe: serde_json::to_value(p.probe.model)?
            .as_str()
            .unwrap_or_default()
            .to_string(),
        labels: counts_of(s.labels.iter().map(|l| &l.class)),
        unplaced: s.scene.unplaced.clone(),
    };
    let per_sym: Vec<anyhow::Result<Vec<(ImageRecord, u64)>>> = syms
        .par_iter()
        .map(|&(k, d)| {
            let img = apply_symmetry(d, &gray, w, h);
            let (tw, th) = d.output_size(w, h);
            let boxes: Vec<(DefectClass, OrientedBox)> = s
                .labels
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

fn yaml_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn data_yaml(out: &Path) -> String {
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

fn readme(m: &Manifest) -> String {
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

fn write_dataset_files(
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
            let o = export_base(cfg, &syms, i, splits[i], &staging.dir)?;
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

/// Combines shard folders into the complete dataset at `out`: byte-identical to what one
/// unsharded export with the same configuration writes to `out`. Shard folders are only read.
pub fn merge(
    out: &Path,
    shards: &[PathBuf],
    overwrite: bool,
    control: &JobControl,
) -> anyhow::Result<ExportSummary> {
    let t0 = Instant::now();
    anyhow::ensure!(!shards.is_empty(), "no shard folders given");
    let out = absolute_path(out)?;
    let mut manifests = Vec::new();
    for dir in shards {
        let m = Manifest::read(dir)?;
        let s = m.shard.ok_or_else(|| {
            anyhow::anyhow!(
                "{} is a complete dataset, not a shard (no shard in its manifest)",
                dir.display()
            )
        })?;
        manifests.push((dir.clone(), s, m));
    }
    let (first_dir, first_shard, first) = &manifests[0];
    let count = first_shard.count;
    // A map, not a vector of `count`: the count comes from a file and may be absurd.
    let mut seen: std::collections::BTreeMap<usize, &Path> = Default::default();
    for (dir, s, m) in &manifests {
        anyhow::ensure!(
            m.config == first.config && m.generator == first.generator,
            "{} was exported with a different configuration or program version than {}",
            dir.display(),
            first_dir.display()
        );
        anyhow::ensure!(
            s.count == count,
            "{} is shard {}/{} but {} is shard {}/{}",
            dir.display(),
            s.index,
            s.count,
            first_dir.display(),
            first_shard.index,
            count
        );
        if let Some(prev) = seen.insert(s.index, dir) {
            anyhow::bail!(
                "shard {}/{count} is given twice: {} and {}",
                s.index,
                prev.display(),
                dir.display()
            );
        }
        for b in &m.base_images {
            anyhow::ensure!(
                s.contains(b.index) && b.index < m.config.n,
                "{}: base image {} does not belong to shard {}/{count}",
                dir.display(),
                b.index,
                s.index
            );
        }
    }
    anyhow::ensure!(
        seen.len() == count,
        "missing shards: {}",
        crate::detect::merge::missing_shards(&seen, count)
    );
    if let Some(p) = target_problem(&out, overwrite) {
        anyhow::bail!(p);
    }
    let config = first.config.clone();
    let mut base: Vec<BaseRecord> = Vec::new();
    let mut by_base: BTreeMap<usize, Vec<ImageRecord>> = BTreeMap::new();
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for (dir, _, m) in &manifests {
        for b in &m.base_images {
            files.push((dir.clone(), b.sidecar.clone()));
            base.push(b.clone());
        }
        for i in &m.images {
            files.push((dir.clone(), i.file.clone()));
            files.push((dir.clone(), i.label_file.clone()));
            by_base.entry(i.base_index).or_default().push(i.clone());
        }
    }
    base.sort_by_key(|b| b.index);
    anyhow::ensure!(
        base.len() == config.n,
        "the shards hold {} base images but the dataset has {}",
        base.len(),
        config.n
    );
    let staging = Staging::create(&out)?;
    create_layout(&staging.dir)?;
    let total = files.len();
    let done = AtomicUsize::new(0);
    let bytes = AtomicU64::new(0);
    files.par_iter().try_for_each(|(dir, rel)| {
        control.check()?;
        anyhow::ensure!(
            !rel.contains("..") && !Path::new(rel).is_absolute(),
            "{}: suspicious file name '{rel}' in its manifest",
            dir.display()
        );
        let src = dir.join(rel);
        let n = std::fs::copy(&src, staging.dir.join(rel))
            .with_context(|| format!("cannot copy {}", src.display()))?;
        bytes.fetch_add(n, Ordering::Relaxed);
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        if d.is_multiple_of(64) || d == total {
            control.set_progress(d as f64 / total as f64, format!("{d}/{total} files"));
        }
        anyhow::Ok(())
    })?;
    control.check()?;
    let images: Vec<ImageRecord> = by_base.into_values().flatten().collect();
    let m = Manifest::new(config, None, base, images);
    let extra = write_dataset_files(&staging.dir, &out, &m, true)?;
    staging.commit(&out, overwrite)?;
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
