//! Batch detection on a cluster: a deterministic split of the inputs into shards, a summary
//! per run, and the merge of shard folders into what one run over all inputs writes.
//!
//! The summary holds no timings or host details, so that n shards merged equal one run.

use crate::fsio::csv_field;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const SUMMARY_JSON: &str = "detect-summary.json";
pub const SUMMARY_CSV: &str = "detect-summary.csv";
/// Extensions of the per-image files written by [`super::export::write_all`].
pub const RESULT_EXTENSIONS: [&str; 3] = ["json", "csv", "txt"];

/// Part `index` of `count` (0-based): inputs whose position in the sorted list is
/// `index` modulo `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawShard")]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// A shard as a summary file states it, before its numbers are checked: an edited or damaged
/// summary must be refused, not index past the shard list.
#[derive(Deserialize)]
struct RawShard {
    index: usize,
    count: usize,
}

impl TryFrom<RawShard> for Shard {
    type Error = String;
    fn try_from(r: RawShard) -> Result<Self, String> {
        format!("{}/{}", r.index, r.count).parse()
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard '{s}' is not i/n (e.g. 3/8)"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("shard index '{i}' is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("shard count '{n}' is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= i < n"));
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The items of this shard; `items` must already be in a deterministic (sorted) order.
    pub fn select<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// The input path as given.
    pub image: String,
    /// File name (without extension) of its `.json/.csv/.txt` results in the output folder;
    /// None when it failed.
    pub result: Option<String>,
    /// Detections per class id.
    pub counts: Vec<usize>,
    pub error: Option<String>,
    /// Share of the frame's strongest spectrum peaks on the crystal's lattice
    /// (`RealismStats::lattice_match`); below 0.5 the frame is not of that crystal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice_match: Option<f64>,
    /// The frame's `realism` statistics outside the model card's training ranges (as the
    /// Viewer's warning lists them, e.g. `column FWHM 3.90 Å > 2.79 Å`); empty when inside,
    /// unmeasured, or the check was skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside_training: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    pub model: String,
    pub conf: f32,
    pub iou: f64,
    pub classes: Vec<String>,
    /// Which part of the inputs this run did; absent for a full (or merged) run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    pub n_images: usize,
    pub n_failed: usize,
    /// Detections per class over all images.
    pub totals: Vec<usize>,
    /// Sorted by input path.
    pub images: Vec<ImageEntry>,
}

impl BatchSummary {
    pub fn new(
        model: &Path,
        conf: f32,
        iou: f64,
        classes: &[String],
        shard: Option<Shard>,
    ) -> Self {
        Self {
            model: model.display().to_string(),
            conf,
            iou,
            classes: classes.to_vec(),
            shard,
            n_images: 0,
            n_failed: 0,
            totals: vec![0; classes.len()],
            images: Vec::new(),
        }
    }

    /// Sorts the images and recomputes the totals from them.
    pub fn finish(&mut self) {
        self.images.sort_by(|a, b| a.image.cmp(&b.image));
        self.n_images = self.images.len();
        self.n_failed = self.images.iter().filter(|e| e.error.is_some()).count();
        self.totals = vec![0; self.classes.len()];
        for e in &self.images {
            for (t, c) in self.totals.iter_mut().zip(&e.counts) {
                *t += c;
            }
        }
    }

    pub fn to_csv(&self) -> String {
        let mut s = String::from("image,result");
        for c in &self.classes {
            let _ = write!(s, ",n_{}", csv_field(c));
        }
        s.push_str(",total,error\n");
        for e in &self.images {
            let _ = write!(
                s,
                "{},{}",
                csv_field(&e.image),
                csv_field(e.result.as_deref().unwrap_or(""))
            );
            for k in 0..self.classes.len() {
                let _ = write!(s, ",{}", e.counts.get(k).copied().unwrap_or(0));
            }
            let _ = writeln!(
                s,
                ",{},{}",
                e.counts.iter().sum::<usize>(),
                csv_field(e.error.as_deref().unwrap_or(""))
            );
        }
        s
    }

    /// Writes `detect-summary.json` and `detect-summary.csv` into `dir` atomically.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        crate::fsio::atomic_write(&dir.join(SUMMARY_JSON), &serde_json::to_vec_pretty(self)?)?;
        crate::fsio::atomic_write(&dir.join(SUMMARY_CSV), self.to_csv().as_bytes())
    }

    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let p = dir.join(SUMMARY_JSON);
        let bytes = std::fs::read(&p).with_context(|| {
            format!(
                "cannot read {} (is {} the --out of a finished detect run?)",
                p.display(),
                dir.display()
            )
        })?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a detect summary", p.display()))
    }
}

/// Joins the output folders of all shards of one sharded run into `out`: copies every
/// per-image result and writes the combined summary. Refuses shards of different runs
/// (model, thresholds, classes, shard count), duplicate or missing shards, and results that
/// would overwrite a different file.
/// The first few shards of `count` not in `seen`, for a message (the count may be huge).
pub fn missing_shards<T>(seen: &std::collections::BTreeMap<usize, T>, count: usize) -> String {
    const SHOWN: usize = 10;
    let missing: Vec<String> = (0..count)
        .filter(|i| !seen.contains_key(i))
        .take(SHOWN + 1)
        .map(|i| format!("{i}/{count}"))
        .collect();
    let more = count - seen.len();
    if more > SHOWN {
        format!("{} and {} more", missing[..SHOWN].join(", "), more - SHOWN)
    } else {
        missing.join(", ")
    }
}

pub fn merge_shards(out: &Path, shard_dirs: &[PathBuf]) -> anyhow::Result<BatchSummary> {
    anyhow::ensure!(!shard_dirs.is_empty(), "no shard folders to merge");
    let summaries: Vec<(PathBuf, BatchSummary)> = shard_dirs
        .iter()
        .map(|d| Ok((d.clone(), BatchSummary::read(d)?)))
        .collect::<anyhow::Result<_>>()?;
    let (first_dir, first) = &summaries[0];
    let count = first.shard.map(|s| s.count).with_context(|| {
        format!(
            "{} is not a shard (its run had no --shard)",
            first_dir.display()
        )
    })?;
    // A map, not a vector of `count`: the count comes from a file and may be absurd.
    let mut seen: std::collections::BTreeMap<usize, &Path> = Default::default();
    for (dir, s) in &summaries {
        let same_run = s.model == first.model
            && s.conf == first.conf
            && s.iou == first.iou
            && s.classes == first.classes;
        anyhow::ensure!(
            same_run,
            "{} comes from another run than {} (model, conf, iou or classes differ)",
            dir.display(),
            first_dir.display()
        );
        let shard = s.shard.with_context(|| {
            format!("{} is not a shard (its run had no --shard)", dir.display())
        })?;
        anyhow::ensure!(
            shard.count == count,
            "{} is shard {shard} but {} is of {count}",
            dir.display(),
            first_dir.display()
        );
        if let Some(other) = seen.insert(shard.index, dir) {
            anyhow::bail!(
                "shard {shard} given twice: {} and {}",
                other.display(),
                dir.display()
            );
        }
    }
    anyhow::ensure!(
        seen.len() == count,
        "missing shard(s): {}",
        missing_shards(&seen, count)
    );

    let mut merged = BatchSummary::new(
        Path::new(&first.model),
        first.conf,
        first.iou,
        &first.classes,
        None,
    );
    for (dir, s) in &summaries {
        for e in &s.images {
            if let Some(base) = &e.result {
                for ext in RESULT_EXTENSIONS {
                    let name = format!("{base}.{ext}");
                    let src = dir.join(&name);
                    let bytes = std::fs::read(&src)
                        .with_context(|| format!("cannot read {}", src.display()))?;
                    let dst = out.join(&name);
                    if let Ok(old) = std::fs::read(&dst)
                        && old != bytes
                    {
                        anyhow::bail!(
                            "{} already exists with other content (two shards wrote {name}?)",
                            dst.display()
                        );
                    }
                    crate::fsio::atomic_write(&dst, &bytes)?;
                }
            }
            merged.images.push(e.clone());
        }
    }
    merged.finish();
    merged.write(out)?;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing_and_selection() {
        let s: Shard = "1/3".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 3 });
        assert_eq!(s.select(&[0, 1, 2, 3, 4, 5, 6]), vec![1, 4]);
        assert!("3/3".parse::<Shard>().is_err());
        assert!("1/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().unwrap_err().contains("i/n"));
        // Every item lands in exactly one shard.
        let items: Vec<usize> = (0..11).collect();
        let mut all: Vec<usize> = (0..4)
            .flat_map(|i| Shard { index: i, count: 4 }.select(&items))
            .collect();
        all.sort();
        assert_eq!(all, items);
    }

    fn summary(shard: Option<Shard>, images: &[(&str, usize)]) -> BatchSummary {
        let mut s = BatchSummary::new(
            Path::new("m.onnx"),
            0.25,
            0.7,
            &["a".into(), "b".into()],
            shard,
        );
        for (name, n) in images {
            s.images.push(ImageEntry {
                image: format!("in/{name}.png"),
                result: Some(name.to_string()),
                counts: vec![*n, 1],
                error: None,
                lattice_match: None,
                outside_training: Vec::new(),
            });
        }
        s.finish();
        s
    }

    fn write_shard(dir: &Path, s: &BatchSummary) {
        for e in &s.images {
            for ext in RESULT_EXTENSIONS {
                let base = e.result.as_ref().unwrap();
                std::fs::write(dir.join(format!("{base}.{ext}")), format!("{base} {ext}")).unwrap();
            }
        }
        s.write(dir).unwrap();
    }

    #[test]
    fn merge_checks_the_shard_set() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, out) = (t.path().join("a"), t.path().join("b"), t.path().join("out"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        write_shard(
            &a,
            &summary(Some(Shard { index: 0, count: 2 }), &[("x", 2), ("z", 0)]),
        );
        write_shard(
            &b,
            &summary(Some(Shard { index: 1, count: 2 }), &[("y", 5)]),
        );
        let e = merge_shards(&out, std::slice::from_ref(&a)).unwrap_err();
        assert!(e.to_string().contains("missing shard(s): 1/2"), "{e}");
        let e = merge_shards(&out, &[a.clone(), a.clone()]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let m = merge_shards(&out, &[b.clone(), a.clone()]).unwrap();
        assert_eq!(m, summary(None, &[("x", 2), ("y", 5), ("z", 0)]));
        assert_eq!(m.totals, vec![7, 3]);
        assert_eq!(std::fs::read_to_string(out.join("y.txt")).unwrap(), "y txt");
        let csv = std::fs::read_to_string(out.join(SUMMARY_CSV)).unwrap();
        assert_eq!(
            csv.lines().next().unwrap(),
            "image,result,n_a,n_b,total,error"
        );
        assert_eq!(csv.lines().count(), 4);
        // A full run is not a shard.
        let full = t.path().join("full");
        std::fs::create_dir_all(&full).unwrap();
        write_shard(&full, &summary(None, &[("x", 2)]));
        let e = merge_shards(&out, &[full]).unwrap_err();
        assert!(e.to_string().contains("not a shard"), "{e}");
        let e = merge_shards(&out, &[t.path().join("nope")]).unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
    }

    #[test]
    fn edited_shard_numbers_are_refused_not_indexed() {
        let t = tempfile::tempdir().unwrap();
        let (a, out) = (t.path().join("a"), t.path().join("out"));
        std::fs::create_dir_all(&a).unwrap();
        write_shard(
            &a,
            &summary(Some(Shard { index: 0, count: 2 }), &[("x", 2)]),
        );
        let path = a.join(SUMMARY_JSON);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        // An index past the count used to panic on `seen[index]`.
        v["shard"] = serde_json::json!({"index": 5, "count": 2});
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = merge_shards(&out, std::slice::from_ref(&a)).unwrap_err();
        assert!(format!("{e:#}").contains("5/2"), "{e:#}");
        // An absurd count used to allocate a slot per shard.
        v["shard"] = serde_json::json!({"index": 0, "count": 1_000_000_000_000_000_000u64});
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let e = merge_shards(&out, std::slice::from_ref(&a)).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("missing shard(s): 1/1000000000000000000, 2/")
                && msg.contains("and 999999999999999989 more"),
            "{msg}"
        );
        assert!(!out.exists());
    }
}
