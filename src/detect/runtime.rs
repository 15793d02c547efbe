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
            // the set-up's `.ort` link and the project venv live.
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

/// Library name prefixes ONNX Runtime's CUDA provider needs (`onnxruntime.preload_dlls`).
const CUDA_LIBRARY_PREFIXES: &[&str] = &[
    "libcudart.so",
    "libcublasLt.so",
    "libcublas.so",
    "libcurand.so",
    "libcufft.so",
    "libnvrtc.so",
    "libnvJitLink.so",
    "libcudnn",
];

/// The CUDA and cuDNN libraries that `pip install onnxruntime-gpu[cuda,cudnn]` puts under
/// `site-packages/nvidia/<package>/lib` (or `nvidia/<cuda>/lib`), for the ONNX Runtime library
/// `ort_library` of such a wheel; empty for a CPU build (no `libonnxruntime_providers_cuda.so`
/// beside it). The provider does not find them by itself: its dependencies are resolved by
/// soname, so they are loaded first (what `onnxruntime.preload_dlls()` does in Python).
pub fn cuda_wheel_libraries(ort_library: &Path) -> Vec<PathBuf> {
    let Ok(real) = ort_library.canonicalize() else {
        return Vec::new();
    };
    let Some(capi) = real.parent() else {
        return Vec::new();
    };
    if !capi.join("libonnxruntime_providers_cuda.so").is_file() {
        return Vec::new();
    }
    let Some(site) = capi.parent().and_then(Path::parent) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut lib_dirs = Vec::new();
    if let Ok(pkgs) = std::fs::read_dir(site.join("nvidia")) {
        for pkg in pkgs.flatten() {
            lib_dirs.push(pkg.path().join("lib"));
        }
    }
    lib_dirs.sort();
    for dir in lib_dirs {
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.contains(".so") && CUDA_LIBRARY_PREFIXES.iter().any(|p| name.starts_with(p)) {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Loads `libs` into the process for good, retrying those whose dependencies were not loaded
/// yet (the order is not known from the names); returns how many loaded.
fn preload_cuda_libraries(libs: &[PathBuf]) -> usize {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut pending: Vec<&PathBuf> = libs.iter().collect();
        let mut loaded = 0;
        loop {
            let before = pending.len();
            pending.retain(|p| {
                let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
                    return false;
                };
                // SAFETY: dlopen of a shared library by path; the handle is never closed, so
                // the library stays for the provider that needs it.
                let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
                if h.is_null() {
                    true
                } else {
                    loaded += 1;
                    false
                }
            });
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        for p in pending {
            tracing::warn!("could not load the CUDA library {}", p.display());
        }
        loaded
    }
    #[cfg(not(unix))]
    {
        let _ = libs;
        0
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
    /// CUDA and cuDNN libraries of the `nvidia-*` wheels loaded ahead of ONNX Runtime's CUDA
    /// provider (0 for the CPU wheel).
    pub cuda_libraries: usize,
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
    let cuda_libraries = preload_cuda_libraries(&cuda_wheel_libraries(&library));
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
    let info = RuntimeInfo {
        library,
        found_via,
        cuda_libraries,
    };
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

    #[test]
    fn cuda_libraries_of_the_gpu_wheel_are_found_beside_it() {
        // The layout of `pip install onnxruntime-gpu[cuda,cudnn]` in a venv.
        let t = tempfile::tempdir().unwrap();
        let site = t.path().join("lib/python3.11/site-packages");
        let capi = site.join("onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        let ort = capi.join("libonnxruntime.so.1.31.1");
        std::fs::write(&ort, b"").unwrap();
        for (pkg, lib) in [
            ("cu13", "libcudart.so.13"),
            ("cu13", "libcublasLt.so.13"),
            ("cudnn", "libcudnn.so.9"),
            ("cudnn", "libcudnn_graph.so.9"),
            ("cu13", "libnppc.so.13"),
        ] {
            let d = site.join("nvidia").join(pkg).join("lib");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(lib), b"").unwrap();
        }
        // The CPU wheel has no CUDA provider: nothing to load.
        assert!(cuda_wheel_libraries(&ort).is_empty());
        std::fs::write(capi.join("libonnxruntime_providers_cuda.so"), b"").unwrap();
        let names: Vec<String> = cuda_wheel_libraries(&ort)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "libcublasLt.so.13",
                "libcudart.so.13",
                "libcudnn.so.9",
                "libcudnn_graph.so.9"
            ]
        );
        // Empty files are not libraries: refused by the loader, reported, not fatal.
        assert_eq!(preload_cuda_libraries(&cuda_wheel_libraries(&ort)), 0);
    }

    /// `scripts/setup.sh` picks the GPU wheel exactly when `nvidia-smi` lists a GPU (faked
    /// here by a script earlier on PATH), in its dry-run mode that installs nothing.
    #[test]
    fn setup_installs_the_gpu_wheel_only_when_nvidia_smi_lists_a_gpu() {
        use std::os::unix::fs::PermissionsExt;
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let choice = |smi: Option<&str>| -> String {
            let t = tempfile::tempdir().unwrap();
            if let Some(body) = smi {
                let f = t.path().join("nvidia-smi");
                std::fs::write(&f, format!("#!/bin/sh\n{body}\n")).unwrap();
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            // PATH: the fake first, then only system folders (no real nvidia-smi).
            let out = std::process::Command::new("bash")
                .arg(root.join("scripts/setup.sh"))
                .env("SETUP_DRY_RUN", "1")
                .env_remove("DEFECT_DETECTOR_ORT")
                .env("PATH", format!("{}:/usr/bin:/bin", t.path().display()))
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let gpu = format!("onnxruntime-gpu[cuda,cudnn]=={ORT_WHEEL_VERSION}");
        let cpu = format!("wheel: onnxruntime=={ORT_WHEEL_VERSION}");
        let listed = choice(Some(
            "echo 'GPU 0: NVIDIA H200 (UUID: GPU-0f1e2d3c-0000-1111-2222-333344445555)'",
        ));
        assert!(listed.contains(&gpu), "{listed}");
        // Installed driver tools but no usable GPU (the usual error exit), or no tool at all.
        let broken = choice(Some(
            "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9",
        ));
        assert!(broken.contains(&cpu), "{broken}");
        if !std::path::Path::new("/usr/bin/nvidia-smi").exists() {
            let none = choice(None);
            assert!(none.contains(&cpu), "{none}");
        }
    }
}
