//! YOLO-OBB datasets: label files, and (in `export`) writing whole datasets.

pub mod yolo;
