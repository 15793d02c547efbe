//! Dataset ranges and the statistics of a frame outside them.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{RealismStats, measure};
use crate::synth::crystal::CrystalSpec;

/// The 5–95 % range of one statistic over a set of frames.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatRange {
    pub name: String,
    pub label: String,
    pub p5: f64,
    pub p95: f64,
    /// Frames that had this statistic.
    pub n: usize,
}

/// A statistic of a frame outside a dataset's range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outside {
    pub name: String,
    pub label: String,
    pub value: f64,
    pub p5: f64,
    pub p95: f64,
}

impl fmt::Display for Outside {
    /// e.g. `column FWHM 1.50 Å > 1.27 Å`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, unit) = split_label(&self.label);
        let (op, bound) = if self.value > self.p95 {
            (">", self.p95)
        } else {
            ("<", self.p5)
        };
        let u = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        write!(
            f,
            "{name} {}{u} {op} {}{u}",
            fmt_num(self.value),
            fmt_num(bound)
        )
    }
}

/// `"column FWHM (Å)"` → `("column FWHM", "Å")`; a parenthesis that is a formula, not a
/// unit, stays out of the numbers (`"noise (σ/(p99-p1))"` → `("noise", "")`).
fn split_label(label: &str) -> (&str, &str) {
    match label.find(" (") {
        Some(i) if label.ends_with(')') => {
            let unit = &label[i + 2..label.len() - 1];
            if unit.contains('(') || unit.contains("median") || unit.contains('σ') {
                (&label[..i], "")
            } else {
                (&label[..i], unit)
            }
        }
        _ => (label, ""),
    }
}

/// Three significant figures, without exponent for everyday magnitudes.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Linear-interpolated percentile of sorted values (`q` in 0..=1).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let i = pos.floor() as usize;
    let j = (i + 1).min(sorted.len() - 1);
    sorted[i] + (pos - i as f64) * (sorted[j] - sorted[i])
}

/// 5–95 % ranges of every statistic present in at least one frame, in `values()` order.
pub fn ranges(stats: &[RealismStats]) -> Vec<StatRange> {
    let mut order: Vec<(&'static str, &'static str)> = Vec::new();
    let mut vals: std::collections::HashMap<&'static str, Vec<f64>> = Default::default();
    for s in stats {
        for v in s.values() {
            if !vals.contains_key(v.name) {
                order.push((v.name, v.label));
            }
            vals.entry(v.name).or_default().push(v.value);
        }
    }
    order
        .into_iter()
        .map(|(name, label)| {
            let mut v = vals.remove(name).unwrap_or_default();
            v.sort_by(f64::total_cmp);
            StatRange {
                name: name.into(),
                label: label.into(),
                p5: quantile(&v, 0.05),
                p95: quantile(&v, 0.95),
                n: v.len(),
            }
        })
        .collect()
}

/// The statistics of `stats` below their range's p5 or above its p95.
pub fn outside(stats: &RealismStats, ranges: &[StatRange]) -> Vec<Outside> {
    stats
        .values()
        .into_iter()
        .filter_map(|v| {
            let r = ranges.iter().find(|r| r.name == v.name)?;
            (v.value < r.p5 || v.value > r.p95).then(|| Outside {
                name: v.name.into(),
                label: v.label.into(),
                value: v.value,
                p5: r.p5,
                p95: r.p95,
            })
        })
        .collect()
}

/// Where a frame sits in a dataset: for each statistic, the percentage of the dataset's values
/// below the frame's (ties count half). A frame at 3 % or 97 % is inside a 5–95 % range only by
/// luck of the draw; one near 50 % is typical.
#[derive(Clone, Debug, Serialize)]
pub struct Rank {
    pub name: String,
    pub label: String,
    pub value: f64,
    pub percentile: f64,
    pub n: usize,
}

pub fn percentile_ranks(stats: &RealismStats, dataset: &[RealismStats]) -> Vec<Rank> {
    stats
        .values()
        .into_iter()
        .filter_map(|v| {
            let vals: Vec<f64> = dataset
                .iter()
                .flat_map(|d| d.values())
                .filter(|d| d.name == v.name)
                .map(|d| d.value)
                .collect();
            if vals.is_empty() {
                return None;
            }
            let below = vals.iter().filter(|&&x| x < v.value).count() as f64;
            let ties = vals.iter().filter(|&&x| x == v.value).count() as f64;
            Some(Rank {
                name: v.name.into(),
                label: v.label.into(),
                value: v.value,
                percentile: 100.0 * (below + 0.5 * ties) / vals.len() as f64,
                n: vals.len(),
            })
        })
        .collect()
}

/// Sidecars of a dataset (`sidecars/*.json`, one per base image) or of a `synth` output folder
/// (`*.json` beside the images), sorted.
fn sidecars(dir: &Path) -> Vec<PathBuf> {
    let json_in = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            })
            .filter(|p| p.file_name().is_some_and(|n| n != "manifest.json"))
            .collect();
        v.sort();
        v
    };
    let sub = dir.join("sidecars");
    if sub.is_dir() {
        return json_in(&sub);
    }
    // a synth output folder: a sidecar per image, same stem
    json_in(dir)
        .into_iter()
        .filter(|p| ["png", "tif"].iter().any(|e| p.with_extension(e).is_file()))
        .collect()
}

/// Up to `max` items spread evenly over the list.
fn spread<T: Clone>(v: &[T], max: usize) -> Vec<T> {
    if v.len() <= max {
        return v.to_vec();
    }
    (0..max).map(|i| v[i * v.len() / max].clone()).collect()
}

/// Statistics of a dataset folder. With sidecars (an `export` dataset or `synth` output) each
/// base image is re-rendered as raw counts from its sidecar, as recorded (before any
/// `--resample-to-pm`), and measured at its known pixel size with its own crystal (`crystal` is
/// then unused), so intensity statistics compare like
/// with like; otherwise the folder's images are measured as they are. Up to `max_images`
/// frames, spread over the sorted list, in parallel.
pub fn dataset_stats(
    dir: &Path,
    crystal: &CrystalSpec,
    max_images: usize,
) -> anyhow::Result<Vec<RealismStats>> {
    use rayon::prelude::*;
    anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
    let max = max_images.max(1);
    let cars = sidecars(dir);
    let out: Vec<anyhow::Result<RealismStats>> = if !cars.is_empty() {
        spread(&cars, max)
            .par_iter()
            .map(|p| {
                // A frame exported as the model is fed it (`resample_to`) is measured as it was
                // recorded: these ranges describe acquisitions, and the Viewer measures each file
                // as the microscope wrote it. Measured as fed, every pixel size would be the
                // model's and every real frame would fall outside the range.
                let mut sc = crate::synth::read_sidecar(p)?;
                sc.params.resample_to = None;
                let s = crate::synth::render_scene(&sc.params, sc.scene)?;
                let spec = s.params.crystal.spec();
                measure(
                    &s.image,
                    &spec,
                    Some(s.params.output_pixel_size_pm() / 1000.0),
                    None,
                )
                .with_context(|| p.display().to_string())
            })
            .collect()
    } else {
        let imgs = crate::formats::list_images(dir);
        anyhow::ensure!(
            !imgs.is_empty(),
            "{} holds no sidecars and no readable images",
            dir.display()
        );
        spread(&imgs, max)
            .par_iter()
            .map(|p| {
                let img = crate::formats::load(p)?;
                measure(
                    &img.image,
                    crystal,
                    img.pixel_size.map(|s| s.nm_per_px),
                    None,
                )
                .with_context(|| p.display().to_string())
            })
            .collect()
    };
    out.into_iter().collect()
}
