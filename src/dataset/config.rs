//! What determines a dataset's content: the number and size of base images, the symmetries and
//! crops, the split ratios and the split of every base image, and which shard a base image
//! belongs to. Stored in the manifest, so shards can prove they belong together.
//!
//! Plain values and their checks only: nothing here touches the disk or synthesizes an image
//! (the pipeline is `export`, the files are `manifest` and `staging`).

use super::randomize::{DomainRandomization, Sampling, mix64};
use crate::geometry::Dihedral;
use crate::synth::SynthParams;
use crate::synth::params::MAX_SIDE;
use crate::synth::scene::rng_from_seed;
use anyhow::Context;
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// Keeps the split stream independent of the base-image streams.
const SPLIT_SALT: u64 = 0x5B11_7000_0000_0001;

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
    /// How the base images share out the randomization's ranges (missing in a manifest:
    /// independent draws, as datasets were made before).
    #[serde(default = "Sampling::legacy")]
    pub sampling: Sampling,
    /// Synthesis settings the randomization does not touch (its size is replaced by `size`).
    pub base: SynthParams,
    /// Leave out of the label files the vacancies and interstitials whose ideal-observer SNR
    /// at the frame's dose is below this (`d′`, see [`crate::synth::detectability`]); the
    /// sidecars keep every label with its `d′`. `None`: every label, nothing measured.
    pub min_detectability: Option<f64>,
    /// Show every frame as the app feeds it to a model of this pixel size (pm/px): recorded at
    /// its drawn pixel size over the field of view that fills `size` pixels at this one, then
    /// resampled to it ([`SynthParams::resample_to`]), as the app brings a calibrated frame to
    /// its model's pixel size. `None`: every frame at its drawn pixel size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resample_to_pm: Option<f64>,
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
            sampling: Sampling::default(),
            base: SynthParams::default(),
            min_detectability: None,
            resample_to_pm: None,
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

    /// A drawn frame's parameters as `resample_to_pm` asks: the recorded field of view
    /// widened or narrowed so the frame, resampled to that pixel size, is `size` pixels.
    pub fn as_fed(&self, mut p: SynthParams) -> SynthParams {
        if let Some(pm) = self.resample_to_pm {
            let side = ((self.size as f64 * pm / p.pixel_size_pm).round() as usize).max(8);
            p.width = side;
            p.height = side;
            p.resample_to = Some([self.size, self.size]);
        }
        p
    }

    pub(crate) fn base_params(&self) -> SynthParams {
        SynthParams {
            width: self.size,
            height: self.size,
            ..self.base.clone()
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(pm) = self.resample_to_pm {
            let span = &self.randomization.pixel_size_pm;
            anyhow::ensure!(
                pm.is_finite() && (3.0..=100.0).contains(&pm),
                "the pixel size to resample to ({pm} pm/px) must be between 3 and 100"
            );
            anyhow::ensure!(
                span.min / pm >= 0.125 && span.max / pm <= 8.0,
                "resampling frames of {}-{} pm/px to {pm} pm/px changes their size more than 8x",
                span.min,
                span.max
            );
            anyhow::ensure!(
                self.size as f64 * pm / span.min <= MAX_SIDE as f64,
                "a {} px frame at {pm} pm/px is recorded at more than {MAX_SIDE} px at {} pm/px",
                self.size,
                span.min
            );
        }
        if let Some(d) = self.min_detectability {
            anyhow::ensure!(
                d.is_finite() && d >= 0.0,
                "minimum detectability {d} must be a number ≥ 0"
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_counts_are_exact_and_zero_ratios_stay_empty() {
        let r = SplitRatios::parse("0.8,0.1,0.1").unwrap();
        assert_eq!(r.counts(80), [64, 8, 8]);
        assert_eq!(r.counts(7).iter().sum::<usize>(), 7);
        assert_eq!(SplitRatios::parse("0,0,1").unwrap().counts(9), [0, 0, 9]);
        assert_eq!(SplitRatios::parse("0.5,0.5,0").unwrap().counts(5)[2], 0);
        // Ratios that do not sum to 1 are refused, not normalised.
        for bad in ["1,1,0", "0.8,0.1,0.2", "80,10,10"] {
            let e = SplitRatios::parse(bad).unwrap_err().to_string();
            assert!(e.contains("not 1") && e.contains(bad), "{e}");
        }
        assert!(SplitRatios::parse("1,2").is_err());
        assert!(SplitRatios::parse("-1,1,1").is_err());
        let s = assign_splits(50, 3, &r);
        assert_eq!(s, assign_splits(50, 3, &r), "deterministic");
        assert_ne!(s, assign_splits(50, 4, &r), "seeded");
        assert_eq!(s.iter().filter(|x| **x == Split::Train).count(), 40);
    }

    #[test]
    fn splits_that_come_out_empty_are_named() {
        let r = SplitRatios {
            train: 0.8,
            val: 0.1,
            test: 0.1,
        };
        assert_eq!(r.empty_splits(4), vec![Split::Test]);
        assert!(r.empty_splits(20).is_empty());
        // A fraction of 0 is no split asked for; 4 images at 0.8/0.1 still leave val empty.
        let no_test = SplitRatios { test: 0.0, ..r };
        assert_eq!(no_test.empty_splits(4), vec![Split::Val]);
        assert!(no_test.empty_splits(10).is_empty());
    }
}
