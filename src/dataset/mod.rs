//! YOLO-OBB datasets: label files, domain randomization, label-exact augmentation, export with
//! honest splits, shard merging and validation.
//!
//! An export is spread over four files: `config` (what the dataset is made of), `manifest` (the
//! files that describe it), `staging` (the output folder) and `export` (the pipeline, and the
//! one import for all of them); `merge` joins the folders of a sharded export.

pub mod augment;
mod config;
pub mod export;
pub mod like;
mod manifest;
pub mod merge;
pub mod pseudo;
pub mod randomize;
pub mod review;
pub mod spec;
mod staging;
pub mod validate;
/// YOLO-OBB label files live with the other file formats; kept here under its old name.
pub use crate::formats::yolo;

pub use validate::{Report, validate_dataset};
