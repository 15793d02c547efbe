//! Crash-safe file writing: write to a temporary file beside the target, then rename.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary path in the same directory (so the rename is atomic on one filesystem).
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let unique = format!(
        ".{name}.tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    )
    .replace(['(', ')'], "");
    path.with_file_name(unique)
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never half.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    atomic_write_with(path, |f| f.write_all(bytes).map_err(Into::into))
}

/// Like [`atomic_write`] but the content is produced by a writer callback.
pub fn atomic_write_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    write_synced(path, write, &|f| f.sync_all())
}

/// Makes a rename durable: without syncing the folder, a power cut can leave the old name
/// (or none) pointing at the data. Folders cannot be opened for syncing on every platform
/// and filesystem; those report "unsupported" and are left as they are.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    if !cfg!(unix) {
        return Ok(());
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::InvalidInput
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// [`atomic_write_with`] with the file sync as a parameter, so tests can make it fail.
fn write_synced(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<()>,
    sync: &dyn Fn(&std::fs::File) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    let tmp = temp_path_for(path);
    let result = (|| {
        let f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(f);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        // A failed sync means the data may not be on disk: renaming anyway could replace a
        // good file with a hole after a crash (or on a full network share).
        sync(&f).with_context(|| format!("cannot flush {} to disk", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} into place", path.display()))?;
        sync_parent(path).with_context(|| {
            format!(
                "{} was replaced, but its folder could not be flushed to disk",
                path.display()
            )
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// One CSV field (RFC 4180): quoted, with inner quotes doubled, when it holds a comma, a quote
/// or a line break; as is otherwise.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Sets `key` in the JSON object stored at `path` (a model card), keeping everything else;
/// written atomically.
pub fn set_json_key(path: &Path, key: &str, value: serde_json::Value) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the model card {}", path.display()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let obj = v
        .as_object_mut()
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    obj.insert(key.to_string(), value);
    let mut out = serde_json::to_vec_pretty(&v)?;
    out.push(b'\n');
    atomic_write(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_sync_fails_the_save_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        atomic_write(&p, b"old").unwrap();
        let r = write_synced(&p, |w| w.write_all(b"new").map_err(Into::into), &|_| {
            Err(std::io::Error::other("EIO on the share"))
        });
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("EIO on the share") && e.contains("a.txt"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        atomic_write(&p, b"old").unwrap();
        let r = atomic_write_with(&p, |_| anyhow::bail!("disk on fire"));
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
