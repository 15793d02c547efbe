//! How `detect` and `watch` find the pixel size of files that carry none.

use clap::Args;
use defect_detector::synth::crystal::{CrystalSpec, Preset};

#[derive(Args, Clone, Debug)]
pub struct CalibrationArgs {
    /// Crystal whose lattice calibrates files without a pixel size (cdte110, si110, gaas110).
    #[arg(long, default_value = "cdte110")]
    pub crystal: String,
    /// Do not estimate the pixel size of uncalibrated files from their lattice; use them at
    /// their own scale instead.
    #[arg(long)]
    pub no_lattice_calibration: bool,
    /// Use each file's own calibration even where its lattice contradicts it (by default a
    /// file whose crystal lattice lies more than 25 % from its stated scale, and nowhere near
    /// it, is detected at the lattice's pixel size, and a message says so).
    #[arg(long)]
    pub trust_file_calibration: bool,
    /// Where the pixel size is read from the lattice (a file without one, or one the lattice
    /// contradicts), run the model at that scale only, as `--crystal` reads it. By default it
    /// also runs at the scales the other preset crystals would give and the boxes are fused:
    /// a lattice tells the period, not which crystal it is.
    #[arg(long)]
    pub single_lattice_scale: bool,
    /// Run a calibrated frame at the model's pixel size only. By default a frame whose pixel
    /// size lies in the span the model was trained on (its metadata `nm_per_px_range`) and
    /// differs from the model's also runs as sampled, and the boxes are fused (twice the
    /// model runs): brought to the model's size, coarse frames lose boundaries and fine ones
    /// detail.
    #[arg(long)]
    pub model_scale_only: bool,
    /// Keep point-defect boxes centred inside a grain-boundary box (by default they are
    /// dropped: a defect on a boundary is neither bulk nor boundary, as the training labels
    /// have it, and a boundary's core shows gaps and extra spots of its own).
    #[arg(long)]
    pub keep_points_on_boundaries: bool,
    /// Keep point-defect boxes that reach past the frame's edge (by default they are dropped:
    /// half the columns a site is judged against are outside the field there, and the
    /// training labels place no point defect across the edge).
    #[arg(long)]
    pub keep_points_at_edges: bool,
    /// Skip the check that the frame's lattice is the crystal's (by default a frame whose
    /// strongest spectrum peaks mostly miss the crystal's lattice rings, e.g. a perovskite, gets
    /// a warning and its `lattice_match` in the summary; the check costs one spectrum and fit).
    #[arg(long)]
    pub no_crystal_check: bool,
    /// Keep the model's point-defect boxes as it drew them instead of fitting each to the
    /// lattice around it (angle, size, and centre across the rows of columns).
    #[arg(long)]
    pub no_cell_fit: bool,
    /// Test-time augmentation: also run the model on the frame's mirror image and its turns
    /// (8 copies in all) and fuse the boxes: steadier boxes and confidences for 8 model runs
    /// per frame.
    #[arg(long)]
    pub tta: bool,
}

impl CalibrationArgs {
    /// The crystal named by `--crystal`.
    pub fn crystal(&self) -> anyhow::Result<CrystalSpec> {
        Ok(Preset::named_crystal(&self.crystal)?.spec())
    }

    /// How `detect` and `watch` use the lattice of each frame with `method`.
    pub fn lattice_use(
        &self,
        method: defect_detector::detect::combine::DetectMethod,
    ) -> anyhow::Result<defect_detector::frame::LatticeUse> {
        let crystal = self.crystal()?;
        Ok(defect_detector::frame::LatticeUse {
            fit_cells: (!self.no_cell_fit)
                .then(|| defect_detector::lattice::cells::CellFitParams::for_crystal(&crystal)),
            crystal,
            calibrate: !self.no_lattice_calibration,
            check_file_calibration: !self.trust_file_calibration,
            method,
            tta: self
                .tta
                .then(defect_detector::detect::tta::default_transforms),
            hedge_lattice_scale: !self.single_lattice_scale,
            hedge_own_sampling: !self.model_scale_only,
            points_off_boundaries: !self.keep_points_on_boundaries,
            points_inside_frame: !self.keep_points_at_edges,
            check_crystal: !self.no_crystal_check,
            // Read from the model's card by the command that loads the model.
            training: None,
        })
    }
}
