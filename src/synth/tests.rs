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
    let labels = crate::dataset::yolo::read_labels(&files.labels, &Default::default()).unwrap();
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
            for k in -2000..=2000 {
                let t = k as f64 * 0.5;
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
            // Long enough to see.
            assert!(l.obb.w >= 0.5 * 384.0);
        }
    }
    assert!(seen_twin && seen_tilt);
}

#[test]
fn twin_mirrors_positions_and_polarity() {
    let mut p = small(8);
    p.defects.twin_boundaries = CountRange::new(1, 1);
    p.defects.tilt_boundaries = CountRange::new(0, 0);
    let s = draw(&p);
    let b = &s.boundaries[0];
    assert_eq!(b.kind, BoundaryKind::Twin);
    let parent = s.grains[b.parent_grain].frame;
    let child = s.grains[b.child_grain].frame;
    let mirror = |q: Pt| {
        let d = [q[0] - b.point[0], q[1] - b.point[1]];
        let t = d[0] * b.direction[0] + d[1] * b.direction[1];
        let f = [
            b.point[0] + t * b.direction[0],
            b.point[1] + t * b.direction[1],
        ];
        [2.0 * f[0] - q[0], 2.0 * f[1] - q[1]]
    };
    let spec = p.crystal.spec();
    for (i, j) in [(0, 0), (2, -1), (-3, 4)] {
        for site in &spec.sites {
            let a = parent.to_px([i as f64 + site.u, j as f64 + site.v]);
            let m = mirror(a);
            let c = child.to_px([i as f64 + site.u, j as f64 + site.v]);
            assert!((m[0] - c[0]).abs() < 1e-6 && (m[1] - c[1]).abs() < 1e-6);
        }
    }
    // The dumbbell (Cd→Te) direction turns by 2 × 35.26° across the twin.
    let dv = |f: &super::scene::LatticeFrame| f.v_angle();
    let turn = (dv(&child) - dv(&parent)).to_degrees().rem_euclid(360.0);
    let turn = turn.min(360.0 - turn);
    assert!((turn - 70.53).abs() < 0.05, "{turn}");
    // The mirror line passes through a lattice column.
    let f = parent.to_frac(b.point);
    assert!((f[0] - f[0].round()).abs() < 1e-9 && (f[1] - f[1].round()).abs() < 1e-9);
}

fn draw(p: &SynthParams) -> Scene {
    scene::draw_scene(p)
}

#[test]
fn poisson_statistics_at_a_given_dose() {
    let mut p = small(9);
    p.specimen.background = 0.5;
    p.specimen.background_gradient = 0.0;
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
