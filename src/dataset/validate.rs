//! Checks a YOLO-OBB dataset folder the way a training run would read it, and counts it.
//!
//! Every image must have a label file and every label file an image; every label line must
//! parse (errors name the file and line); per split and class the boxes are counted. When the
//! folder holds our `manifest.json`, the validator also checks that no base image is in two
//! splits and that the label files agree with the manifest's per-image counts.

use super::manifest::{MANIFEST_FILE, Manifest};
use super::spec::{DatasetSpec, label_path_for};
use super::yolo::{Validation, read_labels};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::spec::IMAGE_EXTENSIONS;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SplitReport {
    pub images: usize,
    pub label_files: usize,
    /// Label files without any box (background images).
    pub empty_label_files: usize,
    /// Boxes per class id.
    pub boxes_per_class: Vec<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub yaml: PathBuf,
    pub root: PathBuf,
    pub names: Vec<String>,
    pub splits: BTreeMap<String, SplitReport>,
    /// Whether a manifest was found and cross-checked.
    pub manifest_checked: bool,
    /// Every problem found, each naming the file (and line, for label errors).
    pub errors: Vec<String>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Per split and class counts, then the first problems.
    pub fn table(&self) -> String {
        let mut s = format!("{:<6} {:>7} {:>7}", "split", "images", "labels");
        for n in &self.names {
            s += &format!(" {n:>15}");
        }
        s.push('\n');
        for (k, v) in &self.splits {
            s += &format!("{k:<6} {:>7} {:>7}", v.images, v.label_files);
            for c in &v.boxes_per_class {
                s += &format!(" {c:>15}");
            }
            s.push('\n');
        }
        if self.errors.is_empty() {
            s += "no problems found\n";
        } else {
            s += &format!("{} problem(s):\n", self.errors.len());
            for e in self.errors.iter().take(50) {
                s += &format!("  {e}\n");
            }
            if self.errors.len() > 50 {
                s += &format!("  ... and {} more\n", self.errors.len() - 50);
            }
        }
        s
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    let rd = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            errors.push(format!("cannot list {}: {e}", dir.display()));
            return;
        }
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out, errors);
        } else {
            out.push(p);
        }
    }
}

/// The label folder Ultralytics derives from an image folder (`images` -> `labels`).
fn label_dir_for(image_dir: &Path) -> PathBuf {
    let probe = label_path_for(&image_dir.join("x.png"));
    probe.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Validates the dataset whose `data.yaml` is in `dir` (or is `dir`). Problems are collected in
/// the report; an `Err` means the dataset could not be read at all (e.g. no data.yaml).
pub fn validate_dataset(dir: &Path) -> anyhow::Result<Report> {
    let spec = DatasetSpec::read(dir)?;
    let mut r = Report {
        yaml: spec.yaml.clone(),
        root: spec.root.clone(),
        names: spec.names.clone(),
        ..Default::default()
    };
    if !spec.root.is_dir() {
        r.errors.push(format!(
            "{}: dataset root {} does not exist (was the folder moved? update 'path')",
            spec.yaml.display(),
            spec.root.display()
        ));
        return Ok(r);
    }
    let v = Validation {
        num_classes: spec.names.len(),
        ..Default::default()
    };
    // Image path (relative to the root, '/'-separated) -> (split, boxes per class).
    let mut found: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
    for (split, entries) in &spec.splits {
        let mut sr = SplitReport {
            boxes_per_class: vec![0; spec.names.len()],
            ..Default::default()
        };
        for e in entries {
            let image_dir = spec.root.join(e);
            if !image_dir.is_dir() {
                r.errors.push(format!(
                    "{}: split '{split}' folder {} does not exist",
                    spec.yaml.display(),
                    image_dir.display()
                ));
                continue;
            }
            let mut files = Vec::new();
            walk(&image_dir, &mut files, &mut r.errors);
            files.sort();
            let mut images: BTreeSet<PathBuf> = BTreeSet::new();
            for f in files.iter().filter(|f| is_image(f)) {
                images.insert(f.clone());
                sr.images += 1;
                let lp = label_path_for(f);
                if !lp.is_file() {
                    r.errors.push(format!(
                        "{}: image has no label file {}",
                        f.display(),
                        lp.display()
                    ));
                    continue;
                }
                match read_labels(&lp, &v) {
                    Ok(labels) => {
                        sr.label_files += 1;
                        if labels.is_empty() {
                            sr.empty_label_files += 1;
                        }
                        let mut per = vec![0usize; spec.names.len()];
                        for l in &labels {
                            per[l.class] += 1;
                            sr.boxes_per_class[l.class] += 1;
                        }
                        let rel = f
                            .strip_prefix(&spec.root)
                            .unwrap_or(f)
                            .to_string_lossy()
                            .replace('\\', "/");
                        found.insert(rel, (split.clone(), per));
                    }
                    Err(e) => r.errors.push(format!("{e:#}")),
                }
            }
            // Label files whose image is missing (Ultralytics silently ignores them).
            let label_dir = label_dir_for(&image_dir);
            if label_dir != image_dir && label_dir.is_dir() {
                let mut labels = Vec::new();
                walk(&label_dir, &mut labels, &mut r.errors);
                labels.sort();
                let stems: BTreeSet<PathBuf> = images
                    .iter()
                    .map(|i| label_path_for(i).with_extension(""))
                    .collect();
                for l in labels
                    .iter()
                    .filter(|l| l.extension().is_some_and(|x| x == "txt"))
                {
                    if !stems.contains(&l.with_extension("")) {
                        r.errors
                            .push(format!("{}: label file has no image", l.display()));
                    }
                }
            }
        }
        r.splits.insert(split.clone(), sr);
    }
    let manifest_path = spec.root.join(MANIFEST_FILE);
    if manifest_path.is_file() {
        r.manifest_checked = true;
        match Manifest::read(&spec.root) {
            Ok(m) => check_manifest(&m, &manifest_path, &found, &mut r.errors),
            Err(e) => r.errors.push(format!("{e:#}")),
        }
    }
    Ok(r)
}

fn check_manifest(
    m: &Manifest,
    path: &Path,
    found: &BTreeMap<String, (String, Vec<usize>)>,
    errors: &mut Vec<String>,
) {
    let file = path.display();
    if let Some(s) = m.shard {
        errors.push(format!(
            "{file}: this is shard {}/{} of a dataset; merge the shards first",
            s.index, s.count
        ));
    }
    // Split honesty: one split per base image.
    let mut split_of: BTreeMap<usize, &str> = BTreeMap::new();
    for i in &m.images {
        let s = i.split.name();
        if let Some(prev) = split_of.insert(i.base_index, s)
            && prev != s
        {
            errors.push(format!(
                "{file}: base image {} has variants in both '{prev}' and '{s}'",
                i.base_index
            ));
        }
    }
    let mut listed = BTreeSet::new();
    for i in &m.images {
        listed.insert(i.file.clone());
        let Some((split, per)) = found.get(&i.file) else {
            errors.push(format!(
                "{file}: lists {} but it is not a labelled image of the dataset",
                i.file
            ));
            continue;
        };
        if split != i.split.name() {
            errors.push(format!(
                "{file}: {} is listed in '{}' but data.yaml puts it in '{split}'",
                i.file,
                i.split.name()
            ));
        }
        let want = [
            i.labels.grain_boundary,
            i.labels.vacancy,
            i.labels.interstitial,
        ];
        if per.as_slice() != want.as_slice() {
            errors.push(format!(
                "{file}: {} has boxes {:?} per class but the manifest says {:?}",
                i.label_file, per, want
            ));
        }
    }
    for f in found.keys().filter(|f| !listed.contains(*f)) {
        errors.push(format!(
            "{file}: {f} is in the dataset but not in the manifest"
        ));
    }
}
