//! Merging the shard folders of a sharded export into the complete dataset, byte-identical to
//! what one unsharded export writes.
//!
//! Shard folders are only read: everything is checked (same configuration and program, every
//! shard once, every base image in its own shard) before anything is copied, and the result is
//! built in a staging folder like an export. Writing images is not this module's business; it
//! copies the files the shard manifests name, nothing else.

use super::export::{ExportSummary, write_dataset_files};
use super::manifest::{BaseRecord, ImageRecord, Manifest};
use super::staging::{Staging, absolute_path, create_layout, target_problem};
use crate::jobs::JobControl;
use anyhow::Context;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

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
    let mut seen: BTreeMap<usize, &Path> = Default::default();
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
