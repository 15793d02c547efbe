//! The VLM tab driven as a user would (egui_kittest): load and save runs, click matrix cells,
//! run against a loopback chat server and the tiny test detector. Nothing here may reach a
//! real server or a real key.

use super::*;
use crate::app::{DefectApp, Persisted, Tab};
use defect_detector::vlm::Patch;
use defect_detector::vlm::prompt::FailureKind;
use defect_detector::vlm::record::{PatchRecord, RunRecord};
use defect_detector::vlm::run::{RUN_FORMAT_VERSION, RunMeta, VlmRun};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use std::io::{BufRead, BufReader, Read, Write};

fn harness(persisted: Persisted) -> Harness<'static, DefectApp> {
    let ctx = egui::Context::default();
    let mut app = DefectApp::new(&ctx, persisted);
    app.tab = Tab::Vlm;
    Harness::builder()
        .with_size(egui::vec2(1400.0, 950.0))
        .build_ui_state(|ui, app: &mut DefectApp| app.show(ui), app)
}

/// Steps until the tab's background jobs end (bounded).
fn settle(h: &mut Harness<'static, DefectApp>) {
    for _ in 0..3000 {
        h.step();
        if !h.state().vlm.is_busy() {
            h.step();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the job never finished");
}

/// Three distinct 16x16 patches per class, written as a class-folder set and read back, so
/// every record's source is a PNG file (as for a real folder run).
fn folder_set(dir: &Path) -> PatchSet {
    let classes = ["bulk", "vacancy", "interstitial", "grain_boundary"];
    let mut patches = Vec::new();
    for c in 0..4 {
        for i in 0..3 {
            let px: Vec<u8> = (0..256)
                .map(|k| ((k * (c + 2) + i * 40) % 256) as u8)
                .collect();
            patches.push(Patch::from_gray8(c, 16, 16, px, format!("{c}-{i}")).unwrap());
        }
    }
    let set = PatchSet {
        classes: classes.iter().map(|s| s.to_string()).collect(),
        patches,
    };
    set.save_dir(dir).unwrap();
    PatchSet::load_dir(dir).unwrap()
}

/// A recorded run over `set` with fixed answers: bulk right; vacancy twice right, once taken
/// for an interstitial; interstitial right, then unparseable; grain boundary right.
fn recorded_run(set: &PatchSet) -> VlmRun {
    let mut seen = [0usize; 4];
    let records = set
        .patches
        .iter()
        .map(|p| {
            let k = seen[p.class];
            seen[p.class] += 1;
            let truth = set.classes[p.class].clone();
            let (predicted, failure) = match (p.class, k) {
                (1, 2) => (Some("interstitial".to_string()), None),
                (2, 1) | (2, 2) => (None, Some(FailureKind::NotJson)),
                _ => (Some(truth.clone()), None),
            };
            PatchRecord {
                source: p.source.clone(),
                hash: p.hash.clone(),
                truth,
                explanation: predicted.as_ref().map(|c| format!("looks like {c}")),
                raw_reply: Some(if failure.is_some() {
                    "I think it is a defect.".into()
                } else {
                    "{}".into()
                }),
                predicted,
                failure,
                failure_detail: failure.map(|_| "no JSON object in the reply".into()),
                answer_format: None,
                confidence: Some(0.8),
                latency_ms: Some(100.0 + 10.0 * k as f64),
                prompt_tokens: Some(900),
                completion_tokens: Some(40),
                cached: false,
                attempts: 1,
            }
        })
        .collect();
    VlmRun {
        format_version: RUN_FORMAT_VERSION,
        meta: RunMeta {
            tool: "test".into(),
            endpoint: "http://127.0.0.1/v1/chat/completions".into(),
            model: "recorded-vlm".into(),
            strategy: Strategy::Definitions,
            seed: 1,
            n_per_class: 3,
            k_per_class: 0,
            concurrency: 1,
            timeout_s: 10.0,
            max_retries: 0,
            temperature: Some(0.0),
            max_tokens: Some(400),
            json_mode: false,
            patch_source: "test patches".into(),
            started_utc: "2025-01-01T00:00:00Z".into(),
            finished_utc: "2025-01-01T00:00:10Z".into(),
            wall_s: 10.0,
            examples: vec![],
            texts: PromptTexts::default(),
            notes: vec![],
        },
        classes: set.classes.clone(),
        records,
    }
}

#[test]
fn loaded_run_cell_click_lists_its_patches() {
    let dir = tempfile::tempdir().unwrap();
    let set = folder_set(&dir.path().join("patches"));
    let run = recorded_run(&set);
    let run_path = dir.path().join("run.json");
    run.save_json(&run_path).unwrap();

    let mut p = Persisted::default();
    p.vlm.run_file = run_path.display().to_string();
    let mut h = harness(p);
    h.step();
    h.get_by_label("Load run JSON").click();
    h.step();
    h.step();
    assert_eq!(h.state().vlm.runs.len(), 1, "{:?}", h.state().vlm.error);
    assert_eq!(h.state().vlm.shown, Some(0));
    let m = &h.state().vlm.runs[0].metrics;
    assert_eq!(m.matrix.counts[1], vec![0, 2, 1, 0, 0]);
    assert_eq!(m.matrix.counts[2], vec![0, 0, 1, 0, 2]);

    // The vacancy taken for an interstitial.
    h.get_by_label("true vacancy, answered interstitial")
        .click();
    h.step();
    h.step();
    assert_eq!(h.state().vlm.cell, Some((1, 2)));
    h.get_by_label_contains("True vacancy, answered interstitial: 1 patch")
        .hover();
    h.get_by_label("looks like interstitial");
    // Its thumbnail was read from the patch file the run recorded.
    assert_eq!(h.state().vlm.thumbs.len(), 1);
    let vac2 = run
        .records
        .iter()
        .find(|r| r.truth == "vacancy" && r.predicted.as_deref() == Some("interstitial"))
        .unwrap();
    assert!(h.state().vlm.thumbs.contains_key(&vac2.hash));

    // The "no answer" column lists the unparseable replies with the failure.
    h.get_by_label("true interstitial, answered no answer")
        .click();
    h.step();
    h.step();
    assert_eq!(h.state().vlm.cell, Some((2, 4)));
    h.get_by_label_contains("True interstitial, answered no answer: 2 patch");
    assert_eq!(
        h.query_all_by_label_contains("failure: not_json").count(),
        2
    );

    // Clicking the selected cell again clears the selection.
    h.get_by_label("true interstitial, answered no answer")
        .click();
    h.step();
    assert_eq!(h.state().vlm.cell, None);
}

#[test]
fn counts_and_row_normalised_toggle() {
    let dir = tempfile::tempdir().unwrap();
    let set = folder_set(dir.path());
    let mut h = harness(Persisted::default());
    h.state_mut()
        .vlm
        .add_run(ScreeningRun::Vlm(recorded_run(&set)))
        .unwrap();
    h.step();
    assert!(!h.state().vlm.settings.normalised);
    h.get_by_label("Row-normalised").click();
    h.step();
    assert!(h.state().vlm.settings.normalised);
    // The choice is remembered between sessions.
    assert!(h.state().persisted().vlm.normalised);
    h.get_by_label("Counts").click();
    h.step();
    assert!(!h.state().vlm.settings.normalised);
}

#[test]
fn typed_api_key_is_never_persisted() {
    let mut h = harness(Persisted::default());
    h.state_mut().vlm.settings.key_source = KeySource::Typed;
    h.state_mut().vlm.typed_key = "sk-typed-SECRET-123".into();
    h.step();
    let json = serde_json::to_string(&h.state().persisted()).unwrap();
    assert!(!json.contains("SECRET"), "{json}");
    assert!(json.contains("\"key_source\":\"Typed\""));
    // A typed key without text is refused before anything is sent.
    h.state_mut().vlm.typed_key.clear();
    h.get_by_label("Run").click();
    h.step();
    assert!(h.state().vlm.error.as_deref().unwrap().contains("API key"));
    assert!(h.state().vlm.runs.is_empty());
}

/// A loopback chat server that answers every request with `bulk` (one request per
/// connection, as ureq with `Connection: close`).
fn always_bulk_server() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let t = line.trim_end().to_ascii_lowercase();
                    if t.is_empty() {
                        break;
                    }
                    if let Some(v) = t.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let content =
                    r#"{"class": "bulk", "confidence": 0.6, "explanation": "regular lattice"}"#;
                let reply = serde_json::json!({
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 500, "completion_tokens": 20}
                })
                .to_string();
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                );
            });
        }
    });
    format!("http://{addr}/v1")
}

fn small_generated(p: &mut Persisted) {
    p.vlm.source = PatchSourceKind::Generated;
    p.vlm.generate.per_class = 2;
    p.vlm.generate.patch_size = 48;
    p.vlm.n_per_class = 2;
}

#[test]
fn vlm_run_on_generated_patches_then_detector_on_the_same() {
    let mut p = Persisted::default();
    small_generated(&mut p);
    p.vlm.base_url = always_bulk_server();
    p.vlm.model = "test-vlm".into();
    p.vlm.use_cache = false;
    p.vlm.detector_model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tiny_obb.onnx")
        .display()
        .to_string();
    let mut h = harness(p);
    h.step();
    h.get_by_label("Run").click();
    h.step();
    settle(&mut h);
    let tab = &h.state().vlm;
    assert_eq!(tab.runs.len(), 1, "{:?}", tab.error);
    let m = &tab.runs[0].metrics;
    assert_eq!(m.total, 8);
    // Everything answered bulk: the bulk column holds every patch.
    assert_eq!(m.matrix.counts.iter().map(|r| r[0]).sum::<u64>(), 8);
    assert_eq!(tab.runs[0].usage.prompt_tokens, 8 * 500);
    assert_eq!(tab.known_patch_count(), 8);

    // The detector on the shown run's patches.
    h.get_by_label("Run detector on the same patches").click();
    h.step();
    settle(&mut h);
    let tab = &h.state().vlm;
    assert_eq!(tab.runs.len(), 2, "{:?}", tab.error);
    assert!(matches!(tab.runs[1].run, ScreeningRun::Detector(_)));
    assert!(tab.status.contains("same 8 patches"), "{}", tab.status);
    assert_eq!(tab.shown, Some(1));
    // Both runs are compared side by side.
    h.get_by_label("Comparison");
    h.get_by_label("F1 grain_boundary");

    // Generated thumbnails come from memory.
    h.get_by_label("true vacancy, answered bulk").click();
    h.step();
    h.step();
    let tab = &h.state().vlm;
    let n = tab.runs[1].metrics.matrix.counts[1][0] as usize;
    assert_eq!(tab.thumbs.len(), n);
}

#[test]
fn an_unreachable_server_fails_at_once_and_saves_no_run() {
    // A port nobody listens on (bound, then released).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut p = Persisted::default();
    small_generated(&mut p);
    p.vlm.base_url = format!("http://127.0.0.1:{port}/v1");
    p.vlm.model = "test-vlm".into();
    p.vlm.use_cache = false;
    let mut h = harness(p);
    h.step();
    h.get_by_label("Test connection").click();
    h.step();
    settle(&mut h);
    let e = h.state().vlm.error.clone().unwrap_or_default();
    assert!(e.contains("cannot reach"), "{e}");
    h.get_by_label("Run").click();
    h.step();
    let t = std::time::Instant::now();
    settle(&mut h);
    assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
    let tab = &h.state().vlm;
    assert!(
        tab.runs.is_empty(),
        "a run in which nothing answered is not kept"
    );
    assert!(
        tab.error
            .as_deref()
            .unwrap_or_default()
            .contains("cannot reach"),
        "{:?}",
        tab.error
    );
    // A server that answers passes the check.
    let url = always_bulk_server();
    h.state_mut().vlm.settings.base_url = url;
    h.get_by_label("Test connection").click();
    h.step();
    settle(&mut h);
    assert!(
        h.state().vlm.status.contains("the server answers"),
        "{}",
        h.state().vlm.status
    );
}
