//! Feeds arbitrary bytes to every image loader. The first byte picks the file name (and with
//! it the decoder for formats without magic bytes); the rest is the file.
//!
//! `formats::load_from_bytes` turns decoder panics into errors with `catch_unwind`, but
//! libfuzzer-sys installs a panic hook that aborts first, so any panic is still reported as a
//! crash here, which is what we want to find.
#![no_main]

use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 8] = [
    "f.tif", "f.png", "f.jpg", "f.dm3", "f.dm4", "f.ser", "f.emd", "f.mrc",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let _ = defect_detector::formats::load_from_bytes(bytes, name, 0);
});
