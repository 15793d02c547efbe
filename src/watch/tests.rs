//! Tests of folder watching: new frames detected once, partial files waited for.

use super::*;
use crate::detect::Device;

fn tiny_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_obb.onnx")
}

fn png_bytes(seed: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(64, 64, |x, y| {
        image::Luma([((x * 7 + y * 13 + seed * 31) % 251) as u8])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

fn ready(events: &[WatchEvent]) -> Vec<PathBuf> {
    events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Ready(k) => Some(k.path.clone()),
            _ => None,
        })
        .collect()
}

fn test_opts() -> RunWatchOptions {
    RunWatchOptions {
        interval: Duration::from_millis(10),
        once: true,
        detector: DetectorOptions {
            device: Device::Cpu,
            threads: 1,
            runtime_library: None,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn file_written_in_two_halves_waits_until_stable() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = png_bytes(1);
    let path = dir.path().join("a.png");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let mut w = Watcher::new(dir.path(), &WatchConfig::default()).unwrap();
    assert!(
        ready(&w.poll_once()).is_empty(),
        "first sight is never ready"
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&bytes[bytes.len() / 2..]).unwrap();
    drop(f);
    assert!(ready(&w.poll_once()).is_empty(), "grew since the last poll");
    assert_eq!(w.pending_count(), 1);
    let ev = w.poll_once();
    assert_eq!(ready(&ev), vec![w.dir().join("a.png")]);
    match &ev[0] {
        WatchEvent::Ready(k) => assert_eq!(k.size, bytes.len() as u64),
        other => panic!("{other:?}"),
    }
    assert!(w.poll_once().is_empty());
}

#[test]
fn empty_file_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("e.png"), b"").unwrap();
    let mut w = Watcher::new(dir.path(), &WatchConfig::default()).unwrap();
    for _ in 0..3 {
        assert!(ready(&w.poll_once()).is_empty());
    }
}

#[test]
fn burst_of_five_is_reported_once_each_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Watcher::new(dir.path(), &WatchConfig::default()).unwrap();
    for i in 0..5 {
        std::fs::write(dir.path().join(format!("img{i}.png")), png_bytes(i)).unwrap();
        // Distinct mtimes on coarse-timestamp file systems.
        std::thread::sleep(Duration::from_millis(5));
    }
    // Not an image: ignored.
    std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    assert!(ready(&w.poll_once()).is_empty());
    let got = ready(&w.poll_once());
    let want: Vec<PathBuf> = (0..5)
        .map(|i| w.dir().join(format!("img{i}.png")))
        .collect();
    assert_eq!(got, want);
    assert!(w.poll_once().is_empty());
    assert_eq!(w.processed_count(), 5);
}

#[test]
fn rewritten_file_is_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.png");
    std::fs::write(&p, png_bytes(1)).unwrap();
    let mut w = Watcher::new(dir.path(), &WatchConfig::default()).unwrap();
    w.poll_once();
    assert_eq!(ready(&w.poll_once()).len(), 1);
    let mut longer = png_bytes(2);
    longer.extend_from_slice(&[0; 16]);
    std::fs::write(&p, longer).unwrap();
    w.poll_once();
    assert_eq!(ready(&w.poll_once()).len(), 1);
}

#[test]
fn missing_folder_is_a_clear_error() {
    let e = Watcher::new(Path::new("/no/such/folder"), &WatchConfig::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("/no/such/folder"), "{e}");
}

#[test]
fn timestamps_are_utc_rfc3339() {
    assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
    assert_eq!(utc_timestamp(t), "2023-11-14T22:13:20.250Z");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
    assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00.000Z");
}

#[test]
fn corrupt_file_is_logged_and_restart_does_not_reprocess() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.png"), png_bytes(1)).unwrap();
    std::fs::write(dir.path().join("b.png"), png_bytes(2)).unwrap();
    std::fs::write(dir.path().join("bad.png"), b"not a png at all").unwrap();
    let ctl = JobControl::detached();
    let mut seen = Vec::new();
    let stats = run_watch(
        dir.path(),
        &tiny_model(),
        out.path(),
        &test_opts(),
        &ctl,
        |r, _| seen.push(r.key.path.clone()),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        stats,
        WatchStats {
            processed: 3,
            failed: 1
        }
    );
    let jsonl = std::fs::read_to_string(out.path().join(JSONL_NAME)).unwrap();
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let bad = lines
        .iter()
        .find(|v| v["file"].as_str().unwrap().ends_with("bad.png"))
        .unwrap();
    assert!(bad["error"].as_str().unwrap().contains("bad.png"), "{bad}");
    let good = lines
        .iter()
        .find(|v| v["file"].as_str().unwrap().ends_with("a.png"))
        .unwrap();
    assert!(good["error"].is_null());
    assert!(good["counts"].is_object());
    assert!(good["detections"].is_array());
    assert!(good["timings_ms"]["total"].as_f64().unwrap() > 0.0);
    // The pixel size used and where it came from (this PNG has none; its pattern may or may
    // not read as a lattice).
    let how = good["calibration"].as_str().unwrap();
    assert!(["none", "lattice"].contains(&how), "{good}");
    assert_eq!(good["nm_per_px"].is_null(), how == "none", "{good}");
    // One run without a pixel size; the crystals' readings of a lattice-derived one, fused.
    let runs = good["model_runs"].as_u64().unwrap();
    assert_eq!(runs, if how == "none" { 1 } else { 3 }, "{good}");
    assert!(good["timestamp"].as_str().unwrap().ends_with('Z'));
    let csv = std::fs::read_to_string(out.path().join(CSV_NAME)).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows[0].starts_with("timestamp,file,n_"));
    assert!(rows[0].ends_with(",total_ms,error"));
    let bad_row = rows.iter().find(|r| r.contains("bad.png")).unwrap();
    assert!(!bad_row.ends_with(','), "error column filled: {bad_row}");

    // Restart: nothing is done again.
    let stats = run_watch(
        dir.path(),
        &tiny_model(),
        out.path(),
        &test_opts(),
        &ctl,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(stats, WatchStats::default());
    assert_eq!(
        std::fs::read_to_string(out.path().join(JSONL_NAME)).unwrap(),
        jsonl
    );
    // Only a new file is processed after a restart.
    std::fs::write(dir.path().join("c.png"), png_bytes(3)).unwrap();
    let mut new = Vec::new();
    let stats = run_watch(
        dir.path(),
        &tiny_model(),
        out.path(),
        &test_opts(),
        &ctl,
        |r, _| new.push(r.key.path.file_name().unwrap().to_owned()),
    )
    .unwrap();
    assert_eq!(stats.processed, 1);
    assert_eq!(new, vec![std::ffi::OsString::from("c.png")]);
}

#[test]
fn torn_last_line_is_ignored_on_restart() {
    let out = tempfile::tempdir().unwrap();
    let p = out.path().join(JSONL_NAME);
    std::fs::write(
        &p,
        "{\"file\":\"/d/a.png\",\"size\":10,\"mtime_ns\":5}\n{\"file\":\"/d/b.p",
    )
    .unwrap();
    let set = read_processed(&p).unwrap();
    assert_eq!(set.len(), 1);
    assert!(set.contains(&FileKey {
        path: "/d/a.png".into(),
        size: 10,
        mtime_ns: 5
    }));
}

#[test]
fn log_refuses_other_classes() {
    let out = tempfile::tempdir().unwrap();
    ResultLog::open(out.path(), &["a".into(), "b".into()]).unwrap();
    ResultLog::open(out.path(), &["a".into(), "b".into()]).unwrap();
    let e = ResultLog::open(out.path(), &["x".into()]).err().unwrap();
    assert!(e.to_string().contains("other classes"), "{e}");
}

#[test]
fn append_after_a_torn_line_starts_a_new_line() {
    let out = tempfile::tempdir().unwrap();
    let p = out.path().join(JSONL_NAME);
    std::fs::write(&p, "{\"file\":\"/d/b.p").unwrap();
    let log = ResultLog::open(out.path(), &["a".into()]).unwrap();
    let rec = WatchRecord {
        timestamp: UNIX_EPOCH,
        key: FileKey {
            path: "/d/c.png".into(),
            size: 3,
            mtime_ns: 4,
        },
        outcome: Err("cannot decode".into()),
    };
    log.append(&rec).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["error"], "cannot decode");
    assert_eq!(read_processed(&p).unwrap().len(), 1);
}

#[test]
fn skip_existing_reports_only_new_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.png"), png_bytes(1)).unwrap();
    let mut w = Watcher::new(dir.path(), &WatchConfig::default()).unwrap();
    w.skip_existing();
    std::fs::write(dir.path().join("new.png"), png_bytes(2)).unwrap();
    w.poll_once();
    assert_eq!(ready(&w.poll_once()), vec![w.dir().join("new.png")]);
}
