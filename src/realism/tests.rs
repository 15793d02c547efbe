//! Tests of the realism statistics against synthetic frames of known truth and the real
//! calibrated frames in `../shared/samples`.

use super::*;
use crate::synth::crystal::Preset;
use crate::synth::params::{CountRange, ProbeModel};
use crate::synth::{SynthParams, generate};

/// A clean lattice (no defects, no scan distortion), noise on.
fn params(preset: Preset, px_pm: f64, rot: f64, seed: u64, side: usize) -> SynthParams {
    let mut p = SynthParams {
        seed,
        width: side,
        height: side,
        pixel_size_pm: px_pm,
        rotation_deg: Some(rot),
        ..Default::default()
    };
    p.crystal.preset = preset;
    p.defects.vacancies = CountRange::new(0, 0);
    p.defects.interstitials = CountRange::new(0, 0);
    p.defects.twin_boundaries = CountRange::new(0, 0);
    p.defects.tilt_boundaries = CountRange::new(0, 0);
    p.scan.line_jitter_px = 0.0;
    p.scan.drift_x_px_per_kline = 0.0;
    p.scan.drift_y_px_per_kline = 0.0;
    // Point-like columns on a plain background: the estimators' truths are the probe's.
    p.specimen.column_sigma_a = 0.0;
    p.specimen.amorphous = 0.0;
    p
}

fn render(p: &SynthParams) -> ImageF32 {
    generate(p).expect("synth").image
}

fn rot_diff(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(180.0);
    d.min(180.0 - d)
}

#[test]
fn lattice_recovers_pixel_size_and_rotation() {
    let cases = [
        (Preset::Cdte110, 10.0, 17.0),
        (Preset::Si110, 20.0, 83.0),
        (Preset::Gaas110, 30.0, 141.0),
        (Preset::Cdte110, 15.0, 0.0),
        (Preset::Cdte110, 25.0, 90.0),
        (Preset::Si110, 12.0, 212.5),
    ];
    for (i, &(preset, px, rot)) in cases.iter().enumerate() {
        let p = params(preset, px, rot, 100 + i as u64, 512);
        let img = render(&p);
        let est = estimate_lattice(&img, &preset.spec(), None).expect("lattice");
        let got_pm = est.nm_per_px * 1000.0;
        eprintln!(
            "{preset:?} {px} pm {rot}°: {got_pm:.3} pm {:.3}° {est:?}",
            est.rotation_deg
        );
        assert!(
            (got_pm / px - 1.0).abs() < 0.01,
            "{preset:?} {px} pm: got {got_pm}"
        );
        assert!(
            rot_diff(est.rotation_deg, rot) < 0.5,
            "{preset:?} {rot}°: got {}",
            est.rotation_deg
        );
        assert!((0.0..180.0).contains(&est.rotation_deg));
        assert!(est.score >= MIN_SCORE && est.peaks_used >= 4, "{est:?}");
        assert!(
            est.shear.abs() < 0.003 && est.stretch.abs() < 0.003,
            "{est:?}"
        );
    }
}

#[test]
fn lattice_recovers_shear_and_stretch() {
    for (i, &(dx, dy, rot)) in [(40.0, -30.0, 23.0), (-25.0, 45.0, 118.0), (0.0, 20.0, 61.0)]
        .iter()
        .enumerate()
    {
        let mut p = params(Preset::Cdte110, 15.0, rot, 40 + i as u64, 512);
        p.scan.drift_x_px_per_kline = dx;
        p.scan.drift_y_px_per_kline = dy;
        let img = render(&p);
        let est = estimate_lattice(&img, &Preset::Cdte110.spec(), None).expect("lattice");
        eprintln!("drift {dx},{dy}: {est:?}");
        assert!(
            (est.shear - dx / 1000.0).abs() < 0.005,
            "shear {} vs {}",
            est.shear,
            dx / 1000.0
        );
        assert!(
            (est.stretch - dy / 1000.0).abs() < 0.005,
            "stretch {} vs {}",
            est.stretch,
            dy / 1000.0
        );
        assert!(
            (est.nm_per_px * 1000.0 / 15.0 - 1.0).abs() < 0.01,
            "{est:?}"
        );
        assert!(rot_diff(est.rotation_deg, rot) < 0.5, "{est:?}");
    }
}

#[test]
fn hint_limits_the_search_and_noise_has_no_lattice() {
    let p = params(Preset::Si110, 18.0, 44.0, 9, 384);
    let img = render(&p);
    let est = estimate_lattice(&img, &Preset::Si110.spec(), Some(0.017)).expect("lattice");
    assert!((est.nm_per_px / 0.018 - 1.0).abs() < 0.01, "{est:?}");
    // a hint 40 % off keeps the search away from the true lattice: at best a weaker alias
    let true_score = est.score;
    if let Ok(far) = estimate_lattice(&img, &Preset::Si110.spec(), Some(0.0108)) {
        assert!(
            far.nm_per_px < 0.0108 * 1.16 && far.score < true_score,
            "{far:?}"
        );
    }
    // white noise: no lattice
    let mut state = 12345u64;
    let data: Vec<f32> = (0..384 * 384)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32
        })
        .collect();
    let noise = ImageF32::from_vec(384, 384, data);
    let e = estimate_lattice(&noise, &Preset::Cdte110.spec(), None);
    assert!(e.is_err(), "{e:?}");
    // and measure without calibration then fails with a clear message
    let m = measure(&noise, &Preset::Cdte110.spec(), None, None).unwrap_err();
    assert!(m.to_string().contains("no calibration"), "{m}");
}

#[test]
fn column_fwhm_of_gaussian_probes() {
    for (i, &fwhm) in [0.8, 1.2, 1.6].iter().enumerate() {
        let mut p = params(
            Preset::Cdte110,
            15.0,
            30.0 + 20.0 * i as f64,
            70 + i as u64,
            512,
        );
        p.probe.model = ProbeModel::Gaussian;
        p.probe.gaussian_fwhm_a = fwhm;
        p.probe.source_sigma_a = 0.0;
        let img = render(&p);
        let s = measure(&img, &Preset::Cdte110.spec(), Some(0.015), None).expect("measure");
        let got = s.column_fwhm_a.expect("fwhm");
        eprintln!("FWHM {fwhm} Å: {got:.3} Å");
        assert!((got / fwhm - 1.0).abs() < 0.10, "FWHM {fwhm}: got {got}");
        assert_eq!(s.nm_per_px_source, CalibrationSource::File);
    }
}

#[test]
fn column_width_adds_to_the_measured_fwhm_in_quadrature() {
    let mut p = params(Preset::Cdte110, 15.0, 20.0, 77, 512);
    p.probe.model = ProbeModel::Gaussian;
    p.probe.gaussian_fwhm_a = 0.9;
    p.probe.source_sigma_a = 0.0;
    p.specimen.column_sigma_a = 0.45;
    let s = measure(&render(&p), &Preset::Cdte110.spec(), Some(0.015), None).expect("measure");
    let want = (0.9f64.powi(2) + (2.35482 * 0.45f64).powi(2)).sqrt();
    let got = s.column_fwhm_a.expect("fwhm");
    assert!((got / want - 1.0).abs() < 0.10, "FWHM {got} vs {want}");
}

#[test]
fn noise_follows_the_dose() {
    let mut got = Vec::new();
    for (i, &dose) in [2.0e3, 3.0e4].iter().enumerate() {
        let mut p = params(Preset::Cdte110, 15.0, 35.0, 90 + i as u64, 512);
        p.noise.dose_e_per_a2 = dose;
        p.noise.read_noise = 0.0;
        let noisy = render(&p);
        p.noise.enabled = false;
        let clean = render(&p);
        let mean = clean.data.iter().map(|&v| f64::from(v)).sum::<f64>() / clean.data.len() as f64;
        let s = measure(&noisy, &Preset::Cdte110.spec(), Some(0.015), None).expect("measure");
        let pc = noisy.percentiles(&[1.0, 99.0]);
        let truth = mean.sqrt() / f64::from(pc[1] - pc[0]);
        let est = s.noise.expect("noise");
        eprintln!("dose {dose}: noise {est:.4} vs true {truth:.4} (mean counts {mean:.1})");
        assert!(
            (est / truth - 1.0).abs() < 0.2,
            "dose {dose}: {est} vs {truth}"
        );
        got.push(est);
    }
    assert!(got[0] > got[1], "lower dose must be noisier: {got:?}");
}

#[test]
fn line_jitter_is_recovered() {
    for (i, &j) in [0.0, 0.5, 1.0, 2.5].iter().enumerate() {
        let mut p = params(Preset::Cdte110, 15.0, 27.0, 50 + i as u64, 512);
        p.scan.line_jitter_px = j;
        p.scan.line_jitter_correlation = 0.0;
        let g = generate(&p).expect("synth");
        // The truth: the RMS of the drawn line offsets over the rows the estimator reads (the
        // central two thirds), not the nominal value.
        let o = &g.scene.distortion.line_offsets[p.height / 6..p.height * 5 / 6];
        let mean = o.iter().sum::<f64>() / o.len() as f64;
        let truth = (o.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / o.len() as f64).sqrt();
        let s = measure(&g.image, &Preset::Cdte110.spec(), Some(0.015), None).expect("measure");
        let got = s.line_jitter_px.expect("jitter");
        eprintln!("jitter {j} (drawn {truth:.3}): {got:.3}");
        if j == 0.0 {
            assert!(got < 0.08, "no jitter: got {got}");
        } else {
            assert!(
                (got / truth - 1.0).abs() < 0.15,
                "jitter {truth}: got {got}"
            );
        }
    }
    // A noisy frame drawn without jitter: the two halves' errors are independent, so they do
    // not read as jitter (a plain RMS of the row shifts read 0.098 px on the clean frame above
    // and 0.3–0.9 px on realistic-recipe frames drawn without jitter).
    let mut p = params(Preset::Cdte110, 9.0, 27.0, 60, 512);
    p.noise.dose_e_per_a2 = 3000.0;
    p.specimen.column_sigma_a = 0.6;
    let img = render(&p);
    let s = measure(&img, &Preset::Cdte110.spec(), Some(0.009), None).expect("measure");
    let got = s.line_jitter_px.expect("jitter");
    eprintln!("noisy, no jitter: {got:.3}");
    assert!(got < 0.1, "noisy frame without jitter: got {got}");
}

#[test]
fn intensity_statistics_and_eight_bit() {
    let p = params(Preset::Cdte110, 15.0, 10.0, 5, 256);
    let img = render(&p);
    let s = measure(&img, &Preset::Cdte110.spec(), Some(0.015), None).unwrap();
    assert!(!s.eight_bit);
    let pc = img.percentiles(&[1.0, 50.0, 99.0]);
    let (p1, p50, p99) = (f64::from(pc[0]), f64::from(pc[1]), f64::from(pc[2]));
    assert!((s.background - p1 / p50).abs() < 1e-9);
    assert!((s.contrast - (p99 - p1) / p50).abs() < 1e-9);
    assert!(s.values().iter().any(|v| v.name == "background"));
    // the 8-bit rendering
    let (lo, hi) = img.model_window();
    let u8s: Vec<f32> = img.to_u8(lo, hi).into_iter().map(f32::from).collect();
    let img8 = ImageF32::from_vec(img.width, img.height, u8s);
    assert!(is_eight_bit(&img8));
    let s8 = measure(&img8, &Preset::Cdte110.spec(), None, Some(0.015)).unwrap();
    assert!(s8.eight_bit);
    assert_eq!(s8.nm_per_px_source, CalibrationSource::User);
    let names: Vec<_> = s8.values().iter().map(|v| v.name).collect();
    assert!(
        !names.contains(&"background") && !names.contains(&"contrast"),
        "{names:?}"
    );
    assert!(names.contains(&"column_fwhm_a"), "{names:?}");
    // JSON round trip
    let j = serde_json::to_string(&s8).unwrap();
    let back: RealismStats = serde_json::from_str(&j).unwrap();
    assert_eq!(back, s8);
    let mut half = img8.clone();
    half.data[0] = 0.5;
    assert!(!is_eight_bit(&half));
}

fn fake(fwhm: f64, noise: f64) -> RealismStats {
    RealismStats {
        nm_per_px: 0.015,
        nm_per_px_source: CalibrationSource::File,
        file_nm_per_px: Some(0.015),
        lattice: None,
        lattice_crop: None,
        column_fwhm_a: Some(fwhm),
        background: 0.1,
        contrast: 2.0,
        noise: Some(noise),
        line_jitter_px: None,
        shear: None,
        stretch: None,
        lattice_match: None,
        eight_bit: false,
    }
}

#[test]
fn ranges_and_outside() {
    let stats: Vec<RealismStats> = (0..=100)
        .map(|i| fake(0.8 + 0.004 * i as f64, 0.05))
        .collect();
    let r = ranges(&stats);
    let f = r.iter().find(|r| r.name == "column_fwhm_a").unwrap();
    assert_eq!(f.n, 101);
    assert!(
        (f.p5 - 0.82).abs() < 1e-9 && (f.p95 - 1.18).abs() < 1e-9,
        "{f:?}"
    );
    assert!(r.iter().all(|r| r.name != "line_jitter_px"));
    let out = outside(&fake(1.5, 0.05), &r);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].to_string(), "column FWHM 1.50 Å > 1.18 Å");
    let out = outside(&fake(1.0, 0.01), &r);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].name, "noise");
    assert_eq!(out[0].to_string(), "noise 0.0100 < 0.0500");
    assert!(outside(&fake(1.0, 0.05), &r).is_empty());
}

#[test]
fn dataset_stats_regenerates_raw_counts_from_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    for (i, px) in [14.0, 22.0].iter().enumerate() {
        let mut p = params(
            Preset::Si110,
            *px,
            12.0 * i as f64 + 5.0,
            300 + i as u64,
            320,
        );
        p.defects.vacancies = CountRange::new(1, 2);
        let s = generate(&p).unwrap();
        crate::synth::write_outputs(
            &s,
            dir.path(),
            &format!("img{i}"),
            crate::synth::ImageFormat::Png,
        )
        .unwrap();
    }
    // the CdTe crystal passed here is ignored: sidecars know their own
    let st = dataset_stats(dir.path(), &Preset::Cdte110.spec(), 10).unwrap();
    assert_eq!(st.len(), 2);
    for (s, px) in st.iter().zip([14.0, 22.0]) {
        assert!(!s.eight_bit, "measured the PNG, not the raw counts");
        assert_eq!(s.nm_per_px_source, CalibrationSource::File);
        assert!((s.nm_per_px * 1000.0 - px).abs() < 1e-9);
        let l = s.lattice.as_ref().expect("lattice");
        assert!((l.nm_per_px * 1000.0 / px - 1.0).abs() < 0.01, "{l:?}");
    }
    // percentile ranks: 14 pm/px is the lower of {14, 22} (a tie counts half), 22 the upper
    let px_rank = |s: &RealismStats| {
        let r = super::percentile_ranks(s, &st);
        let p = r.iter().find(|r| r.name == "pixel_size_pm").unwrap();
        assert_eq!(p.n, 2);
        p.percentile
    };
    assert_eq!(px_rank(&st[0]), 25.0);
    assert_eq!(px_rank(&st[1]), 75.0);
    assert_eq!(
        dataset_stats(dir.path(), &Preset::Cdte110.spec(), 1)
            .unwrap()
            .len(),
        1
    );
    // a plain folder of images: measured as they are (8-bit, calibration from the lattice)
    let plain = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("img0.png"), plain.path().join("a.png")).unwrap();
    let st = dataset_stats(plain.path(), &Preset::Si110.spec(), 10).unwrap();
    assert_eq!(st.len(), 1);
    assert!(st[0].eight_bit);
    assert_eq!(st[0].nm_per_px_source, CalibrationSource::Lattice);
}

#[test]
fn a_frame_exported_as_the_model_is_fed_is_measured_as_recorded() {
    let dir = tempfile::tempdir().unwrap();
    // Recorded at 22 pm/px over 320 px, fed to the model at 16 pm/px (440 px).
    let mut p = params(Preset::Si110, 22.0, 5.0, 401, 320);
    p.resample_to = Some([440, 440]);
    assert!((p.output_pixel_size_pm() - 16.0).abs() < 1e-9);
    let s = generate(&p).unwrap();
    assert_eq!((s.image.width, s.image.height), (440, 440));
    crate::synth::write_outputs(&s, dir.path(), "fed", crate::synth::ImageFormat::Png).unwrap();
    let st = dataset_stats(dir.path(), &Preset::Si110.spec(), 10).unwrap();
    assert_eq!(st.len(), 1);
    assert!(
        (st[0].nm_per_px * 1000.0 - 22.0).abs() < 1e-9,
        "{}",
        st[0].nm_per_px
    );
    let l = st[0].lattice.as_ref().expect("lattice");
    assert!((l.nm_per_px * 1000.0 / 22.0 - 1.0).abs() < 0.01, "{l:?}");
}

use crate::test_support::samples;

#[test]
fn real_cdte_dm3_lattice_matches_its_calibration() {
    // Measured −2.2 %; a real-space check (10 column periods along x in the lower grain,
    // 285 px) gives −1.9 %: the frame itself is ~2 % off its calibration, hence 3 %. The
    // image's authors fitted a simulated bicrystal to it with the pixel size free (GitHub
    // MaterialEyes/ingrained, CdTe_110_CdTe_110_tilt example): 15.92–16.06 pm/px, within 0.6 %
    // of our 16.02 (the test below holds that at 1 %).
    real_dm3(
        "CdTe110_tilt-GB_HAADF149_ingrained.dm3",
        Preset::Cdte110,
        0.03,
    );
}

#[test]
fn real_cdte_dm3_lattice_matches_the_authors_fit() {
    let Some(dir) = samples() else { return };
    let img = crate::formats::load(&dir.join("CdTe110_tilt-GB_HAADF149_ingrained.dm3")).unwrap();
    let est = estimate_lattice(&img.image, &Preset::Cdte110.spec(), None).unwrap();
    // The two fitted pixel sizes of the ingrained example (Å/px → nm/px).
    for fit in [0.015915, 0.016063] {
        assert!(
            (est.nm_per_px / fit - 1.0).abs() < 0.01,
            "{} vs the fit {fit}",
            est.nm_per_px
        );
    }
}

/// The Si [110] tilt-boundary frame's file calibration is 45 % too fine (`frame`'s
/// calibration check); its lattice, weak and split between two grains, is found on the whole
/// frame at 23.7 pm/px, where the {111} ring of its spectrum lies (12.98 px: 24.2 pm/px
/// averaged over directions; its slow scan is stretched 8 %). Before the fit was held to the
/// ring it preferred a cell at 14.2 pm/px on the whole frame and reached the lattice only
/// through one grain's quadrant.
#[test]
fn real_si_dm3_lattice_is_the_rings_not_the_files() {
    let Some(dir) = samples() else { return };
    let img = crate::formats::load(&dir.join("Si011_tilt-GB_HAADF85_ingrained.dm3")).unwrap();
    let est = estimate_lattice(&img.image, &Preset::Si110.spec(), None).unwrap();
    assert!(
        (est.nm_per_px / 0.02369 - 1.0).abs() < 0.02,
        "{} nm/px",
        est.nm_per_px
    );
    // Held to the file's scale (±15 %), no fit survives: nothing there is on the ring.
    let cal = img.pixel_size.unwrap().nm_per_px;
    assert!(estimate_lattice(&img.image, &Preset::Si110.spec(), Some(cal)).is_err());
}

fn real_dm3(file: &str, preset: Preset, tol: f64) {
    let Some(dir) = samples() else { return };
    {
        let img = crate::formats::load(&dir.join(file)).expect("load");
        let cal = img.pixel_size.expect("calibrated").nm_per_px;
        let est = estimate_lattice(&img.image, &preset.spec(), None).expect("lattice");
        eprintln!("{file}: file {cal} nm/px, lattice {est:?}");
        assert!(
            (est.nm_per_px / cal - 1.0).abs() < tol,
            "{file}: {} vs {cal}",
            est.nm_per_px
        );
        let s = measure(&img.image, &preset.spec(), Some(cal), None).expect("measure");
        eprintln!("{file}: {s:?}");
        assert!(!s.eight_bit);
        let f = s.column_fwhm_a.expect("fwhm");
        assert!(f > 0.4 && f < 3.0, "{file}: FWHM {f}");
    }
}

#[test]
fn real_si_png_reports_an_estimate() {
    let Some(dir) = samples() else { return };
    let img = crate::formats::load(&dir.join("Si110_bulk_AtomSegNet.png")).expect("load");
    let s = measure(&img.image, &Preset::Si110.spec(), None, None).expect("measure");
    eprintln!("Si110_bulk_AtomSegNet.png: {s:?}");
    assert!(s.eight_bit);
    assert_eq!(s.nm_per_px_source, CalibrationSource::Lattice);
    // unverified nominal 0.0098 nm/px: only a sanity band
    assert!(s.nm_per_px > 0.005 && s.nm_per_px < 0.02, "{}", s.nm_per_px);
}

/// The issue's target "every [110] frame here: the Viewer shows no out-of-distribution
/// warning", read as the Viewer does: the frame's statistics (with its own crystal) against
/// the shipped model card's `training_realism` ranges.
#[test]
fn shipped_model_card_covers_the_real_frames() {
    let Some(dir) = samples() else { return };
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cdte-yolo11n-obb.onnx");
    let card = super::model_training_realism(&model)
        .expect("card")
        .expect("the shipped card has training_realism");
    for (file, preset) in [
        ("CdTe110_tilt-GB_HAADF149_ingrained.dm3", Preset::Cdte110),
        ("Si011_tilt-GB_HAADF85_ingrained.dm3", Preset::Si110),
        ("Si110_bulk_AtomSegNet.png", Preset::Si110),
    ] {
        let img = crate::formats::load(&dir.join(file)).expect("load");
        let nm = img.pixel_size.map(|p| p.nm_per_px);
        let s = measure(&img.image, &preset.spec(), nm, None).expect("measure");
        let out = outside(&s, &card.ranges);
        assert!(
            out.is_empty(),
            "{file}: {}",
            out.iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// Frames with boundaries: where the central crop holds no single clear lattice, one grain's
/// quadrant gives it, at the right scale and in the orientation of one of the grains.
#[test]
fn a_grain_gives_the_lattice_when_the_whole_frame_holds_several() {
    let mut grain_frames = 0;
    for seed in 1..=24u64 {
        let mut p = SynthParams {
            seed,
            width: 384,
            height: 384,
            pixel_size_pm: 16.0,
            ..Default::default()
        };
        p.defects.twin_boundaries = CountRange::new(1, 1);
        p.defects.tilt_boundaries = CountRange::new(2, 2);
        let g = generate(&p).expect("synth");
        let s = measure(&g.image, &Preset::Cdte110.spec(), Some(0.016), None).expect("measure");
        let Some(crop) = s.lattice_crop else { continue };
        grain_frames += 1;
        assert_eq!(crop[2], 192, "seed {seed}: quadrant side");
        let l = s.lattice.as_ref().expect("a crop implies a lattice");
        assert!(
            (l.nm_per_px / 0.016 - 1.0).abs() < 0.02,
            "seed {seed}: {} nm/px",
            l.nm_per_px
        );
        let off = g
            .scene
            .grains
            .iter()
            .map(|gr| {
                let m = gr.frame.m;
                let u = m[1][0].atan2(m[0][0]).to_degrees();
                crate::lattice::boundaries::fold_misorientation(u - l.rotation_deg)
            })
            .fold(f64::INFINITY, f64::min);
        assert!(
            off < 2.0,
            "seed {seed}: rotation {} is {off:.1}° from every grain",
            l.rotation_deg
        );
    }
    assert!(grain_frames >= 1, "no frame needed a grain's crop");
}

/// The CdTe DM3 reads 2.2 % under its file calibration. Frames matched to it (`export --like`:
/// its column width, background, noise and scan distortion, at its calibrated pixel size) say
/// whether that is the estimator's bias on such a frame or the file's calibration: on them the
/// estimate must be unbiased, well inside the 2.2 %.
#[test]
fn lattice_estimate_is_unbiased_on_frames_matched_to_the_cdte_dm3() {
    use crate::dataset::like::matched_randomization;
    use crate::dataset::randomize::{DomainRandomization, draw_params};
    let Some(dir) = samples() else { return };
    let img = crate::formats::load(&dir.join("CdTe110_tilt-GB_HAADF149_ingrained.dm3")).unwrap();
    let spec = Preset::Cdte110.spec();
    let cal = img.pixel_size.unwrap().nm_per_px;
    let stats = measure(&img.image, &spec, Some(cal), None).unwrap();
    let m =
        matched_randomization(&[stats], Preset::Cdte110, &DomainRandomization::default()).unwrap();
    let base = SynthParams {
        width: 512,
        height: 512,
        ..Default::default()
    };
    let mut errs = Vec::new();
    for seed in 0..10 {
        let p = draw_params(&base, &m.randomization, seed);
        let s = generate(&p).unwrap();
        let est = estimate_lattice(&s.image, &spec, None).expect("lattice");
        errs.push(est.nm_per_px * 1000.0 / p.pixel_size_pm - 1.0);
    }
    eprintln!("relative errors of the matched frames: {errs:.4?}");
    assert!(errs.iter().all(|e| e.abs() < 0.015), "{errs:?}");
    let median = crate::raster::median(errs);
    assert!(median.abs() < 0.005, "median {median}");
}

/// A clean frame of each preset, read as its own crystal and as CdTe (the rings of every
/// [110] zincblende or diamond lattice scale alike): its strong spectrum peaks lie on the
/// fitted lattice's rings.
#[test]
fn a_frame_of_the_crystal_matches_its_lattice() {
    for (i, preset) in [Preset::Cdte110, Preset::Si110, Preset::Gaas110]
        .into_iter()
        .enumerate()
    {
        let p = params(
            preset,
            14.0 + 4.0 * i as f64,
            23.0 + 31.0 * i as f64,
            300 + i as u64,
            384,
        );
        let img = render(&p);
        for read_as in [preset, Preset::Cdte110] {
            let s = measure(&img, &read_as.spec(), Some(p.pixel_size_pm / 1000.0), None)
                .expect("measure");
            let m = s.lattice_match.expect("a clean lattice has strong peaks");
            eprintln!("{preset:?} read as {read_as:?}: lattice match {m:.2}");
            assert!(m > 0.9, "{preset:?} read as {read_as:?}: {m}");
            assert_eq!(s.lattice_mismatch(), None);
        }
    }
}

/// The real [110] frames are not flagged as another structure (bulk Si read as Si rests on too
/// few peaks to be judged at all); SrTiO3 [001] (a perovskite, square cell) read as CdTe [110]
/// is, although a lattice fit on 17 peaks is found on it.
#[test]
fn a_perovskite_frame_is_not_a_110_zincblende_lattice() {
    let Some(dir) = samples() else { return };
    let check = |file: &str, preset: Preset| {
        let img = crate::formats::load(&dir.join(file)).expect("load");
        let nm = img.pixel_size.map(|p| p.nm_per_px);
        let s = measure(&img.image, &preset.spec(), nm, None).expect("measure");
        eprintln!("{file} as {preset:?}: lattice match {:?}", s.lattice_match);
        // `detect` measures the share alone, from the same fit.
        assert_eq!(
            lattice_match(&img.image, &preset.spec(), nm),
            s.lattice_match
        );
        s
    };
    for (file, preset) in [
        ("CdTe110_tilt-GB_HAADF149_ingrained.dm3", Preset::Cdte110),
        ("Si110_bulk_AtomSegNet.png", Preset::Si110),
        ("Si110_bulk_AtomSegNet.png", Preset::Cdte110),
    ] {
        let s = check(file, preset);
        assert!(s.lattice.is_some(), "{file}: no lattice");
        assert_eq!(s.lattice_mismatch(), None, "{file} as {preset:?}");
    }
    // The CdTe frame's fit rests on enough peaks to be judged, and passes.
    let s = check("CdTe110_tilt-GB_HAADF149_ingrained.dm3", Preset::Cdte110);
    assert!(
        s.lattice_match.is_some_and(|m| m > 0.7),
        "{:?}",
        s.lattice_match
    );
    let s = check("SrTiO3_HAADF_TitanCubed_openNCEM.emi", Preset::Cdte110);
    assert!(s.lattice.is_some(), "the fit finds a lattice on SrTiO3");
    assert!(s.lattice_mismatch().is_some(), "{:?}", s.lattice_match);
}

#[test]
fn the_first_ring_is_the_lattice_period_whatever_its_orientation() {
    // A centred rectangular net of bright dots (a [110] projection's {111} rows at ±35°
    // from its u axis), turned by an angle no axis is near, under mild noise.
    let n = 256;
    let (period, turn) = (9.3f64, 27f64.to_radians());
    let mut seed = 7u64;
    let mut noise = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 40) as f64 / (1u64 << 24) as f64 - 0.5
    };
    let img: Vec<f32> = (0..n * n)
        .map(|i| {
            let (x, y) = ((i % n) as f64, (i / n) as f64);
            let v: f64 = [35.26f64, -35.26]
                .iter()
                .map(|d| {
                    let a = turn + d.to_radians();
                    (2.0 * std::f64::consts::PI * (x * a.cos() + y * a.sin()) / period).cos()
                })
                .sum();
            (v + 0.5 * noise()) as f32
        })
        .collect();
    let mut f: Vec<rustfft::num_complex::Complex32> = img
        .iter()
        .map(|&v| rustfft::num_complex::Complex32::new(v, 0.0))
        .collect();
    crate::formats::fft::fft_2d(&mut f, n, false);
    let power: Vec<f32> = f.iter().map(|c| c.norm_sqr()).collect();
    let got = crate::raster::first_ring_period(&power, n).expect("a ring");
    assert!((got / period - 1.0).abs() < 0.02, "{got} px, not {period}");
    // Noise alone has no ring.
    let mut g: Vec<rustfft::num_complex::Complex32> = (0..n * n)
        .map(|_| rustfft::num_complex::Complex32::new(noise() as f32, 0.0))
        .collect();
    crate::formats::fft::fft_2d(&mut g, n, false);
    let power: Vec<f32> = g.iter().map(|c| c.norm_sqr()).collect();
    assert_eq!(crate::raster::first_ring_period(&power, n), None);
}
