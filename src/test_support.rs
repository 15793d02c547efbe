//! Helpers shared by the library's tests.

use std::path::PathBuf;

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
