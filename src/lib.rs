//! Defect Detector: synthetic STEM imagery with exact oriented-box labels, YOLO-OBB datasets,
//! ONNX detection, evaluation and VLM screening. This library holds the science and the I/O;
//! it never depends on the GUI (which lives in the binary's `app` module tree).

pub mod bench;
pub mod classes;
pub mod clock;
pub mod dataset;
pub mod detect;
pub mod eval;
pub mod formats;
pub mod frame;
pub mod fsio;
pub mod geometry;
pub mod jobs;
pub mod lattice;
pub mod raster;
pub mod realism;
pub mod synth;
#[cfg(test)]
mod test_support;
pub mod vlm;
pub mod watch;
