//! The Viewer's "Watch folder" mode: a background job reports each new, completely written
//! image of a folder; the viewer opens them in turn (so its own detection runs on each) and,
//! when a results folder is set, appends each result to the same `detections.jsonl/.csv` as
//! `defect-detector watch`.

use super::synth_tab::repaint_notify;
use super::viewer_tab::ViewerTab;
use defect_detector::detect::export::class_counts;
use defect_detector::jobs::Job;
use defect_detector::watch::{
    FileKey, ImageDetections, JSONL_NAME, ResultLog, WatchConfig, WatchEvent, WatchRecord, Watcher,
    sleep_unless_cancelled,
};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

#[derive(Default)]
pub struct WatchPanel {
    pub enabled: bool,
    pub folder: String,
    /// Results folder for the log; empty: no log.
    pub out: String,
    job: Option<Job<()>>,
    rx: Option<mpsc::Receiver<FileKey>>,
    queue: VecDeque<FileKey>,
    /// The file opened and not yet logged.
    current: Option<FileKey>,
    log: Option<ResultLog>,
    pub seen: usize,
    pub error: Option<String>,
}

impl Drop for WatchPanel {
    fn drop(&mut self) {
        if let Some(j) = &self.job {
            j.cancel();
        }
    }
}

impl WatchPanel {
    fn start(&mut self, ctx: &egui::Context) {
        self.stop();
        let dir = PathBuf::from(self.folder.trim());
        let out = (!self.out.trim().is_empty()).then(|| PathBuf::from(self.out.trim()));
        let (tx, rx) = mpsc::channel();
        let notify = repaint_notify(ctx);
        let n2 = notify.clone();
        self.rx = Some(rx);
        self.job = Some(Job::spawn("watch-folder", Some(notify), move |ctl| {
            let cfg = WatchConfig {
                processed_log: out.as_ref().map(|o| o.join(JSONL_NAME)),
            };
            let mut w = Watcher::new(&dir, &cfg)?;
            // Without a log there is no record of what was done: show only what arrives now.
            if out.is_none() {
                w.skip_existing();
            }
            loop {
                ctl.check()?;
                for ev in w.poll_once() {
                    match ev {
                        WatchEvent::Ready(k) => {
                            if tx.send(k).is_err() {
                                return Ok(());
                            }
                            n2();
                        }
                        WatchEvent::Unreadable { path, message } => {
                            tracing::warn!("{}: {message}", path.display())
                        }
                    }
                }
                sleep_unless_cancelled(Duration::from_millis(500), ctl);
            }
        }));
    }

    fn stop(&mut self) {
        if let Some(j) = self.job.take() {
            j.cancel();
        }
        self.rx = None;
        self.queue.clear();
        self.current = None;
        self.log = None;
    }

    fn append(&mut self, rec: &WatchRecord, class_names: &[String]) {
        if self.out.trim().is_empty() {
            return;
        }
        if self.log.is_none() {
            match ResultLog::open(std::path::Path::new(self.out.trim()), class_names) {
                Ok(l) => self.log = Some(l),
                Err(e) => {
                    self.error = Some(format!("{e:#}"));
                    return;
                }
            }
        }
        if let Some(Err(e)) = self.log.as_ref().map(|l| l.append(rec)) {
            self.error = Some(format!("{e:#}"));
        }
    }
}

impl ViewerTab {
    /// The "Watch folder" controls; also advances the watch queue (called every frame).
    pub fn watch_ui(&mut self, ui: &mut egui::Ui) {
        ui.separator();
        let mut toggled = false;
        toggled |= ui
            .checkbox(&mut self.watch.enabled, "Watch folder")
            .on_hover_text("Open and detect each new image written into the folder")
            .changed();
        ui.horizontal(|ui| {
            let l = ui.label("Folder");
            ui.add(
                egui::TextEdit::singleline(&mut self.watch.folder)
                    .desired_width(150.0)
                    .hint_text("folder to watch"),
            )
            .labelled_by(l.id);
        });
        ui.horizontal(|ui| {
            let l = ui.label("Log to");
            ui.add(
                egui::TextEdit::singleline(&mut self.watch.out)
                    .desired_width(150.0)
                    .hint_text("results folder (optional)"),
            )
            .labelled_by(l.id)
            .on_hover_text("detections.jsonl and detections.csv are appended here");
        });
        if toggled {
            self.watch.error = None;
            if self.watch.enabled {
                if self.watch.folder.trim().is_empty() {
                    self.watch.error = Some("Type the folder to watch".into());
                    self.watch.enabled = false;
                } else {
                    self.watch.start(ui.ctx());
                }
            } else {
                self.watch.stop();
            }
        }
        self.poll_watch();
        if self.watch.enabled {
            ui.label(format!(
                "{} new image(s), {} queued",
                self.watch.seen,
                self.watch.queue.len()
            ));
        }
        if let Some(e) = &self.watch.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
    }

    fn poll_watch(&mut self) {
        if let Some(job) = &self.watch.job
            && let Some(Err(e)) = job.poll()
        {
            if !defect_detector::jobs::is_cancelled(e) {
                self.watch.error = Some(format!("Watch: {e:#}"));
            }
            self.watch.enabled = false;
            self.watch.stop();
            return;
        }
        if let Some(rx) = &self.watch.rx {
            while let Ok(k) = rx.try_recv() {
                self.watch.seen += 1;
                self.watch.queue.push_back(k);
            }
        }
        let detecting = self.settings.auto_detect && !self.settings.model_path.is_empty();
        if let Some(k) = self.watch.current.clone() {
            let shown = self.current.as_ref().is_some_and(|c| c.path == k.path);
            // The log holds what the Viewer shows (`filtered`, redone each frame before the
            // panels are drawn), as `watch` logs what `detect` writes: under `both` that waits
            // for the lattice analysis to join its boxes.
            let lattice_pending = self.settings.method
                != defect_detector::detect::combine::DetectMethod::Model
                && self.lattice.is_busy();
            let outcome = match (&self.result, &self.error) {
                (Some(r), _) if shown && !lattice_pending => Some(Ok(r)),
                (_, Some(e)) => Some(Err(e.clone())),
                _ => None,
            };
            let Some(outcome) = outcome else {
                return; // still loading or detecting
            };
            let names = match &outcome {
                Ok(r) => r.class_names.clone(),
                Err(_) => Vec::new(),
            };
            let (nm_per_px, calibration) = (
                self.pixel_size().map(|p| p.nm_per_px),
                self.calibration_source(),
            );
            // The realism statistics may still be running: then the log has no share and no
            // comparison with the training data.
            let lattice_match = self.lattice_match();
            let outside_training: Vec<String> = self
                .unlike_training()
                .iter()
                .map(|o| o.to_string())
                .collect();
            let outcome = outcome.map(|r| {
                let detections = self.filtered.clone();
                ImageDetections {
                    width: r.width,
                    height: r.height,
                    counts: class_counts(&detections, r.class_names.len()),
                    detections,
                    nm_per_px,
                    calibration,
                    model_runs: r.tiles,
                    lattice_match,
                    outside_training,
                    load_ms: 0.0,
                    detect: r.timings,
                }
            });
            let rec = WatchRecord {
                timestamp: SystemTime::now(),
                key: k,
                outcome,
            };
            // Before the first result the log's classes are unknown: an early failure is only
            // shown (as the viewer's error), not logged.
            if rec.outcome.is_ok() || self.watch.log.is_some() {
                self.watch.append(&rec, &names);
            }
            self.watch.current = None;
        }
        // Without detection there is nothing to wait for: jump to the newest file.
        let next = if detecting {
            self.watch.queue.pop_front()
        } else {
            let newest = self.watch.queue.pop_back();
            self.watch.queue.clear();
            newest
        };
        if let Some(k) = next {
            self.error = None;
            self.open(&k.path);
            if detecting {
                self.watch.current = Some(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DefectApp, Persisted, Tab};
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    /// A Viewer watching a fresh folder with auto-detection on, logging into another; the
    /// default model unless `model` names one. Returns the harness, the watched folder and
    /// the results folder.
    fn watching(
        model: Option<&std::path::Path>,
    ) -> (
        Harness<'static, DefectApp>,
        tempfile::TempDir,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let ctx = egui::Context::default();
        let app = DefectApp::new(&ctx, Persisted::default());
        let mut h = Harness::builder()
            .with_size(egui::vec2(1300.0, 900.0))
            .build_ui_state(|ui, app: &mut DefectApp| app.show(ui), app);
        h.state_mut().tab = Tab::Viewer;
        {
            let v = &mut h.state_mut().viewer;
            if let Some(m) = model {
                v.settings.model_path = m.display().to_string();
            }
            v.settings.auto_detect = true;
            v.watch.folder = dir.path().display().to_string();
            v.watch.out = out.path().display().to_string();
        }
        h.step();
        h.get_by_label("Watch folder").click();
        h.step();
        assert!(h.state().viewer.watch.enabled);
        (h, dir, out)
    }

    /// Steps the app until the JSON log in `out` has content (bounded), and returns it.
    fn wait_for_log(
        h: &mut Harness<'static, DefectApp>,
        out: &std::path::Path,
        steps: usize,
    ) -> String {
        let log = out.join(defect_detector::watch::JSONL_NAME);
        let mut logged = String::new();
        for _ in 0..steps {
            h.step();
            logged = std::fs::read_to_string(&log).unwrap_or_default();
            if !logged.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        logged
    }

    #[test]
    fn watched_file_is_opened_detected_and_logged() {
        let model =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_obb.onnx");
        let (mut h, dir, out) = watching(Some(&model));
        let img = image::GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([if (x / 8 + y / 8) % 2 == 0 { 200 } else { 20 }])
        });
        img.save(dir.path().join("new.png")).unwrap();
        let logged = wait_for_log(&mut h, out.path(), 500);
        assert_eq!(
            logged.lines().count(),
            1,
            "{logged:?} {:?}",
            h.state().viewer.error
        );
        let v: serde_json::Value = serde_json::from_str(logged.trim()).unwrap();
        assert!(v["file"].as_str().unwrap().ends_with("new.png"));
        assert!(v["error"].is_null(), "{v}");
        let cur = h.state().viewer.current.as_ref().expect("opened");
        assert!(cur.path.ends_with("new.png"));
        assert!(h.state().viewer.result.is_some());
    }

    /// The log holds the boxes the Viewer shows for the watched frame: the shipped model's
    /// joined with the lattice analysis (`both`, the default) and fitted to the lattice, with
    /// their confidences, not the model's raw boxes.
    #[test]
    fn the_log_holds_the_boxes_the_viewer_shows() {
        use defect_detector::synth::{self, ImageFormat, SynthParams, params::CountRange};
        let (mut h, dir, out) = watching(None);
        assert_eq!(
            h.state().viewer.settings.method,
            defect_detector::detect::combine::DetectMethod::Both
        );
        assert!(h.state().viewer.settings.fit_cells);
        let mut p = SynthParams {
            width: 256,
            height: 256,
            pixel_size_pm: 16.0,
            ..Default::default()
        };
        p.defects.twin_boundaries = CountRange::new(1, 1);
        let s = synth::generate(&p).unwrap();
        let staged = tempfile::tempdir().unwrap();
        let tif = synth::write_outputs(&s, staged.path(), "frame", ImageFormat::Tiff16)
            .unwrap()
            .image;
        // Whole, as an acquisition program writes it (the watcher waits for a stable size).
        std::fs::copy(&tif, dir.path().join("frame.tif")).unwrap();
        let logged = wait_for_log(&mut h, out.path(), 1500);
        let v: serde_json::Value = serde_json::from_str(logged.trim()).unwrap();
        assert!(v["error"].is_null(), "{v}");
        let mut logged: Vec<(i64, i64)> = v["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["class"].as_i64().unwrap(),
                    (d["confidence"].as_f64().unwrap() * 1e4).round() as i64,
                )
            })
            .collect();
        let mut shown: Vec<(i64, i64)> = h
            .state()
            .viewer
            .filtered
            .iter()
            .map(|d| (d.class as i64, (d.confidence as f64 * 1e4).round() as i64))
            .collect();
        logged.sort();
        shown.sort();
        assert!(!shown.is_empty(), "the frame's defects are shown");
        assert_eq!(logged, shown);
        // The boundary is joined with the lattice's where both saw it.
        assert!(
            h.state()
                .viewer
                .filtered
                .iter()
                .any(|d| d.source != defect_detector::detect::DetectionSource::Model),
            "{:?}",
            h.state().viewer.filtered
        );
    }
}
