//! The output folder: whether a dataset may be written there, and the hidden sibling folder it
//! is built in and renamed into place from, so that a cancel, an error or a crash never leaves a
//! partial dataset under the requested name, and replacing a dataset keeps files others put in
//! it.
//!
//! Folders and files only: what goes into them is the pipeline's (`export`, `merge`). It must
//! never delete anything but its own staging folders and the files of a dataset this program
//! wrote (a mistyped path must not cost a home folder).

use super::config::Split;
use super::manifest::{MANIFEST_FILE, Manifest};
use anyhow::Context;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

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
pub(super) struct Staging {
    pub(super) dir: PathBuf,
    committed: bool,
}

impl Staging {
    pub(super) fn create(out: &Path) -> anyhow::Result<Self> {
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
    pub(super) fn commit(mut self, out: &Path, overwrite: bool) -> anyhow::Result<()> {
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
pub(super) fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Every folder of the layout, made up front so the parallel writers only write files; an empty
/// split keeps its folders, as `data.yaml` names all three.
pub(super) fn create_layout(root: &Path) -> anyhow::Result<()> {
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
