//! Tests of the synthesizer: determinism, labels against the geometry, physical parameters.

use super::params::{CountRange, ProbeModel};
use super::scene::{BoundaryKind, PointDefectKind, scene_columns};
use super::*;
use crate::classes::DefectClass;
use crate::geometry::Pt;

fn small(seed: u64) -> SynthParams {
    SynthParams {
        seed,
        width: 256,
        height: 256,
        ..Default::default()
    }
}

fn noiseless(mut p: SynthParams) -> SynthParams {
    p.noise.enabled = false;
    p.scan.line_jitter_px = 0.0;
    p.specimen.thickness_variation = 0.0;
    p.specimen.background_gradient = 0.0;
    p
}

#[test]
fn same_seed_same_bits_on_any_thread() {
    let p = small(11);
    let a = generate(&p).unwrap();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || generate(&p).unwrap())
        })
        .collect();
    for h in handles {
        let b = h.join().unwrap();
        assert!(
            a.image
                .data
                .iter()
                .zip(&b.image.data)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
        assert_eq!(a.labels, b.labels);
    }
    let c = generate(&small(12)).unwrap();
    assert_ne!(a.image.data, c.image.data);
}

#[test]
fn sidecar_regenerates_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = small(5);
    p.defects.twin_boundaries = CountRange::new(1, 1);
    let s = generate(&p).unwrap();
    let files = write_outputs(&s, dir.path(), "img", ImageFormat::Png).unwrap();
    let r = regenerate_from_sidecar(&files.sidecar).unwrap();
    assert!(
        s.image
            .data
            .iter()
            .zip(&r.image.data)
            .all(|(x, y)| x.to_bits() == y.to_bits())
    );
    assert_eq!(s.labels, r.labels);
    // The label file parses and matches.
    let labels = crate::formats::yolo::read_labels(&files.labels, &Default::default()).unwrap();
    assert_eq!(labels.len(), s.labels.len());
    let png = image::open(&files.image).unwrap();
    assert_eq!((png.width(), png.height()), (256, 256));
}

#[test]
fn tiff16_keeps_counts_and_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let s = generate(&small(3)).unwrap();
    let files = write_outputs(&s, dir.path(), "img", ImageFormat::Tiff16).unwrap();
    let mut dec = tiff::decoder::Decoder::new(std::fs::File::open(&files.image).unwrap()).unwrap();
    let tiff::decoder::DecodingResult::U16(v) = dec.read_image().unwrap() else {
        panic!("not 16-bit")
    };
    assert_eq!(
        v[1000],
        s.image.data[1000].round().clamp(0.0, 65535.0) as u16
    );
    let tiff::decoder::ifd::Value::Rational(n, d) =
        dec.get_tag(tiff::tags::Tag::XResolution).unwrap()
    else {
        panic!("XResolution is not a rational")
    };
    let nm = 1e7 / (n as f64 / d as f64);
    assert!((nm - 0.015).abs() < 1e-5, "{nm}");
}

/// Mean of the noiseless image in a small disc.
fn disc_mean(img: &crate::raster::ImageF32, c: Pt, r: f64) -> f64 {
    let (mut s, mut n) = (0.0, 0);
    for y in (c[1] - r).floor() as i64..=(c[1] + r).ceil() as i64 {
        for x in (c[0] - r).floor() as i64..=(c[0] + r).ceil() as i64 {
            if x < 0 || y < 0 || x >= img.width as i64 || y >= img.height as i64 {
                continue;
            }
            let d = ((x as f64 + 0.5 - c[0]).powi(2) + (y as f64 + 0.5 - c[1]).powi(2)).sqrt();
            if d <= r {
                s += img.get(x as usize, y as usize) as f64;
                n += 1;
            }
        }
    }
    s / n as f64
}

#[test]
fn vacancy_boxes_hold_their_empty_site_and_no_other_defect() {
    for seed in 0..12 {
        let mut p = noiseless(small(seed));
        p.width = 384;
        p.height = 384;
        p.defects.vacancies = CountRange::new(3, 6);
        p.defects.interstitials = CountRange::new(2, 4);
        let s = generate(&p).unwrap();
        let point_labels: Vec<_> = s
            .labels
            .iter()
            .filter(|l| l.class != DefectClass::GrainBoundary)
            .collect();
        assert_eq!(point_labels.len(), s.scene.defects.len());
        for (i, (l, d)) in point_labels.iter().zip(&s.scene.defects).enumerate() {
            let at = s.scene.distortion.to_image(d.position);
            assert!(
                l.obb.contains(at),
                "seed {seed}: defect {i} outside its box"
            );
            assert_eq!(l.class, d.class());
            for (j, o) in s.scene.defects.iter().enumerate() {
                if i != j {
                    assert!(!l.obb.contains(s.scene.distortion.to_image(o.position)));
                }
            }
            // Inside the image.
            for c in l.obb.corners() {
                assert!(c[0] >= 0.0 && c[1] >= 0.0 && c[0] <= 384.0 && c[1] <= 384.0);
            }
        }
    }
}

#[test]
fn vacancies_are_dark_and_interstitials_bright() {
    let mut p = noiseless(small(21));
    p.scan.drift_x_px_per_kline = 0.0;
    p.scan.drift_y_px_per_kline = 0.0;
    p.defects.vacancies = CountRange::new(3, 3);
    p.defects.dumbbell_vacancy_prob = 0.0;
    p.defects.interstitials = CountRange::new(2, 2);
    p.defects.interstitial_occupancy = super::params::Span::new(1.0, 1.0);
    p.defects.twin_boundaries = CountRange::new(0, 0);
    p.defects.tilt_boundaries = CountRange::new(0, 0);
    let s = generate(&p).unwrap();
    let perfect = {
        let mut q = s.scene.clone();
        q.defects.clear();
        render_scene(&p, q).unwrap()
    };
    let r = 0.4 / p.pixel_size_a();
    for d in &s.scene.defects {
        let with = disc_mean(&s.image, d.position, r);
        let without = disc_mean(&perfect.image, d.position, r);
        match d.kind {
            PointDefectKind::Vacancy { .. } => {
                assert!(with < 0.6 * without, "vacancy {with} vs {without}")
            }
            PointDefectKind::Interstitial { .. } => {
                assert!(with > 1.5 * without, "interstitial {with} vs {without}")
            }
        }
    }
}

#[test]
fn cd_and_te_columns_differ_by_z_power() {
    let mut p = noiseless(small(2));
    p.specimen.background = 0.0;
    p.defects = Default::default();
    p.defects.vacancies = CountRange::new(0, 0);
    p.defects.interstitials = CountRange::new(0, 0);
    p.defects.twin_boundaries = CountRange::new(0, 0);
    p.defects.tilt_boundaries = CountRange::new(0, 0);
    p.probe.model = ProbeModel::Gaussian;
    p.probe.gaussian_fwhm_a = 0.6;
    p.probe.source_sigma_a = 0.0;
    p.scan.drift_x_px_per_kline = 0.0;
    p.scan.drift_y_px_per_kline = 0.0;
    let s = generate(&p).unwrap();
    let cols = scene_columns(&p.crystal.spec(), &s.scene, &p);
    let (mut cd, mut te) = (vec![], vec![]);
    for c in cols
        .iter()
        .filter(|c| c.pos[0] > 30.0 && c.pos[1] > 30.0 && c.pos[0] < 226.0 && c.pos[1] < 226.0)
    {
        let v = disc_mean(&s.image, c.pos, 1.0);
        if c.species == 0 {
            cd.push(v)
        } else {
            te.push(v)
        }
    }
    let m = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ratio = m(&te) / m(&cd);
    let expected = (52.0f64 / 48.0).powf(1.7);
    assert!((ratio - expected).abs() < 0.03, "{ratio} vs {expected}");
}

#[test]
fn point_defect_boxes_follow_the_lattice_rotation() {
    for rot in [0.0, 17.0, 45.0, 100.0] {
        let mut p = noiseless(small(4));
        p.rotation_deg = Some(rot);
        p.scan.drift_x_px_per_kline = 0.0;
        p.scan.drift_y_px_per_kline = 0.0;
        p.defects.twin_boundaries = CountRange::new(0, 0);
        p.defects.tilt_boundaries = CountRange::new(0, 0);
        let s = generate(&p).unwrap();
        assert!(!s.labels.is_empty());
        for l in &s.labels {
            let d = (l.obb.angle - rot.to_radians()).rem_euclid(std::f64::consts::PI);
            assert!(
                d < 1e-6 || std::f64::consts::PI - d < 1e-6,
                "rot {rot}: {}",
                l.obb.angle.to_degrees()
            );
            // One projected CdTe cell (a/√2 x a) plus the 10% margin, in pixels.
            assert!((l.obb.w - 4.5827 * 1.1 / 0.15).abs() < 0.05);
            assert!((l.obb.h - 6.481 * 1.1 / 0.15).abs() < 0.05);
        }
    }
}

#[test]
fn boundary_boxes_cover_their_line_inside_the_image() {
    let mut seen_twin = false;
    let mut seen_tilt = false;
    for seed in 0..10 {
        let mut p = small(100 + seed);
        p.width = 512;
        p.height = 384;
        p.defects.twin_boundaries = CountRange::new(1, 1);
        p.defects.tilt_boundaries = CountRange::new(1, 1);
        let s = generate(&p).unwrap();
        let gb: Vec<_> = s
            .labels
            .iter()
            .filter(|l| l.class == DefectClass::GrainBoundary)
            .collect();
        assert_eq!(gb.len(), s.scene.boundaries.len());
        for (l, b) in gb.iter().zip(&s.scene.boundaries) {
            match b.kind {
                BoundaryKind::Twin => seen_twin = true,
                BoundaryKind::Tilt { .. } => seen_tilt = true,
            }
            // A true rectangle of the requested width, inside the image.
            assert!((l.obb.h - 10.0 / 0.15).abs() < 1e-9);
            for c in l.obb.corners() {
                assert!(
                    c[0] >= -1e-6 && c[1] >= -1e-6 && c[0] <= 512.0 + 1e-6 && c[1] <= 384.0 + 1e-6,
                    "{c:?}"
                );
            }
            // Every point of the line that is well inside the image lies in the box.
            let half = l.obb.h / 2.0 + 1.0;
            let [t0, t1] = b.extent.unwrap_or([f64::MIN, f64::MAX]);
            for k in -2000..=2000 {
                let t = k as f64 * 0.5;
                if t < t0 || t > t1 {
                    continue;
                }
                let q = [
                    b.point[0] + t * b.direction[0],
                    b.point[1] + t * b.direction[1],
                ];
                let qi = s.scene.distortion.to_image(q);
                if qi[0] > half && qi[1] > half && qi[0] < 512.0 - half && qi[1] < 384.0 - half {
                    assert!(
                        l.obb.contains(qi),
                        "seed {seed}: line point {qi:?} outside {:?}",
                        l.obb
                    );
                }
            }
            // Long enough to see: half the shorter side, or a quarter when it ends on another.
            assert!(l.obb.w >= 0.25 * 384.0);
        }
    }
    assert!(seen_twin && seen_tilt);
}

/// Columns of a noiseless, undistorted scene with ideal (sharp) boundaries.
fn ideal_twin_scene(seed: u64) -> (SynthParams, Scene) {
    let mut p = small(seed);
    p.defects.vacancies = CountRange::new(0, 0);
    p.defects.interstitials = CountRange::new(0, 0);
    p.defects.twin_boundaries = CountRange::new(1, 1);
    p.defects.tilt_boundaries = CountRange::new(0, 0);
    p.defects.boundary_structure = params::BoundaryStructure::ideal();
    p.scan.drift_x_px_per_kline = 0.0;
    p.scan.drift_y_px_per_kline = 0.0;
    p.pixel_size_pm = 20.0;
    (p.clone(), draw(&p))
}

#[test]
fn twin_is_a_rotation_about_the_plane_normal_and_keeps_polarity() {
    for seed in [8, 9, 10, 11] {
        let (p, s) = ideal_twin_scene(seed);
        let b = &s.boundaries[0];
        assert_eq!(b.kind, BoundaryKind::Twin);
        let parent = s.grains[b.parent_grain].frame;
        let child = s.grains[b.child_grain].frame;
        // The dumbbell axis turns by 2 × 35.26° = 70.53°, and the Cd→Te vector keeps its
        // component along the plane normal (polarity across the plane: no wrong bonds), so
        // the vector itself turns by 180° − 70.53°.
        let dv = |f: &super::scene::LatticeFrame| f.v_angle();
        let turn = (dv(&child) - dv(&parent)).to_degrees().rem_euclid(360.0);
        let turn = turn.min(360.0 - turn);
        assert!((turn - 109.47).abs() < 0.05, "seed {seed}: {turn}");
        let n = b.normal();
        let along_n = |f: &super::scene::LatticeFrame| {
            let v = [f.m[0][1], f.m[1][1]];
            v[0] * n[0] + v[1] * n[1]
        };
        assert!((along_n(&parent) - along_n(&child)).abs() < 1e-9);
        // The plane lies between {111} double layers: no column closer than 0.9 Å... to it
        // (the wide gap is 2.8 Å in CdTe: columns sit ≥ 1.4 Å from its middle).
        let cols = scene_columns(&p.crystal.spec(), &s, &p);
        let px_a = p.pixel_size_a();
        let closest = cols
            .iter()
            .map(|c| b.distance(c.pos) * px_a)
            .fold(f64::MAX, f64::min);
        assert!(
            closest > 1.3,
            "seed {seed}: a column {closest} Å from the plane"
        );
    }
}

#[test]
fn twin_has_no_seam_every_column_keeps_its_partner_at_bulk_distances() {
    for seed in [8, 9, 10, 11, 12, 13] {
        let (p, s) = ideal_twin_scene(seed);
        let spec = p.crystal.spec();
        let cols = scene_columns(&spec, &s, &p);
        let b = &s.boundaries[0];
        let px_a = p.pixel_size_a();
        let bulk = spec.min_column_distance();
        let keys: std::collections::HashSet<_> = cols.iter().filter_map(|c| c.key).collect();
        let inside = |q: Pt| q[0] > 10.0 && q[1] > 10.0 && q[0] < 246.0 && q[1] < 246.0;
        let mut near = 0;
        for c in &cols {
            if !inside(c.pos) || b.distance(c.pos) * px_a > 6.0 {
                continue;
            }
            near += 1;
            let k = c.key.unwrap();
            let pair = spec
                .dumbbells
                .iter()
                .find(|d| d.contains(&(k.site as usize)))
                .unwrap();
            let partner = if pair[0] == k.site as usize {
                pair[1]
            } else {
                pair[0]
            };
            assert!(
                keys.contains(&super::scene::ColumnKey {
                    site: partner as u16,
                    ..k
                }),
                "seed {seed}: column {k:?} lost its dumbbell partner"
            );
            let nn = cols
                .iter()
                .filter(|o| o.pos != c.pos)
                .map(|o| ((o.pos[0] - c.pos[0]).hypot(o.pos[1] - c.pos[1])) * px_a)
                .fold(f64::MAX, f64::min);
            assert!(
                (nn - bulk).abs() < 0.05 * bulk,
                "seed {seed}: nearest neighbour {nn} Å at the boundary, bulk {bulk} Å"
            );
        }
        assert!(near > 20, "seed {seed}: only {near} columns near the plane");
    }
}

#[test]
fn lamella_is_two_parallel_twins_and_thin_ones_get_one_box() {
    let mut found_thin = false;
    let mut found_thick = false;
    for seed in 0..12 {
        let mut p = small(300 + seed);
        p.width = 384;
        p.height = 384;
        p.defects.twin_boundaries = CountRange::new(0, 0);
        p.defects.tilt_boundaries = CountRange::new(0, 0);
        p.defects.twin_lamellae = CountRange::new(1, 1);
        p.scan.drift_x_px_per_kline = 0.0;
        p.scan.drift_y_px_per_kline = 0.0;
        p.defects.lamella_thickness_nm = if seed % 2 == 0 {
            params::Span::new(0.4, 0.8)
        } else {
            params::Span::new(2.5, 4.0)
        };
        let s = generate(&p).unwrap();
        if s.scene.boundaries.len() != 2 {
            continue;
        }
        let (a, b) = (&s.scene.boundaries[0], &s.scene.boundaries[1]);
        assert_eq!(b.lamella_of, Some(0));
        let cross = a.direction[0] * b.direction[1] - a.direction[1] * b.direction[0];
        assert!(cross.abs() < 1e-9, "planes not parallel");
        let sep_nm = a.distance(b.point) * p.pixel_size_a() / 10.0;
        let (lo, hi) = (
            p.defects.lamella_thickness_nm.min,
            p.defects.lamella_thickness_nm.max,
        );
        // Snapped to the {111} spacing (0.374 nm).
        assert!(sep_nm > lo - 0.4 && sep_nm < hi + 0.4, "{sep_nm}");
        // The lamella turns the lattice back: the outer grains share an orientation.
        let g0 = s.scene.grains[a.parent_grain].frame;
        let g2 = s.scene.grains[b.child_grain].frame;
        for (x, y) in g0.m.iter().flatten().zip(g2.m.iter().flatten()) {
            assert!((x - y).abs() < 1e-9);
        }
        let boxes: Vec<_> = s
            .labels
            .iter()
            .filter(|l| l.class == DefectClass::GrainBoundary)
            .collect();
        let width_px = p.labels.boundary_width_a / p.pixel_size_a();
        if a.distance(b.point) < 2.0 * width_px {
            found_thin = true;
            assert_eq!(boxes.len(), 1);
            assert!((boxes[0].obb.h - (width_px + a.distance(b.point))).abs() < 1e-6);
            // The box covers both planes at its centre.
            let c = [boxes[0].obb.cx, boxes[0].obb.cy];
            assert!((a.distance(c) - b.distance(c)).abs() < 1e-6);
        } else {
            found_thick = true;
            assert_eq!(boxes.len(), 2);
        }
    }
    assert!(found_thin && found_thick);
}

#[test]
fn a_boundary_inside_a_grain_stops_at_its_edge_and_so_does_its_box() {
    let mut seen = 0;
    for seed in 0..30 {
        let mut p = small(500 + seed);
        p.width = 384;
        p.height = 384;
        p.defects.tilt_boundaries = CountRange::new(1, 1);
        p.defects.twin_boundaries = CountRange::new(0, 0);
        p.defects.twin_lamellae = CountRange::new(1, 1);
        p.scan.drift_x_px_per_kline = 0.0;
        p.scan.drift_y_px_per_kline = 0.0;
        let s = generate(&p).unwrap();
        let tilt = &s.scene.boundaries[0];
        let width_px = p.labels.boundary_width_a / p.pixel_size_a();
        let bs = &s.scene.boundaries;
        for (k, b) in bs.iter().enumerate().skip(1) {
            // A thin lamella's one box spans both planes, whose ends differ where they meet
            // the tilt boundary obliquely: that box is checked in the lamella test.
            let partner = bs
                .iter()
                .position(|o| o.lamella_of == Some(k))
                .or(b.lamella_of);
            if partner.is_some_and(|j| bs[j].distance(b.point) < 2.0 * width_px) {
                continue;
            }
            let Some([t0, t1]) = b.extent else { continue };
            let ends = [t0, t1].map(|t| {
                [
                    b.point[0] + t * b.direction[0],
                    b.point[1] + t * b.direction[1],
                ]
            });
            let on_tilt: Vec<_> = ends.iter().filter(|e| tilt.distance(**e) < 1e-6).collect();
            let Some(end) = on_tilt.first() else { continue };
            if end[0] < 0.0 || end[1] < 0.0 || end[0] > 384.0 || end[1] > 384.0 {
                continue;
            }
            seen += 1;
            // No grain-boundary box reaches beyond the end by more than half a box width.
            let past = |d: f64| {
                let t = if tilt.distance(ends[0]) < 1e-6 {
                    t0 - d
                } else {
                    t1 + d
                };
                [
                    b.point[0] + t * b.direction[0],
                    b.point[1] + t * b.direction[1],
                ]
            };
            let q = past(width_px);
            assert!(
                !s.labels.iter().any(|l| l.obb.contains(q)
                    && tilt.distance(q) > 0.6 * width_px
                    && b.distance(q) < 1e-6),
                "seed {}: a box runs past the end of a boundary",
                500 + seed
            );
        }
    }
    assert!(seen > 0, "no lamella ended on the tilt boundary");
}

#[test]
fn boundary_neighbourhood_bends_and_dims_near_the_line_only() {
    let mut p = small(21);
    p.width = 512;
    p.height = 512;
    p.pixel_size_pm = 40.0;
    p.defects.vacancies = CountRange::new(0, 0);
    p.defects.interstitials = CountRange::new(0, 0);
    p.defects.twin_boundaries = CountRange::new(0, 0);
    p.defects.tilt_boundaries = CountRange::new(1, 1);
    p.specimen.thickness_variation = 0.0;
    let spec = p.crystal.spec();
    let mut ideal = p.clone();
    ideal.defects.boundary_structure = params::BoundaryStructure::ideal();
    let s = draw(&p);
    let a = scene_columns(&spec, &s, &ideal);
    let b = scene_columns(&spec, &s, &p);
    assert_eq!(a.len(), b.len());
    let bd = &s.boundaries[0];
    let px_a = p.pixel_size_a();
    let (mut moved_near, mut n_near, mut moved_far) = (0.0, 0, 0.0f64);
    let (mut w_near, mut w_far) = (0.0, 0.0f64);
    for (c0, c1) in a.iter().zip(&b) {
        let d = bd.distance(c0.pos) * px_a;
        let shift = (c1.pos[0] - c0.pos[0]).hypot(c1.pos[1] - c0.pos[1]) * px_a;
        if d < 3.0 {
            moved_near += shift;
            n_near += 1;
            w_near += (c1.weight / c0.weight) as f64;
        } else if d > 95.0 {
            moved_far = moved_far.max(shift);
            w_far = w_far.max((1.0 - c1.weight / c0.weight).abs() as f64);
        }
    }
    assert!(n_near > 5);
    let bs = &p.defects.boundary_structure;
    assert!(
        moved_near / n_near as f64 > 0.5 * bs.strain_a,
        "{}",
        moved_near / n_near as f64
    );
    assert!(w_near / (n_near as f64) < 1.0 - 0.5 * bs.dechannelling);
    assert!(moved_far < 1e-3 && w_far < 1e-3, "{moved_far} {w_far}");
}

#[test]
fn column_width_adds_to_the_probe_in_quadrature() {
    let mut p = SynthParams::default();
    p.probe.model = ProbeModel::Gaussian;
    p.probe.gaussian_fwhm_a = 0.8;
    p.probe.source_sigma_a = 0.0;
    p.specimen.column_sigma_a = 0.5;
    let f = imaging::probe_profile(&imaging::effective_probe(&p)).fwhm_a();
    let expect = (0.8f64.powi(2) + (2.35482 * 0.5f64).powi(2)).sqrt();
    assert!((f - expect).abs() < 0.02, "{f} vs {expect}");
}

#[test]
fn amorphous_texture_is_smooth_unit_rms_and_deterministic() {
    let (w, h) = (300, 200);
    let t = imaging::amorphous_texture(w, h, 20.0, 5);
    assert_eq!(t, imaging::amorphous_texture(w, h, 20.0, 5));
    assert_ne!(t, imaging::amorphous_texture(w, h, 20.0, 6));
    let n = t.len() as f64;
    let mean = t.iter().map(|&v| v as f64).sum::<f64>() / n;
    let rms = (t.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(
        mean.abs() < 0.3 && (0.7..1.3).contains(&rms),
        "mean {mean} rms {rms}"
    );
    // Neighbouring pixels are nearly equal (correlated over ~20 px), far ones are not.
    let mut d1 = 0.0;
    let mut d40 = 0.0;
    for y in 0..h {
        for x in 0..w - 40 {
            d1 += ((t[y * w + x + 1] - t[y * w + x]) as f64).powi(2);
            d40 += ((t[y * w + x + 40] - t[y * w + x]) as f64).powi(2);
        }
    }
    assert!(d1 * 20.0 < d40, "{d1} {d40}");
    // It reaches the image as counts with their own shot noise: a layer brightens the mean.
    let mut p = small(4);
    p.specimen.amorphous = 0.0;
    let bare = generate(&p).unwrap().image;
    p.specimen.amorphous = 0.5;
    let layered = generate(&p).unwrap().image;
    let var = |im: &crate::raster::ImageF32| {
        let m = im.data.iter().map(|&v| v as f64).sum::<f64>() / im.data.len() as f64;
        im.data.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / im.data.len() as f64
    };
    assert!(var(&layered) > var(&bare));
}

#[test]
fn jitter_bursts_tear_a_few_lines() {
    let mut p = small(3);
    p.height = 512;
    p.scan.line_jitter_px = 0.0;
    p.scan.jitter_bursts_per_kline = 10.0;
    p.scan.jitter_burst_px = 3.0;
    p.scan.jitter_burst_lines = 5.0;
    let s = draw(&p);
    let torn = s
        .distortion
        .line_offsets
        .iter()
        .filter(|o| o.abs() > 0.0)
        .count();
    assert!(torn > 0 && torn < 200, "{torn}");
    let big = s
        .distortion
        .line_offsets
        .iter()
        .filter(|o| o.abs() > 1.0)
        .count();
    assert!(big > 0);
    p.scan.jitter_bursts_per_kline = 0.0;
    assert!(draw(&p).distortion.line_offsets.iter().all(|o| *o == 0.0));
}

#[test]
fn version_1_sidecars_render_without_the_new_knobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = small(5);
    p.specimen.column_sigma_a = 0.0;
    p.specimen.amorphous = 0.0;
    p.defects.boundary_structure = params::BoundaryStructure::ideal();
    let s = generate(&p).unwrap();
    let files = write_outputs(&s, dir.path(), "img", ImageFormat::Png).unwrap();
    // Rewrite it as version 1 wrote it: no new keys.
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files.sidecar).unwrap()).unwrap();
    v["version"] = 1.into();
    let pr = v["params"].as_object_mut().unwrap();
    pr["specimen"]
        .as_object_mut()
        .unwrap()
        .remove("column_sigma_a");
    pr["specimen"].as_object_mut().unwrap().remove("amorphous");
    pr["scan"]
        .as_object_mut()
        .unwrap()
        .remove("jitter_bursts_per_kline");
    pr["defects"]
        .as_object_mut()
        .unwrap()
        .remove("boundary_structure");
    std::fs::write(&files.sidecar, serde_json::to_vec(&v).unwrap()).unwrap();
    let r = regenerate_from_sidecar(&files.sidecar).unwrap();
    assert_eq!(r.image.data, s.image.data);
    // An unknown key is refused by name, not ignored.
    v["params"]["specimen"]["backgrund"] = 0.3.into();
    std::fs::write(&files.sidecar, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = format!("{:#}", regenerate_from_sidecar(&files.sidecar).unwrap_err());
    assert!(err.contains("backgrund"), "{err}");
}

fn draw(p: &SynthParams) -> Scene {
    scene::draw_scene(p)
}

#[test]
fn poisson_statistics_at_a_given_dose() {
    let mut p = small(9);
    p.specimen.background = 0.5;
    p.specimen.background_gradient = 0.0;
    p.specimen.amorphous = 0.0;
    p.noise.read_noise = 0.0;
    p.noise.dose_e_per_a2 = 2.0e4;
    let scene = draw(&p);
    let signal = crate::raster::ImageF32::new(256, 256);
    let img = imaging::detect(&signal, &scene, &p);
    // 2e4 e/Å² × (0.15 Å)² × 0.1 collection × 0.5 background = 22.5 counts per pixel.
    let lam = 2.0e4 * 0.15 * 0.15 * 0.1 * 0.5;
    let n = img.data.len() as f64;
    let mean = img.data.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = img
        .data
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    assert!((mean - lam).abs() < 0.1, "{mean}");
    assert!((var - lam).abs() < 0.05 * lam, "{var}");
    // Integer counts.
    assert!(img.data.iter().all(|v| v.fract() == 0.0));
}

#[test]
fn range_edges_do_not_panic() {
    let mut none = small(1);
    none.defects.vacancies = CountRange::new(0, 0);
    none.defects.interstitials = CountRange::new(0, 0);
    none.defects.twin_boundaries = CountRange::new(0, 0);
    none.defects.tilt_boundaries = CountRange::new(0, 0);
    assert!(generate(&none).unwrap().labels.is_empty());

    let mut many = small(1);
    many.defects.vacancies = CountRange::new(500, 500);
    many.defects.interstitials = CountRange::new(500, 500);
    many.defects.twin_boundaries = CountRange::new(4, 4);
    many.defects.tilt_boundaries = CountRange::new(4, 4);
    let s = generate(&many).unwrap();
    assert!(!s.scene.unplaced.is_empty());
    assert!(s.labels.len() < 1008);

    for (w, h) in [(8, 8), (9, 31), (2048, 64)] {
        let mut t = small(2);
        t.width = w;
        t.height = h;
        let s = generate(&t).unwrap();
        assert_eq!(s.image.data.len(), w * h);
        assert!(s.image.data.iter().all(|v| v.is_finite()));
    }
    let mut big_px = small(3);
    big_px.pixel_size_pm = 100.0;
    big_px.probe.cs_um = 2000.0;
    big_px.probe.aperture_mrad = 40.0;
    generate(&big_px).unwrap();
    let mut bad = small(3);
    bad.height = 0;
    assert!(generate(&bad).is_err());
}

#[test]
fn all_presets_render() {
    for preset in crystal::Preset::ALL {
        let mut p = small(6);
        p.crystal.preset = preset;
        let s = generate(&p).unwrap();
        let (lo, hi) = s.image.min_max();
        assert!(hi > lo);
    }
}

#[test]
fn directional_blur_widens_only_along_its_direction() {
    for model in [ProbeModel::Gaussian, ProbeModel::Aberrations] {
        let base = params::ProbeParams {
            model,
            gaussian_fwhm_a: 0.9,
            source_sigma_a: 0.3,
            ..Default::default()
        };
        let f0 = imaging::probe_profile(&base).fwhm_a();
        let along = params::ProbeParams {
            directional_sigma_a: 0.5,
            directional_angle_deg: 0.0,
            ..base.clone()
        };
        let across = params::ProbeParams {
            directional_angle_deg: 90.0,
            ..along.clone()
        };
        // fwhm_a measures along x.
        let fa = imaging::probe_profile(&along).fwhm_a();
        let fc = imaging::probe_profile(&across).fwhm_a();
        assert!(fa > f0 * 1.3, "{model:?}: along {fa} vs {f0}");
        assert!((fc - f0).abs() < 0.03, "{model:?}: across {fc} vs {f0}");
        if model == ProbeModel::Gaussian {
            let want = (f0.powi(2) + (2.35482 * 0.5f64).powi(2)).sqrt();
            assert!((fa - want).abs() < 0.03, "{fa} vs {want}");
        }
    }
}

/// A frame with a few of each point defect and one boundary, without afterglow or low-pass
/// (the noise is independent from pixel to pixel, as `d′` assumes).
fn detectability_scene(seed: u64, dose: f64) -> SynthParams {
    let mut p = small(seed);
    p.width = 224;
    p.height = 224;
    p.noise.dose_e_per_a2 = dose;
    p.noise.lowpass_sigma_px = 0.0;
    p.scan.afterglow_px = 0.0;
    p.defects.vacancies = CountRange::new(2, 2);
    p.defects.interstitials = CountRange::new(2, 2);
    p.defects.tilt_boundaries = CountRange::new(1, 1);
    p.defects.twin_boundaries = CountRange::new(0, 0);
    p
}

#[test]
fn detectability_grows_as_the_square_root_of_dose_for_point_defects_only() {
    let mut p = detectability_scene(41, 2.0e3);
    p.noise.read_noise = 0.0;
    let mut lo = generate(&p).unwrap();
    let scene = lo.scene.clone();
    p.noise.dose_e_per_a2 = 8.0e3;
    let mut hi = render_scene(&p, scene).unwrap();
    lo.measure_detectability();
    hi.measure_detectability();
    let mut points = 0;
    for (a, b) in lo.labels.iter().zip(&hi.labels) {
        match a.class {
            DefectClass::GrainBoundary => {
                assert_eq!((a.detectability, b.detectability), (None, None))
            }
            _ => {
                let (a, b) = (a.detectability.unwrap(), b.detectability.unwrap());
                assert!(
                    a > 0.0 && (b / a - 2.0).abs() < 1e-3,
                    "d′ {a} -> {b} at 4× dose"
                );
                points += 1;
            }
        }
    }
    assert!(points >= 3, "only {points} point defects placed");
}

/// The ideal observer's `d′` is what the matched filter Δ/σ² really reaches on the noisy
/// frames the synthesizer draws: the separation of its output with and without the defect,
/// in units of its spread, over many noise draws.
#[test]
fn detectability_is_the_matched_filter_snr_on_the_noisy_frames() {
    let p = detectability_scene(43, 3.0e3);
    let mut s = generate(&p).unwrap();
    s.measure_detectability();
    let (k, label) = s
        .labels
        .iter()
        .enumerate()
        .find(|(_, l)| l.class == DefectClass::Vacancy)
        .unwrap();
    let want = label.detectability.unwrap();
    assert!((3.0..40.0).contains(&want), "d′ {want}: pick another dose");
    let mut bare_scene = s.scene.clone();
    bare_scene.defects.clear();
    let expected = |sc: &Scene| {
        let mut q = p.clone();
        q.noise.enabled = false;
        render_scene(&q, sc.clone()).unwrap().image
    };
    let (with, without) = (expected(&s.scene), expected(&bare_scene));
    let read_var = p.noise.read_noise.powi(2);
    let w = p.width;
    let obb = &s.labels[k].obb;
    let weights: Vec<(usize, f64)> = (0..w * p.height)
        .filter(|&i| obb.contains([(i % w) as f64 + 0.5, (i / w) as f64 + 0.5]))
        .map(|i| {
            let delta = (with.data[i] - without.data[i]) as f64;
            let var = 0.5 * (with.data[i] + without.data[i]) as f64 + read_var;
            (i, delta / var)
        })
        .collect();
    let filter = |sc: &Scene, seed: u64| {
        let mut sc = sc.clone();
        sc.noise_seed = seed;
        let img = render_scene(&p, sc).unwrap().image;
        weights
            .iter()
            .map(|&(i, wt)| wt * img.data[i] as f64)
            .sum::<f64>()
    };
    let n = 150;
    let t1: Vec<f64> = (0..n).map(|j| filter(&s.scene, 1000 + j)).collect();
    let t0: Vec<f64> = (0..n).map(|j| filter(&bare_scene, 5000 + j)).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let var = |v: &[f64]| {
        let m = mean(v);
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    };
    let spread = (0.5 * (var(&t1) + var(&t0))).sqrt();
    let got = (mean(&t1) - mean(&t0)).abs() / spread;
    assert!(
        (got / want - 1.0).abs() < 0.1,
        "matched filter separates by {got:.2}, d′ says {want:.2}"
    );
}

/// Near a boundary the lattice is bent; a point defect's label sits where its column is
/// drawn (a microscopist labels what the frame shows), not on the unbent site.
#[test]
fn point_labels_follow_the_bent_lattice_near_boundaries() {
    let mut moved = 0;
    let mut checked = 0;
    for seed in 0..16u64 {
        let mut p = small(seed);
        p.defects.interstitials = CountRange::new(4, 4);
        p.defects.tilt_boundaries = CountRange::new(1, 1);
        p.defects.boundary_structure.strain_a = 1.5;
        p.defects.boundary_structure.strain_decay_nm = 4.0;
        let s = generate(&p).unwrap();
        let cols = scene_columns(&p.crystal.spec(), &s.scene, &p);
        let points: Vec<_> = s
            .labels
            .iter()
            .filter(|l| l.class != DefectClass::GrainBoundary)
            .collect();
        assert_eq!(points.len(), s.scene.defects.len());
        for (l, d) in points.iter().zip(&s.scene.defects) {
            if !matches!(d.kind, PointDefectKind::Interstitial { .. }) {
                continue;
            }
            // The interstitial's own column: the added column nearest its unbent site.
            let c = cols
                .iter()
                .filter(|c| c.key.is_none())
                .min_by(|a, b| {
                    let da = (a.pos[0] - d.position[0]).hypot(a.pos[1] - d.position[1]);
                    let db = (b.pos[0] - d.position[0]).hypot(b.pos[1] - d.position[1]);
                    da.total_cmp(&db)
                })
                .unwrap();
            let drawn = s.scene.distortion.to_image(c.pos);
            let off = (l.obb.cx - drawn[0]).hypot(l.obb.cy - drawn[1]);
            assert!(off < 1e-6, "seed {seed}: label {off} px from its column");
            let unbent = s.scene.distortion.to_image(d.position);
            if (l.obb.cx - unbent[0]).hypot(l.obb.cy - unbent[1]) > 0.5 {
                moved += 1;
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} interstitials");
    // The test bites: some labels moved with the lattice.
    assert!(
        moved >= 2,
        "{moved} of {checked} labels moved with the lattice"
    );
}

/// `resample_to` shows the frame as the app feeds it to a model of another pixel size: the
/// image is the recorded one resampled by the app's own filter, the labels follow it, the
/// calibration is the new pixel size, and the sidecar draws the same frame again.
#[test]
fn a_resampled_frame_is_the_recorded_one_as_the_app_feeds_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut recorded = small(21);
    recorded.pixel_size_pm = 24.0;
    recorded.width = 160;
    recorded.height = 160;
    recorded.defects.vacancies = CountRange::new(3, 3);
    recorded.defects.tilt_boundaries = CountRange::new(1, 1);
    let native = generate(&recorded).unwrap();
    for out in [240usize, 96] {
        let mut p = recorded.clone();
        p.resample_to = Some([out, out]);
        let s = generate(&p).unwrap();
        let f = out as f64 / 160.0;
        assert_eq!((s.image.width, s.image.height), (out, out));
        assert!((p.output_pixel_size_pm() - 24.0 / f).abs() < 1e-9);
        // The same scene, drawn at the recorded size, then resampled as `detect` resamples.
        assert_eq!(s.scene, native.scene);
        let want = crate::raster::resample(&native.image, out, out, f, f);
        assert!(
            s.image
                .data
                .iter()
                .zip(&want.data)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        assert_eq!(s.labels.len(), native.labels.len());
        for (a, b) in s.labels.iter().zip(&native.labels) {
            assert_eq!(a.class, b.class);
            assert!(
                (a.obb.cx - b.obb.cx * f).abs() < 1e-9 && (a.obb.cy - b.obb.cy * f).abs() < 1e-9
            );
            assert!((a.obb.w - b.obb.w * f).abs() < 1e-6 && (a.obb.h - b.obb.h * f).abs() < 1e-6);
            assert!(
                (a.obb.angle - b.obb.angle).abs() < 1e-9 || a.class == DefectClass::GrainBoundary
            );
        }
        let files = write_outputs(&s, dir.path(), &format!("r{out}"), ImageFormat::Png).unwrap();
        let sc = read_sidecar(&files.sidecar).unwrap();
        assert!((sc.pixel_size_nm - 0.024 / f).abs() < 1e-12);
        assert_eq!(sc.params.resample_to, Some([out, out]));
        let again = regenerate_from_sidecar(&files.sidecar).unwrap();
        assert_eq!(again.labels, s.labels);
        assert_eq!(again.image.data, s.image.data);
        let png = image::open(&files.image).unwrap();
        assert_eq!((png.width(), png.height()), (out as u32, out as u32));
    }
    // The recorded frame must stay square-pixelled and within 8x.
    let mut bad = recorded.clone();
    bad.resample_to = Some([320, 160]);
    assert!(generate(&bad).unwrap_err().to_string().contains("square"));
    bad.resample_to = Some([16, 16]);
    assert!(generate(&bad).unwrap_err().to_string().contains("8x"));
}
