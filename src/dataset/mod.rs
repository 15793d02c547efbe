//! YOLO-OBB datasets: label files, domain randomization, label-exact augmentation, export with
//! honest splits, shard merging and validation.

pub mod augment;
pub mod export;
pub mod like;
pub mod pseudo;
pub mod randomize;
pub mod review;
pub mod spec;
pub mod validate;
/// YOLO-OBB label files live with the other file formats; kept here under its old name.
pub use crate::formats::yolo;

pub use validate::{Report, validate_dataset};
