//! The spectrum panel driven as a user would: open the spectrum of a lattice of known period,
//! click its first spot, read the listed spacing, calibrate the pixel size from it.

use crate::app::{DefectApp, Persisted, Tab};
use defect_detector::synth::crystal::Preset;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use std::time::Duration;

const N: u32 = 256;
/// The lattice period in pixels along x (not a whole number of spectrum bins: 20.48).
const PERIOD: f64 = 12.5;
const NM_PER_PX: f64 = 0.02;

/// An 8-bit PNG of Gaussian columns on a rectangular net, `PERIOD` px along x and 16 px
/// along y.
fn lattice_png(dir: &std::path::Path) -> std::path::PathBuf {
    let img = image::GrayImage::from_fn(N, N, |x, y| {
        let du = (x as f64 / PERIOD - (x as f64 / PERIOD).round()) * PERIOD;
        let dv = (y as f64 / 16.0 - (y as f64 / 16.0).round()) * 16.0;
        image::Luma([(20.0 + 200.0 * (-(du * du + dv * dv) / 6.0).exp()) as u8])
    });
    let p = dir.join("lattice.png");
    img.save(&p).unwrap();
    p
}

fn harness() -> Harness<'static, DefectApp> {
    let ctx = egui::Context::default();
    let mut app = DefectApp::new(&ctx, Persisted::default());
    app.tab = Tab::Viewer;
    app.viewer.settings.model_path.clear();
    app.viewer.settings.crystal = Preset::Cdte110;
    Harness::builder()
        .with_size(egui::vec2(1400.0, 1000.0))
        .build_ui_state(|ui, app: &mut DefectApp| app.show(ui), app)
}

/// Steps until `done` holds (background jobs finish on other threads).
fn wait_for(h: &mut Harness<'static, DefectApp>, what: &str, done: impl Fn(&DefectApp) -> bool) {
    for _ in 0..600 {
        h.step();
        if done(h.state()) && !h.state().viewer.is_busy() {
            h.run_steps(3);
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("never: {what}");
}

/// A press and release in place: a click, not a drag.
fn click(h: &mut Harness<'static, DefectApp>, at: egui::Pos2) {
    h.hover_at(at);
    h.step();
    h.drag_at(at);
    h.step();
    h.event(egui::Event::PointerButton {
        pos: at,
        button: egui::PointerButton::Primary,
        pressed: false,
        modifiers: egui::Modifiers::NONE,
    });
    h.run_steps(3);
}

#[test]
fn a_clicked_spot_lists_its_spacing_and_calibrates_the_pixel_size() {
    let dir = tempfile::tempdir().unwrap();
    let png = lattice_png(dir.path());
    let mut h = harness();
    h.state_mut().viewer.open(&png);
    wait_for(&mut h, "image loaded", |a| a.viewer.current.is_some());
    h.state_mut().viewer.set_pixel_size(NM_PER_PX);
    h.get_by_label("Power spectrum").click();
    wait_for(&mut h, "spectrum shown", |a| {
        a.viewer.spectrum.shown.is_some() && a.viewer.spectrum_panel.open
    });
    let size = h.state().viewer.spectrum.shown.as_ref().unwrap().size;
    assert_eq!(size, N as usize);

    // Click two bins off the first spot along x: the click snaps onto it.
    let c = (size / 2) as f64;
    let spot_x = c + size as f64 / PERIOD;
    let at = h
        .state()
        .viewer
        .spectrum_panel
        .spectrum_to_screen(spot_x + 1.5, c - 1.0)
        .expect("spectrum drawn");
    click(&mut h, at);

    let v = &h.state().viewer;
    let rows = v
        .spectrum_panel
        .rows(v.spectrum.shown.as_ref().unwrap(), Some(NM_PER_PX));
    assert_eq!(rows.len(), 1, "one spot marked");
    let d = PERIOD * NM_PER_PX;
    let got = rows[0].frequency.d_spacing_nm;
    assert!((got - d).abs() / d < 0.01, "d {got} nm vs {d} nm");
    assert!(rows[0].frequency.angle_deg.abs() < 1.0);
    // the table lists it in Å
    let text = rows[0].d_text();
    assert!(text.ends_with(" Å"), "{text}");
    h.get_by_label(&text);

    // Say it is CdTe {111} (3.742 Å): the pixel size becomes the user's, and the spot reads
    // 3.742 Å.
    h.state_mut().viewer.spectrum_panel.choose_calibration(0, 0);
    h.run_steps(2);
    h.get_by_label("Calibrate pixel size from this spacing")
        .click();
    h.run_steps(3);
    let v = &h.state().viewer;
    let nm = v.pixel_size().expect("pixel size").nm_per_px;
    let expect = 0.6481 / 3f64.sqrt() / PERIOD;
    assert!((nm - expect).abs() / expect < 0.01, "{nm} vs {expect}");
    assert!(
        v.settings.pixel_sizes.values().any(|p| *p == nm),
        "stored as typed"
    );
    h.get_by_label("3.742 Å");
    h.get_by_label_contains("pixel size (typed)");

    // Remove it with Clear all.
    h.get_by_label("Clear all").click();
    h.run_steps(2);
    assert!(h.state().viewer.spectrum_panel.marks.is_empty());
}
