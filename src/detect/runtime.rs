//! Finding and loading the ONNX Runtime shared library (ort `load-dynamic`), once per process.
//!
//! ONNX Runtime is not linked at build time: the app looks for `libonnxruntime` at run time so
//! the same binary works with the CPU wheel, the CUDA wheel or a system install. Discovery
//! order: an explicit path, `ORT_DYLIB_PATH`, `<exe dir>/../../.ort/libonnxruntime.so`,
//! `./.ort/libonnxruntime.so`, then the `onnxruntime` wheel inside a project `.venv`.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The ONNX Runtime version the project pins (the PyPI wheel that provides the library).
pub const ORT_WHEEL_VERSION: &str = "1.31.1";

/// How to get a runtime, appended to every "runtime missing" error.
pub fn install_hint() -> String {
    format!(
        "install it with `python -m venv .venv && .venv/bin/pip install onnxruntime=={ORT_WHEEL_VERSION}` \
         in the project folder (or `onnxruntime-gpu=={ORT_WHEEL_VERSION}` for CUDA), or set \
         ORT_DYLIB_PATH to the full path of libonnxruntime.so (in the wheel: \
         site-packages/onnxruntime/capi/libonnxruntime.so.{ORT_WHEEL_VERSION})"
    )
}

/// Where discovery looks, in order. Pure so that it can be tested without touching the process.
#[derive(Clone, Debug, Default)]
pub struct SearchPlaces {
    pub explicit: Option<PathBuf>,
    pub env: Option<PathBuf>,
    pub exe_dir: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    /// Extra project roots whose `.ort/` and `.venv/` are searched (the crate root in tests).
    pub project_roots: Vec<PathBuf>,
}

impl SearchPlaces {
    /// The places for this process.
    pub fn from_process(explicit: Option<&Path>) -> Self {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        Self {
            explicit: explicit.map(Path::to_path_buf),
            env: std::env::var_os("ORT_DYLIB_PATH")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            exe_dir,
            cwd: std::env::current_dir().ok(),
            // Tests and `cargo run` run from inside the target folder; the crate root is where
            // the lead's `.ort` link and the project venv live.
            project_roots: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))],
        }
    }

    /// Candidate files in priority order (existing or not), each with where it came from.
    pub fn candidates(&self) -> Vec<(PathBuf, &'static str)> {
        let mut out = Vec::new();
        if let Some(p) = &self.explicit {
            out.push((p.clone(), "explicit path"));
        }
        if let Some(p) = &self.env {
            out.push((p.clone(), "ORT_DYLIB_PATH"));
        }
        if let Some(d) = &self.exe_dir {
            out.push((
                d.join("../../.ort/libonnxruntime.so"),
                "<exe dir>/../../.ort",
            ));
        }
        let mut roots: Vec<&PathBuf> = Vec::new();
        for r in self.cwd.iter().chain(self.project_roots.iter()) {
            if !roots.contains(&r) {
                roots.push(r);
            }
        }
        for r in &roots {
            out.push((r.join(".ort/libonnxruntime.so"), ".ort link"));
        }
        for r in &roots {
            for p in venv_libraries(r) {
                out.push((p, "project .venv"));
            }
        }
        out
    }

    /// The first candidate that exists. Explicit and environment paths are not skipped when
    /// missing: the user asked for them, so a wrong path is an error rather than a silent
    /// fallback to some other runtime.
    pub fn resolve(&self) -> Result<(PathBuf, &'static str), String> {
        let cands = self.candidates();
        for (p, origin) in &cands {
            let asked = matches!(*origin, "explicit path" | "ORT_DYLIB_PATH");
            if p.is_file() || asked {
                if asked && !p.is_file() {
                    return Err(format!(
                        "ONNX Runtime library not found at {} (from {origin}); {}",
                        p.display(),
                        install_hint()
                    ));
                }
                return Ok((p.clone(), origin));
            }
        }
        let looked: Vec<String> = cands.iter().map(|(p, _)| p.display().to_string()).collect();
        Err(format!(
            "ONNX Runtime library not found (looked in: {}); {}",
            if looked.is_empty() {
                "nowhere".to_string()
            } else {
                looked.join(", ")
            },
            install_hint()
        ))
    }
}

/// `libonnxruntime.so*` inside `<root>/.venv/lib/python*/site-packages/onnxruntime/capi/`.
fn venv_libraries(root: &Path) -> Vec<PathBuf> {
    let lib = root.join(".venv/lib");
    let mut out = Vec::new();
    let Ok(pythons) = std::fs::read_dir(&lib) else {
        return out;
    };
    let mut pythons: Vec<PathBuf> = pythons.flatten().map(|e| e.path()).collect();
    pythons.sort();
    for py in pythons {
        let capi = py.join("site-packages/onnxruntime/capi");
        let Ok(files) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut libs: Vec<PathBuf> = files
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        // Prefer the versioned file (the wheel ships only that one) and the newest version.
        libs.sort();
        libs.reverse();
        out.extend(libs);
    }
    out
}

/// The loaded runtime.
#[derive(Clone, Debug)]
pub struct RuntimeInfo {
    pub library: PathBuf,
    pub found_via: &'static str,
}

struct Loaded {
    info: RuntimeInfo,
    env: ort::environment::Environment,
}

static RUNTIME: OnceLock<Loaded> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime (first call only; later calls return the loaded one whatever `explicit`
/// says, because a process can hold only one runtime) and creates the global environment.
pub fn init_runtime(explicit: Option<&Path>) -> anyhow::Result<RuntimeInfo> {
    if let Some(l) = RUNTIME.get() {
        return Ok(l.info.clone());
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = RUNTIME.get() {
        return Ok(l.info.clone());
    }
    let places = SearchPlaces::from_process(explicit);
    let (library, found_via) = places.resolve().map_err(anyhow::Error::msg)?;
    let builder = ort::init_from(&library).map_err(|e| {
        anyhow::anyhow!(
            "cannot load ONNX Runtime from {} (found via {found_via}): {e}; {}",
            library.display(),
            install_hint()
        )
    })?;
    let env = builder
        .with_name("defect-detector")
        .with_telemetry(false)
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!(
                "cannot create the ONNX Runtime environment ({})",
                library.display()
            )
        })?;
    let info = RuntimeInfo { library, found_via };
    let _ = RUNTIME.set(Loaded {
        info: info.clone(),
        env,
    });
    Ok(info)
}

/// The environment created by [`init_runtime`].
pub(crate) fn environment() -> anyhow::Result<&'static ort::environment::Environment> {
    RUNTIME
        .get()
        .map(|l| &l.env)
        .ok_or_else(|| anyhow::anyhow!("ONNX Runtime is not initialised"))
}

/// ONNX Runtime's own log lines go to `tracing` under the target `ort`, so the usual filter
/// (`ort=warn` by default) hides its many INFO lines per session.
fn forward_log(
    level: ort::logging::LogLevel,
    category: &str,
    _id: &str,
    location: &str,
    message: &str,
) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Verbose => {
            tracing::trace!(target: "ort", category, location, "{message}")
        }
        LogLevel::Info => tracing::info!(target: "ort", category, location, "{message}"),
        LogLevel::Warning => tracing::warn!(target: "ort", category, location, "{message}"),
        LogLevel::Error | LogLevel::Fatal => {
            tracing::error!(target: "ort", category, location, "{message}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_runtime_is_a_clear_error_naming_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let places = SearchPlaces {
            cwd: Some(dir.path().to_path_buf()),
            exe_dir: Some(dir.path().join("target/debug")),
            ..Default::default()
        };
        let e = places.resolve().unwrap_err();
        assert!(e.contains("ONNX Runtime library not found"), "{e}");
        assert!(e.contains("pip install onnxruntime==1.31.1"), "{e}");
        assert!(e.contains("ORT_DYLIB_PATH"), "{e}");
    }

    #[test]
    fn explicit_and_env_paths_are_not_skipped_silently() {
        let dir = tempfile::tempdir().unwrap();
        // A valid-looking .ort link exists, but the user pointed elsewhere.
        std::fs::create_dir_all(dir.path().join(".ort")).unwrap();
        std::fs::write(dir.path().join(".ort/libonnxruntime.so"), b"x").unwrap();
        let places = SearchPlaces {
            env: Some(dir.path().join("nope.so")),
            cwd: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let e = places.resolve().unwrap_err();
        assert!(e.contains("nope.so") && e.contains("ORT_DYLIB_PATH"), "{e}");
        let places = SearchPlaces {
            cwd: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let (p, how) = places.resolve().unwrap();
        assert_eq!(p, dir.path().join(".ort/libonnxruntime.so"));
        assert_eq!(how, ".ort link");
    }

    #[test]
    fn finds_the_versioned_library_in_a_project_venv() {
        let dir = tempfile::tempdir().unwrap();
        let capi = dir
            .path()
            .join(".venv/lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.31.1"), b"x").unwrap();
        std::fs::write(capi.join("onnxruntime_pybind11_state.so"), b"x").unwrap();
        let places = SearchPlaces {
            project_roots: vec![dir.path().to_path_buf()],
            ..Default::default()
        };
        let (p, how) = places.resolve().unwrap();
        assert_eq!(p, capi.join("libonnxruntime.so.1.31.1"));
        assert_eq!(how, "project .venv");
    }
}
