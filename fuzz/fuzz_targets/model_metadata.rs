//! Feeds arbitrary text to the parsers of a model's metadata (`names`, `imgsz`) and the input
//! size check, as `Detector::load` runs them on a file's contents: no panic, no allocation
//! sized by the file.
#![no_main]

use defect_detector::detect::model::{check_input_shape, parse_imgsz, parse_names};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_names(text);
    if let Ok(sz) = parse_imgsz(text) {
        let _ = check_input_shape(&[1, 3, -1, -1], Some(sz));
    }
});
