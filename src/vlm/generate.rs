//! Labelled patch sets cut from synthetic images: `bulk`, `vacancy`, `interstitial` and
//! `grain_boundary` patches with known ground truth, for screening without a patch folder.
//!
//! Each patch comes from its own small synthetic scene that holds exactly the defect it is
//! labelled with (none for bulk). Defect patches are centred on the defect's label box (for a
//! boundary, on a point of its line); a bulk patch is a region that meets no label box, with a
//! margin, so a point defect just outside cannot leak into it. Every scene seed derives from
//! (set seed, class, index, attempt), so the set is the same on any number of threads.

use anyhow::Context;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::classes::DefectClass;
use crate::geometry::{OrientedBox, intersection_area};
use crate::jobs::JobControl;
use crate::raster::PixelSize;
use crate::synth::crystal::Preset;
use crate::synth::params::CountRange;
use crate::synth::{self, SynthParams};
use crate::vlm::patches::{DEFAULT_PATCH_CLASSES, GeneratedPatch, PatchSet};

/// Prefix of [`PatchGenSpec::describe`]: a run's `patch_source` starting with it can be
/// regenerated exactly.
pub const SOURCE_PREFIX: &str = "synthetic patches ";

/// Largest patch side accepted (px).
pub const MAX_PATCH_SIZE: usize = 1024;
/// Most patches per class accepted in one set.
pub const MAX_PER_CLASS: usize = 5000;

/// Scenes tried per patch before giving up (a boundary that misses the crop area, a bulk
/// scene whose defects leave no clean region...). Failures this often mean bad settings.
const ATTEMPTS: u64 = 25;

/// How a synthetic patch set is made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PatchGenSpec {
    /// Side of a square patch (px).
    pub patch_size: usize,
    pub per_class: usize,
    pub seed: u64,
    pub preset: Preset,
    /// Pixel size (pm/px). At 25 pm/px a 64 px patch spans 1.6 nm, about 3 CdTe cells: enough
    /// lattice around the defect to see what is missing or extra.
    pub pixel_size_pm: f64,
    /// Side of the synthetic scene each patch is cut from (px); 0 picks 3 patch sides
    /// (at least 192 px) so boundaries are long and defects sit away from the scene edge.
    pub scene_size: usize,
}

impl Default for PatchGenSpec {
    fn default() -> Self {
        Self {
            patch_size: 64,
            per_class: 30,
            seed: 1,
            preset: Preset::Cdte110,
            pixel_size_pm: 25.0,
            scene_size: 0,
        }
    }
}

impl PatchGenSpec {
    pub fn effective_scene_size(&self) -> usize {
        if self.scene_size > 0 {
            self.scene_size
        } else {
            (3 * self.patch_size).max(192)
        }
    }

    pub fn pixel_size(&self) -> PixelSize {
        PixelSize::from_pm(self.pixel_size_pm)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (16..=MAX_PATCH_SIZE).contains(&self.patch_size),
            "patch size {} px must be between 16 and {MAX_PATCH_SIZE}",
            self.patch_size
        );
        anyhow::ensure!(
            (1..=MAX_PER_CLASS).contains(&self.per_class),
            "patches per class ({}) must be between 1 and {MAX_PER_CLASS}",
            self.per_class
        );
        let s = self.effective_scene_size();
        anyhow::ensure!(
            s >= 2 * self.patch_size,
            "scene size {s} px must be at least twice the patch size ({} px)",
            self.patch_size
        );
        // The rest (pixel size, scene size limits) is checked by the synthesizer's own ranges.
        self.scene_params(1, PatchKind::Vacancy, 0, 0)
            .validate()
            .context("patch generator settings")
    }

    /// One line recording every setting; [`PatchGenSpec::from_description`] reads it back.
    pub fn describe(&self) -> String {
        format!(
            "{SOURCE_PREFIX}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }

    /// For people: "synthetic CdTe [110], 64 px at 25 pm/px, 30 per class, seed 1".
    pub fn summary(&self) -> String {
        format!(
            "synthetic {}, {} px at {} pm/px, {} per class, seed {}",
            self.preset.label(),
            self.patch_size,
            self.pixel_size_pm,
            self.per_class,
            self.seed
        )
    }

    pub fn from_description(s: &str) -> Option<Self> {
        serde_json::from_str(s.trim().strip_prefix(SOURCE_PREFIX)?).ok()
    }

    /// Synth parameters of the scene for patch `index` of `class`, try `attempt`.
    fn scene_params(
        &self,
        class: usize,
        kind: PatchKind,
        index: usize,
        attempt: u64,
    ) -> SynthParams {
        let size = self.effective_scene_size();
        let mut p = SynthParams {
            seed: scene_seed(self.seed, class, index, attempt),
            width: size,
            height: size,
            pixel_size_pm: self.pixel_size_pm,
            ..Default::default()
        };
        p.crystal.preset = self.preset;
        let d = &mut p.defects;
        let none = CountRange::new(0, 0);
        let one = CountRange::new(1, 1);
        (
            d.vacancies,
            d.interstitials,
            d.twin_boundaries,
            d.tilt_boundaries,
        ) = (none, none, none, none);
        // The defect's whole label box must sit one half patch inside the scene, so a patch
        // centred on it never needs clamping.
        d.edge_margin_px = self.patch_size as f64 / 2.0 + 2.0;
        match kind {
            // Point defects around, but no boundary: bulk patches come from between them.
            PatchKind::Bulk => {
                d.vacancies = CountRange::new(0, 2);
                d.interstitials = CountRange::new(0, 2);
            }
            PatchKind::Vacancy => d.vacancies = one,
            PatchKind::Interstitial => d.interstitials = one,
            // Twins and tilt boundaries in turn.
            PatchKind::GrainBoundary => {
                if index.is_multiple_of(2) {
                    d.twin_boundaries = one;
                } else {
                    d.tilt_boundaries = one;
                }
            }
        }
        p
    }
}

/// The four generated classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatchKind {
    Bulk,
    Vacancy,
    Interstitial,
    GrainBoundary,
}

impl PatchKind {
    fn from_class_name(name: &str) -> Option<Self> {
        match name {
            "bulk" => Some(Self::Bulk),
            "vacancy" => Some(Self::Vacancy),
            "interstitial" => Some(Self::Interstitial),
            "grain_boundary" => Some(Self::GrainBoundary),
            _ => None,
        }
    }

    fn defect(self) -> Option<DefectClass> {
        match self {
            Self::Bulk => None,
            Self::Vacancy => Some(DefectClass::Vacancy),
            Self::Interstitial => Some(DefectClass::Interstitial),
            Self::GrainBoundary => Some(DefectClass::GrainBoundary),
        }
    }
}

fn scene_seed(seed: u64, class: usize, index: usize, attempt: u64) -> u64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"vlm patch");
    h.update(seed.to_le_bytes());
    h.update((class as u64).to_le_bytes());
    h.update((index as u64).to_le_bytes());
    h.update(attempt.to_le_bytes());
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    u64::from_le_bytes(out)
}

/// Where a patch was cut and what it shows, in scene pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchOrigin {
    /// Top-left corner of the crop in the scene.
    pub x0: usize,
    pub y0: usize,
    pub scene_seed: u64,
    /// Every label box of the scene (the patch's own defect among them).
    pub scene_labels: Vec<synth::DefectLabel>,
    /// The label the patch is centred on (`None` for bulk).
    pub target: Option<synth::DefectLabel>,
}

/// A generated patch with its provenance (for tests and for showing context).
#[derive(Clone, Debug)]
pub struct GeneratedItem {
    pub patch: GeneratedPatch,
    pub origin: PatchOrigin,
}

/// The crop rectangle as a box, for intersection tests.
fn crop_box(x0: usize, y0: usize, size: usize) -> OrientedBox {
    let s = size as f64;
    OrientedBox::new(x0 as f64 + s / 2.0, y0 as f64 + s / 2.0, s, s, 0.0)
}

/// The top-left corner that centres a `size` crop on `(cx, cy)`, if it fits in the scene.
fn centred_corner(cx: f64, cy: f64, size: usize, scene: usize) -> Option<(usize, usize)> {
    let x0 = (cx - size as f64 / 2.0).round();
    let y0 = (cy - size as f64 / 2.0).round();
    let max = (scene - size) as f64;
    ((0.0..=max).contains(&x0) && (0.0..=max).contains(&y0)).then_some((x0 as usize, y0 as usize))
}

/// One attempt at a patch; `None` when this scene does not allow one.
fn try_patch(
    spec: &PatchGenSpec,
    class: usize,
    kind: PatchKind,
    index: usize,
    attempt: u64,
) -> anyhow::Result<Option<GeneratedItem>> {
    let p = spec.scene_params(class, kind, index, attempt);
    let s = synth::generate(&p)?;
    let size = spec.patch_size;
    let scene = spec.effective_scene_size();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(p.seed ^ 0x5eed_c0de);
    let target = kind
        .defect()
        .and_then(|c| s.labels.iter().find(|l| l.class == c).cloned());
    let corner = match kind {
        PatchKind::Bulk => {
            // Keep half a lattice cell clear around every label: a defect's blur reaches a
            // little beyond its box.
            let cell_px = p.crystal.spec().a_u.max(p.crystal.spec().b_v) / p.pixel_size_a();
            let margin = 0.5 * cell_px;
            let grown = |x0: usize, y0: usize| {
                let b = crop_box(x0, y0, size);
                OrientedBox::new(b.cx, b.cy, b.w + 2.0 * margin, b.h + 2.0 * margin, 0.0)
            };
            (0..60)
                .map(|_| {
                    (
                        rng.random_range(0..=scene - size),
                        rng.random_range(0..=scene - size),
                    )
                })
                .find(|&(x0, y0)| {
                    let g = grown(x0, y0);
                    s.labels
                        .iter()
                        .all(|l| intersection_area(&g, &l.obb) <= 0.0)
                })
        }
        PatchKind::Vacancy | PatchKind::Interstitial => match &target {
            Some(t) => centred_corner(t.obb.cx, t.obb.cy, size, scene),
            None => None,
        },
        PatchKind::GrainBoundary => match &target {
            Some(t) => {
                // A random point of the boundary line whose crop fits in the scene.
                let (c, sn) = (t.obb.angle.cos(), t.obb.angle.sin());
                let half = t.obb.w / 2.0;
                (0..40)
                    .map(|_| rng.random_range(-half..=half))
                    .find_map(|u| centred_corner(t.obb.cx + u * c, t.obb.cy + u * sn, size, scene))
            }
            None => None,
        },
    };
    let Some((x0, y0)) = corner else {
        return Ok(None);
    };
    let class_name = DEFAULT_PATCH_CLASSES[class];
    let source = format!(
        "synth {} {class_name} #{index}: scene seed {} ({scene}x{scene} px, {} pm/px), crop at ({x0}, {y0}) size {size}",
        spec.preset.cli_name(),
        p.seed,
        spec.pixel_size_pm
    );
    Ok(Some(GeneratedItem {
        patch: GeneratedPatch {
            class,
            image: s.image.crop(x0, y0, size, size),
            source,
        },
        origin: PatchOrigin {
            x0,
            y0,
            scene_seed: p.seed,
            scene_labels: s.labels,
            target,
        },
    }))
}

fn make_item(
    spec: &PatchGenSpec,
    class: usize,
    kind: PatchKind,
    index: usize,
) -> anyhow::Result<GeneratedItem> {
    for attempt in 0..ATTEMPTS {
        if let Some(item) = try_patch(spec, class, kind, index, attempt)? {
            return Ok(item);
        }
    }
    anyhow::bail!(
        "could not place a {} patch of {} px in {ATTEMPTS} synthetic scenes of {} px: use a smaller patch or a larger scene",
        DEFAULT_PATCH_CLASSES[class],
        spec.patch_size,
        spec.effective_scene_size()
    )
}

/// Generates the patches with their provenance, in class order then index order.
pub fn generate_items(
    spec: &PatchGenSpec,
    control: &JobControl,
) -> anyhow::Result<Vec<GeneratedItem>> {
    spec.validate()?;
    let jobs: Vec<(usize, PatchKind, usize)> = DEFAULT_PATCH_CLASSES
        .iter()
        .enumerate()
        .flat_map(|(c, name)| {
            let kind = PatchKind::from_class_name(name).expect("default classes are generated");
            (0..spec.per_class).map(move |i| (c, kind, i))
        })
        .collect();
    let total = jobs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    control.set_progress(0.0, format!("0/{total} patches generated"));
    jobs.par_iter()
        .map(|&(c, kind, i)| {
            control.check()?;
            let item = make_item(spec, c, kind, i)?;
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            control.set_progress(
                d as f64 / total as f64,
                format!("{d}/{total} patches generated"),
            );
            Ok(item)
        })
        .collect()
}

/// A labelled patch set with the default classes, `per_class` patches each.
pub fn generate_patch_set(spec: &PatchGenSpec, control: &JobControl) -> anyhow::Result<PatchSet> {
    let items = generate_items(spec, control)?;
    PatchSet::from_generated(
        DEFAULT_PATCH_CLASSES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        items.into_iter().map(|i| i.patch),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(per_class: usize, seed: u64) -> PatchGenSpec {
        PatchGenSpec {
            per_class,
            seed,
            patch_size: 48,
            ..Default::default()
        }
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let c = JobControl::detached();
        let a = generate_patch_set(&spec(2, 3), &c).unwrap();
        let b = generate_patch_set(&spec(2, 3), &c).unwrap();
        let ha: Vec<&str> = a.patches.iter().map(|p| p.hash.as_str()).collect();
        let hb: Vec<&str> = b.patches.iter().map(|p| p.hash.as_str()).collect();
        assert_eq!(ha, hb);
        let other = generate_patch_set(&spec(2, 4), &c).unwrap();
        assert_ne!(other.patches[0].hash, a.patches[0].hash);
        assert_eq!(
            a.classes,
            vec!["bulk", "vacancy", "interstitial", "grain_boundary"]
        );
        assert_eq!(a.counts(), vec![2, 2, 2, 2]);
        assert!(a.patches.iter().all(|p| p.width == 48 && p.height == 48));
        // Every patch is a different image.
        let mut uniq = ha.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), ha.len());
    }

    #[test]
    fn patches_show_their_defect_and_bulk_shows_none() {
        let s = spec(3, 9);
        let items = generate_items(&s, &JobControl::detached()).unwrap();
        assert_eq!(items.len(), 12);
        for it in &items {
            let o = &it.origin;
            let cb = crop_box(o.x0, o.y0, s.patch_size);
            let class = DEFAULT_PATCH_CLASSES[it.patch.class];
            assert!(it.patch.source.contains(class), "{}", it.patch.source);
            match &o.target {
                None => {
                    assert_eq!(class, "bulk");
                    for l in &o.scene_labels {
                        assert_eq!(
                            intersection_area(&cb, &l.obb),
                            0.0,
                            "bulk patch {} meets a {:?} box",
                            it.patch.source,
                            l.class
                        );
                    }
                }
                Some(t) => {
                    assert_eq!(t.class.name(), class);
                    // The scene holds exactly that one defect.
                    assert_eq!(o.scene_labels.len(), 1, "{}", it.patch.source);
                    if class == "grain_boundary" {
                        // The patch centre lies on the boundary line (within a pixel).
                        let (cx, cy) = (cb.cx - t.obb.cx, cb.cy - t.obb.cy);
                        let across = -cx * t.obb.angle.sin() + cy * t.obb.angle.cos();
                        assert!(across.abs() <= 1.0, "{across}");
                    } else {
                        // The whole point-defect box is inside the patch, centred.
                        for c in t.obb.corners() {
                            assert!(cb.contains(c), "{} corner {c:?}", it.patch.source);
                        }
                        assert!((cb.cx - t.obb.cx).abs() <= 0.5 && (cb.cy - t.obb.cy).abs() <= 0.5);
                    }
                }
            }
        }
    }

    #[test]
    fn description_round_trips_and_bad_settings_are_named() {
        let s = PatchGenSpec {
            preset: Preset::Si110,
            ..spec(5, 77)
        };
        let d = s.describe();
        assert!(d.starts_with(SOURCE_PREFIX));
        assert_eq!(PatchGenSpec::from_description(&d), Some(s));
        assert_eq!(PatchGenSpec::from_description("/data/patches"), None);

        let e = PatchGenSpec {
            patch_size: 4,
            ..Default::default()
        };
        assert!(e.validate().unwrap_err().to_string().contains("patch size"));
        let e = PatchGenSpec {
            pixel_size_pm: 500.0,
            ..Default::default()
        };
        assert!(format!("{:#}", e.validate().unwrap_err()).contains("pixel size"));
        let e = PatchGenSpec {
            patch_size: 128,
            scene_size: 200,
            ..Default::default()
        };
        assert!(e.validate().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn cancel_stops_generation() {
        let c = JobControl::detached();
        c.cancel();
        let e = generate_patch_set(&spec(3, 1), &c).unwrap_err();
        assert!(crate::jobs::is_cancelled(&e));
    }
}
