//! The parts of an Ultralytics `data.yaml` that evaluation and review need: the dataset root,
//! the image folders (or list files) of each split and the class names; and where the label
//! file of an image is.

use crate::classes::MAX_CLASSES;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Image files Ultralytics reads in a dataset (its `IMG_FORMATS`): what a split folder may hold.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic",
];

/// The parts of an Ultralytics `data.yaml` that evaluation needs.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetSpec {
    pub yaml: PathBuf,
    /// Dataset root (`path`, resolved against the yaml's folder).
    pub root: PathBuf,
    /// Split name -> entries (folders or `.txt` lists), relative to the root.
    pub splits: BTreeMap<String, Vec<String>>,
    pub names: Vec<String>,
}

fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..i],
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('\'') && v.ends_with('\'')) || (v.starts_with('"') && v.ends_with('"')))
    {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// Items of an inline YAML list `[a, b]`.
fn inline_list(v: &str) -> Option<Vec<String>> {
    let b = v.trim().strip_prefix('[')?.strip_suffix(']')?;
    Some(
        b.split(',')
            .map(unquote)
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// Values of an inline YAML mapping `{0: a, 1: 'b'}` ordered by their integer keys.
fn inline_map(v: &str) -> Option<Result<Vec<String>, String>> {
    let b = v.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out: Vec<Option<String>> = Vec::new();
    for item in b.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, val)) = item.split_once(':') else {
            return Some(Err(format!("entry '{item}' has no ':'")));
        };
        let Ok(k) = unquote(k).parse::<usize>() else {
            return Some(Err(format!("key '{}' is not a class id", k.trim())));
        };
        if k >= MAX_CLASSES {
            return Some(Err(format!(
                "class id {k} is beyond the {MAX_CLASSES} classes a dataset may have"
            )));
        }
        if out.len() <= k {
            out.resize(k + 1, None);
        }
        out[k] = Some(unquote(val));
    }
    Some(
        out.into_iter()
            .enumerate()
            .map(|(i, n)| n.ok_or_else(|| format!("class {i} has no name")))
            .collect(),
    )
}

impl DatasetSpec {
    /// Reads `data.yaml` (or the folder holding it). Supports the subset Ultralytics datasets
    /// use: `path`, split keys with a string or a list, and `names` as a block mapping
    /// (`0: name`), a block list (`- name`), an inline list or an inline mapping.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let yaml = if path.is_dir() {
            ["data.yaml", "dataset.yaml", "data.yml"]
                .iter()
                .map(|n| path.join(n))
                .find(|p| p.is_file())
                .ok_or_else(|| anyhow::anyhow!("no data.yaml in {}", path.display()))?
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&yaml)
            .with_context(|| format!("cannot read {}", yaml.display()))?;
        Self::parse(&text, &yaml)
    }

    pub fn parse(text: &str, yaml: &Path) -> anyhow::Result<Self> {
        let file = yaml.display();
        let mut top: BTreeMap<String, String> = BTreeMap::new();
        let mut blocks: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for (ln, raw) in text.lines().enumerate() {
            let line = strip_comment(raw);
            if line.trim().is_empty() {
                continue;
            }
            let indented = line.starts_with([' ', '\t']);
            let t = line.trim();
            if indented || t.starts_with("- ") {
                let key = current.clone().ok_or_else(|| {
                    anyhow::anyhow!("{file}:{}: indented line outside a block", ln + 1)
                })?;
                blocks.entry(key).or_default().push((ln + 1, t.to_string()));
                continue;
            }
            let (k, v) = t
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("{file}:{}: expected 'key: value'", ln + 1))?;
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if v.is_empty() {
                current = Some(k);
            } else {
                current = None;
                top.insert(k, v);
            }
        }
        let base = yaml.parent().unwrap_or(Path::new("."));
        let root = match top.get("path") {
            Some(p) => {
                let p = PathBuf::from(unquote(p));
                if p.is_absolute() { p } else { base.join(p) }
            }
            None => base.to_path_buf(),
        };
        let mut splits = BTreeMap::new();
        for key in ["train", "val", "test"] {
            let entries = if let Some(v) = top.get(key) {
                inline_list(v).unwrap_or_else(|| vec![unquote(v)])
            } else if let Some(b) = blocks.get(key) {
                b.iter()
                    .map(|(_, l)| unquote(l.trim_start_matches("- ")))
                    .collect()
            } else {
                continue;
            };
            splits.insert(key.to_string(), entries);
        }
        let names = if let Some(v) = top.get("names") {
            if let Some(l) = inline_list(v) {
                l
            } else if let Some(m) = inline_map(v) {
                m.map_err(|e| anyhow::anyhow!("{file}: names: {e}"))?
            } else {
                anyhow::bail!("{file}: names '{v}' is neither a list nor a mapping");
            }
        } else if let Some(b) = blocks.get("names") {
            let mut out: Vec<Option<String>> = Vec::new();
            for (i, (ln, l)) in b.iter().enumerate() {
                let (idx, name) = if let Some(item) = l.strip_prefix("- ") {
                    (i, unquote(item))
                } else {
                    let (k, v) = l
                        .split_once(':')
                        .ok_or_else(|| anyhow::anyhow!("{file}:{ln}: expected 'id: name'"))?;
                    let k: usize = k.trim().parse().map_err(|_| {
                        anyhow::anyhow!("{file}:{ln}: class id '{}' is not a number", k.trim())
                    })?;
                    (k, unquote(v))
                };
                anyhow::ensure!(
                    idx < MAX_CLASSES,
                    "{file}:{ln}: class id {idx} is beyond the {MAX_CLASSES} classes a dataset may have"
                );
                if out.len() <= idx {
                    out.resize(idx + 1, None);
                }
                out[idx] = Some(name);
            }
            out.into_iter()
                .enumerate()
                .map(|(i, n)| n.ok_or_else(|| anyhow::anyhow!("{file}: class {i} has no name")))
                .collect::<anyhow::Result<Vec<_>>>()?
        } else {
            anyhow::bail!("{file}: no 'names'");
        };
        if let Some(nc) = top.get("nc")
            && nc.trim().parse::<usize>().ok() != Some(names.len())
        {
            anyhow::bail!("{file}: nc {nc} disagrees with {} names", names.len());
        }
        Ok(Self {
            yaml: yaml.to_path_buf(),
            root,
            splits,
            names,
        })
    }

    /// The images of a split, sorted.
    pub fn images(&self, split: &str) -> anyhow::Result<Vec<PathBuf>> {
        let entries = self.splits.get(split).ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no '{split}' split (it has: {})",
                self.yaml.display(),
                self.splits.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let mut out = Vec::new();
        for e in entries {
            let p = self.root.join(e);
            if p.is_dir() {
                collect_images(&p, &mut out)?;
            } else if p.is_file() {
                // A list of image paths, relative to the root.
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    let q = Path::new(l.trim_start_matches("./"));
                    out.push(if q.is_absolute() {
                        q.to_path_buf()
                    } else {
                        self.root.join(q)
                    });
                }
            } else {
                anyhow::bail!("split '{split}': {} does not exist", p.display());
            }
        }
        out.sort();
        out.dedup();
        if out.is_empty() {
            anyhow::bail!("split '{split}' of {} has no images", self.yaml.display());
        }
        Ok(out)
    }
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            collect_images(&p, out)?;
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Ultralytics `img2label_paths`: the last `/images/` becomes `/labels/`, extension `.txt`.
pub fn label_path_for(image: &Path) -> PathBuf {
    let s = image.to_string_lossy();
    let sep = std::path::MAIN_SEPARATOR;
    let needle = format!("{sep}images{sep}");
    let swapped = match s.rfind(&needle) {
        Some(i) => format!("{}{sep}labels{sep}{}", &s[..i], &s[i + needle.len()..]),
        None => s.to_string(),
    };
    PathBuf::from(swapped).with_extension("txt")
}
