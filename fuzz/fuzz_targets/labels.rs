//! Feeds arbitrary text to the YOLO-OBB label parser (what the label editor, `eval` and the
//! dataset validator read) and writes back what it accepted: no panic, and what it accepts
//! must parse again.
#![no_main]

use defect_detector::dataset::yolo::{Validation, format_labels, parse_labels};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let v = Validation {
        num_classes: 3,
        tolerance: 0.5,
        min_area: 0.0,
    };
    if let Ok(labels) = parse_labels(text, "fuzz.txt", &v) {
        let again = format_labels(&labels);
        assert!(parse_labels(&again, "again.txt", &v).is_ok(), "{again}");
    }
});
