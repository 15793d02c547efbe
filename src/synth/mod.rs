//! Synthetic HAADF-STEM images of crystals with defects, and their exact oriented-box labels.
//!
//! `generate` = `draw_scene` (every random draw, recorded in the sidecar) + `render_scene`
//! (deterministic). Regenerating from a sidecar calls `render_scene` on the recorded scene.

pub mod crystal;
pub mod detectability;
pub mod imaging;
pub mod params;
pub mod scene;

use crate::formats::yolo::ObbLabel;
use crate::raster::ImageF32;
use anyhow::Context;
pub use params::SynthParams;
pub use scene::{DefectLabel, Scene};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the sidecar layout. Version 2 added column width, amorphous layers, boundary
/// structure, lamellae and jitter bursts; version 1 sidecars are read with those switched
/// off, which is how they were rendered.
pub const SIDECAR_VERSION: u32 = 2;

/// One synthetic image with everything needed to use and to regenerate it.
#[derive(Clone, Debug)]
pub struct Synthesized {
    /// Detector counts (f32).
    pub image: ImageF32,
    pub labels: Vec<DefectLabel>,
    pub scene: Scene,
    pub params: SynthParams,
}

/// The JSON sidecar written beside every image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sidecar {
    pub version: u32,
    pub generator: String,
    pub params: SynthParams,
    pub scene: Scene,
    pub labels: Vec<DefectLabel>,
    /// nm per pixel, for tools that read only this.
    pub pixel_size_nm: f64,
}

/// Draws the scene from the seed, then renders it.
pub fn generate(p: &SynthParams) -> anyhow::Result<Synthesized> {
    p.validate()?;
    let scene = scene::draw_scene(p);
    render_scene(p, scene)
}

/// Renders a given scene (from `draw_scene` or a sidecar): bit-identical for the same input.
pub fn render_scene(p: &SynthParams, scene: Scene) -> anyhow::Result<Synthesized> {
    p.validate()?;
    anyhow::ensure!(
        scene.distortion.line_offsets.len() == p.height,
        "scene has {} scan lines but the image has {}",
        scene.distortion.line_offsets.len(),
        p.height
    );
    let signal = render_signal(p, &scene);
    let mut image = imaging::detect(&signal, &scene, p);
    imaging::gaussian_blur(&mut image, p.noise.lowpass_sigma_px);
    let mut labels = scene::scene_labels(&p.crystal.spec(), &scene, p);
    if let Some([w, h]) = p.resample_to {
        let (sx, sy) = p.output_scale();
        image = crate::raster::resample(&image, w, h, sx, sy);
        for l in &mut labels {
            l.obb = l.obb.map(|q| [q[0] * sx, q[1] * sy]);
        }
    }
    Ok(Synthesized {
        image,
        labels,
        scene,
        params: p.clone(),
    })
}

/// The noiseless column image of `scene` (relative intensity, scan distortions included):
/// what the detector sees before background, dose and noise.
pub(crate) fn render_signal(p: &SynthParams, scene: &Scene) -> ImageF32 {
    let columns = scene::scene_columns(&p.crystal.spec(), scene, p);
    let bank = imaging::kernel_bank(&imaging::effective_probe(p), p.pixel_size_a());
    imaging::render_columns(&columns, scene, &bank, p.width, p.height)
}

impl Synthesized {
    /// Fills the `detectability` of every point-defect label (two more noiseless renders).
    pub fn measure_detectability(&mut self) {
        let snr = detectability::label_snr(self);
        for (l, d) in self.labels.iter_mut().zip(snr) {
            l.detectability = d;
        }
    }

    pub fn sidecar(&self) -> Sidecar {
        Sidecar {
            version: SIDECAR_VERSION,
            generator: format!("defect-detector {}", env!("CARGO_PKG_VERSION")),
            params: self.params.clone(),
            scene: self.scene.clone(),
            labels: self.labels.clone(),
            pixel_size_nm: self.params.output_pixel_size_pm() / 1000.0,
        }
    }

    /// Labels as YOLO-OBB lines (normalised corners).
    pub fn yolo_labels(&self) -> Vec<ObbLabel> {
        let (w, h) = (self.image.width as f64, self.image.height as f64);
        self.labels
            .iter()
            .map(|l| ObbLabel::from_box_px(l.class.id(), &l.obb, w, h))
            .collect()
    }

    /// The 8-bit rendering every model sees (the shared intensity window).
    pub fn to_u8(&self) -> Vec<u8> {
        let (lo, hi) = self.image.model_window();
        self.image.to_u8(lo, hi)
    }
}

/// Output pixel formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// 8-bit grayscale PNG, windowed like model input.
    #[default]
    Png,
    /// 16-bit grayscale TIFF of raw detector counts (clamped to 0..=65535).
    Tiff16,
}

impl ImageFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Tiff16 => "tif",
        }
    }
}

/// Encodes an 8-bit grayscale PNG (fast settings: training data is written in bulk).
pub fn encode_png_gray8(data: &[u8], w: usize, h: usize) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut buf = Vec::with_capacity(data.len() / 2);
    PngEncoder::new_with_quality(&mut buf, CompressionType::Fast, FilterType::Sub)
        .write_image(data, w as u32, h as u32, image::ExtendedColorType::L8)
        .context("PNG encoding failed")?;
    Ok(buf)
}

/// Encodes a 16-bit grayscale TIFF with the pixel size in its resolution tags (pixels per cm).
pub fn encode_tiff_gray16(
    data: &[u16],
    w: usize,
    h: usize,
    nm_per_px: f64,
) -> anyhow::Result<Vec<u8>> {
    use tiff::encoder::{Rational, TiffEncoder, colortype};
    let mut cursor = std::io::Cursor::new(Vec::new());
    {
        let mut enc = TiffEncoder::new(&mut cursor).context("TIFF encoder")?;
        let mut img = enc
            .new_image::<colortype::Gray16>(w as u32, h as u32)
            .context("TIFF image")?;
        // Pixels per centimetre, as a rational with enough precision for pm-scale pixels.
        let px_per_cm = 1e7 / nm_per_px;
        // Atomic-scale pixels are ~1e8-1e9 per cm: pick the largest denominator that fits.
        let d = (4.0e9 / px_per_cm).floor().clamp(1.0, 10_000.0);
        let res = Rational {
            n: (px_per_cm * d).round().min(u32::MAX as f64) as u32,
            d: d as u32,
        };
        img.resolution(tiff::tags::ResolutionUnit::Centimeter, res);
        img.write_data(data).context("TIFF data")?;
    }
    Ok(cursor.into_inner())
}

/// Paths written for one synthesized image.
#[derive(Clone, Debug, Serialize)]
pub struct WrittenFiles {
    pub image: PathBuf,
    pub labels: PathBuf,
    pub sidecar: PathBuf,
}

/// Writes `<stem>.png|tif`, `<stem>.txt` (YOLO-OBB) and `<stem>.json` (sidecar) into `dir`,
/// each atomically.
pub fn write_outputs(
    s: &Synthesized,
    dir: &Path,
    stem: &str,
    format: ImageFormat,
) -> anyhow::Result<WrittenFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (w, h) = (s.image.width, s.image.height);
    let image_path = dir.join(format!("{stem}.{}", format.extension()));
    let bytes = match format {
        ImageFormat::Png => encode_png_gray8(&s.to_u8(), w, h)?,
        ImageFormat::Tiff16 => {
            let data: Vec<u16> = s
                .image
                .data
                .iter()
                .map(|&v| v.round().clamp(0.0, 65535.0) as u16)
                .collect();
            encode_tiff_gray16(&data, w, h, s.params.output_pixel_size_pm() / 1000.0)?
        }
    };
    crate::fsio::atomic_write(&image_path, &bytes)?;
    let labels_path = dir.join(format!("{stem}.txt"));
    crate::formats::yolo::write_labels(&labels_path, &s.yolo_labels())?;
    let sidecar_path = dir.join(format!("{stem}.json"));
    let json = serde_json::to_vec_pretty(&s.sidecar())?;
    crate::fsio::atomic_write(&sidecar_path, &json)?;
    Ok(WrittenFiles {
        image: image_path,
        labels: labels_path,
        sidecar: sidecar_path,
    })
}

/// Reads a sidecar and regenerates its image exactly.
pub fn regenerate_from_sidecar(path: &Path) -> anyhow::Result<Synthesized> {
    let sc = read_sidecar(path)?;
    render_scene(&sc.params, sc.scene)
}

/// Reads a sidecar (version 1 sidecars are upgraded to today's parameters).
pub fn read_sidecar(path: &Path) -> anyhow::Result<Sidecar> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid sidecar", path.display()))?;
    let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
    anyhow::ensure!(
        version == 1 || version == SIDECAR_VERSION as u64,
        "{}: sidecar version {version} is not supported (expected 1 or {SIDECAR_VERSION})",
        path.display(),
    );
    if version == 1 {
        upgrade_v1_params(&mut v);
    }
    serde_json::from_value(v).with_context(|| format!("{} is not a valid sidecar", path.display()))
}

/// Version 1 had none of the version 2 knobs: switch them off so the image comes out as it
/// was written (their defaults are on).
fn upgrade_v1_params(v: &mut serde_json::Value) {
    use serde_json::json;
    let Some(params) = v.get_mut("params").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let mut set = |section: &str, key: &str, value: serde_json::Value| {
        if let Some(obj) = params.get_mut(section).and_then(|s| s.as_object_mut()) {
            obj.entry(key.to_string()).or_insert(value);
        }
    };
    set("specimen", "column_sigma_a", json!(0.0));
    set("specimen", "amorphous", json!(0.0));
    set("scan", "jitter_bursts_per_kline", json!(0.0));
    set("noise", "lowpass_sigma_px", json!(0.0));
    set(
        "defects",
        "boundary_structure",
        serde_json::to_value(params::BoundaryStructure::ideal()).unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests;
