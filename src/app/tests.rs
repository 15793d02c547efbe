use super::*;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

fn harness() -> Harness<'static, DefectApp> {
    let ctx = egui::Context::default();
    let mut persisted = Persisted::default();
    persisted.synth.params.width = 256;
    persisted.synth.params.height = 256;
    let app = DefectApp::new(&ctx, persisted);
    Harness::builder()
        .with_size(egui::vec2(1300.0, 900.0))
        .build_ui_state(|ui, app: &mut DefectApp| app.show(ui), app)
}

/// Steps until background jobs finish (bounded).
fn settle(h: &mut Harness<'static, DefectApp>) {
    for _ in 0..400 {
        h.step();
        if !h.state().synth.is_busy() && h.state().synth.current.is_some() {
            h.step();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("preview never arrived");
}

#[test]
fn preview_appears_with_labels() {
    let mut h = harness();
    settle(&mut h);
    let cur = h.state().synth.current.as_ref().unwrap();
    assert_eq!(cur.synth.image.width, 256);
    assert!(!cur.synth.labels.is_empty());
}

#[test]
fn dice_changes_the_seed_and_regenerates() {
    let mut h = harness();
    settle(&mut h);
    let seed0 = h.state().synth.settings.params.seed;
    h.get_by_label("Random seed").click();
    h.step();
    settle(&mut h);
    let s = &h.state().synth;
    assert_ne!(s.settings.params.seed, seed0);
    assert_eq!(
        s.current.as_ref().unwrap().synth.params.seed,
        s.settings.params.seed
    );
}

#[test]
fn class_toggle_hides_boxes() {
    let mut h = harness();
    settle(&mut h);
    assert!(h.state().synth.settings.show_class[1]);
    h.get_by_label_contains("vacancy (").click();
    h.step();
    assert!(!h.state().synth.settings.show_class[1]);
}

#[test]
fn preset_change_regenerates_with_new_crystal() {
    let mut h = harness();
    settle(&mut h);
    h.state_mut().synth.settings.params.crystal.preset =
        defect_detector::synth::crystal::Preset::Si110;
    h.step();
    settle(&mut h);
    let cur = h.state().synth.current.as_ref().unwrap();
    assert_eq!(
        cur.synth.params.crystal.preset,
        defect_detector::synth::crystal::Preset::Si110
    );
}
