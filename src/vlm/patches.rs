//! Labelled image patches for classifier screening.
//!
//! Every patch is held as the exact 8-bit grayscale PNG a model receives. The PNG is produced
//! here (decode -> 8-bit gray -> re-encode) rather than forwarded from disk, so the same pixels
//! always give the same bytes and the same sha256: that hash keys the response cache and lets us
//! prove that few-shot examples and evaluated patches are different images, even when a folder
//! holds duplicate files under different names.

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::raster::ImageF32;

/// Patch classes used when nothing else is specified. These are patch (screening) classes,
/// not YOLO class ids: `bulk` has no detector counterpart.
pub const DEFAULT_PATCH_CLASSES: [&str; 4] = ["bulk", "vacancy", "interstitial", "grain_boundary"];

/// One labelled patch, stored exactly as a model sees it.
#[derive(Clone, Debug)]
pub struct Patch {
    /// Index into [`PatchSet::classes`].
    pub class: usize,
    pub width: u32,
    pub height: u32,
    /// Row-major 8-bit gray pixels (for display).
    pub gray: Vec<u8>,
    /// Canonical 8-bit grayscale PNG: the bytes sent to a model. Shared because few-shot
    /// examples are attached to every request.
    pub png: Arc<[u8]>,
    /// File path, or a description of how the patch was generated.
    pub source: String,
    /// Lower-case hex sha256 of [`Patch::png`].
    pub hash: String,
}

impl Patch {
    /// A patch from 8-bit gray pixels.
    pub fn from_gray8(
        class: usize,
        width: u32,
        height: u32,
        gray: Vec<u8>,
        source: impl Into<String>,
    ) -> anyhow::Result<Self> {
        let source = source.into();
        if width == 0 || height == 0 || gray.len() != width as usize * height as usize {
            bail!(
                "{source}: patch of {width}x{height} pixels needs {} values, got {}",
                width as usize * height as usize,
                gray.len()
            );
        }
        let png = encode_png_gray8(width, height, &gray)
            .with_context(|| format!("{source}: cannot encode PNG"))?;
        let hash = sha256_hex(&png);
        Ok(Self {
            class,
            width,
            height,
            gray,
            png: png.into(),
            source,
            hash,
        })
    }

    /// A patch from raw intensities, windowed with the shared model window
    /// ([`ImageF32::model_window`]) so a VLM sees the same contrast a detector would.
    pub fn from_image_f32(
        class: usize,
        image: &ImageF32,
        source: impl Into<String>,
    ) -> anyhow::Result<Self> {
        let (lo, hi) = image.model_window();
        Self::from_gray8(
            class,
            image.width as u32,
            image.height as u32,
            image.to_u8(lo, hi),
            source,
        )
    }

    /// The PNG as a `data:` URL, the form OpenAI-compatible servers accept inline.
    pub fn data_url(&self) -> String {
        png_data_url(&self.png)
    }
}

/// A patch produced by a generator (the synthesizer) rather than read from disk.
#[derive(Clone, Debug)]
pub struct GeneratedPatch {
    pub class: usize,
    pub image: ImageF32,
    /// How it was made, e.g. `synth seed=7 vacancy at (31,30)`: recorded in runs.
    pub source: String,
}

/// A set of labelled patches with its class list.
#[derive(Clone, Debug, Default)]
pub struct PatchSet {
    pub classes: Vec<String>,
    pub patches: Vec<Patch>,
}

impl PatchSet {
    /// Number of patches of each class, indexed like `classes`.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for p in &self.patches {
            if let Some(n) = c.get_mut(p.class) {
                *n += 1;
            }
        }
        c
    }

    /// Index of a class name after normalisation (see [`normalise_class_name`]).
    pub fn class_index(&self, name: &str) -> Option<usize> {
        let n = normalise_class_name(name);
        self.classes.iter().position(|c| *c == n)
    }

    /// Builds a set from generated images (hook for the synthesizer). Class names are
    /// normalised; every patch's class must index into `classes`.
    pub fn from_generated(
        classes: Vec<String>,
        items: impl IntoIterator<Item = GeneratedPatch>,
    ) -> anyhow::Result<Self> {
        let classes: Vec<String> = classes.iter().map(|c| normalise_class_name(c)).collect();
        let mut patches = Vec::new();
        for item in items {
            if item.class >= classes.len() {
                bail!(
                    "{}: class index {} but only {} classes",
                    item.source,
                    item.class,
                    classes.len()
                );
            }
            patches.push(Patch::from_image_f32(item.class, &item.image, item.source)?);
        }
        Ok(Self { classes, patches })
    }

    /// Loads labelled patches from a folder: one subfolder per class (`vacancy/001.png`), or
    /// flat files named `Class_N.ext` (`grain_boundary_12.png`: the class is the part before the
    /// last `_`), or both. Class names are normalised; the default classes that occur come
    /// first in their usual order, other names follow alphabetically. Files are read in sorted
    /// path order so a folder always gives the same set.
    pub fn load_dir(dir: &Path) -> anyhow::Result<Self> {
        let mut entries: Vec<(String, std::path::PathBuf)> = Vec::new();
        for entry in read_dir_sorted(dir)? {
            let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(name) = name.filter(|n| !n.starts_with('.')) else {
                continue;
            };
            if entry.is_dir() {
                let class = normalise_class_name(&name);
                for file in read_dir_sorted(&entry)? {
                    if file.is_file() && is_image_file(&file) {
                        entries.push((class.clone(), file));
                    }
                }
            } else if entry.is_file() && is_image_file(&entry) {
                entries.push((class_from_file_name(&entry)?, entry));
            }
        }
        if entries.is_empty() {
            bail!(
                "no labelled patches in {}: expected one subfolder per class or files named Class_N.png",
                dir.display()
            );
        }
        let mut present: Vec<String> = Vec::new();
        for (c, _) in &entries {
            if !present.contains(c) {
                present.push(c.clone());
            }
        }
        let mut classes: Vec<String> = DEFAULT_PATCH_CLASSES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| present.contains(c))
            .collect();
        let mut others: Vec<String> = present
            .into_iter()
            .filter(|c| !classes.contains(c))
            .collect();
        others.sort();
        classes.extend(others);

        let mut patches = Vec::with_capacity(entries.len());
        for (class, path) in entries {
            let idx = classes.iter().position(|c| *c == class).unwrap_or(0);
            patches.push(load_patch_file(&path, idx)?);
        }
        Ok(Self { classes, patches })
    }

    /// Writes the set as one subfolder per class (`dir/<class>/<n>.png`), the layout
    /// [`PatchSet::load_dir`] reads back with identical hashes.
    pub fn save_dir(&self, dir: &Path) -> anyhow::Result<()> {
        let mut counters: BTreeMap<usize, usize> = BTreeMap::new();
        for p in &self.patches {
            let class = self
                .classes
                .get(p.class)
                .with_context(|| format!("{}: class index {} out of range", p.source, p.class))?;
            let n = counters.entry(p.class).or_insert(0);
            let path = dir.join(class).join(format!("{:05}.png", *n));
            *n += 1;
            crate::fsio::atomic_write(&path, &p.png)?;
        }
        Ok(())
    }
}

/// Lower-case, trimmed, spaces and hyphens as underscores: `Grain boundary` -> `grain_boundary`.
pub fn normalise_class_name(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn png_data_url(png: &[u8]) -> String {
    use base64::Engine;
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

fn encode_png_gray8(width: u32, height: u32, gray: &[u8]) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(
        gray,
        width,
        height,
        image::ExtendedColorType::L8,
    )?;
    Ok(out)
}

fn read_dir_sorted(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let rd =
        std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("cannot read folder {}", dir.display()))?;
        v.push(e.path());
    }
    v.sort();
    Ok(v)
}

fn is_image_file(p: &Path) -> bool {
    let hidden = p
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    let ext = p
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    // Anything else in a folder (notes, JSON sidecars) is skipped.
    !hidden && crate::formats::picture_extensions().any(|e| e == ext)
}

fn class_from_file_name(path: &Path) -> anyhow::Result<String> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('_') {
        Some((class, n)) if !class.trim().is_empty() && !n.is_empty() => {
            Ok(normalise_class_name(class))
        }
        _ => bail!(
            "{}: cannot tell the class: name flat files Class_N.ext (e.g. vacancy_3.png) or put them in a class subfolder",
            path.display()
        ),
    }
}

fn load_patch_file(path: &Path, class: usize) -> anyhow::Result<Patch> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a readable image", path.display()))?;
    let (w, h) = (img.width(), img.height());
    let source = path.display().to_string();
    use image::DynamicImage as D;
    match img {
        // 8-bit exports are already windowed by whoever saved them: keep their pixels.
        D::ImageLuma8(_) | D::ImageLumaA8(_) | D::ImageRgb8(_) | D::ImageRgba8(_) => {
            Patch::from_gray8(class, w, h, img.to_luma8().into_raw(), source)
        }
        // Deeper data gets the same window a detector would apply.
        other => {
            let data: Vec<f32> = other.to_luma32f().into_raw();
            let f = ImageF32::from_vec(w as usize, h as usize, data);
            Patch::from_image_f32(class, &f, source)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray_png(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let px: Vec<u8> = (0..w * h).map(|i| (i as u8).wrapping_mul(seed)).collect();
        encode_png_gray8(w, h, &px).unwrap()
    }

    #[test]
    fn loads_subfolders_and_flat_files_with_default_class_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("Grain boundary")).unwrap();
        std::fs::write(dir.path().join("Grain boundary/a.png"), gray_png(4, 4, 3)).unwrap();
        std::fs::write(dir.path().join("vacancy_1.png"), gray_png(4, 4, 5)).unwrap();
        std::fs::write(dir.path().join("bulk_2.png"), gray_png(4, 4, 7)).unwrap();
        std::fs::write(dir.path().join("twin_boundary_1.png"), gray_png(4, 4, 9)).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        let set = PatchSet::load_dir(dir.path()).unwrap();
        assert_eq!(
            set.classes,
            vec!["bulk", "vacancy", "grain_boundary", "twin_boundary"]
        );
        assert_eq!(set.patches.len(), 4);
        assert_eq!(set.counts(), vec![1, 1, 1, 1]);
        let gb = set
            .patches
            .iter()
            .find(|p| p.source.contains("Grain boundary"))
            .unwrap();
        assert_eq!(set.classes[gb.class], "grain_boundary");
        assert_eq!(gb.hash.len(), 64);
    }

    #[test]
    fn save_and_reload_keeps_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let img = ImageF32::from_vec(8, 8, (0..64).map(|v| v as f32 * 0.5).collect());
        let set = PatchSet::from_generated(
            vec!["bulk".into(), "Vacancy".into()],
            vec![
                GeneratedPatch {
                    class: 1,
                    image: img.clone(),
                    source: "gen a".into(),
                },
                GeneratedPatch {
                    class: 0,
                    image: ImageF32::from_vec(8, 8, vec![1.0; 64]),
                    source: "gen b".into(),
                },
            ],
        )
        .unwrap();
        assert_eq!(set.classes, vec!["bulk", "vacancy"]);
        set.save_dir(dir.path()).unwrap();
        let back = PatchSet::load_dir(dir.path()).unwrap();
        let mut a: Vec<_> = set.patches.iter().map(|p| p.hash.clone()).collect();
        let mut b: Vec<_> = back.patches.iter().map(|p| p.hash.clone()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_inputs_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nounderscore.png"), gray_png(2, 2, 1)).unwrap();
        let e = format!("{:#}", PatchSet::load_dir(dir.path()).unwrap_err());
        assert!(e.contains("nounderscore.png"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vacancy_1.png"), b"not a png").unwrap();
        let e = format!("{:#}", PatchSet::load_dir(dir.path()).unwrap_err());
        assert!(e.contains("vacancy_1.png"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", PatchSet::load_dir(dir.path()).unwrap_err());
        assert!(e.contains("no labelled patches"), "{e}");

        let e = PatchSet::from_generated(
            vec!["bulk".into()],
            vec![GeneratedPatch {
                class: 3,
                image: ImageF32::new(2, 2),
                source: "gen x".into(),
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("gen x"));
    }

    #[test]
    fn identical_pixels_give_identical_hashes_across_formats() {
        let px: Vec<u8> = (0..16).map(|v| v * 10).collect();
        let a = Patch::from_gray8(0, 4, 4, px.clone(), "a").unwrap();
        let rgb = image::RgbImage::from_fn(4, 4, |x, y| {
            let v = px[(y * 4 + x) as usize];
            image::Rgb([v, v, v])
        });
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bulk_1.png");
        rgb.save(&p).unwrap();
        let b = load_patch_file(&p, 0).unwrap();
        assert_eq!(a.hash, b.hash);
        assert!(a.data_url().starts_with("data:image/png;base64,iVBOR"));
    }
}
