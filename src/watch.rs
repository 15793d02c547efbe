//! Live microscope mode: watch a folder, detect defects in each new image once it is
//! completely written, and append one line per image to a JSON Lines log and a CSV summary.
//!
//! Polling only (no file-system notification dependency): a file is ready once its size and
//! modification time are the same in two consecutive polls. Files are keyed by path, size and
//! mtime, so a file rewritten in place is processed again but an unchanged one never is. The
//! JSON Lines log doubles as the persisted processed set: every line names its file key, so a
//! restart rebuilds the set from it and does not redo work, and there is no second file that
//! could disagree with the log after a crash.

use crate::detect::{DetectOptions, Detection, Detector, DetectorOptions};
use crate::jobs::JobControl;
use anyhow::Context;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Log file names inside the results folder.
pub const JSONL_NAME: &str = "detections.jsonl";
pub const CSV_NAME: &str = "detections.csv";

/// One version of one file: a change of size or mtime is a new version.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub path: PathBuf,
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

#[derive(Clone, Debug, Default)]
pub struct WatchConfig {
    /// A `detections.jsonl` whose entries count as already processed (restart without redoing
    /// work). Missing file: nothing processed yet.
    pub processed_log: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// A new file (or a new version of one) that has stopped changing.
    Ready(FileKey),
    /// A listed file whose size/mtime cannot be read (removed meanwhile, permissions).
    Unreadable { path: PathBuf, message: String },
}

/// Polls one folder; see the module docs. Each [`WatchEvent::Ready`] is reported once.
pub struct Watcher {
    dir: PathBuf,
    /// Files seen changing (or seen once) with their last observed size and mtime.
    pending: HashMap<PathBuf, (u64, u64)>,
    processed: HashSet<FileKey>,
}

fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Watcher {
    pub fn new(dir: &Path, cfg: &WatchConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
        // Canonical, so the keys persisted by one run match the next run's however the folder
        // was spelled on the command line.
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let processed = match &cfg.processed_log {
            Some(p) => read_processed(p)?,
            None => HashSet::new(),
        };
        Ok(Self {
            dir,
            pending: HashMap::new(),
            processed,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files seen but not yet stable (still being written, or seen only once).
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn processed_count(&self) -> usize {
        self.processed.len()
    }

    /// Treats every file now in the folder as processed: only files that appear (or change)
    /// later are reported. For a live view started beside a folder of old acquisitions.
    pub fn skip_existing(&mut self) {
        for path in crate::formats::list_images(&self.dir) {
            if let Ok(meta) = std::fs::metadata(&path) {
                self.processed.insert(FileKey {
                    mtime_ns: mtime_ns(&meta),
                    size: meta.len(),
                    path,
                });
            }
        }
        self.pending.clear();
    }

    /// One look at the folder. Ready files come oldest first (by mtime, then name), so a burst
    /// is queued in acquisition order and the last one is the newest.
    pub fn poll_once(&mut self) -> Vec<WatchEvent> {
        let mut ready = Vec::new();
        let mut events = Vec::new();
        let listed = crate::formats::list_images(&self.dir);
        let listed_set: HashSet<&PathBuf> = listed.iter().collect();
        self.pending.retain(|p, _| listed_set.contains(p));
        for path in &listed {
            let meta = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e) => {
                    events.push(WatchEvent::Unreadable {
                        path: path.clone(),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            let key = FileKey {
                path: path.clone(),
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
            };
            if self.processed.contains(&key) {
                self.pending.remove(path);
                continue;
            }
            let now = (key.size, key.mtime_ns);
            // An empty file is one the writer has created but not filled yet.
            let stable = key.size > 0 && self.pending.get(path) == Some(&now);
            if stable {
                self.pending.remove(path);
                self.processed.insert(key.clone());
                ready.push(key);
            } else {
                self.pending.insert(path.clone(), now);
            }
        }
        ready.sort_by(|a, b| a.mtime_ns.cmp(&b.mtime_ns).then(a.path.cmp(&b.path)));
        events.extend(ready.into_iter().map(WatchEvent::Ready));
        events
    }
}

/// Keys of every entry of a `detections.jsonl`. A torn last line (a crash mid-write on a
/// file system without atomic appends) is skipped: that file is simply processed again.
fn read_processed(path: &Path) -> anyhow::Result<HashSet<FileKey>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut set = HashSet::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!("{}:{}: not a JSON line, ignored", path.display(), i + 1);
            continue;
        };
        if let (Some(file), Some(size), Some(mtime_ns)) = (
            v["file"].as_str(),
            v["size"].as_u64(),
            v["mtime_ns"].as_u64(),
        ) {
            set.insert(FileKey {
                path: PathBuf::from(file),
                size,
                mtime_ns,
            });
        }
    }
    Ok(set)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) without a date-time dependency.
pub fn utc_timestamp(t: SystemTime) -> String {
    crate::clock::format_utc_millis(t)
}

/// What happened to one image.
#[derive(Clone, Debug)]
pub struct WatchRecord {
    pub timestamp: SystemTime,
    pub key: FileKey,
    pub outcome: Result<ImageDetections, String>,
}

#[derive(Clone, Debug)]
pub struct ImageDetections {
    pub width: usize,
    pub height: usize,
    pub counts: Vec<usize>,
    pub detections: Vec<Detection>,
    /// The pixel size detection used, and where it came from
    /// ([`crate::frame::Calibration::source`], or "user" for one typed in the Viewer).
    pub nm_per_px: Option<f64>,
    pub calibration: &'static str,
    /// Model runs the frame took: test-time copies times scales (the lattice readings, the
    /// frame as sampled), each a whole frame or its tiles; what its detect time scales with.
    pub model_runs: usize,
    /// [`crate::frame::FrameDetections::lattice_match`]: below 0.5 the frame is not of the
    /// crystal and its boxes mean nothing.
    pub lattice_match: Option<f64>,
    /// The frame's statistics outside the model card's training ranges
    /// ([`crate::frame::FrameDetections::outside_training`]); empty when inside or unmeasured.
    pub outside_training: Vec<String>,
    pub load_ms: f64,
    pub detect: crate::detect::StageTimings,
}

impl ImageDetections {
    pub fn total_ms(&self) -> f64 {
        self.load_ms + self.detect.total_ms()
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

impl WatchRecord {
    /// The JSON Lines object (one line, no trailing newline).
    pub fn to_json(&self, class_names: &[String]) -> Value {
        let mut v = json!({
            "timestamp": utc_timestamp(self.timestamp),
            "file": self.key.path.display().to_string(),
            "size": self.key.size,
            "mtime_ns": self.key.mtime_ns,
        });
        match &self.outcome {
            Ok(r) => {
                let counts: serde_json::Map<String, Value> = class_names
                    .iter()
                    .zip(&r.counts)
                    .map(|(n, c)| (n.clone(), json!(c)))
                    .collect();
                v["width"] = json!(r.width);
                v["height"] = json!(r.height);
                v["counts"] = Value::Object(counts);
                v["nm_per_px"] = json!(r.nm_per_px);
                v["calibration"] = json!(r.calibration);
                v["model_runs"] = json!(r.model_runs);
                if let Some(m) = r.lattice_match {
                    v["lattice_match"] = json!(round(m, 3));
                }
                if !r.outside_training.is_empty() {
                    v["outside_training"] = json!(r.outside_training);
                }
                v["detections"] = r
                    .detections
                    .iter()
                    .map(|d| {
                        json!({
                            "class": d.class,
                            "class_name": &*d.class_name,
                            "confidence": round(d.confidence as f64, 5),
                            "corners_px": d.corners().iter()
                                .map(|p| [round(p[0], 3), round(p[1], 3)])
                                .collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                v["timings_ms"] = json!({
                    "load": round(r.load_ms, 3),
                    "preprocess": round(r.detect.preprocess_ms, 3),
                    "inference": round(r.detect.inference_ms, 3),
                    "postprocess": round(r.detect.postprocess_ms, 3),
                    "total": round(r.total_ms(), 3),
                });
                v["error"] = Value::Null;
            }
            Err(e) => v["error"] = json!(e),
        }
        v
    }

    pub fn to_csv_row(&self, n_classes: usize) -> String {
        let mut cols = vec![
            utc_timestamp(self.timestamp),
            csv_field_one_line(&self.key.path.display().to_string()),
        ];
        match &self.outcome {
            Ok(r) => {
                cols.extend(
                    (0..n_classes).map(|i| r.counts.get(i).copied().unwrap_or(0).to_string()),
                );
                cols.push(format!("{:.3}", r.total_ms()));
                cols.push(String::new());
            }
            Err(e) => {
                cols.extend((0..n_classes).map(|_| String::new()));
                cols.push(String::new());
                cols.push(csv_field_one_line(e));
            }
        }
        cols.join(",") + "\n"
    }
}

/// Appends to `detections.jsonl` and `detections.csv` in a results folder.
///
/// These two files are the one exception to writing through `fsio::atomic_write`: a log
/// that grows by one line per image is appended, each line with a single `write` of the whole
/// line followed by a flush, so a crash leaves at worst the last line missing, never a line
/// spliced into another.
pub struct ResultLog {
    pub jsonl: PathBuf,
    pub csv: PathBuf,
    class_names: Vec<String>,
}

impl ResultLog {
    /// Opens (creating the folder and the CSV header when new). An existing CSV must have the
    /// same classes: mixing models in one summary would shift its columns.
    pub fn open(out_dir: &Path, class_names: &[String]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("cannot create folder {}", out_dir.display()))?;
        let log = Self {
            jsonl: out_dir.join(JSONL_NAME),
            csv: out_dir.join(CSV_NAME),
            class_names: class_names.to_vec(),
        };
        let header = log.csv_header();
        match std::fs::read_to_string(&log.csv) {
            Ok(text) if !text.is_empty() => {
                let first = text.lines().next().unwrap_or_default();
                anyhow::ensure!(
                    first == header.trim_end(),
                    "{} was written with other classes ({first}); use another results folder \
                     for this model",
                    log.csv.display()
                );
            }
            Ok(_) => append_line(&log.csv, &header)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => append_line(&log.csv, &header)?,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", log.csv.display())),
        }
        terminate_torn_line(&log.csv)?;
        terminate_torn_line(&log.jsonl)?;
        Ok(log)
    }

    fn csv_header(&self) -> String {
        let mut cols = vec!["timestamp".to_string(), "file".into()];
        cols.extend(self.class_names.iter().map(|n| format!("n_{n}")));
        cols.push("total_ms".into());
        cols.push("error".into());
        cols.join(",") + "\n"
    }

    pub fn append(&self, rec: &WatchRecord) -> anyhow::Result<()> {
        let mut line = serde_json::to_string(&rec.to_json(&self.class_names))?;
        line.push('\n');
        // The JSON line is the processed marker, so it goes last: a crash between the two
        // writes reprocesses the file rather than losing it.
        append_line(&self.csv, &rec.to_csv_row(self.class_names.len()))?;
        append_line(&self.jsonl, &line)
    }
}

/// After a crash mid-line, ends the torn line so the next append starts a line of its own
/// (the torn one is then skipped by readers as unparseable).
fn terminate_torn_line(path: &Path) -> anyhow::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Ok(());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1))
        .and_then(|_| f.read_exact(&mut last))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if last[0] != b'\n' {
        append_line(path, "\n")?;
    }
    Ok(())
}

fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} for appending", path.display()))?;
    f.write_all(line.as_bytes())
        .and_then(|()| f.flush())
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// Loads and detects one file; a failure becomes the record's error.
pub fn process_file(
    det: &Detector,
    key: &FileKey,
    opts: &DetectOptions,
    conf: f32,
    iou: f64,
    lattice: &LatticeUse,
) -> WatchRecord {
    let outcome = (|| -> anyhow::Result<ImageDetections> {
        let t = Instant::now();
        let s = crate::formats::load(&key.path)?;
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        let frame =
            crate::frame::detect_frame(det, &s.image, s.pixel_size, lattice, opts, conf, iou)?;
        let (lattice_match, outside_training) = (frame.lattice_match, frame.outside_training);
        let (r, detections) = (frame.result, frame.detections);
        Ok(ImageDetections {
            width: r.width,
            height: r.height,
            counts: crate::detect::export::class_counts(&detections, r.class_names.len()),
            detections,
            nm_per_px: frame.calibration.pixel_size().map(|p| p.nm_per_px),
            calibration: frame.calibration.source(),
            model_runs: r.tiles,
            lattice_match,
            outside_training,
            load_ms,
            detect: r.timings,
        })
    })()
    .map_err(|e| format!("{e:#}"));
    WatchRecord {
        timestamp: SystemTime::now(),
        key: key.clone(),
        outcome,
    }
}

#[derive(Clone, Debug)]
pub struct RunWatchOptions {
    pub interval: Duration,
    /// Process what is in the folder (waiting for files still being written) and return.
    pub once: bool,
    pub conf: f32,
    pub iou: f64,
    pub detector: DetectorOptions,
    pub detect: DetectOptions,
    /// How the crystal lattice is used: calibration of files without a pixel size, and the
    /// training-free boundary detector beside the model.
    pub lattice: LatticeUse,
    /// Measure each frame against the model card's training ranges
    /// ([`LatticeUse::training`], read from the card of the model watched).
    pub realism_check: bool,
}

/// How `watch` uses the crystal lattice of each frame (shared with `detect`).
pub use crate::frame::LatticeUse;

impl Default for RunWatchOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            once: false,
            conf: crate::detect::DEFAULT_CONF,
            iou: crate::detect::DEFAULT_IOU,
            detector: DetectorOptions::default(),
            detect: DetectOptions::default(),
            lattice: LatticeUse::default(),
            realism_check: true,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchStats {
    pub processed: usize,
    pub failed: usize,
}

/// Watches `dir` until `ctl` is cancelled (or, with `once`, until nothing is left to do),
/// logging every image to `out`. `report` sees each record as it is logged, with the
/// model's class names.
pub fn run_watch(
    dir: &Path,
    model: &Path,
    out: &Path,
    opts: &RunWatchOptions,
    ctl: &JobControl,
    mut report: impl FnMut(&WatchRecord, &[String]),
) -> anyhow::Result<WatchStats> {
    let det = Detector::load(model, &opts.detector)?;
    let mut lattice = opts.lattice.clone();
    if opts.realism_check {
        lattice.training = crate::realism::model_training_realism(model).unwrap_or_else(|e| {
            tracing::warn!("no realism check: {e:#}");
            None
        });
    }
    let log = ResultLog::open(out, det.class_names())?;
    let mut watcher = Watcher::new(
        dir,
        &WatchConfig {
            processed_log: Some(log.jsonl.clone()),
        },
    )?;
    let mut stats = WatchStats::default();
    loop {
        ctl.check()?;
        for ev in watcher.poll_once() {
            match ev {
                WatchEvent::Ready(key) => {
                    ctl.check()?;
                    let rec = process_file(&det, &key, &opts.detect, opts.conf, opts.iou, &lattice);
                    log.append(&rec)?;
                    stats.processed += 1;
                    if rec.outcome.is_err() {
                        stats.failed += 1;
                    }
                    report(&rec, det.class_names());
                }
                WatchEvent::Unreadable { path, message } => {
                    tracing::warn!("{}: {message}", path.display())
                }
            }
        }
        ctl.set_progress(
            0.0,
            format!(
                "{} processed, {} waiting",
                stats.processed,
                watcher.pending_count()
            ),
        );
        if opts.once && watcher.pending_count() == 0 {
            return Ok(stats);
        }
        sleep_unless_cancelled(opts.interval, ctl);
    }
}

/// Sleeps in short steps so a cancel (Ctrl+C, GUI toggle) ends the wait promptly.
pub fn sleep_unless_cancelled(d: Duration, ctl: &JobControl) {
    let end = Instant::now() + d;
    while !ctl.is_cancelled() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// A field of the watch log: line breaks become spaces, so every record is one line.
fn csv_field_one_line(s: &str) -> String {
    crate::fsio::csv_field(&s.replace(['\n', '\r'], " "))
}

#[cfg(test)]
mod tests;
