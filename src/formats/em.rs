//! Electron-microscopy containers (DM3/DM4, SER/EMI, Velox and Berkeley EMD, MRC) through
//! `openreadout-em`, which also supplies the pixel calibration.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use openreadout_core::model::{FileInfo, ImageInfo};
use openreadout_core::source::Input;
use openreadout_core::{Dataset, FormatReader, PixelType, PlaneIndex};
use serde_json::Value;

use super::meta::{find_key, flatten_json, scalar, truncate_value};
use super::{Decoded, Kind, check_dims, check_page, color_to_gray, plausible_or_noted};
use crate::raster::{ImageF32, PixelSize};

pub(crate) enum Source<'a> {
    Path(&'a Path),
    /// Bytes in memory and the name they go by (its extension selects the reader).
    Bytes(&'a [u8], &'a Path),
}

fn reader(kind: Kind) -> Box<dyn FormatReader> {
    match kind {
        Kind::Dm => Box::new(openreadout_em::DmReader),
        Kind::Ser => Box::new(openreadout_em::SerReader),
        Kind::Emd => Box::new(openreadout_em::EmdReader),
        _ => Box::new(openreadout_em::MrcReader),
    }
}

fn open(src: &Source, kind: Kind) -> anyhow::Result<(Box<dyn Dataset>, FileInfo)> {
    let input = match src {
        Source::Path(p) => Input::local(*p),
        Source::Bytes(b, name) => Input::from_bytes(name, b.to_vec()),
    };
    let ds = reader(kind)
        .open_input(&input)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = ds.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((ds, info))
}

/// Images a viewer can show: 2-D planes, not spectra, spectrum images or packed FFT halves.
fn displayable(im: &ImageInfo) -> bool {
    let flag = |k: &str| im.extra.get(k).and_then(Value::as_bool).unwrap_or(false);
    im.size_x >= 2
        && im.size_y >= 2
        && matches!(im.samples_per_pixel, 1 | 3 | 4)
        && !flag("spectrum_image")
        && !flag("packed_half_plane")
        && !im.extra.contains_key("spectral_axis")
        && !im.extra.contains_key("energy_axis")
}

struct PageRef<'a> {
    image: &'a ImageInfo,
    plane: PlaneIndex,
}

fn pages_of(info: &FileInfo) -> u64 {
    info.images
        .iter()
        .filter(|im| displayable(im))
        .map(|im| im.plane_count)
        .fold(0u64, u64::saturating_add)
}

/// Page `page` in file order: images first, then time, z and channel within an image.
fn page_ref(info: &FileInfo, mut page: u64) -> Option<PageRef<'_>> {
    for im in info.images.iter().filter(|im| displayable(im)) {
        if page < im.plane_count {
            let c = u64::from(im.size_c.max(1));
            let z = u64::from(im.size_z.max(1));
            let plane = PlaneIndex {
                c: (page % c) as u32,
                z: ((page / c) % z) as u32,
                t: (page / (c * z)) as u32,
            };
            return Some(PageRef { image: im, plane });
        }
        page -= im.plane_count;
    }
    None
}

fn no_images(info: &FileInfo) -> anyhow::Error {
    anyhow::anyhow!(
        "the file holds no 2-D image ({} image entries, {} traces; spectra and spectrum images \
         are not shown)",
        info.images.len(),
        info.traces.len()
    )
}

pub(crate) fn page_count(src: Source, kind: Kind) -> anyhow::Result<usize> {
    let (_, info) = open(&src, kind)?;
    let n = pages_of(&info);
    if n == 0 {
        return Err(no_images(&info));
    }
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Why a DM3/DM4 file is shorter than its header says, if it is. The tag tree is read as far
/// as it goes, so a cut file still opens: with the main image gone, as the thumbnail (burned-in
/// scale bar and all), which must not pass for the image.
fn dm_truncation(head: &[u8], file_len: u64) -> Option<String> {
    let (declared, header) = match head {
        [0, 0, 0, 3, a, b, c, d, ..] => (u64::from(u32::from_be_bytes([*a, *b, *c, *d])), 12),
        [0, 0, 0, 4, rest @ ..] if rest.len() >= 8 => {
            (u64::from_be_bytes(rest[..8].try_into().ok()?), 16)
        }
        _ => return None,
    };
    let needed = declared.saturating_add(header);
    (file_len < needed).then(|| {
        format!(
            "truncated file: it holds {file_len} bytes, its header declares {needed}; \
             refusing to show what is left (often only the thumbnail)"
        )
    })
}

fn check_dm_length(src: &Source) -> anyhow::Result<()> {
    let (head, len) = match src {
        Source::Bytes(b, _) => (b[..b.len().min(16)].to_vec(), b.len() as u64),
        Source::Path(p) => {
            use std::io::Read;
            let mut f = std::fs::File::open(p)?;
            let len = f.metadata()?.len();
            let mut head = Vec::with_capacity(16);
            f.by_ref().take(16).read_to_end(&mut head)?;
            (head, len)
        }
    };
    match dm_truncation(&head, len) {
        Some(why) => bail!(why),
        None => Ok(()),
    }
}

pub(crate) fn decode(src: Source, kind: Kind, page: usize) -> anyhow::Result<Decoded> {
    if kind == Kind::Dm {
        check_dm_length(&src)?;
    }
    let (mut ds, info) = open(&src, kind)?;
    let total = pages_of(&info);
    if total == 0 {
        return Err(no_images(&info));
    }
    let pages = usize::try_from(total).unwrap_or(usize::MAX);
    check_page(page, pages)?;
    let r = page_ref(&info, page as u64).context("page index out of range")?;
    let im = r.image;
    let (w, h) = (im.size_x as usize, im.size_y as usize);
    check_dims(w, h)?;
    if let Some(why) = ds.pixels_refused(im.index) {
        bail!("the pixels of image {} cannot be read: {why}", im.index);
    }
    let plane = ds
        .read_plane(im.index, r.plane)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot read the pixels of page {page}"))?;
    if plane.width as usize != w || plane.height as usize != h {
        bail!(
            "the reader returned a {} x {} plane for an image declared {w} x {h}",
            plane.width,
            plane.height
        );
    }
    let spp = plane.samples_per_pixel.max(1) as usize;
    if plane.data.len() < plane.expected_len() {
        bail!(
            "the plane holds {} bytes, {} expected: truncated file",
            plane.data.len(),
            plane.expected_len()
        );
    }
    let samples: Vec<f32> = plane
        .pixel_type
        .samples_f64(&plane.data[..plane.expected_len()])
        .map(|v| v as f32)
        .collect();
    let type_name = pixel_type_name(plane.pixel_type);
    let (image, pixel_type) = match spp {
        1 => (ImageF32::from_vec(w, h, samples), type_name.to_string()),
        3 | 4 => {
            let (img, gray) = color_to_gray(&samples, w, h, spp);
            let layout = if spp == 3 { "RGB" } else { "RGBA" };
            let how = if gray { "gray" } else { "luminance" };
            (img, format!("{type_name} {layout} ({how})"))
        }
        n => bail!("unsupported layout: {n} samples per pixel"),
    };

    let vendor = ds.vendor_metadata().ok();
    let mut metadata = metadata(&info, im, r.plane, vendor.as_ref());
    let nm = im
        .physical_size
        .x
        .or(im.physical_size.y)
        .map(|um| um * 1000.0)
        .and_then(|nm| plausible_or_noted(nm, "the file's calibration", &mut metadata));
    let original_unit = nm.map(|_| original_unit(kind, im));
    let format = match &info.format_version {
        Some(v) if kind == Kind::Dm => format!("Gatan {v}"),
        _ => info.format.name.clone(),
    };
    Ok(Decoded {
        image,
        pixel_size: nm.map(|nm_per_px| PixelSize { nm_per_px }),
        original_unit,
        pixel_type,
        format,
        pages,
        metadata,
    })
}

fn pixel_type_name(t: PixelType) -> &'static str {
    match t {
        PixelType::Int8 => "i8",
        PixelType::Int16 => "i16",
        PixelType::Int32 => "i32",
        PixelType::Int64 => "i64",
        PixelType::Uint8 => "u8",
        PixelType::Uint16 => "u16",
        PixelType::Uint32 => "u32",
        PixelType::Uint64 => "u64",
        PixelType::Float => "f32",
        PixelType::Double => "f64",
        PixelType::ComplexFloat => "complex f32 (modulus)",
        PixelType::ComplexDouble => "complex f64 (modulus)",
        _ => "other",
    }
}

/// The reader normalises lengths to µm; say what the file itself used.
fn original_unit(kind: Kind, im: &ImageInfo) -> String {
    let dm_unit = || {
        im.extra
            .get("calibrations")?
            .as_array()?
            .first()?
            .get("units")?
            .as_str()
            .map(str::to_string)
            .filter(|s| !s.trim().is_empty())
    };
    match kind {
        Kind::Dm => dm_unit().unwrap_or_else(|| "µm".into()),
        Kind::Ser | Kind::Emd => "m".into(),
        Kind::Mrc => "Å".into(),
        _ => "µm".into(),
    }
}

fn metadata(
    info: &FileInfo,
    im: &ImageInfo,
    plane: PlaneIndex,
    vendor: Option<&Value>,
) -> BTreeMap<String, String> {
    let mut md = BTreeMap::new();
    if let Some(n) = &im.name {
        md.insert("image_name".into(), truncate_value(n));
    }
    if let Some(v) = &info.format_version {
        md.insert("format_version".into(), truncate_value(v));
    }
    if let Some(t) = &im.acquired_at {
        md.insert("acquired_at".into(), truncate_value(t));
    }
    if let Some(ins) = &im.instrument {
        for (k, v) in [
            ("manufacturer", &ins.manufacturer),
            ("instrument", &ins.model),
            ("software", &ins.software),
            ("software_version", &ins.software_version),
            ("detector", &ins.detector),
        ] {
            if let Some(v) = v {
                md.insert(k.into(), truncate_value(v));
            }
        }
    }
    if !md.contains_key("detector")
        && let Some(name) = im
            .channels
            .get(plane.c as usize)
            .and_then(|c| c.name.as_ref())
    {
        md.insert("detector".into(), truncate_value(name));
    }
    if im.plane_count > 1 {
        md.insert(
            "plane".into(),
            format!("c={} z={} t={}", plane.c, plane.z, plane.t),
        );
    }
    if let Some(t) = im.time_increment_s {
        md.insert("frame_time_s".into(), format!("{t}"));
    }
    let mut extra = BTreeMap::new();
    for (k, v) in &im.extra {
        // per-axis tables are shown by the calibration itself
        if matches!(
            k.as_str(),
            "calibrations" | "scan_dimensions" | "dimensions"
        ) {
            continue;
        }
        flatten_json(k, v, &mut extra);
    }
    // Normalised names first, so the GUI can show the same fields for every format.
    let pick = |keys: &[&str]| keys.iter().find_map(|k| extra.get(*k).cloned());
    if let Some(v) = pick(&["voltage_kv", "high_tension_kv"]) {
        md.insert("voltage_kv".into(), v);
    }
    if let Some(v) = pick(&[
        "magnification",
        "microscope.indicated_magnification",
        "microscope.actual_magnification",
    ]) {
        md.insert("magnification".into(), v);
    }
    if let Some(v) = vendor.and_then(|v| find_key(v, "dwell", "", 0)) {
        md.insert("dwell_time".into(), format!("{} ({})", v.1, v.0));
    } else if let Some(v) =
        vendor.and_then(|v| find_key(v, "sample time", "", 0).or(find_key(v, "pixel time", "", 0)))
    {
        md.insert("dwell_time".into(), format!("{} ({})", v.1, v.0));
    }
    for (k, v) in extra {
        md.entry(k).or_insert(v);
    }
    if !info.notes.is_empty() {
        let notes: Vec<String> = info
            .notes
            .iter()
            .map(|n| scalar(&Value::from(n.as_str())))
            .collect();
        md.insert("reader_notes".into(), truncate_value(&notes.join("; ")));
    }
    md
}
