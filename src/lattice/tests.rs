//! Tests of the lattice analysis: real frames from `../shared/samples` and synthetic frames
//! whose truth is known (boundaries, misorientation, point defects).

use super::*;
use crate::dataset::randomize::{DomainRandomization, draw_params};
use crate::synth::scene::{BoundaryKind, DefectLabel};
use crate::synth::{SynthParams, generate};
use std::path::PathBuf;

use crate::test_support::samples;

fn run_file(name: &str, preset: &str) -> Option<LatticeResult> {
    let dir = samples()?;
    let img = crate::formats::load(&dir.join(name)).unwrap();
    let spec = crate::synth::crystal::Preset::from_cli_name(preset)
        .unwrap()
        .spec();
    let p = LatticeParams::new(spec, img.pixel_size.map(|p| p.nm_per_px));
    Some(analyse(&img.image, &p).unwrap())
}

fn angle_deg(b: &OrientedBox) -> f64 {
    b.angle.to_degrees().rem_euclid(180.0)
}

fn line_angle_diff(a: f64, b: f64) -> f64 {
    boundaries::fold_misorientation(a - b)
}

#[test]
fn real_cdte_tilt_boundary_is_found_horizontal_across_the_middle() {
    let Some(r) = run_file("CdTe110_tilt-GB_HAADF149_ingrained.dm3", "cdte110") else {
        return;
    };
    assert!(!r.boundaries.is_empty(), "no boundary found");
    let b = &r.boundaries[0];
    assert!(
        line_angle_diff(angle_deg(&b.obb), 0.0) < 15.0,
        "{:?}",
        b.obb
    );
    assert!((180.0..340.0).contains(&b.obb.cy), "{:?}", b.obb);
    assert!(b.obb.w > 300.0, "{:?}", b.obb);
    assert!(b.misorientation_deg.is_some());
    // Every boundary found runs roughly horizontally through the band.
    for b in &r.boundaries {
        assert!(
            line_angle_diff(angle_deg(&b.obb), 0.0) < 20.0,
            "{:?}",
            b.obb
        );
    }
}

#[test]
fn real_si_tilt_boundary_is_found_near_y_280() {
    let Some(r) = run_file("Si011_tilt-GB_HAADF85_ingrained.dm3", "si110") else {
        return;
    };
    assert!(!r.boundaries.is_empty(), "no boundary found");
    let b = &r.boundaries[0];
    assert!(
        line_angle_diff(angle_deg(&b.obb), 0.0) < 15.0,
        "{:?}",
        b.obb
    );
    assert!((240.0..320.0).contains(&b.obb.cy), "{:?}", b.obb);
    for b in &r.boundaries {
        assert!(
            line_angle_diff(angle_deg(&b.obb), 0.0) < 20.0,
            "{:?}",
            b.obb
        );
    }
}

#[test]
fn real_si_bulk_frame_gives_no_detections() {
    let Some(r) = run_file("Si110_bulk_AtomSegNet.png", "si110") else {
        return;
    };
    assert!(r.scale_estimated);
    // Nominally ≈ 0.0098 nm/px.
    assert!((0.008..0.012).contains(&r.nm_per_px), "{}", r.nm_per_px);
    assert!(
        r.detections().is_empty(),
        "false positives: {:?}",
        r.detections()
    );
}

/// Truth boundary lines in the image frame. `lamella`: one plane of a lamella, where the side
/// windows straddle both planes, so its misorientation is not scored.
struct TruthGb {
    obb: OrientedBox,
    lamella: bool,
    twin: bool,
}

fn truth_boundaries(s: &crate::synth::Synthesized) -> Vec<TruthGb> {
    let labels: Vec<&DefectLabel> = s
        .labels
        .iter()
        .filter(|l| l.class == DefectClass::GrainBoundary)
        .collect();
    labels
        .iter()
        .map(|l| {
            // The scene boundary this label belongs to: parallel and nearest to its centre.
            let c = l.obb.center();
            let b = s
                .scene
                .boundaries
                .iter()
                .filter(|b| {
                    let a = b.direction[1].atan2(b.direction[0]).to_degrees();
                    line_angle_diff(a, angle_deg(&l.obb)) < 5.0
                })
                .min_by(|a, b| a.distance(c).total_cmp(&b.distance(c)));
            let lamella = b.is_some_and(|b| {
                b.lamella_of.is_some()
                    || s.scene.boundaries.iter().any(|o| {
                        o.lamella_of
                            .is_some_and(|k| std::ptr::eq(&s.scene.boundaries[k], b))
                    })
            });
            let twin = b.is_some_and(|b| b.kind == BoundaryKind::Twin);
            TruthGb {
                obb: l.obb,
                lamella,
                twin,
            }
        })
        .collect()
}

/// The specimen misorientation across a detected segment: the majority grain on either side,
/// `offset` image px from the line (where the analysis reads the sides), mapped back through
/// the scan distortion. A scene boundary does not have one misorientation: boundaries placed
/// later split the grains of earlier ones (a twin of a twin ends on the first twin plane,
/// which beyond the junction separates the parent from the twin's twin, a Σ9 boundary of
/// 38.9°), so the truth is read where the detection is. `None` when a side has no grain
/// covering 60 % of it.
fn truth_misorientation(
    s: &crate::synth::Synthesized,
    d: &OrientedBox,
    offset: f64,
) -> Option<f64> {
    let (w, h) = (s.image.width as f64, s.image.height as f64);
    let dir = [d.angle.cos(), d.angle.sin()];
    let n = [-dir[1], dir[0]];
    let mut sides: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    for k in 0..=40 {
        let t = (k as f64 / 40.0 - 0.5) * d.w;
        for (side, sg) in [(0, -1.0), (1, 1.0)] {
            let q = [
                d.cx + t * dir[0] + sg * offset * n[0],
                d.cy + t * dir[1] + sg * offset * n[1],
            ];
            if !(0.0..w).contains(&q[0]) || !(0.0..h).contains(&q[1]) {
                continue;
            }
            let qs = s.scene.distortion.to_specimen(q);
            if let Some(g) = s.scene.grains.iter().position(|g| g.contains(qs)) {
                sides[side].push(g);
            }
        }
    }
    let majority = |v: &[usize]| -> Option<usize> {
        let best =
            (0..s.scene.grains.len()).max_by_key(|&g| v.iter().filter(|&&x| x == g).count())?;
        let c = v.iter().filter(|&&x| x == best).count();
        (c > 0 && c as f64 >= 0.6 * v.len() as f64).then_some(best)
    };
    let (a, b) = (majority(&sides[0])?, majority(&sides[1])?);
    let u_deg = |g: usize| {
        let m = s.scene.grains[g].frame.m;
        m[1][0].atan2(m[0][0]).to_degrees()
    };
    Some(boundaries::fold_misorientation(u_deg(a) - u_deg(b)))
}

/// Does detection `d` find truth band `t`: its centre line runs inside the band over the
/// part they share, at most 20° from the band's direction.
fn matches(d: &OrientedBox, t: &OrientedBox) -> bool {
    if line_angle_diff(angle_deg(d), angle_deg(t)) > 20.0 {
        return false;
    }
    let dir = [t.angle.cos(), t.angle.sin()];
    let nrm = [-dir[1], dir[0]];
    let dd = [d.angle.cos(), d.angle.sin()];
    let ends = [
        [d.cx - 0.5 * d.w * dd[0], d.cy - 0.5 * d.w * dd[1]],
        [d.cx + 0.5 * d.w * dd[0], d.cy + 0.5 * d.w * dd[1]],
    ];
    let along = |p: [f64; 2]| (p[0] - t.cx) * dir[0] + (p[1] - t.cy) * dir[1];
    let across = |p: [f64; 2]| (p[0] - t.cx) * nrm[0] + (p[1] - t.cy) * nrm[1];
    let (a0, a1) = (along(ends[0]), along(ends[1]));
    let (lo, hi) = (a0.min(a1).max(-t.w / 2.0), a0.max(a1).min(t.w / 2.0));
    if hi <= lo {
        return false;
    }
    // Perpendicular offset of the detection's line at the middle of the shared part.
    let f = ((0.5 * (lo + hi)) - a0) / (a1 - a0);
    let p = [
        ends[0][0] + f * (ends[1][0] - ends[0][0]),
        ends[0][1] + f * (ends[1][1] - ends[0][1]),
    ];
    across(p).abs() <= t.h / 2.0
}

#[derive(Default, Debug)]
struct GbStats {
    frames: usize,
    truth: usize,
    found: usize,
    detections: usize,
    true_detections: usize,
    mis_errors: Vec<f64>,
    twin_truth: usize,
    twin_labelled_twin: usize,
    /// Truths across which the lattice only translates (no rotation): stacking faults, made
    /// where a second twin plane mirrors the strip next to a parallel first one back. The
    /// window spectra cannot see a translation; only their core band shows.
    translation_truth: usize,
    translation_found: usize,
    ms: Vec<f64>,
}

/// Writes one benchmark frame for looking at: the image (8-bit PGM, 0.5–99.5 % window), its
/// parameters and the truth and detected boundary boxes.
fn dump_frame(
    dir: &std::path::Path,
    seed: u64,
    p: &SynthParams,
    s: &crate::synth::Synthesized,
    r: &LatticeResult,
) {
    std::fs::write(
        dir.join(format!("{seed}.json")),
        serde_json::to_string(p).unwrap(),
    )
    .unwrap();
    let q = s.image.percentiles(&[0.5, 99.5]);
    let mut pgm = format!("P5 {} {} 255\n", s.image.width, s.image.height).into_bytes();
    pgm.extend(s.image.to_u8(q[0], q[1]));
    std::fs::write(dir.join(format!("{seed}.pgm")), pgm).unwrap();
    // The discontinuity map (0–0.5 → 0–255), one pixel per cell.
    let m = &r.maps;
    let mut pgm = format!("P5 {} {} 255\n", m.cols, m.rows).into_bytes();
    pgm.extend(
        m.discontinuity
            .iter()
            .map(|&v| (v * 510.0).clamp(0.0, 255.0) as u8),
    );
    std::fs::write(dir.join(format!("{seed}.disc.pgm")), pgm).unwrap();
    let truth: Vec<OrientedBox> = truth_boundaries(s).iter().map(|t| t.obb).collect();
    let found: Vec<OrientedBox> = r.boundaries.iter().map(|b| b.obb).collect();
    std::fs::write(
        dir.join(format!("{seed}.boxes.json")),
        serde_json::to_string(&(truth, found)).unwrap(),
    )
    .unwrap();
}

/// `LATTICE_SET="field=value,..."` replaces fields of the benchmark's parameters (JSON
/// values), so a threshold can be swept over seed sets without a rebuild.
fn with_overrides(p: LatticeParams) -> LatticeParams {
    let Ok(spec) = std::env::var("LATTICE_SET") else {
        return p;
    };
    let mut v = serde_json::to_value(&p).unwrap();
    for kv in spec.split(',').filter(|s| !s.is_empty()) {
        let (k, val) = kv.split_once('=').expect("LATTICE_SET: field=value");
        assert!(v.get(k).is_some(), "LATTICE_SET: no field {k}");
        v[k] = serde_json::from_str(val).expect("LATTICE_SET: a JSON value");
    }
    serde_json::from_value(v).unwrap()
}

fn eval_boundaries(seeds: std::ops::Range<u64>, size: usize) -> GbStats {
    let recipe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("training/dr-realistic.json");
    let dr = DomainRandomization::read(&recipe).unwrap();
    let base = SynthParams {
        width: size,
        height: size,
        ..Default::default()
    };
    let mut st = GbStats::default();
    for seed in seeds {
        let p = draw_params(&base, &dr, seed);
        let s = generate(&p).unwrap();
        let lp = with_overrides(LatticeParams {
            point_defects: false,
            ..LatticeParams::new(p.crystal.spec(), Some(p.pixel_size_pm / 1000.0))
        });
        let r = analyse(&s.image, &lp).unwrap();
        if let Some(d) = std::env::var_os("LATTICE_DUMP") {
            dump_frame(&PathBuf::from(d), seed, &p, &s, &r);
        }
        st.ms.push(r.timings_ms.total);
        let truth = truth_boundaries(&s);
        if std::env::var_os("LATTICE_DEBUG").is_some() {
            let strength = r.visibility;
            let nf = truth
                .iter()
                .filter(|t| r.boundaries.iter().any(|b| matches(&b.obb, &t.obb)))
                .count();
            eprintln!(
                "FRAME {seed} strength {strength:.2} truth {} found {nf} dose {:.0} px {:.1}",
                truth.len(),
                p.noise.dose_e_per_a2,
                p.pixel_size_pm
            );
            for b in &r.boundaries {
                let ok = truth.iter().any(|t| matches(&b.obb, &t.obb));
                eprintln!(
                    "DET {seed} score {:.3} contrast {:.3} true {} angle {:.1} mis {:?}",
                    b.score,
                    b.contrast,
                    ok as u8,
                    b.obb.angle.to_degrees().rem_euclid(180.0),
                    b.misorientation_deg.map(|m| (m * 10.0).round() / 10.0)
                );
            }
        }
        st.frames += 1;
        st.truth += truth.len();
        st.detections += r.boundaries.len();
        st.true_detections += r
            .boundaries
            .iter()
            .filter(|b| truth.iter().any(|t| matches(&b.obb, &t.obb)))
            .count();
        for t in &truth {
            let hit = r.boundaries.iter().find(|b| matches(&b.obb, &t.obb));
            // Read across the truth box itself (a lamella's box spans both planes: none).
            let truth_mis = (!t.lamella)
                .then(|| truth_misorientation(&s, &t.obb, 0.8 * r.maps.window_px as f64))
                .flatten();
            if truth_mis.is_some_and(|m| m < 0.5) {
                st.translation_truth += 1;
                st.translation_found += hit.is_some() as usize;
            }
            if let Some(b) = hit {
                st.found += 1;
                let window = r.maps.window_px as f64;
                let tmis = (!t.lamella)
                    .then(|| truth_misorientation(&s, &b.obb, 0.8 * window))
                    .flatten();
                if let (Some(m), Some(tm)) = (b.misorientation_deg, tmis) {
                    st.mis_errors.push((m - tm).abs());
                    if std::env::var_os("LATTICE_DEBUG").is_some() {
                        eprintln!(
                            "seed {seed}: truth {tm:.2} measured {m:.2} sides {:?} px {:.1} drift {:.1},{:.1}",
                            b.orientation_sides_deg,
                            p.pixel_size_pm,
                            p.scan.drift_x_px_per_kline,
                            p.scan.drift_y_px_per_kline
                        );
                    }
                }
                if t.twin && tmis.is_some_and(|m| (m - boundaries::TWIN_DEG).abs() < 1.0) {
                    st.twin_truth += 1;
                    if b.kind == BoundaryKindGuess::Twin {
                        st.twin_labelled_twin += 1;
                    }
                }
            } else if std::env::var_os("LATTICE_DEBUG").is_some() {
                eprintln!(
                    "seed {seed}: missed (truth misorientation {:?}, lamella {}) {:?} (px {:.1} pm, {} detections: {:?})",
                    truth_mis,
                    t.lamella,
                    t.obb,
                    p.pixel_size_pm,
                    r.boundaries.len(),
                    r.boundaries.iter().map(|b| b.obb).collect::<Vec<_>>()
                );
            }
        }
    }
    st
}

fn report(st: &GbStats) {
    let mut e = st.mis_errors.clone();
    e.sort_by(|a, b| a.total_cmp(b));
    let q = |f: f64| {
        e.get(((e.len() as f64 - 1.0) * f).round() as usize)
            .copied()
    };
    let rotating = st.truth - st.translation_truth;
    let rotating_found = st.found - st.translation_found;
    eprintln!(
        "frames {} truth {} found {} recall {:.3} (with a lattice rotation {}/{} = {:.3}; \
         translation only {}/{}) | detections {} true {} precision {:.3} | \
         misorientation error median {:?} p90 {:?} within 2°: {}/{} | twins named {}/{} | median ms {:.1}",
        st.frames,
        st.truth,
        st.found,
        st.found as f64 / st.truth.max(1) as f64,
        rotating_found,
        rotating,
        rotating_found as f64 / rotating.max(1) as f64,
        st.translation_found,
        st.translation_truth,
        st.detections,
        st.true_detections,
        st.true_detections as f64 / st.detections.max(1) as f64,
        q(0.5),
        q(0.9),
        e.iter().filter(|&&x| x <= 2.0).count(),
        e.len(),
        st.twin_labelled_twin,
        st.twin_truth,
        crate::raster::median(st.ms.clone()),
    );
}

#[test]
fn synthetic_boundaries_are_recalled() {
    let st = eval_boundaries(0..24, 768);
    report(&st);
    let recall = st.found as f64 / st.truth.max(1) as f64;
    let precision = st.true_detections as f64 / st.detections.max(1) as f64;
    // Measured on these seeds with the realistic recipe: recall 0.950, precision 0.929 (0.925 /
    // 0.925 before narrow windows on finely sampled frames; 0.82 before scan tears were
    // dropped; 0.875 /
    // 0.875 before ridges took only the cells within half a window; 0.80 / 0.74 before wide
    // windows on low-visibility frames and the lower-flank ridge rule; 0.54 precision with a
    // fixed ridge threshold and no contrast test). On 5 × 200 seeds (the ignored benchmark
    // below, README) recall 0.918–0.953, 0.944 over all, precision 0.927. The target
    // is 0.95 recall, reached on three of the five sets: the misses are mostly thin lamellae
    // beside another boundary, frames whose lattice is buried in noise and fine sampling
    // (< 10 pm/px). The bounds guard against regressions.
    assert!(recall >= 0.87, "recall {recall}");
    assert!(precision >= 0.85, "precision {precision}");
    // Misorientation from the polar rotation of the {111} pair, truth read along the detected
    // segment: median 0.43°, 20 of 21 within 2°, twins 12 of 12 on these seeds (the bisector
    // reading it replaced: median 2.0° on the 200-frame benchmark).
    let mut e = st.mis_errors.clone();
    e.sort_by(f64::total_cmp);
    assert!(e.len() >= 15, "only {} misorientations scored", e.len());
    assert!(
        e[e.len() / 2] <= 1.0,
        "median misorientation error {}",
        e[e.len() / 2]
    );
    let within = e.iter().filter(|&&x| x <= 2.0).count() as f64 / e.len() as f64;
    assert!(within >= 0.8, "within 2°: {within}");
    assert!(
        st.twin_labelled_twin as f64 >= 0.9 * st.twin_truth as f64,
        "twins named {}/{}",
        st.twin_labelled_twin,
        st.twin_truth
    );
}

/// The finely sampled frames of the realistic recipe (below 10 pm/px: a 768² frame spans
/// 13–20 {111} periods) with a clear lattice: the maps switch to 3-period windows, and with the
/// shortest segment capped at 0.3 of the map they find boundaries the standard 4-period windows
/// and the 25 Å minimum length missed: on seeds 3000–3199, 24 such frames, 38 of 42 boundaries
/// found instead of 33.
#[test]
fn finely_sampled_frames_use_narrow_windows_and_find_more_boundaries() {
    let recipe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("training/dr-realistic.json");
    let dr = DomainRandomization::read(&recipe).unwrap();
    let base = SynthParams {
        width: 768,
        height: 768,
        ..Default::default()
    };
    let (mut frames, mut truth, mut found) = (0, 0, [0usize; 2]);
    for seed in 3000..3200 {
        let p = draw_params(&base, &dr, seed);
        if p.pixel_size_pm >= 10.0 {
            continue;
        }
        let s = generate(&p).unwrap();
        let lp = LatticeParams {
            point_defects: false,
            ..LatticeParams::new(p.crystal.spec(), Some(p.pixel_size_pm / 1000.0))
        };
        let r = analyse(&s.image, &lp).unwrap();
        // Si and GaAs have shorter periods: some of these frames span more than 20.
        let periods = s.image.width.min(s.image.height) as f64 / r.d111_px;
        if r.visibility < lp.narrow_window_min_strength || periods >= lp.narrow_window_below_periods
        {
            continue;
        }
        assert_eq!(r.maps.window_span, WindowSpan::Narrow, "seed {seed}");
        let standard = LatticeParams {
            narrow_window_below_periods: 0.0,
            min_boundary_len_map_fraction: 10.0,
            ..lp.clone()
        };
        let r0 = analyse(&s.image, &standard).unwrap();
        let t = truth_boundaries(&s);
        frames += 1;
        truth += t.len();
        for (k, r) in [&r, &r0].into_iter().enumerate() {
            found[k] += t
                .iter()
                .filter(|t| r.boundaries.iter().any(|b| matches(&b.obb, &t.obb)))
                .count();
        }
    }
    eprintln!(
        "{frames} fine frames: {} of {truth} boundaries found (standard windows: {})",
        found[0], found[1]
    );
    assert!(frames >= 10, "only {frames} fine frames");
    assert!(found[0] > found[1], "{found:?} of {truth}");
}

/// The full measurement behind the README numbers (slow in a debug build):
/// `cargo test --release --lib lattice::tests::synthetic_boundary_benchmark -- --ignored --nocapture`.
/// `LATTICE_FIRST_SEED=2000` runs 200 other seeds (a change tuned on seeds 1000–1199 must hold
/// there too; `LATTICE_FRAMES=N` runs N instead of 200), `LATTICE_DEBUG=1` prints every
/// frame, detection and miss, and `LATTICE_DUMP=DIR` writes each frame (`SEED.pgm`), its parameters (`SEED.json`, for `synth --params`) and the
/// truth and detected boxes (`SEED.boxes.json`) for looking at the misses.
#[test]
#[ignore]
fn synthetic_boundary_benchmark() {
    let first: u64 = std::env::var("LATTICE_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let frames: u64 = std::env::var("LATTICE_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let st = eval_boundaries(first..first + frames, 768);
    report(&st);
}

#[derive(Default, Debug)]
struct PointStats {
    truth: [usize; 2],
    found: [usize; 2],
    detections: [usize; 2],
    true_detections: [usize; 2],
}

impl PointStats {
    fn line(&self, what: &str) -> String {
        let f = |a: usize, b: usize| a as f64 / b.max(1) as f64;
        format!(
            "{what}: vacancy recall {:.2} ({}/{}) precision {:.2} ({}/{}); interstitial recall {:.2} ({}/{}) precision {:.2} ({}/{})",
            f(self.found[0], self.truth[0]),
            self.found[0],
            self.truth[0],
            f(self.true_detections[0], self.detections[0]),
            self.true_detections[0],
            self.detections[0],
            f(self.found[1], self.truth[1]),
            self.found[1],
            self.truth[1],
            f(self.true_detections[1], self.detections[1]),
            self.true_detections[1],
            self.detections[1],
        )
    }
}

/// Point defects of the lattice analysis against the synthesizer's labels: a detection is
/// true when its centre lies in a label box of its class. `params` fixes everything but the
/// seed (the scene: defects, boundaries, rotation).
fn eval_points(seeds: std::ops::Range<u64>, base: &SynthParams) -> PointStats {
    let mut st = PointStats::default();
    for seed in seeds {
        let p = SynthParams {
            seed,
            ..base.clone()
        };
        let s = generate(&p).unwrap();
        let r = analyse(
            &s.image,
            &LatticeParams::new(p.crystal.spec(), Some(p.pixel_size_pm / 1000.0)),
        )
        .unwrap();
        for (k, class) in [DefectClass::Vacancy, DefectClass::Interstitial]
            .into_iter()
            .enumerate()
        {
            let truth: Vec<&OrientedBox> = s
                .labels
                .iter()
                .filter(|l| l.class == class)
                .map(|l| &l.obb)
                .collect();
            let dets: Vec<&OrientedBox> = r
                .point_defects
                .iter()
                .filter(|d| d.class == class)
                .map(|d| &d.obb)
                .collect();
            st.truth[k] += truth.len();
            st.detections[k] += dets.len();
            st.found[k] += truth
                .iter()
                .filter(|t| dets.iter().any(|d| t.contains(d.center())))
                .count();
            if std::env::var_os("LATTICE_DEBUG").is_some() {
                for d in &dets {
                    if !truth.iter().any(|t| t.contains(d.center())) {
                        eprintln!("seed {seed}: false {class:?} at ({:.0}, {:.0})", d.cx, d.cy);
                    }
                }
                for t in &truth {
                    if !dets.iter().any(|d| t.contains(d.center())) {
                        eprintln!(
                            "seed {seed}: missed {class:?} at ({:.0}, {:.0})",
                            t.cx, t.cy
                        );
                    }
                }
            }
            st.true_detections[k] += dets
                .iter()
                .filter(|d| truth.iter().any(|t| t.contains(d.center())))
                .count();
        }
    }
    st
}

#[test]
fn synthetic_point_defects_are_found_at_the_default_and_a_low_dose() {
    // `synth` defaults: CdTe [110], 0.93 Å columns, 12 scenes at 5e4 and at 2e3 e/Å². Measured
    // (the 40-scene benchmark below): recall 1.00 for vacancies, 0.92-1.00 for interstitials,
    // precision 0.96-1.00 at every dose from 2e3 to 2e5.
    for dose in [5e4, 2e3] {
        let mut base = SynthParams {
            width: 512,
            height: 512,
            ..Default::default()
        };
        base.noise.dose_e_per_a2 = dose;
        let st = eval_points(0..12, &base);
        let line = st.line(&format!("synth defaults, {dose:.0e} e/A2"));
        eprintln!("{line}");
        let recall = |k: usize| st.found[k] as f64 / st.truth[k].max(1) as f64;
        let precision = |k: usize| st.true_detections[k] as f64 / st.detections[k].max(1) as f64;
        assert!(st.truth[0] > 10 && st.truth[1] > 5, "{st:?}");
        assert!(recall(0) >= 0.9 && precision(0) >= 0.85, "{line}");
        assert!(recall(1) >= 0.85 && precision(1) >= 0.85, "{line}");
    }
}

/// Point-defect precision and recall against dose and on the realistic recipe (the README
/// numbers): `cargo test --release --lib lattice::tests::point_defect_benchmark -- --ignored --nocapture`.
#[test]
#[ignore]
fn point_defect_benchmark() {
    for dose in [2e3, 5e3, 1e4, 5e4, 2e5] {
        let mut base = SynthParams {
            width: 512,
            height: 512,
            ..Default::default()
        };
        base.noise.dose_e_per_a2 = dose;
        let st = eval_points(100..140, &base);
        eprintln!(
            "{}",
            st.line(&format!("synth defaults, {dose:.0e} e/A2, 40 scenes"))
        );
    }
    // The realistic recipe (broad columns, high backgrounds, distortions), 40 frames.
    let recipe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("training/dr-realistic.json");
    let dr = DomainRandomization::read(&recipe).unwrap();
    let mut st = PointStats::default();
    for seed in 200..240 {
        let p = draw_params(
            &SynthParams {
                width: 512,
                height: 512,
                ..Default::default()
            },
            &dr,
            seed,
        );
        let one = eval_points(p.seed..p.seed + 1, &p);
        for k in 0..2 {
            st.truth[k] += one.truth[k];
            st.found[k] += one.found[k];
            st.detections[k] += one.detections[k];
            st.true_detections[k] += one.true_detections[k];
        }
    }
    eprintln!(
        "{}",
        st.line("realistic recipe (dr-realistic.json), 40 frames")
    );
}

#[test]
fn boundary_confidence_follows_the_measured_precision() {
    use boundaries::confidence;
    // The contrast bins (0.05-0.065, -0.09, -0.13, above) of the 200-frame benchmark with scan
    // tears dropped: precision 0.47, 0.73, 0.90, 0.99 on seeds 1000-1199 (15, 26, 29, 316
    // boxes; fitted) and 0.44, 0.67, 0.96, 0.99 on seeds 2000-2199 (18, 15, 27, 335 boxes).
    assert!((0.4..0.6).contains(&confidence(0.055)));
    assert!((0.6..0.8).contains(&confidence(0.077)));
    assert!((0.8..0.95).contains(&confidence(0.105)));
    assert!(confidence(0.2) > 0.99);
    assert!(confidence(0.06) < confidence(0.061));
}

#[test]
fn point_confidence_follows_the_measured_precision() {
    use crate::classes::DefectClass::{Interstitial, Vacancy};
    use points::confidence;
    // A whole column missing at the detection threshold: about the precision measured there
    // (0.5–0.65), no longer 1.0.
    assert!((0.4..0.7).contains(&confidence(Vacancy, 5.0, 1.0)));
    // A shallow dip is mostly noise (held-out precision 0.04–0.37 below 0.7 of a column).
    assert!(confidence(Vacancy, 5.0, 0.6) < 0.2);
    assert!(confidence(Interstitial, 5.0, 1.0) < confidence(Interstitial, 15.0, 1.0));
    assert!(confidence(Vacancy, 8.0, 0.8) < confidence(Vacancy, 8.0, 0.9));
    for s in [4.5, 10.0, 40.0] {
        for d in [0.3, 0.7, 1.0] {
            for c in [Vacancy, Interstitial] {
                let p = confidence(c, s, d);
                assert!(p > 0.0 && p < 0.95, "{c:?} {s} {d}: {p}");
            }
        }
    }
}

#[test]
fn line_evidence_tells_a_boundary_from_a_line_inside_one_grain() {
    let Some(r) = run_file("Si011_tilt-GB_HAADF85_ingrained.dm3", "si110") else {
        return;
    };
    let b = r.boundaries[0].obb;
    let on = r.line_evidence(&b).expect("the boundary lies on the maps");
    // The same line moved into the upper grain, where the model once drew a boundary box on
    // this frame turned by 180°.
    let inside = OrientedBox {
        cy: b.cy - 150.0,
        ..b
    };
    let off = r.line_evidence(&inside).expect("the line lies on the maps");
    eprintln!("on the boundary {on:?}, inside a grain {off:?}");
    assert!(on.misorientation_deg.is_some_and(|m| m > 8.0), "{on:?}");
    assert!(on.contrast > 0.05, "{on:?}");
    assert!(off.misorientation_deg.is_some_and(|m| m < 3.0), "{off:?}");
    assert!(off.contrast <= 0.0, "{off:?}");
}
