//! `defect-detector eval-real`: the detector on labelled real frames, scored as a
//! microscopist would judge it.
//!
//! The set is a JSON file (`assets/real-set/set.json`) naming frames that stay in
//! `../shared/samples` (their licences forbid copying) and label files kept beside it. A
//! boundary is labelled as a band (an oriented box along it). Rules:
//! - a labelled boundary is **found** when a `grain_boundary` box's centre line (its long axis,
//!   inside the frame) lies within the band over the band's length, and its long axis is within
//!   [`MAX_ANGLE_DEG`] of the band's;
//! - further boxes that also lie on a found boundary are **duplicates**; boundary boxes on no
//!   labelled boundary are **false positives**;
//! - a labelled point defect is found when a detection of its class is centred in its box;
//! - a frame lists the classes its labels are complete for: detections of those classes on
//!   nothing labelled are false positives; detections of other classes are reported as
//!   unscored (nobody has said whether they are right).

use crate::classes::DefectClass;
use crate::dataset::yolo::{Validation, read_labels};
use crate::detect::{DetectOptions, Detection, Detector};
use crate::frame::{LatticeUse, detect_frame};
use crate::geometry::{OrientedBox, Pt};
use crate::synth::crystal::Preset;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Largest angle between a detected boundary box and the labelled boundary.
pub const MAX_ANGLE_DEG: f64 = 20.0;
/// Share of a detection's centre line (inside the frame, along the band) that must lie in the
/// band: a box crossing the boundary at a shallow angle touches the band, it does not follow it.
pub const MIN_INSIDE_FRACTION: f64 = 0.8;

/// One labelled frame of the set file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealFrame {
    /// File name inside the samples folder.
    pub image: String,
    /// YOLO-OBB label file, relative to the set file.
    pub labels: String,
    /// Crystal and zone axis (cdte110, si110, gaas110): calibrates files without a pixel size
    /// and drives the lattice analysis.
    pub crystal: String,
    /// Classes whose every instance in the frame is labelled (detections of these classes on
    /// nothing labelled are false positives).
    pub complete_for: Vec<String>,
    /// What the frame shows and how it was labelled.
    #[serde(default)]
    pub note: String,
}

/// The set file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealSet {
    #[serde(default)]
    pub description: String,
    /// Where the images are, relative to the set file.
    pub samples: String,
    pub frames: Vec<RealFrame>,
}

impl RealSet {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the real-frame set {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a real-frame set", path.display()))
    }
}

/// One labelled boundary and what matched it.
#[derive(Clone, Debug, Serialize)]
pub struct BoundaryMatch {
    /// The labelled band, in pixels.
    pub band: OrientedBox,
    pub found: bool,
    /// Confidence and angle error (degrees) of the best matching box.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub angle_error_deg: Option<f64>,
    /// Which detector found it (model, lattice, both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub duplicates: usize,
}

/// A boundary box that found no labelled boundary, or found one already found.
#[derive(Clone, Debug, Serialize)]
pub struct OtherBoundaryBox {
    pub obb: OrientedBox,
    pub confidence: f32,
    /// Which detector drew it (model, lattice, both).
    pub source: String,
    /// It lies along a labelled boundary that a better box found first.
    pub duplicate: bool,
}

impl OtherBoundaryBox {
    fn of(d: &Detection, duplicate: bool) -> Self {
        Self {
            obb: d.obb,
            confidence: d.confidence,
            source: d.source.name().to_string(),
            duplicate,
        }
    }
}

/// The score of one frame.
#[derive(Clone, Debug, Serialize)]
pub struct FrameScore {
    pub image: String,
    pub width: usize,
    pub height: usize,
    pub nm_per_px: Option<f64>,
    /// Where `nm_per_px` came from: "file", "lattice" (the file had none), "lattice, not the
    /// file's" (the file's contradicted by the lattice, see
    /// [`crate::frame::check_file_calibration`]) or "none".
    pub calibration: &'static str,
    pub boundaries: Vec<BoundaryMatch>,
    /// Boundary boxes on no labelled boundary.
    pub boundary_false_positives: usize,
    /// Every boundary box other than the one that found each labelled boundary (false
    /// positives and duplicates), best first: where a frame misses its target, these say
    /// which detector drew what, and how sure it was.
    pub other_boundary_boxes: Vec<OtherBoundaryBox>,
    /// Detections of the frame's complete classes on nothing labelled (boundary false
    /// positives and duplicates included).
    pub false_positives: usize,
    /// Labelled point defects (vacancies, interstitials) and how many had a detection of their
    /// class centred in their box.
    pub points_labelled: usize,
    pub points_found: usize,
    /// Detections of classes the labels do not cover, by class name.
    pub unscored: std::collections::BTreeMap<String, usize>,
    pub detections: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FrameScore {
    /// A frame that could not be loaded, transformed or scored.
    fn failed(image: &str, e: anyhow::Error) -> Self {
        FrameScore {
            image: image.to_string(),
            width: 0,
            height: 0,
            nm_per_px: None,
            calibration: "none",
            boundaries: Vec::new(),
            boundary_false_positives: 0,
            other_boundary_boxes: Vec::new(),
            false_positives: 0,
            points_labelled: 0,
            points_found: 0,
            unscored: Default::default(),
            detections: 0,
            error: Some(format!("{e:#}")),
        }
    }

    pub fn found(&self) -> usize {
        self.boundaries.iter().filter(|b| b.found).count()
    }
    /// Boundary boxes other than the one that found each labelled boundary.
    pub fn extra_boundary_boxes(&self) -> usize {
        self.boundary_false_positives + self.boundaries.iter().map(|b| b.duplicates).sum::<usize>()
    }
}

/// A frame as another acquisition would record it ([`crate::eval::acquisition`]), scored
/// against its labels carried along.
#[derive(Clone, Debug, Serialize)]
pub struct VariantScore {
    /// [`crate::eval::acquisition::Variant::name`].
    pub variant: String,
    /// The frame's target ([`RealReport::targets`]) met in this variant.
    pub met: bool,
    pub frame: FrameScore,
}

/// The whole set.
#[derive(Clone, Debug, Serialize)]
pub struct RealReport {
    pub set: String,
    pub model: String,
    pub method: String,
    pub conf: f32,
    pub iou: f64,
    /// Test-time augmentation: the model ran on the frame's dihedral copies too.
    pub tta: bool,
    /// Every frame read as this crystal instead of the set's own (`eval-real --crystal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_as: Option<String>,
    /// The model also ran at every preset crystal's reading of a lattice-derived scale.
    pub hedge_lattice_scale: bool,
    /// The model also ran on a calibrated frame as sampled where it trained at that pixel size.
    pub hedge_own_sampling: bool,
    pub frames: Vec<FrameScore>,
    pub boundaries_labelled: usize,
    pub boundaries_found: usize,
    pub false_positives_per_frame: f64,
    /// The project's targets (README, model section), each with whether it is met.
    pub targets: Vec<Target>,
    /// Every frame again as other acquisitions would record it (`eval-real --variants`); not
    /// part of [`RealReport::targets`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantScore>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub met: bool,
    pub measured: String,
}

impl RealReport {
    pub fn all_targets_met(&self) -> bool {
        self.targets.iter().all(|t| t.met)
    }

    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<44} {:>6} {:>10} {:>6} {:>4} {:>8}  unscored",
            "frame", "found", "extra GB", "FP", "all", "pm/px"
        );
        for f in &self.frames {
            if let Some(e) = &f.error {
                let _ = writeln!(s, "{:<44} error: {e}", f.image);
                continue;
            }
            let uns: Vec<String> = f.unscored.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let px = match f.nm_per_px {
                Some(nm) if f.calibration == "file" => format!("{:.2}", nm * 1e3),
                // Marked: not the file's own.
                Some(nm) => format!("{:.2}*", nm * 1e3),
                None => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<44} {:>6} {:>10} {:>6} {:>4} {:>8}  {}",
                f.image,
                format!("{}/{}", f.found(), f.boundaries.len()),
                f.extra_boundary_boxes(),
                f.false_positives,
                f.detections,
                px,
                if uns.is_empty() {
                    "-".to_string()
                } else {
                    uns.join(", ")
                }
            );
            for o in &f.other_boundary_boxes {
                let _ = writeln!(
                    s,
                    "    other boundary box: {:.2} {}{} at ({:.0}, {:.0}), {:.0} px long, {:.0}° off horizontal",
                    o.confidence,
                    o.source,
                    if o.duplicate { ", a duplicate" } else { "" },
                    o.obb.cx,
                    o.obb.cy,
                    o.obb.w.max(o.obb.h),
                    crate::detect::combine::axis_angle_deg(
                        &o.obb,
                        &OrientedBox::new(0.0, 0.0, 1.0, 0.0, 0.0)
                    ),
                );
            }
        }
        let _ = writeln!(
            s,
            "boundaries found {}/{}, false positives per frame {:.2} ({} {}, conf {}, iou {})",
            self.boundaries_found,
            self.boundaries_labelled,
            self.false_positives_per_frame,
            self.model,
            self.method,
            self.conf,
            self.iou
        );
        if !self.variants.is_empty() {
            let _ = writeln!(
                s,
                "as other acquisitions would record them (variant: found, extra GB, FP, all):"
            );
            let mut images: Vec<&str> = self
                .variants
                .iter()
                .map(|v| v.frame.image.as_str())
                .collect();
            images.dedup();
            for image in images {
                let rows: Vec<&VariantScore> = self
                    .variants
                    .iter()
                    .filter(|v| v.frame.image == image)
                    .collect();
                let met = rows.iter().filter(|v| v.met).count();
                let _ = writeln!(s, "  {image}: target met in {met}/{}", rows.len());
                let cells: Vec<String> = rows
                    .iter()
                    .map(|v| {
                        let f = &v.frame;
                        if let Some(e) = &f.error {
                            return format!("{} error: {e}", v.variant);
                        }
                        format!(
                            "{}{} {}/{} {} {} {}",
                            if v.met { "" } else { "!" },
                            v.variant,
                            f.found(),
                            f.boundaries.len(),
                            f.extra_boundary_boxes(),
                            f.false_positives,
                            f.detections
                        )
                    })
                    .collect();
                for chunk in cells.chunks(4) {
                    let _ = writeln!(s, "    {}", chunk.join("  |  "));
                }
            }
            let met = self.variants.iter().filter(|v| v.met).count();
            let _ = writeln!(
                s,
                "variants meeting their frame's target: {met}/{}",
                self.variants.len()
            );
        }
        for t in &self.targets {
            let _ = writeln!(
                s,
                "  [{}] {}: {}",
                if t.met { "met" } else { "NOT MET" },
                t.what,
                t.measured
            );
        }
        s
    }
}

/// The long axis of a box: unit direction and half length.
fn long_axis(b: &OrientedBox) -> (Pt, f64, f64) {
    let (t, len) = b.long_axis();
    ([t.cos(), t.sin()], len / 2.0, b.w.min(b.h) / 2.0)
}

/// How well detection `d` follows the labelled band `band` in a `w x h` frame: `None` unless
/// it counts as finding it, else its angle error in degrees.
pub fn follows_band(d: &OrientedBox, band: &OrientedBox, w: f64, h: f64) -> Option<f64> {
    let (dt, d_half, _) = long_axis(d);
    let (bt, b_half, b_halfw) = long_axis(band);
    let angle = crate::detect::combine::axis_angle_deg(d, band);
    if angle > MAX_ANGLE_DEG {
        return None;
    }
    let bn = [-bt[1], bt[0]];
    // Points of the detection's centre line inside the frame and along the band's length.
    const STEPS: usize = 64;
    let (mut along_band, mut inside) = (0usize, 0usize);
    for k in 0..=STEPS {
        let s = -d_half + 2.0 * d_half * k as f64 / STEPS as f64;
        let p = [d.cx + s * dt[0], d.cy + s * dt[1]];
        if p[0] < 0.0 || p[1] < 0.0 || p[0] > w || p[1] > h {
            continue;
        }
        let rel = [p[0] - band.cx, p[1] - band.cy];
        let along = rel[0] * bt[0] + rel[1] * bt[1];
        if along.abs() > b_half {
            continue;
        }
        along_band += 1;
        if (rel[0] * bn[0] + rel[1] * bn[1]).abs() <= b_halfw {
            inside += 1;
        }
    }
    (along_band > 0 && inside as f64 >= MIN_INSIDE_FRACTION * along_band as f64).then_some(angle)
}

/// Scores one frame's detections against its labels (boxes in pixels, class ids of
/// [`DefectClass`]).
pub fn score_frame(
    image: &str,
    width: usize,
    height: usize,
    labels: &[(DefectClass, OrientedBox)],
    complete_for: &[String],
    detections: &[Detection],
) -> FrameScore {
    let gb = DefectClass::GrainBoundary.name();
    let mut boundaries: Vec<BoundaryMatch> = labels
        .iter()
        .filter(|(c, _)| *c == DefectClass::GrainBoundary)
        .map(|(_, b)| BoundaryMatch {
            band: *b,
            found: false,
            confidence: None,
            angle_error_deg: None,
            source: None,
            duplicates: 0,
        })
        .collect();
    let mut points: Vec<(DefectClass, OrientedBox, bool)> = labels
        .iter()
        .filter(|(c, _)| *c != DefectClass::GrainBoundary)
        .map(|(c, b)| (*c, *b, false))
        .collect();
    let mut order: Vec<&Detection> = detections.iter().collect();
    order.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let (mut boundary_fp, mut fp) = (0usize, 0usize);
    let mut others = Vec::new();
    let mut unscored = std::collections::BTreeMap::new();
    let complete = |name: &str| complete_for.iter().any(|c| c == name);
    for d in order {
        let name = d.class_name.as_ref();
        if name == gb {
            let hit = boundaries.iter_mut().find_map(|b| {
                follows_band(&d.obb, &b.band, width as f64, height as f64).map(|a| (b, a))
            });
            match hit {
                Some((b, angle)) if !b.found => {
                    b.found = true;
                    b.confidence = Some(d.confidence);
                    b.angle_error_deg = Some(angle);
                    b.source = Some(d.source.name().to_string());
                }
                Some((b, _)) => {
                    b.duplicates += 1;
                    others.push(OtherBoundaryBox::of(d, true));
                    if complete(gb) {
                        fp += 1;
                    }
                }
                None => {
                    boundary_fp += 1;
                    others.push(OtherBoundaryBox::of(d, false));
                    if complete(gb) {
                        fp += 1;
                    }
                }
            }
        } else if complete(name) {
            // A point defect is found when a detection's centre lies in its labelled box.
            let hit = points
                .iter_mut()
                .find(|(c, b, found)| !*found && c.name() == name && b.contains(d.obb.center()));
            match hit {
                Some(p) => p.2 = true,
                None => fp += 1,
            }
        } else {
            *unscored.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    FrameScore {
        image: image.to_string(),
        width,
        height,
        nm_per_px: None,
        calibration: "none",
        boundaries,
        boundary_false_positives: boundary_fp,
        other_boundary_boxes: others,
        false_positives: fp,
        points_labelled: points.len(),
        points_found: points.iter().filter(|p| p.2).count(),
        unscored,
        detections: detections.len(),
        error: None,
    }
}

/// Options of [`evaluate_real`].
#[derive(Clone, Debug)]
pub struct RealOptions {
    pub method: crate::detect::combine::DetectMethod,
    pub conf: f32,
    pub iou: f64,
    /// The samples folder; `None` = the set file's `samples`.
    pub samples: Option<PathBuf>,
    /// The model also runs on these dihedral copies of each frame ([`crate::detect::tta`]).
    pub tta: Option<Vec<crate::geometry::Dihedral>>,
    /// Check each file's calibration against its lattice, as `detect` does
    /// ([`crate::frame::check_file_calibration`]).
    pub check_file_calibration: bool,
    /// Read every frame as this crystal instead of the set's own (`None`: the set's).
    pub crystal: Option<Preset>,
    /// Fuse the model's runs at every preset crystal's reading of a lattice-derived scale
    /// ([`crate::frame::LatticeUse::hedge_lattice_scale`]).
    pub hedge_lattice_scale: bool,
    /// Also run a calibrated frame as sampled where the model trained at its pixel size
    /// ([`crate::frame::LatticeUse::hedge_own_sampling`]).
    pub hedge_own_sampling: bool,
    /// Score every frame again as each of these acquisitions would record it.
    pub variants: Vec<crate::eval::acquisition::Variant>,
    /// Write every scored frame (and variant) here: `<stem>.<variant>.png`, an overlay of labels
    /// and boxes; `.csv`, its detections as `detect` writes them; `.frame.png`, the frame
    /// itself (16-bit grey, min to max), to open in the Viewer or run `detect` on.
    pub save_variants: Option<PathBuf>,
}

impl Default for RealOptions {
    fn default() -> Self {
        Self {
            method: Default::default(),
            conf: crate::detect::DEFAULT_CONF,
            iou: crate::detect::DEFAULT_IOU,
            samples: None,
            tta: None,
            check_file_calibration: true,
            crystal: None,
            hedge_lattice_scale: true,
            hedge_own_sampling: true,
            variants: Vec::new(),
            save_variants: None,
        }
    }
}

/// Where a set's images are.
pub fn samples_dir(set_path: &Path, set: &RealSet, opts: &RealOptions) -> PathBuf {
    opts.samples.clone().unwrap_or_else(|| {
        set_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&set.samples)
    })
}

/// Runs `det` (and the lattice analysis, by `opts.method`) on every frame of the set, as
/// `detect` would, and scores it.
pub fn evaluate_real(
    det: &Detector,
    set_path: &Path,
    opts: &RealOptions,
) -> anyhow::Result<RealReport> {
    let set = RealSet::read(set_path)?;
    let samples = samples_dir(set_path, &set, opts);
    if !samples.is_dir() {
        anyhow::bail!(
            "the samples folder {} is missing (the set's images stay there; set --samples)",
            samples.display()
        );
    }
    if let Some(dir) = &opts.save_variants {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let set_dir = set_path.parent().unwrap_or(Path::new("."));
    let mut frames = Vec::new();
    let mut variants = Vec::new();
    for f in &set.frames {
        let loaded = (|| -> anyhow::Result<_> {
            let crystal = match opts.crystal {
                Some(p) => p.spec(),
                None => Preset::named_crystal(&f.crystal)?.spec(),
            };
            let s = crate::formats::load(&samples.join(&f.image))?;
            let (w, h) = (s.image.width, s.image.height);
            let labels = read_labels(&set_dir.join(&f.labels), &Validation::default())?
                .iter()
                .map(|l| {
                    let class = DefectClass::from_id(l.class).context("class id")?;
                    Ok((class, l.to_box_px(w as f64, h as f64)))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let lattice = LatticeUse {
                crystal,
                calibrate: true,
                check_file_calibration: opts.check_file_calibration,
                method: opts.method,
                tta: opts.tta.clone(),
                hedge_lattice_scale: opts.hedge_lattice_scale,
                hedge_own_sampling: opts.hedge_own_sampling,
                // The report does not use the share: no spectrum and fit for it.
                check_crystal: false,
                ..Default::default()
            };
            Ok((s, labels, lattice))
        })();
        let (s, labels, lattice) = match loaded {
            Ok(l) => l,
            Err(e) => {
                frames.push(FrameScore::failed(&f.image, e));
                continue;
            }
        };
        let score = |image: &crate::raster::ImageF32,
                     px: Option<crate::raster::PixelSize>,
                     labels: &[(DefectClass, OrientedBox)]|
         -> anyhow::Result<(FrameScore, Vec<Detection>)> {
            let frame = detect_frame(
                det,
                image,
                px,
                &lattice,
                &DetectOptions::default(),
                opts.conf,
                opts.iou,
            )?;
            let (w, h) = (image.width, image.height);
            let mut score = score_frame(&f.image, w, h, labels, &f.complete_for, &frame.detections);
            score.nm_per_px = frame.calibration.pixel_size().map(|p| p.nm_per_px);
            score.calibration = frame.calibration.source();
            Ok((score, frame.detections))
        };
        // With `save_variants`, each scored frame as an overlay (labels yellow, boxes in their
        // class colour), its detections as `detect` writes them (confidence and source per
        // box) and the frame itself as a 16-bit PNG, to open the variant in the Viewer.
        let save = |name: &str,
                    image: &crate::raster::ImageF32,
                    px: Option<crate::raster::PixelSize>,
                    labels: &[(DefectClass, OrientedBox)],
                    dets: &[Detection]|
         -> anyhow::Result<()> {
            let Some(dir) = &opts.save_variants else {
                return Ok(());
            };
            let mut boxes: Vec<(OrientedBox, [u8; 3])> =
                labels.iter().map(|(_, b)| (*b, [255, 220, 0])).collect();
            boxes.extend(dets.iter().map(|d| {
                let c = DefectClass::from_id(d.class).unwrap_or(DefectClass::Interstitial);
                (d.obb, c.overlay_rgb())
            }));
            let stem = Path::new(&f.image)
                .file_stem()
                .map_or_else(|| f.image.clone(), |s| s.to_string_lossy().to_string());
            crate::raster::save_overlay_png(
                &dir.join(format!("{stem}.{name}.png")),
                image,
                &boxes,
            )?;
            crate::fsio::atomic_write(
                &dir.join(format!("{stem}.{name}.csv")),
                crate::detect::export::detections_csv(dets, px).as_bytes(),
            )?;
            crate::raster::save_gray16_png(&dir.join(format!("{stem}.{name}.frame.png")), image)
        };
        // A frame that cannot be scored is reported as such; an overlay that cannot be
        // written stops the run (the folder is the user's problem, not the frame's).
        frames.push(match score(&s.image, s.pixel_size, &labels) {
            Ok((sc, dets)) => {
                save("original", &s.image, s.pixel_size, &labels, &dets)?;
                sc
            }
            Err(e) => FrameScore::failed(&f.image, e),
        });
        for v in &opts.variants {
            let scored = match v.apply(&s.image, s.pixel_size, &labels).and_then(|a| {
                let (sc, dets) = score(&a.image, a.pixel_size, &a.labels)?;
                Ok((a, sc, dets))
            }) {
                Ok((a, sc, dets)) => {
                    save(&v.name(), &a.image, a.pixel_size, &a.labels, &dets)?;
                    sc
                }
                Err(e) => FrameScore::failed(&f.image, e),
            };
            let met = frame_targets(&scored, opts.conf).met;
            variants.push(VariantScore {
                variant: v.name(),
                met,
                frame: scored,
            });
        }
    }
    let boundaries_labelled = frames.iter().map(|f| f.boundaries.len()).sum();
    let boundaries_found = frames.iter().map(|f| f.found()).sum();
    let fps: usize = frames.iter().map(|f| f.false_positives).sum();
    let targets = targets(&frames, opts.conf);
    Ok(RealReport {
        set: set_path.display().to_string(),
        model: det.info().path.display().to_string(),
        method: opts.method.label().to_string(),
        conf: opts.conf,
        iou: opts.iou,
        tta: opts.tta.is_some(),
        read_as: opts.crystal.map(|p| p.cli_name().to_string()),
        hedge_lattice_scale: opts.hedge_lattice_scale,
        hedge_own_sampling: opts.hedge_own_sampling,
        false_positives_per_frame: fps as f64 / frames.len().max(1) as f64,
        frames,
        boundaries_labelled,
        boundaries_found,
        targets,
        variants,
    })
}

/// The targets of the detections-on-real-frames issue: every labelled boundary found with the
/// right orientation and no other boundary box on its frame; frames without labels (defect-
/// free) without any detection.
fn targets(frames: &[FrameScore], conf: f32) -> Vec<Target> {
    frames.iter().map(|f| frame_targets(f, conf)).collect()
}

/// [`targets`] of one frame.
fn frame_targets(f: &FrameScore, conf: f32) -> Target {
    if let Some(e) = &f.error {
        return Target {
            what: format!("{}: scored", f.image),
            met: false,
            measured: e.clone(),
        };
    }
    if f.boundaries.is_empty() {
        Target {
            what: format!("{}: no detections at confidence {conf}", f.image),
            met: f.detections == 0,
            measured: format!("{} detection(s)", f.detections),
        }
    } else {
        Target {
            what: format!("{}: every boundary found, no other boundary box", f.image),
            met: f.found() == f.boundaries.len() && f.extra_boundary_boxes() == 0,
            measured: format!(
                "{}/{} found, {} other boundary box(es)",
                f.found(),
                f.boundaries.len(),
                f.extra_boundary_boxes()
            ),
        }
    }
}

/// The detection methods whose real-frame targets the shipped model is held to by a test: the
/// app's default (both), the training-free analysis alone, and, since the calibration check
/// gives the Si tilt frame its lattice's pixel size, the model alone (one pass and, since the
/// model of 2026-12-04, with test-time augmentation).
#[cfg(test)]
const SCORED_METHODS: [crate::detect::combine::DetectMethod; 3] = [
    crate::detect::combine::DetectMethod::Both,
    crate::detect::combine::DetectMethod::Lattice,
    crate::detect::combine::DetectMethod::Model,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::DetectionSource;
    use std::sync::Arc;

    fn gb(b: OrientedBox, conf: f32) -> Detection {
        Detection {
            class: 0,
            class_name: Arc::from("grain_boundary"),
            confidence: conf,
            obb: b,
            source: DetectionSource::Model,
        }
    }

    fn band() -> OrientedBox {
        // A horizontal band 40 px wide across a 400 x 300 frame, centred at y = 150.
        OrientedBox::new(200.0, 150.0, 400.0, 40.0, 0.0)
    }

    #[test]
    fn a_box_along_the_band_finds_it_and_a_crossing_box_does_not() {
        let w = (400.0, 300.0);
        // Along it, slightly tilted, longer than the frame: found.
        let along = OrientedBox::new(210.0, 155.0, 600.0, 30.0, 5f64.to_radians());
        assert!(follows_band(&along, &band(), w.0, w.1).is_some());
        // Half as long, inside: found (a partial detection still marks the boundary).
        let part = OrientedBox::new(100.0, 145.0, 150.0, 20.0, 0.0);
        assert!(follows_band(&part, &band(), w.0, w.1).is_some());
        // Tilted 25 degrees: wrong orientation.
        let tilted = OrientedBox::new(200.0, 150.0, 300.0, 20.0, 25f64.to_radians());
        assert!(follows_band(&tilted, &band(), w.0, w.1).is_none());
        // Parallel but 60 px off: beside the boundary, not on it.
        let beside = OrientedBox::new(200.0, 210.0, 400.0, 20.0, 0.0);
        assert!(follows_band(&beside, &band(), w.0, w.1).is_none());
        // Within 20 degrees but leaving the band over most of its length: not on it.
        let crossing = OrientedBox::new(200.0, 150.0, 400.0, 10.0, 15f64.to_radians());
        assert!(follows_band(&crossing, &band(), w.0, w.1).is_none());
        // A box described by its short side along the boundary (w < h) is the same line.
        let turned = OrientedBox::new(
            200.0,
            150.0,
            20.0,
            400.0,
            std::f64::consts::FRAC_PI_2 + 0.02,
        );
        assert!(follows_band(&turned, &band(), w.0, w.1).is_some());
    }

    #[test]
    fn extra_boundary_boxes_and_unlabelled_frames_count_against_the_detector() {
        let labels = [(DefectClass::GrainBoundary, band())];
        let complete = vec!["grain_boundary".to_string()];
        let found = gb(OrientedBox::new(200.0, 150.0, 400.0, 30.0, 0.0), 0.9);
        let dup = gb(OrientedBox::new(100.0, 152.0, 150.0, 30.0, 0.0), 0.5);
        let wrong = gb(OrientedBox::new(200.0, 150.0, 300.0, 30.0, 1.0), 0.8);
        let mut vac = gb(OrientedBox::new(50.0, 50.0, 8.0, 8.0, 0.0), 0.7);
        vac.class_name = Arc::from("vacancy");
        let s = score_frame(
            "f",
            400,
            300,
            &labels,
            &complete,
            &[dup.clone(), wrong, found, vac.clone()],
        );
        assert_eq!(s.found(), 1);
        // The most confident box on the boundary is the match, whatever the input order.
        assert_eq!(s.boundaries[0].confidence, Some(0.9));
        assert_eq!(s.boundaries[0].duplicates, 1);
        assert_eq!(s.boundary_false_positives, 1);
        assert_eq!(s.extra_boundary_boxes(), 2);
        // Both listed, best first, each with what it was.
        let others: Vec<(f32, bool)> = s
            .other_boundary_boxes
            .iter()
            .map(|o| (o.confidence, o.duplicate))
            .collect();
        assert_eq!(others, [(0.8, false), (0.5, true)]);
        assert_eq!(s.false_positives, 2);
        // Vacancies are not labelled on this frame: reported, not scored.
        assert_eq!(s.unscored.get("vacancy"), Some(&1));
        // A frame complete for every class with no labels: anything is a false positive.
        let all: Vec<String> = DefectClass::ALL.iter().map(|c| c.name().into()).collect();
        let bulk = score_frame("bulk", 400, 300, &[], &all, &[vac, dup]);
        assert_eq!(
            (bulk.false_positives, bulk.boundary_false_positives),
            (2, 1)
        );
        let t = targets(&[s, bulk], 0.25);
        assert!(t.iter().all(|t| !t.met), "{t:?}");
    }

    #[test]
    fn the_shipped_set_file_reads_and_its_labels_parse() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let path = root.join("assets/real-set/set.json");
        let set = RealSet::read(&path).unwrap();
        assert!(set.frames.len() >= 3);
        for f in &set.frames {
            Preset::named_crystal(&f.crystal).unwrap();
            let labels = read_labels(
                &path.parent().unwrap().join(&f.labels),
                &Validation::default(),
            )
            .unwrap();
            for l in labels {
                assert!(DefectClass::from_id(l.class).is_some());
            }
            for c in &f.complete_for {
                assert!(DefectClass::ALL.iter().any(|d| d.name() == c), "{c}");
            }
        }
    }

    /// The shipped model on the CPU and the set file, or `None` (with a printed reason) where
    /// `../shared/samples` is absent.
    fn shipped_detector_and_set() -> Option<(Detector, PathBuf)> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        if !root.join("../shared/samples").is_dir() {
            eprintln!("skipped: ../shared/samples is absent (the real frames live there)");
            return None;
        }
        let det = crate::test_support::cpu_detector("models/cdte-yolo11n-obb.onnx");
        Some((det, root.join("assets/real-set/set.json")))
    }

    /// The shipped model on the labelled real frames, as CI runs it: the project's targets
    /// (README, model section) must hold for what `detect` does by default.
    #[test]
    fn the_shipped_detector_meets_the_real_frame_targets() {
        let Some((det, set)) = shipped_detector_and_set() else {
            return;
        };
        for method in SCORED_METHODS {
            let r = evaluate_real(
                &det,
                &set,
                &RealOptions {
                    method,
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(r.all_targets_met(), "{}", r.table());
            assert_eq!(r.boundaries_found, 2, "{}", r.table());
            // The Si tilt DM3's calibration is contradicted by its lattice; the CdTe one's is
            // not (see `frame::check_file_calibration`).
            let how = |name: &str| {
                r.frames
                    .iter()
                    .find(|f| f.image.starts_with(name))
                    .map(|f| f.calibration)
            };
            assert_eq!(
                how("Si011"),
                Some("lattice, not the file's"),
                "{}",
                r.table()
            );
            assert_eq!(how("CdTe110"), Some("file"), "{}", r.table());
            assert_eq!(how("Si110_bulk"), Some("lattice"), "{}", r.table());
            // What `detect` gives without `--crystal`: every frame read as CdTe, the Si ones
            // too (their lattice-derived scales 19 % coarse; the model's runs at every preset
            // crystal's reading fused, `CrystalSpec::preset_scales`).
            let r = evaluate_real(
                &det,
                &set,
                &RealOptions {
                    method,
                    crystal: Some(Preset::Cdte110),
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(r.all_targets_met(), "read as CdTe: {}", r.table());
            assert_eq!(r.boundaries_found, 2, "read as CdTe: {}", r.table());
            // With test-time augmentation (`detect --tta`) too: since the model of 2026-12-04
            // the model alone as well (its boundary box on the Si tilt frame survives the
            // fusion of the 8 copies).
            let r = evaluate_real(
                &det,
                &set,
                &RealOptions {
                    method,
                    tta: Some(crate::detect::tta::default_transforms()),
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(r.tta && r.all_targets_met(), "{}", r.table());
            assert_eq!(r.boundaries_found, 2, "{}", r.table());
        }
    }

    /// The real frames as other acquisitions would record them (README, "The real frames as
    /// other acquisitions would record them"): the app's default with `--tta` meets every
    /// frame's target in every quarter turn and mirror, and the CdTe and bulk Si frames' at
    /// every scan rotation and magnification too; in one pass, every quarter turn and mirror.
    #[test]
    fn the_default_detector_holds_under_other_acquisitions() {
        let Some((det, set)) = shipped_detector_and_set() else {
            return;
        };
        let r = evaluate_real(
            &det,
            &set,
            &RealOptions {
                tta: Some(crate::detect::tta::default_transforms()),
                variants: crate::eval::acquisition::default_variants(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(r.variants.len(), 3 * 13, "{}", r.table());
        for v in &r.variants {
            let dihedral = crate::geometry::Dihedral::from_name(&v.variant).is_some();
            // The bulk frame's too since the lattice analysis' point confidences are
            // calibrated (a vacancy at 1.00 on it at 1.4× before).
            let always = ["CdTe110", "Si110_bulk"];
            if dihedral || always.iter().any(|a| v.frame.image.starts_with(a)) {
                assert!(v.met, "{} {}: {}", v.frame.image, v.variant, r.table());
            }
        }
        // The Si tilt frame's at every magnification and scan rotation but 30° too, since a
        // boundary only the lattice sees needs a model box along it (`combine::SECOND_FLOOR`):
        // at 0.7× and 45° lone ridges along the band's edges were extra boundary boxes before.
        let si_missed: Vec<&str> = r
            .variants
            .iter()
            .filter(|v| v.frame.image.starts_with("Si011") && !v.met)
            .map(|v| v.variant.as_str())
            .collect();
        assert!(
            si_missed.iter().all(|v| *v == "rot30"),
            "{si_missed:?}: {}",
            r.table()
        );
        // One pass as well, in every quarter turn and mirror, since a model boundary box the
        // lattice contradicts is weighed down (`frame::weigh_contradicted_boundaries`): the
        // Si tilt frame turned by 180° and 270° drew one across its upper grain before.
        let quarter_turns: Vec<_> = crate::eval::acquisition::default_variants()
            .into_iter()
            .filter(|v| crate::geometry::Dihedral::from_name(&v.name()).is_some())
            .collect();
        assert_eq!(quarter_turns.len(), 7);
        let saved = tempfile::tempdir().unwrap();
        let r = evaluate_real(
            &det,
            &set,
            &RealOptions {
                variants: quarter_turns,
                save_variants: Some(saved.path().to_path_buf()),
                ..Default::default()
            },
        )
        .unwrap();
        // What was saved of each scored frame: the overlay, the detections scored (one CSV row
        // each) and the frame as scored, at its size (a quarter turn swaps the sides).
        for v in &r.variants {
            let stem = Path::new(&v.frame.image)
                .file_stem()
                .unwrap()
                .to_string_lossy();
            let base = saved.path().join(format!("{stem}.{}", v.variant));
            let file = |ext: &str| base.with_file_name(format!("{stem}.{}.{ext}", v.variant));
            assert!(file("png").is_file(), "{}", base.display());
            let csv = std::fs::read_to_string(file("csv")).unwrap();
            assert_eq!(csv.lines().count(), 1 + v.frame.detections, "{csv}");
            let frame = crate::formats::load(&file("frame.png")).unwrap();
            assert_eq!(
                (frame.image.width, frame.image.height),
                (v.frame.width, v.frame.height),
                "{}",
                v.variant
            );
        }
        for v in &r.variants {
            assert!(
                v.met,
                "one pass, {} {}: {}",
                v.frame.image,
                v.variant,
                r.table()
            );
        }
    }
}
