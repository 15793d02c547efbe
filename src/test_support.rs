//! Helpers shared by the library's tests.

use crate::detect::{Detector, DetectorOptions, Device};
use std::path::{Path, PathBuf};

/// The real frames folder beside the repository (`../shared/samples`), or `None` with the reason
/// printed where it is absent, so tests that need it skip instead of failing.
pub fn samples() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipped: the real frames folder {} is absent", p.display());
        None
    }
}

/// A model of the repository (`tests/data/…` or `models/…`, relative to its root) loaded on the
/// CPU, as CI runs it.
pub fn cpu_detector(relative: &str) -> Detector {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    Detector::load(
        &path,
        &DetectorOptions {
            device: Device::Cpu,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}
