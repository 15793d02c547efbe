//! Loader tests: round trips through files written here, corruption resistance, and checks
//! against the real instrument files in `../shared/samples` beside the repository (as in CI).

use std::io::Cursor;

use tiff::encoder::{Rational, TiffEncoder, colortype};
use tiff::tags::{ResolutionUnit, Tag};

use super::*;

const W: u32 = 24;
const H: u32 = 16;

fn ramp_u16() -> Vec<u16> {
    (0..W * H).map(|i| (i * 97 % 65535) as u16).collect()
}

struct TiffOpts<'a> {
    description: Option<&'a str>,
    resolution: Option<(ResolutionUnit, Rational)>,
    fei: Option<&'a str>,
}

const NO_TAGS: TiffOpts = TiffOpts {
    description: None,
    resolution: None,
    fei: None,
};

macro_rules! write_tiff {
    ($ct:ty, $pages:expr, $opts:expr) => {{
        let mut buf = Cursor::new(Vec::new());
        {
            let mut enc = TiffEncoder::new(&mut buf).unwrap();
            for data in $pages {
                let mut im = enc.new_image::<$ct>(W, H).unwrap();
                let o: &TiffOpts = $opts;
                if let Some(d) = o.description {
                    im.encoder().write_tag(Tag::ImageDescription, d).unwrap();
                }
                if let Some(f) = o.fei {
                    im.encoder().write_tag(Tag::Unknown(34682), f).unwrap();
                }
                if let Some((u, r)) = o.resolution.clone() {
                    im.resolution(u, r);
                }
                im.write_data(data).unwrap();
            }
        }
        buf.into_inner()
    }};
}

fn tmp_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn assert_values(img: &ImageF32, expect: impl IntoIterator<Item = f32>) {
    assert_eq!((img.width, img.height), (W as usize, H as usize));
    for (i, (a, b)) in img.data.iter().zip(expect).enumerate() {
        assert_eq!(*a, b, "pixel {i}");
    }
}

#[test]
fn tiff_u8_with_imagej_calibration() {
    let data: Vec<u8> = (0..W * H).map(|i| (i % 251) as u8).collect();
    // ImageJ: XResolution = pixels per unit; 50 px/nm -> 0.02 nm/px
    let opts = TiffOpts {
        description: Some("ImageJ=1.54f\nunit=nm\nspacing=1\n"),
        resolution: Some((ResolutionUnit::None, Rational { n: 50, d: 1 })),
        fei: None,
    };
    let bytes = write_tiff!(colortype::Gray8, [&data[..]], &opts);
    let dir = tempfile::tempdir().unwrap();
    let s = load(&tmp_file(&dir, "a.tif", &bytes)).unwrap();
    assert_values(&s.image, data.iter().map(|&v| f32::from(v)));
    assert_eq!(s.pixel_type, "u8");
    assert_eq!(s.format, "TIFF");
    assert_eq!(s.pages, 1);
    let px = s.pixel_size.unwrap().nm_per_px;
    assert!((px - 0.02).abs() < 1e-12, "{px}");
    assert_eq!(s.original_unit.as_deref(), Some("nm"));
    assert_eq!(s.metadata["imagej.ImageJ"], "1.54f");
}

#[test]
fn tiff_u16_with_centimetre_resolution() {
    let data = ramp_u16();
    // 2e7 px/cm = 0.5 nm/px
    let opts = TiffOpts {
        resolution: Some((
            ResolutionUnit::Centimeter,
            Rational {
                n: 20_000_000,
                d: 1,
            },
        )),
        ..NO_TAGS
    };
    let bytes = write_tiff!(colortype::Gray16, [&data[..]], &opts);
    let s = load_from_bytes(&bytes, "b.tiff", 0).unwrap();
    assert_values(&s.image, data.iter().map(|&v| f32::from(v)));
    assert_eq!(s.pixel_type, "u16");
    assert!((s.pixel_size.unwrap().nm_per_px - 0.5).abs() < 1e-12);
    assert_eq!(s.original_unit.as_deref(), Some("cm"));
}

#[test]
fn tiff_inch_dpi_default_is_not_a_calibration() {
    let data = ramp_u16();
    let opts = TiffOpts {
        resolution: Some((ResolutionUnit::Inch, Rational { n: 72, d: 1 })),
        ..NO_TAGS
    };
    let bytes = write_tiff!(colortype::Gray16, [&data[..]], &opts);
    let s = load_from_bytes(&bytes, "dpi.tif", 0).unwrap();
    assert!(s.pixel_size.is_none(), "72 dpi is a printer default");
    // Dropped with a note, not silently.
    let note = &s.metadata[CALIBRATION_IGNORED];
    assert!(
        note.contains("352777") && note.contains("uncalibrated"),
        "{note}"
    );
}

#[test]
fn tiff_f32_with_fei_header() {
    let data: Vec<f32> = (0..W * H).map(|i| (i as f32 - 100.0) * 0.37).collect();
    let opts = TiffOpts {
        fei: Some("[Beam]\r\nHV=200000\r\n[Scan]\r\nPixelWidth=1.25e-11\r\nDwelltime=2e-06\r\n"),
        ..NO_TAGS
    };
    let bytes = write_tiff!(colortype::Gray32Float, [&data[..]], &opts);
    let s = load_from_bytes(&bytes, "c.tif", 0).unwrap();
    assert_values(&s.image, data.iter().copied());
    assert_eq!(s.pixel_type, "f32");
    assert!((s.pixel_size.unwrap().nm_per_px - 0.0125).abs() < 1e-12);
    assert_eq!(s.original_unit.as_deref(), Some("m"));
    assert_eq!(s.metadata["voltage_kv"], "200");
    assert_eq!(s.metadata["dwell_time_s"], "2e-06");
}

#[test]
fn tiff_rgba_gray_export_keeps_values() {
    let gray: Vec<u8> = (0..W * H).map(|i| (i * 7 % 256) as u8).collect();
    let rgba: Vec<u8> = gray.iter().flat_map(|&g| [g, g, g, 255]).collect();
    let bytes = write_tiff!(colortype::RGBA8, [&rgba[..]], &NO_TAGS);
    let s = load_from_bytes(&bytes, "d.tif", 0).unwrap();
    assert_values(&s.image, gray.iter().map(|&v| f32::from(v)));
    assert_eq!(s.pixel_type, "u8 RGBA (gray)");

    // a true colour image falls back to luminance
    let rgb: Vec<u8> = (0..W * H).flat_map(|_| [255u8, 0, 0]).collect();
    let bytes = write_tiff!(colortype::RGB8, [&rgb[..]], &NO_TAGS);
    let s = load_from_bytes(&bytes, "e.tif", 0).unwrap();
    assert_eq!(s.pixel_type, "u8 RGB (luminance)");
    assert!((s.image.data[0] - 0.299 * 255.0).abs() < 1e-3);
}

#[test]
fn tiff_multi_page() {
    let pages: Vec<Vec<u16>> = (0..3u16)
        .map(|p| vec![1000 * (p + 1); (W * H) as usize])
        .collect();
    let bytes = write_tiff!(colortype::Gray16, pages.iter().map(|p| &p[..]), &NO_TAGS);
    let dir = tempfile::tempdir().unwrap();
    let path = tmp_file(&dir, "stack.tif", &bytes);
    assert_eq!(page_count(&path).unwrap(), 3);
    for p in 0..3 {
        let s = load_page(&path, p).unwrap();
        assert_eq!((s.pages, s.page), (3, p));
        assert!(s.image.data.iter().all(|&v| v == 1000.0 * (p as f32 + 1.0)));
    }
    let e = load_page(&path, 3).unwrap_err().to_string();
    assert!(e.contains("stack.tif") && e.contains("page 3"), "{e}");
}

fn png_bytes<P: image::PixelWithColorType>(img: image::ImageBuffer<P, Vec<P::Subpixel>>) -> Vec<u8>
where
    [P::Subpixel]: image::EncodableLayout,
{
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn png_8_and_16_bit_and_jpeg() {
    let data16 = ramp_u16();
    let b16 = png_bytes(
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(W, H, data16.clone()).unwrap(),
    );
    let s = load_from_bytes(&b16, "x.png", 0).unwrap();
    assert_values(&s.image, data16.iter().map(|&v| f32::from(v)));
    assert_eq!((s.pixel_type.as_str(), s.format.as_str()), ("u16", "PNG"));
    assert!(s.pixel_size.is_none());

    let data8: Vec<u8> = (0..W * H).map(|i| (i % 200) as u8).collect();
    let b8 = png_bytes(image::GrayImage::from_raw(W, H, data8.clone()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let s = load(&tmp_file(&dir, "y.PNG", &b8)).unwrap();
    assert_values(&s.image, data8.iter().map(|&v| f32::from(v)));

    // JPEG is lossy: a flat image comes back flat
    let flat = image::GrayImage::from_pixel(W, H, image::Luma([120u8]));
    let mut jb = Cursor::new(Vec::new());
    flat.write_to(&mut jb, image::ImageFormat::Jpeg).unwrap();
    let s = load(&tmp_file(&dir, "z.jpg", jb.get_ref())).unwrap();
    assert_eq!(s.format, "JPEG");
    assert!(s.image.data.iter().all(|&v| (v - 120.0).abs() <= 2.0));
    assert!(load_page(&dir.path().join("z.jpg"), 1).is_err());
}

/// A minimal MRC2014 file: 16-bit signed, cell of 1.5 Å per pixel.
fn mrc_bytes(nx: i32, ny: i32) -> Vec<u8> {
    let mut h = vec![0u8; 1024];
    let mut put_i =
        |word: usize, v: i32| h[word * 4..word * 4 + 4].copy_from_slice(&v.to_le_bytes());
    put_i(0, nx);
    put_i(1, ny);
    put_i(2, 1);
    put_i(3, 1); // mode 1: int16
    put_i(7, nx);
    put_i(8, ny);
    put_i(9, 1);
    put_i(16, 1);
    put_i(17, 2);
    put_i(18, 3);
    let mut put_f =
        |word: usize, v: f32| h[word * 4..word * 4 + 4].copy_from_slice(&v.to_le_bytes());
    put_f(10, nx as f32 * 1.5);
    put_f(11, ny as f32 * 1.5);
    put_f(12, 1.5);
    put_f(13, 90.0);
    put_f(14, 90.0);
    put_f(15, 90.0);
    h[208..212].copy_from_slice(b"MAP ");
    h[212..216].copy_from_slice(&[0x44, 0x44, 0, 0]);
    if nx > 0 && ny > 0 && i64::from(nx) * i64::from(ny) < 1 << 20 {
        for i in 0..nx * ny {
            h.extend_from_slice(&((i % 300) as i16 - 150).to_le_bytes());
        }
    }
    h
}

#[test]
fn mrc_through_openreadout_with_calibration() {
    let s = load_from_bytes(&mrc_bytes(W as i32, H as i32), "m.mrc", 0).unwrap();
    assert_values(
        &s.image,
        (0..W * H).map(|i| ((i % 300) as i16 - 150) as f32),
    );
    assert_eq!(s.pixel_type, "i16");
    assert!((s.pixel_size.unwrap().nm_per_px - 0.15).abs() < 1e-6);
    assert_eq!(s.original_unit.as_deref(), Some("Å"));
}

/// A little-endian TIFF whose only directory declares `w x h` 8-bit pixels and holds 16 bytes.
fn tiff_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut b = b"II*\0".to_vec();
    b.extend_from_slice(&8u32.to_le_bytes());
    let entries: [(u16, u16, u32); 8] = [
        (256, 4, w),
        (257, 4, h),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 8 * 12 + 4),
        (278, 4, h),
        (279, 4, w.saturating_mul(h)),
    ];
    b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, ty, v) in entries {
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&[7u8; 16]);
    b
}

#[test]
fn absurd_dimensions_are_refused_before_allocating() {
    let e = load_from_bytes(&tiff_header_only(100_000, 100_000), "huge.tif", 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("huge.tif") && e.contains("32768"), "{e}");
    // within the per-side limit but far more pixels than 16 bytes of file can hold
    let e = load_from_bytes(&tiff_header_only(30_000, 30_000), "big.tif", 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt or truncated"), "{e}");
    let e = load_from_bytes(&mrc_bytes(1 << 30, 1 << 30), "huge.mrc", 0).unwrap_err();
    assert!(e.to_string().contains("huge.mrc"), "{e}");
    assert!(check_dims(20_000, 20_000).is_ok());
    assert!(check_dims(32_768, 32_769).is_err());
    assert!(check_dims(32_768, 32_768).is_ok(), "exactly MAX_PIXELS");
    assert!(check_dims(0, 5).is_err());
}

#[test]
fn bad_inputs_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        tmp_file(&dir, "empty.tif", b""),
        tmp_file(&dir, "notes.txt", b"hello"),
        tmp_file(&dir, "fake.dm3", b"this is not a dm3 file at all"),
        tmp_file(&dir, "fake.emd", b"\x89HDF\r\n\x1a\n garbage"),
        tmp_file(&dir, "fake.ser", b"junkjunkjunk"),
        dir.path().join("missing.tif"),
        dir.path().to_path_buf(),
    ];
    for p in cases {
        let e = load(&p).expect_err(&p.display().to_string()).to_string();
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(
            !e.contains("decoder failed"),
            "a decoder panicked on {}: {e}",
            p.display()
        );
    }
}

#[test]
fn listing_and_extension_support() {
    let dir = tempfile::tempdir().unwrap();
    for n in [
        "b.tif",
        "a.DM3",
        "notes.txt",
        "c.emd",
        "d.png",
        "e.mrc",
        "s.emi",
        "s_1.ser",
        "s_2.ser",
        "t_1.ser",
    ] {
        tmp_file(&dir, n, b"x");
    }
    std::fs::create_dir(dir.path().join("sub.tif")).unwrap();
    let names: Vec<String> = list_images(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // the series of s.emi open through it; t_1.ser has no .emi and stays
    assert_eq!(
        names,
        [
            "a.DM3", "b.tif", "c.emd", "d.png", "e.mrc", "s.emi", "t_1.ser"
        ]
    );
    assert!(is_supported(Path::new("x.SER")) && is_supported(Path::new("x.emi")));
    assert!(!is_supported(Path::new("x.txt")) && !is_supported(Path::new("noext")));
    assert!(list_images(&dir.path().join("nope")).is_empty());
}

#[test]
fn json_has_metadata_but_no_pixels() {
    let bytes = write_tiff!(colortype::Gray16, [&ramp_u16()[..]], &NO_TAGS);
    let s = load_from_bytes(&bytes, "j.tif", 0).unwrap();
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["width"], W);
    assert_eq!(v["pixel_type"], "u16");
    assert!(v.get("data").is_none() && v.get("image").is_none());
    let back: StemInfo = serde_json::from_value(v).unwrap();
    assert_eq!(back, s.info());
}

/// Every valid test file, for the corruption loop.
fn valid_files() -> Vec<(Vec<u8>, &'static str)> {
    let u16s = ramp_u16();
    let f32s: Vec<f32> = u16s.iter().map(|&v| f32::from(v) * 0.5).collect();
    let rgba: Vec<u8> = (0..W * H)
        .flat_map(|i| [i as u8, i as u8, i as u8, 255])
        .collect();
    let cal = TiffOpts {
        description: Some("ImageJ=1.54f\nunit=micron\n"),
        resolution: Some((ResolutionUnit::None, Rational { n: 3, d: 1 })),
        fei: Some("[Scan]\nPixelWidth=1e-10\n"),
    };
    let mut jb = Cursor::new(Vec::new());
    image::GrayImage::from_fn(W, H, |x, y| image::Luma([(x * 9 + y * 3) as u8]))
        .write_to(&mut jb, image::ImageFormat::Jpeg)
        .unwrap();
    vec![
        (
            write_tiff!(
                colortype::Gray8,
                [&u16s.iter().map(|&v| v as u8).collect::<Vec<_>>()[..]],
                &cal
            ),
            "a.tif",
        ),
        (
            write_tiff!(colortype::Gray16, [&u16s[..], &u16s[..]], &NO_TAGS),
            "b.tif",
        ),
        (
            write_tiff!(colortype::Gray32Float, [&f32s[..]], &cal),
            "c.tif",
        ),
        (
            write_tiff!(colortype::RGBA8, [&rgba[..]], &NO_TAGS),
            "d.tif",
        ),
        (
            png_bytes(
                image::ImageBuffer::<image::Luma<u16>, _>::from_raw(W, H, u16s.clone()).unwrap(),
            ),
            "e.png",
        ),
        (jb.into_inner(), "f.jpg"),
        (mrc_bytes(W as i32, H as i32), "g.mrc"),
    ]
}

/// Deterministic corruption: truncation at many offsets and byte flips at many positions of
/// every valid file. Each variant must give `Ok` or an error; a panic (escaping or caught by
/// the guard, which reports "decoder failed") fails the test.
#[test]
fn corrupted_files_never_panic() {
    let (mut tried, mut loaded, mut refused) = (0usize, 0usize, 0usize);
    for (bytes, name) in valid_files() {
        assert!(
            load_from_bytes(&bytes, name, 0).is_ok(),
            "{name} must load intact"
        );
        let n = bytes.len();
        let mut variants: Vec<Vec<u8>> = Vec::new();
        let cuts = (0..n.min(300)).chain((300..n).step_by((n / 150).max(1)));
        for cut in cuts {
            variants.push(bytes[..cut].to_vec());
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for i in 0..400usize {
            let mut b = bytes.clone();
            // headers matter most: every byte of the first 256, then spread positions
            let pos = if i < 256 { i % n } else { (i * 7919) % n };
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b[pos] ^= [0xFF, 0x01, 0x80, (state & 0xFF) as u8 | 1][i % 4];
            variants.push(b);
        }
        for v in variants {
            tried += 1;
            let r = std::panic::catch_unwind(|| load_from_bytes(&v, name, 0));
            match r {
                Err(_) => panic!(
                    "{name}: a panic escaped load_from_bytes ({} bytes)",
                    v.len()
                ),
                Ok(Err(e)) => {
                    let m = e.to_string();
                    assert!(
                        !m.contains("decoder failed"),
                        "{name}: caught decoder panic: {m}"
                    );
                    assert!(m.contains(name), "{m}");
                    refused += 1;
                }
                Ok(Ok(s)) => {
                    assert!(s.image.data.len() == s.width() * s.height());
                    loaded += 1;
                }
            }
        }
    }
    // both outcomes must occur, or the variants are not exercising the decoders
    assert!(
        tried > 3000 && loaded > 100 && refused > 1000,
        "{tried} {loaded} {refused}"
    );
}

/// The real instrument files (GPL, so not in the repository): beside it, as CI has them.
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/samples");

/// `None`, after saying why, when the samples folder is not there (a checkout on its own);
/// the tests using it then check nothing and say so.
fn samples() -> Option<&'static Path> {
    let dir = Path::new(SAMPLES);
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: no real samples at {SAMPLES}");
        None
    }
}

fn sample(name: &str) -> PathBuf {
    Path::new(SAMPLES).join(name)
}

/// Dimensions and pixel sizes from ../shared/samples/SOURCES.md.
#[test]
fn real_samples_load_with_calibration() {
    if samples().is_none() {
        return;
    }
    let cases = [
        (
            "Si011_tilt-GB_HAADF85_ingrained.dm3",
            512,
            0.016388,
            "Gatan DM3",
        ),
        (
            "SrTiO3_HAADF_TitanCubed_openNCEM.emi",
            1024,
            0.01001,
            "FEI TIA",
        ),
        (
            "SrTiO3_HAADF_TitanCubed_openNCEM_1.ser",
            1024,
            0.01001,
            "FEI TIA",
        ),
        (
            "Au_nanoparticles_HAADF_temul_velox.emd",
            2048,
            0.007498,
            "Velox",
        ),
    ];
    for (name, side, nm, fmt) in cases {
        let s = load(&sample(name)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((s.width(), s.height()), (side, side), "{name}");
        assert_eq!(s.pixel_type, "u16", "{name}");
        assert!(s.format.contains(fmt), "{name}: {}", s.format);
        let px = s.pixel_size.expect(name).nm_per_px;
        assert!(
            (px - nm).abs() / nm < 1e-3,
            "{name}: {px} nm/px, expected {nm}"
        );
        assert!(s.metadata.contains_key("voltage_kv"), "{name}");
        let (lo, hi) = s.image.min_max();
        assert!(hi > lo, "{name} is flat");
        assert_eq!(page_count(&sample(name)).unwrap(), 1);
        // the same through memory (drag and drop); the .emi needs its .ser beside it
        if !name.ends_with(".emi") {
            let bytes = std::fs::read(sample(name)).unwrap();
            let m = load_from_bytes(&bytes, name, 0).unwrap();
            assert_eq!(m.image, s.image, "{name}");
        }
    }
}

/// The corruption loop on the real files (slower: megabyte files).
#[test]
fn real_samples_corrupted_never_panic() {
    if samples().is_none() {
        return;
    }
    for name in [
        "Si011_tilt-GB_HAADF85_ingrained.dm3",
        "SrTiO3_HAADF_TitanCubed_openNCEM_1.ser",
        "Au_nanoparticles_HAADF_temul_velox.emd",
    ] {
        let bytes = std::fs::read(sample(name)).unwrap();
        let n = bytes.len();
        let mut variants: Vec<Vec<u8>> = (0..40).map(|k| bytes[..k * n / 40].to_vec()).collect();
        for i in 0..200usize {
            let mut b = bytes.clone();
            let pos = if i < 100 {
                i * 13 % n
            } else {
                (i * 104_729) % n
            };
            b[pos] ^= 0xFF;
            variants.push(b);
        }
        for v in variants {
            match std::panic::catch_unwind(|| load_from_bytes(&v, name, 0)) {
                Err(_) => panic!("{name}: panic escaped"),
                Ok(Err(e)) => assert!(!e.to_string().contains("decoder failed"), "{name}: {e}"),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// A DM3 cut at 300 kB used to open as its 192x192 thumbnail (burned-in scale bar included).
#[test]
fn a_truncated_dm3_is_refused_not_shown_as_its_thumbnail() {
    if samples().is_none() {
        return;
    }
    let name = "Si011_tilt-GB_HAADF85_ingrained.dm3";
    let bytes = std::fs::read(sample(name)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join(name);
    std::fs::write(&cut, &bytes[..300_000]).unwrap();
    for r in [load(&cut), load_from_bytes(&bytes[..300_000], name, 0)] {
        let e = format!("{:#}", r.expect_err("a truncated DM3 was loaded"));
        assert!(e.contains("truncated") && e.contains("300000"), "{e}");
    }
    // The whole file still loads.
    assert_eq!(load(&sample(name)).unwrap().width(), 512);
}
