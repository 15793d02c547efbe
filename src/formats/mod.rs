//! Microscopy image files: loading (TIFF, PNG, JPEG, DM3/DM4, SER/EMI, Velox and Berkeley EMD,
//! MRC) into one calibrated single-channel f32 image, plus the viewer-side science that needs
//! no GUI: contrast and colour maps ([`display`]) and power spectra ([`fft`]).
//!
//! Every loader is defensive: header dimensions are checked against [`MAX_SIDE`] and
//! [`MAX_PIXELS`] before anything is allocated, third-party decoders run under `catch_unwind`,
//! and every failure is an error naming the file and the reason.

pub mod display;
mod em;
pub mod fft;
mod meta;
mod raster_formats;
mod tiff_reader;
pub mod yolo;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::raster::{ImageF32, PixelSize};

/// Largest accepted width or height. Real detectors top out at 16k; anything above this in
/// a header is corruption, not data.
pub const MAX_SIDE: usize = 32768;
/// Largest accepted pixel count (4 GiB of f32): refused before any buffer is allocated.
pub const MAX_PIXELS: usize = 1 << 30;

/// One 2-D image from a microscopy file, as raw intensities with its calibration.
#[derive(Clone, Debug)]
pub struct StemImage {
    /// Raw values converted to f32 (no rescaling), row-major, y down.
    pub image: ImageF32,
    /// Pixel size in nm/px, when the file records a physical calibration.
    pub pixel_size: Option<PixelSize>,
    /// The length unit the file used for its calibration (e.g. "nm", "µm", "m", "Å").
    pub original_unit: Option<String>,
    /// Sample type as stored, e.g. "u16", "f32", "u8 RGBA (gray)".
    pub pixel_type: String,
    /// Human-readable format name, e.g. "TIFF", "Gatan DM3".
    pub format: String,
    /// Number of 2-D images (pages, frames, detector channels) the file holds.
    pub pages: usize,
    /// Which of them this is (0-based).
    pub page: usize,
    /// Acquisition metadata where present (voltage_kv, magnification, detector, dwell_time...)
    /// plus other useful header fields, as display strings.
    pub metadata: BTreeMap<String, String>,
    /// The file it came from (for in-memory loads, the name hint).
    pub path: PathBuf,
}

/// The serialisable description of a [`StemImage`]: everything but the pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StemInfo {
    pub path: PathBuf,
    pub format: String,
    pub width: usize,
    pub height: usize,
    pub pixel_type: String,
    pub pixel_size: Option<PixelSizeInfo>,
    pub pages: usize,
    pub page: usize,
    pub metadata: BTreeMap<String, String>,
}

/// Calibration as reported: the value in nm and the unit the file used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PixelSizeInfo {
    pub nm_per_px: f64,
    pub original_unit: Option<String>,
}

impl StemImage {
    pub fn width(&self) -> usize {
        self.image.width
    }

    pub fn height(&self) -> usize {
        self.image.height
    }

    pub fn info(&self) -> StemInfo {
        StemInfo {
            path: self.path.clone(),
            format: self.format.clone(),
            width: self.image.width,
            height: self.image.height,
            pixel_type: self.pixel_type.clone(),
            pixel_size: self.pixel_size.map(|p| PixelSizeInfo {
                nm_per_px: p.nm_per_px,
                original_unit: self.original_unit.clone(),
            }),
            pages: self.pages,
            page: self.page,
            metadata: self.metadata.clone(),
        }
    }
}

/// Serialises as [`StemInfo`]: pixel data is never written to JSON.
impl Serialize for StemImage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.info().serialize(s)
    }
}

/// What a decoder hands back before the shared post-processing (path, page bookkeeping).
pub(crate) struct Decoded {
    pub image: ImageF32,
    pub pixel_size: Option<PixelSize>,
    pub original_unit: Option<String>,
    pub pixel_type: String,
    pub format: String,
    pub pages: usize,
    pub metadata: BTreeMap<String, String>,
}

/// File kinds we can read, decided from magic bytes first and the extension second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tiff,
    Png,
    Jpeg,
    Dm,
    Ser,
    Emd,
    Mrc,
}

const EXTENSIONS: &[(&str, Kind)] = &[
    ("tif", Kind::Tiff),
    ("tiff", Kind::Tiff),
    ("png", Kind::Png),
    ("jpg", Kind::Jpeg),
    ("jpeg", Kind::Jpeg),
    ("dm3", Kind::Dm),
    ("dm4", Kind::Dm),
    ("ser", Kind::Ser),
    ("emi", Kind::Ser),
    ("emd", Kind::Emd),
    ("mrc", Kind::Mrc),
    ("mrcs", Kind::Mrc),
    ("map", Kind::Mrc),
    ("st", Kind::Mrc),
    ("rec", Kind::Mrc),
];

fn kind_from_extension(path: &Path) -> Option<Kind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    EXTENSIONS.iter().find(|(e, _)| *e == ext).map(|(_, k)| *k)
}

fn kind_from_magic(head: &[u8]) -> Option<Kind> {
    match head {
        [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => Some(Kind::Tiff),
        [b'I', b'I', 43, 0, ..] | [b'M', b'M', 0, 43, ..] => Some(Kind::Tiff),
        [0x89, b'P', b'N', b'G', ..] => Some(Kind::Png),
        [0xFF, 0xD8, 0xFF, ..] => Some(Kind::Jpeg),
        // DM3/DM4 start with the big-endian format version
        [0, 0, 0, 3 | 4, ..] => Some(Kind::Dm),
        _ if openreadout_em::emd::looks_like_hdf5(head) => Some(Kind::Emd),
        _ if openreadout_em::ser::looks_like_ser(head) => Some(Kind::Ser),
        _ => None,
    }
}

fn detect(head: &[u8], name: &Path) -> anyhow::Result<Kind> {
    let by_ext = kind_from_extension(name);
    // An .emi holds XML, no magic: trust the extension for it.
    if by_ext == Some(Kind::Ser) {
        return Ok(Kind::Ser);
    }
    if let Some(k) = kind_from_magic(head) {
        return Ok(k);
    }
    match by_ext {
        // MRC has no reliable magic at offset 0 (the "MAP " stamp is at 208, and old files
        // lack it), so its extension is the signal.
        Some(Kind::Mrc) => Ok(Kind::Mrc),
        Some(k) => bail!(
            "the content does not look like a {} file (unrecognised header bytes)",
            kind_name(k)
        ),
        None => bail!(
            "unsupported file type (supported: {})",
            EXTENSIONS
                .iter()
                .map(|(e, _)| *e)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Tiff => "TIFF",
        Kind::Png => "PNG",
        Kind::Jpeg => "JPEG",
        Kind::Dm => "Gatan DM",
        Kind::Ser => "FEI TIA SER",
        Kind::Emd => "EMD (HDF5)",
        Kind::Mrc => "MRC",
    }
}

/// The file extensions [`load`] reads (lower case), for file dialogs: the one list, so a
/// dialog offers what the loaders and folder listings accept.
pub fn extensions() -> impl Iterator<Item = &'static str> {
    EXTENSIONS.iter().map(|(e, _)| *e)
}

/// The extensions of the plain picture formats (TIFF, PNG, JPEG) among [`extensions`]: what
/// the `image` crate decodes, for folders of picture files such as VLM patches.
pub fn picture_extensions() -> impl Iterator<Item = &'static str> {
    EXTENSIONS
        .iter()
        .filter(|(_, k)| matches!(k, Kind::Tiff | Kind::Png | Kind::Jpeg))
        .map(|(e, _)| *e)
}

/// True when the extension names a format [`load`] reads.
pub fn is_supported(path: &Path) -> bool {
    kind_from_extension(path).is_some()
}

/// Supported images directly inside `dir`, sorted by file name. Unreadable directories give
/// an empty list (folder browsing must not fail on a permission problem). An `.emi` whose
/// `_1.ser` sits next to it is listed once, as the `.emi`, since both open the same data.
pub fn list_images(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| is_supported(p))
        .collect();
    files.sort();
    let emi_stems: std::collections::HashSet<String> = files
        .iter()
        .filter(|p| has_ext(p, "emi"))
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect();
    files.retain(|p| {
        !(has_ext(p, "ser") && ser_series_of(p).is_some_and(|s| emi_stems.contains(&s)))
    });
    files
}

fn has_ext(p: &Path, ext: &str) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

/// TIA names the series files of `name.emi` as `name_1.ser`, `name_2.ser`, ...
fn ser_series_of(p: &Path) -> Option<String> {
    let stem = p.file_stem()?.to_str()?;
    let (base, num) = stem.rsplit_once('_')?;
    (!num.is_empty() && num.bytes().all(|b| b.is_ascii_digit())).then(|| base.to_string())
}

/// Loads the first image of a file.
pub fn load(path: &Path) -> anyhow::Result<StemImage> {
    load_page(path, 0)
}

/// Loads image `page` (0-based) of a multi-image file: TIFF pages, frames of a stack, or the
/// detector images of a Velox file, in file order.
pub fn load_page(path: &Path, page: usize) -> anyhow::Result<StemImage> {
    let r = guarded(|| decode_path(path, Some(page)));
    finish(r, path, page)
}

/// Number of 2-D images in a file, reading headers only where the format allows.
pub fn page_count(path: &Path) -> anyhow::Result<usize> {
    guarded(|| {
        let kind = detect(&read_head(path)?, path)?;
        match kind {
            Kind::Tiff => tiff_reader::page_count(open_buffered(path)?),
            Kind::Png | Kind::Jpeg => Ok(1),
            _ => em::page_count(em::Source::Path(path), kind),
        }
    })
    .map_err(|e| file_error(path, e))
}

/// Loads page `page` of a file held in memory (drag and drop, fuzzing). `name_hint` supplies
/// the extension when the content has no magic bytes (MRC, EMI) and names the image in errors.
pub fn load_from_bytes(bytes: &[u8], name_hint: &str, page: usize) -> anyhow::Result<StemImage> {
    let name = Path::new(name_hint);
    let r = guarded(|| {
        if bytes.is_empty() {
            bail!("the file is empty");
        }
        let kind = detect(&bytes[..bytes.len().min(4096)], name)?;
        match kind {
            Kind::Tiff => tiff_reader::decode(std::io::Cursor::new(bytes), page),
            Kind::Png | Kind::Jpeg => {
                check_page(page, 1)?;
                raster_formats::decode(std::io::Cursor::new(bytes), kind == Kind::Png)
            }
            _ => em::decode(em::Source::Bytes(bytes, name), kind, page),
        }
    });
    finish(r, name, page)
}

fn decode_path(path: &Path, page: Option<usize>) -> anyhow::Result<Decoded> {
    let page = page.unwrap_or(0);
    let kind = detect(&read_head(path)?, path)?;
    match kind {
        Kind::Tiff => tiff_reader::decode(open_buffered(path)?, page),
        Kind::Png | Kind::Jpeg => {
            check_page(page, 1)?;
            raster_formats::decode(open_buffered(path)?, kind == Kind::Png)
        }
        _ => em::decode(em::Source::Path(path), kind, page),
    }
}

fn finish(r: anyhow::Result<Decoded>, path: &Path, page: usize) -> anyhow::Result<StemImage> {
    let d = r.map_err(|e| file_error(path, e))?;
    Ok(StemImage {
        image: d.image,
        pixel_size: d.pixel_size,
        original_unit: d.original_unit,
        pixel_type: d.pixel_type,
        format: d.format,
        pages: d.pages,
        page,
        metadata: d.metadata,
        path: path.to_path_buf(),
    })
}

/// One flat message "cannot read FILE: reason: cause" so that a plain `{}` print (as the GUI
/// status line does) still says both which file and why.
fn file_error(path: &Path, e: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot read {}: {e:#}", path.display())
}

/// Runs a decoder, turning a panic inside a third-party parser into an ordinary error.
fn guarded<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            bail!("the decoder failed on malformed data ({msg})")
        }
    }
}

fn read_head(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).context("cannot open the file")?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        bail!("it is a directory");
    }
    let mut head = Vec::with_capacity(4096);
    f.take(4096)
        .read_to_end(&mut head)
        .context("cannot read the file header")?;
    if head.is_empty() {
        bail!("the file is empty");
    }
    Ok(head)
}

fn open_buffered(path: &Path) -> anyhow::Result<impl BufRead + Seek> {
    let f = std::fs::File::open(path).context("cannot open the file")?;
    Ok(std::io::BufReader::new(f))
}

/// Refuses absurd header dimensions before a buffer of that size is allocated.
pub(crate) fn check_dims(width: usize, height: usize) -> anyhow::Result<()> {
    if width == 0 || height == 0 {
        bail!("the header declares an empty image ({width} x {height})");
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        bail!(
            "the header declares {width} x {height} pixels, more than the {MAX_SIDE} per side \
             this viewer accepts (corrupt header or not a single image)"
        );
    }
    if width.saturating_mul(height) > MAX_PIXELS {
        bail!(
            "the header declares {width} x {height} pixels, more than the {MAX_PIXELS} pixels \
             this viewer accepts"
        );
    }
    Ok(())
}

pub(crate) fn check_page(page: usize, pages: usize) -> anyhow::Result<()> {
    if page >= pages {
        bail!(
            "page {page} does not exist: the file holds {pages} image{} (pages are 0-based)",
            if pages == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// Interleaved colour samples to one gray channel. Gray exports (R = G = B everywhere) keep
/// R exactly, so a colour-saved grayscale image round-trips its values; true colour images get
/// Rec. 601 luma. Returns the image and whether it was gray.
pub(crate) fn color_to_gray(
    samples: &[f32],
    width: usize,
    height: usize,
    channels: usize,
) -> (ImageF32, bool) {
    debug_assert!(channels >= 3);
    let px = samples.chunks_exact(channels);
    let is_gray = px.clone().all(|p| p[0] == p[1] && p[1] == p[2]);
    let data: Vec<f32> = if is_gray {
        px.map(|p| p[0]).collect()
    } else {
        px.map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
            .collect()
    };
    (ImageF32::from_vec(width, height, data), is_gray)
}

/// Length units to nanometres, for the spellings microscopy software writes.
pub(crate) fn unit_to_nm(unit: &str) -> Option<f64> {
    let u = unit.trim().trim_matches('"');
    Some(match u {
        "pm" => 1e-3,
        "A" | "Å" | "\u{212B}" | "angstrom" | "Angstrom" | "\\u00C5" => 0.1,
        "nm" | "nanometer" | "nanometre" => 1.0,
        "um" | "µm" | "μm" | "micron" | "microns" | "micrometer" | "micrometre" | "\\u00B5m" => {
            1e3
        }
        "mm" => 1e6,
        "cm" => 1e7,
        "m" | "meter" | "metre" => 1e9,
        "inch" | "in" => 2.54e7,
        _ => return None,
    })
}

/// Plausible STEM/SEM/TEM pixel sizes. Calibrations outside this range are printer DPI
/// defaults (72 dpi reads as 0.35 mm/px) or garbage, and showing them as a scale bar would be
/// worse than showing none.
pub(crate) fn plausible_nm_per_px(nm: f64) -> bool {
    nm.is_finite() && nm > 1e-4 && nm < 1e5
}

/// Metadata key of the note left when a file's calibration is dropped as implausible.
pub const CALIBRATION_IGNORED: &str = "calibration_ignored";

/// `nm` when plausible; otherwise `None` and a note in `metadata` (shown by `info` and the
/// Viewer), so a calibration the file states is not dropped without a word.
pub(crate) fn plausible_or_noted(
    nm: f64,
    source: &str,
    metadata: &mut std::collections::BTreeMap<String, String>,
) -> Option<f64> {
    if plausible_nm_per_px(nm) {
        return Some(nm);
    }
    metadata.insert(
        CALIBRATION_IGNORED.into(),
        format!(
            "{nm} nm/px from {source} is outside the plausible 0.0001 to 100000 nm/px; \
             the image is treated as uncalibrated"
        ),
    );
    None
}
