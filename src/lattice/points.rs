//! Point defects against the local lattice (vacancies and interstitials).

use super::{LatticeBoundary, LatticeMaps, LatticeParams, LatticePointDefect};
use crate::raster::ImageF32;

pub(crate) fn find(
    _img: &ImageF32,
    _maps: &LatticeMaps,
    _boundaries: &[LatticeBoundary],
    _params: &LatticeParams,
    _px_per_a: f64,
) -> Vec<LatticePointDefect> {
    Vec::new()
}
