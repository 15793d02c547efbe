//! YOLO-OBB datasets: label files, domain randomization, label-exact augmentation, export with
//! honest splits, shard merging and validation.

pub mod augment;
pub mod export;
pub mod like;
pub mod pseudo;
pub mod randomize;
pub mod review;
pub mod validate;
pub mod yolo;

pub use validate::{Report, validate_dataset};
