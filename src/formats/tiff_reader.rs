//! TIFF through the `tiff` crate directly: `image` 0.25 refuses 32-bit float TIFF, which is
//! exactly what processed microscopy data is usually saved as.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, bail};
use tiff::ColorType;
use tiff::decoder::{Decoder, DecodingResult, Limits, ifd::Value};
use tiff::tags::Tag;

use super::meta::{ini_sections, truncate_value};
use super::{Decoded, check_dims, check_page, color_to_gray, plausible_or_noted, unit_to_nm};
use crate::raster::{ImageF32, PixelSize};

/// FEI / Thermo Fisher SEM and DualBeam INI-style metadata (`[Scan] PixelWidth=` in metres).
const TAG_FEI_SFEG: u16 = 34680;
const TAG_FEI_HELIOS: u16 = 34682;
/// Enough pages for any real stack; a longer IFD chain is a loop or corruption.
const MAX_PAGES: usize = 1 << 20;
/// Largest decoded-to-stored size ratio believed before allocating: far above what deflate or
/// LZW reach on real images, far below what a flipped header byte can claim.
pub(crate) const MAX_EXPANSION: u64 = 4096;
/// Any file may decode to this much regardless of its size (tiny synthetic tests, flat images).
pub(crate) const BASE_ALLOWANCE: u64 = 64 << 20;

fn open<R: Read + Seek>(r: R) -> anyhow::Result<Decoder<R>> {
    let mut limits = Limits::default();
    // Our own dimension guard (check_dims + size-vs-file check) bounds what is allocated;
    // the crate default (256 MiB) would refuse legitimate 16k x 16k 16-bit frames.
    limits.decoding_buffer_size = super::MAX_PIXELS * 4;
    limits.ifd_value_size = 64 << 20;
    // Writers such as PIL put a whole image in one strip: the per-segment buffer must be
    // allowed to be as large as the image.
    limits.intermediate_buffer_size = super::MAX_PIXELS * 4;
    Ok(Decoder::new(r)
        .context("not a readable TIFF (bad header or first directory)")?
        .with_limits(limits))
}

/// Counts directories; a chain broken after the first few still yields the pages before it,
/// since those are readable.
fn count_pages<R: Read + Seek>(dec: &mut Decoder<R>) -> usize {
    let mut n = 1;
    while dec.more_images() && n < MAX_PAGES {
        if dec.next_image().is_err() {
            break;
        }
        n += 1;
    }
    n
}

pub(crate) fn page_count<R: Read + Seek>(r: R) -> anyhow::Result<usize> {
    let mut dec = open(r)?;
    Ok(count_pages(&mut dec))
}

pub(crate) fn decode<R: Read + Seek>(mut r: R, page: usize) -> anyhow::Result<Decoded> {
    let file_len = r
        .seek(SeekFrom::End(0))
        .context("cannot seek in the file")?;
    r.seek(SeekFrom::Start(0))
        .context("cannot seek in the file")?;
    let mut dec = open(r)?;
    let pages = count_pages(&mut dec);
    check_page(page, pages)?;
    dec.seek_to_image(page)
        .with_context(|| format!("cannot read the directory of page {page}"))?;

    let (w, h) = dec.dimensions().context("missing image dimensions")?;
    let (w, h) = (w as usize, h as usize);
    check_dims(w, h)?;
    let color = dec.colortype().context("unsupported TIFF colour layout")?;
    let (channels, bits) = match color {
        ColorType::Gray(b) => (1, b),
        ColorType::GrayA(b) => (2, b),
        ColorType::RGB(b) => (3, b),
        ColorType::RGBA(b) => (4, b),
        other => bail!("unsupported TIFF colour type {other:?} (grayscale, RGB or RGBA only)"),
    };
    if !matches!(bits, 8 | 16 | 32 | 64) {
        bail!("unsupported TIFF bit depth {bits} (8, 16, 32 or 64 bits per sample only)");
    }
    let declared = (w * h * channels) as u64 * u64::from(bits / 8);
    let allowance = file_len.saturating_mul(MAX_EXPANSION).max(BASE_ALLOWANCE);
    if declared > allowance {
        bail!(
            "the header declares {w} x {h} pixels ({declared} bytes of samples) but the file \
             holds only {file_len} bytes: corrupt or truncated"
        );
    }
    let planar = matches!(
        dec.find_tag(Tag::PlanarConfiguration),
        Ok(Some(Value::Short(2)))
    ) || matches!(
        dec.find_tag(Tag::PlanarConfiguration),
        Ok(Some(Value::Unsigned(2)))
    );

    let mut buf = DecodingResult::U8(Vec::new());
    dec.read_image_to_buffer(&mut buf)
        .with_context(|| format!("cannot decode the pixels of page {page}"))?;
    let (samples, type_name) = to_f32(buf);
    if samples.len() < w * h * channels {
        bail!(
            "page {page} decoded to {} samples, expected {} ({w} x {h} x {channels})",
            samples.len(),
            w * h * channels
        );
    }

    let mut metadata = BTreeMap::new();
    let (image, pixel_type) = if channels == 1 {
        let mut s = samples;
        s.truncate(w * h);
        (ImageF32::from_vec(w, h, s), type_name.to_string())
    } else {
        let interleaved = if planar {
            interleave_planes(&samples, w * h, channels)
        } else {
            samples
        };
        if channels == 2 {
            // gray + alpha: the alpha plane carries no intensity
            let g = interleaved.chunks_exact(2).map(|p| p[0]).collect();
            (
                ImageF32::from_vec(w, h, g),
                format!("{type_name} GrayA (gray)"),
            )
        } else {
            let (img, gray) = color_to_gray(&interleaved, w, h, channels);
            let layout = if channels == 3 { "RGB" } else { "RGBA" };
            if !gray {
                metadata.insert(
                    "color_conversion".into(),
                    "colour image reduced to Rec. 601 luminance".into(),
                );
            }
            let how = if gray { "gray" } else { "luminance" };
            (img, format!("{type_name} {layout} ({how})"))
        }
    };

    let cal = calibration(&mut dec, &mut metadata);
    Ok(Decoded {
        image,
        pixel_size: cal.as_ref().map(|c| PixelSize { nm_per_px: c.0 }),
        original_unit: cal.map(|c| c.1),
        pixel_type,
        format: "TIFF".into(),
        pages,
        metadata,
    })
}

fn interleave_planes(planes: &[f32], n: usize, channels: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * channels);
    for i in 0..n {
        for c in 0..channels {
            out.push(planes[c * n + i]);
        }
    }
    out
}

fn to_f32(buf: DecodingResult) -> (Vec<f32>, &'static str) {
    fn conv<T: Copy>(v: Vec<T>, f: impl Fn(T) -> f32) -> Vec<f32> {
        v.into_iter().map(f).collect()
    }
    match buf {
        DecodingResult::U8(v) => (conv(v, f32::from), "u8"),
        DecodingResult::U16(v) => (conv(v, f32::from), "u16"),
        DecodingResult::U32(v) => (conv(v, |x| x as f32), "u32"),
        DecodingResult::U64(v) => (conv(v, |x| x as f32), "u64"),
        DecodingResult::I8(v) => (conv(v, f32::from), "i8"),
        DecodingResult::I16(v) => (conv(v, f32::from), "i16"),
        DecodingResult::I32(v) => (conv(v, |x| x as f32), "i32"),
        DecodingResult::I64(v) => (conv(v, |x| x as f32), "i64"),
        DecodingResult::F16(v) => (conv(v, |x| x.to_f32()), "f16"),
        DecodingResult::F32(v) => (v, "f32"),
        DecodingResult::F64(v) => (conv(v, |x| x as f32), "f64"),
    }
}

fn ascii_tag<R: Read + Seek>(dec: &mut Decoder<R>, tag: Tag) -> Option<String> {
    match dec.find_tag(tag) {
        Ok(Some(Value::Ascii(s))) => Some(s),
        // some writers store text as BYTE arrays
        Ok(Some(Value::List(v))) => {
            let bytes: Vec<u8> = v
                .into_iter()
                .map_while(|x| match x {
                    Value::Byte(b) => Some(b),
                    _ => None,
                })
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    }
}

fn number_tag<R: Read + Seek>(dec: &mut Decoder<R>, tag: Tag) -> Option<f64> {
    match dec.find_tag(tag).ok()?? {
        Value::Rational(n, d) if d != 0 => Some(f64::from(n) / f64::from(d)),
        Value::SRational(n, d) if d != 0 => Some(f64::from(n) / f64::from(d)),
        Value::Float(v) => Some(f64::from(v)),
        Value::Double(v) => Some(v),
        Value::Short(v) => Some(f64::from(v)),
        Value::Unsigned(v) => Some(f64::from(v)),
        Value::List(v) => match v.first()? {
            Value::Rational(n, d) if *d != 0 => Some(f64::from(*n) / f64::from(*d)),
            _ => None,
        },
        _ => None,
    }
}

/// Pixel size (nm, original unit), most trustworthy source first: the instrument's own
/// FEI header, then ImageJ's calibration, then plain resolution tags in a length unit.
fn calibration<R: Read + Seek>(
    dec: &mut Decoder<R>,
    metadata: &mut BTreeMap<String, String>,
) -> Option<(f64, String)> {
    for key in [Tag::Software, Tag::DateTime, Tag::Make, Tag::Model] {
        if let Some(s) = ascii_tag(dec, key) {
            let s = s.trim_matches(char::from(0)).trim();
            if !s.is_empty() {
                metadata.insert(format!("tiff.{key:?}"), truncate_value(s));
            }
        }
    }

    let fei = ascii_tag(dec, Tag::Unknown(TAG_FEI_HELIOS))
        .or_else(|| ascii_tag(dec, Tag::Unknown(TAG_FEI_SFEG)));
    let fei_cal = fei.and_then(|text| fei_calibration(&text, metadata));

    let desc = ascii_tag(dec, Tag::ImageDescription).unwrap_or_default();
    let xres = number_tag(dec, Tag::XResolution).filter(|v| v.is_finite() && *v > 0.0);
    let imagej_cal = if desc.starts_with("ImageJ=") {
        imagej_calibration(&desc, xres, metadata)
    } else {
        let d = desc.trim_matches(char::from(0)).trim();
        if !d.is_empty() {
            metadata.insert("tiff.ImageDescription".into(), truncate_value(d));
        }
        None
    };
    if fei_cal.is_some() {
        return fei_cal;
    }
    if imagej_cal.is_some() {
        return imagej_cal;
    }
    let unit = match number_tag(dec, Tag::ResolutionUnit) {
        Some(2.0) => "inch",
        Some(3.0) => "cm",
        _ => return None,
    };
    let nm = unit_to_nm(unit)? / xres?;
    plausible_or_noted(nm, "the TIFF resolution tags", metadata).map(|nm| (nm, unit.to_string()))
}

/// ImageJ stores pixels per `unit` in XResolution and the unit in its description.
fn imagej_calibration(
    desc: &str,
    xres: Option<f64>,
    metadata: &mut BTreeMap<String, String>,
) -> Option<(f64, String)> {
    let mut unit = None;
    for line in desc.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "unit" => unit = Some(v.to_string()),
            "ImageJ" | "images" | "slices" | "frames" | "channels" | "spacing" | "min" | "max" => {
                metadata.insert(format!("imagej.{k}"), truncate_value(v));
            }
            _ => {}
        }
    }
    let unit = unit?;
    let nm = unit_to_nm(&unit)? / xres?;
    let shown = match unit.as_str() {
        "micron" | "um" | "\\u00B5m" => "µm".to_string(),
        _ => unit,
    };
    plausible_or_noted(nm, "the ImageJ description", metadata).map(|nm| (nm, shown))
}

/// Thermo Fisher (FEI) SEM/FIB TIFF: an INI text with `[Scan] PixelWidth` in metres.
fn fei_calibration(text: &str, metadata: &mut BTreeMap<String, String>) -> Option<(f64, String)> {
    let ini = ini_sections(text);
    let get = |sec: &str, key: &str| {
        ini.get(sec)
            .and_then(|s| s.get(key))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    if let Some(hv) = get("Beam", "HV")
        .or_else(|| get("EBeam", "HV"))
        .and_then(|v| v.parse::<f64>().ok())
    {
        metadata.insert("voltage_kv".into(), format!("{}", hv / 1000.0));
    }
    if let Some(d) = get("Scan", "Dwelltime").or_else(|| get("EScan", "Dwell")) {
        metadata.insert("dwell_time_s".into(), truncate_value(d));
    }
    if let Some(d) = get("Detectors", "Name").or_else(|| get("Detectors", "Mode")) {
        metadata.insert("detector".into(), truncate_value(d));
    }
    if let Some(hfw) = get("Scan", "HorFieldsize") {
        metadata.insert("horizontal_field_width_m".into(), truncate_value(hfw));
    }
    if let Some(m) = get("System", "SystemType") {
        metadata.insert("instrument".into(), truncate_value(m));
    }
    let m_per_px: f64 = get("Scan", "PixelWidth")
        .or_else(|| get("EScan", "PixelWidth"))?
        .parse()
        .ok()?;
    let nm = m_per_px * 1e9;
    plausible_or_noted(nm, "the FEI header", metadata).map(|nm| (nm, "m".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fei_header_gives_pixel_width_and_voltage() {
        let text = "[User]\nDate=01/02/2020\n[Beam]\nHV=30000\n[Scan]\nPixelWidth=2.5e-10\n\
                    Dwelltime=1e-06\n[Detectors]\nName=ETD\n";
        let mut md = BTreeMap::new();
        let (nm, unit) = fei_calibration(text, &mut md).unwrap();
        assert!((nm - 0.25).abs() < 1e-12);
        assert_eq!(unit, "m");
        assert_eq!(md["voltage_kv"], "30");
        assert_eq!(md["detector"], "ETD");
        assert_eq!(md["dwell_time_s"], "1e-06");
    }

    #[test]
    fn imagej_units_are_converted() {
        let mut md = BTreeMap::new();
        let (nm, u) =
            imagej_calibration("ImageJ=1.53\nunit=micron\n", Some(100.0), &mut md).unwrap();
        assert!((nm - 10.0).abs() < 1e-9);
        assert_eq!(u, "µm");
        let (nm, _) = imagej_calibration("ImageJ=1.53\nunit=A\n", Some(2.0), &mut md).unwrap();
        assert!((nm - 0.05).abs() < 1e-12);
        assert!(imagej_calibration("ImageJ=1.53\nunit=pixel\n", Some(1.0), &mut md).is_none());
    }
}
