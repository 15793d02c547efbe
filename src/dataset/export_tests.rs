//! Tests of dataset export: splits, shards, merging, staging and the validator.

use super::*;
use crate::dataset::merge::merge;
use crate::dataset::validate::validate_dataset;
use crate::dataset::yolo::{Validation, parse_labels, read_labels};
use crate::jobs::{Job, is_cancelled};
use std::collections::BTreeSet;

fn small(n: usize) -> DatasetConfig {
    DatasetConfig {
        n,
        seed: 5,
        size: 96,
        ..Default::default()
    }
}

/// Every file under `dir`, relative path -> bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

fn run(cfg: &DatasetConfig, out: &Path, target: ExportTarget) -> anyhow::Result<ExportSummary> {
    export(cfg, out, &target, &JobControl::detached())
}

#[test]
fn splits_are_by_base_image_and_the_dataset_validates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let mut cfg = small(10);
    // Large enough that boundaries and point defects all find room.
    cfg.size = 192;
    let sum = run(&cfg, &out, ExportTarget::default()).unwrap();
    assert_eq!(sum.images, 80);
    let m = Manifest::read(&out).unwrap();
    // Each base image's variants all share its split, and the base record agrees.
    let mut split_of: BTreeMap<usize, Split> = BTreeMap::new();
    for i in &m.images {
        let s = *split_of.entry(i.base_index).or_insert(i.split);
        assert_eq!(s, i.split, "base {} crosses splits", i.base_index);
        assert!(i.file.starts_with(&format!("images/{}/", i.split.name())));
    }
    for b in &m.base_images {
        assert_eq!(split_of[&b.index], b.split);
    }
    // On disk: no base stem in two split folders.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for s in Split::ALL {
        for e in std::fs::read_dir(out.join("images").join(s.name())).unwrap() {
            let f = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = f.split('_').next().unwrap().to_string();
            let prev = seen.insert(stem.clone(), s.name().to_string());
            assert!(
                prev.as_deref().is_none_or(|p| p == s.name()),
                "{stem} in {prev:?} and {s:?}"
            );
        }
    }
    assert_eq!(seen.len(), 10);
    assert_eq!(m.splits[&Split::Train].base_images, 8);
    let r = validate_dataset(&out).unwrap();
    assert!(r.is_ok(), "{}", r.table());
    assert!(r.manifest_checked);
    let total: usize = r.splits.values().map(|s| s.images).sum();
    assert_eq!(total, 80);
    // The validator's per-class counts match the manifest's.
    for s in Split::ALL {
        let want = m.splits[&s].labels;
        let got = &r.splits[s.name()].boxes_per_class;
        assert_eq!(
            got,
            &vec![want.grain_boundary, want.vacancy, want.interstitial]
        );
    }
    // All three classes occur in the dataset.
    let all: ClassCounts = m.images.iter().fold(ClassCounts::default(), |mut a, i| {
        a.merge(&i.labels);
        a
    });
    assert!(
        all.grain_boundary > 0 && all.vacancy > 0 && all.interstitial > 0,
        "{all:?}"
    );
    // data.yaml is what Ultralytics (and our reader) expects.
    let spec = crate::dataset::spec::DatasetSpec::read(&out).unwrap();
    assert_eq!(spec.names, crate::classes::default_class_names());
    assert_eq!(spec.root, out);
    assert!(
        std::fs::read_to_string(out.join("data.yaml"))
            .unwrap()
            .contains("  0: grain_boundary")
    );
}

#[test]
fn a_box_around_a_bright_pixel_moves_with_the_pixel() {
    let (w, h) = (13usize, 8usize);
    let (px, py) = (9usize, 2usize);
    let mut img = vec![0u8; w * h];
    img[py * w + px] = 255;
    // A rotated box centred on that pixel's centre, as a normalised label and back.
    let b = OrientedBox::new(px as f64 + 0.5, py as f64 + 0.5, 3.0, 1.0, 0.4);
    for d in Dihedral::all() {
        let out = apply_symmetry(d, &img, w, h);
        let (ow, oh) = d.output_size(w, h);
        let at = out.iter().position(|&v| v == 255).unwrap();
        let (qx, qy) = (at % ow, at / ow);
        let mb = d.map_box(&b, w as f64, h as f64);
        let label = ObbLabel::from_box_px(1, &mb, ow as f64, oh as f64);
        let text = format_labels(&[label]);
        let back = parse_labels(&text, "t.txt", &Validation::default()).unwrap();
        let c = back[0].to_box_px(ow as f64, oh as f64);
        assert!(
            (c.cx - (qx as f64 + 0.5)).abs() < 1e-4 && (c.cy - (qy as f64 + 0.5)).abs() < 1e-4,
            "{}: box at ({}, {}), pixel at ({qx}, {qy})",
            d.name(),
            c.cx,
            c.cy
        );
        assert!((c.w * c.h - 3.0).abs() < 1e-3, "area kept");
    }
}

#[test]
fn exported_labels_follow_each_symmetry() {
    // One base image, all 8 symmetries: each variant's boxes are the identity variant's boxes
    // mapped by that symmetry (same order), within the 6-decimal label precision.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let cfg = small(1);
    run(&cfg, &out, ExportTarget::default()).unwrap();
    let m = Manifest::read(&out).unwrap();
    let v = Validation::default();
    let id = m.images.iter().find(|i| i.transform == "r0").unwrap();
    let base = read_labels(&out.join(&id.label_file), &v).unwrap();
    assert!(!base.is_empty());
    // The sidecar regenerates the base image exactly.
    let regen = crate::synth::regenerate_from_sidecar(&out.join(&id.sidecar)).unwrap();
    let r0 = image::open(out.join(&id.file)).unwrap().to_luma8();
    assert_eq!(regen.to_u8(), r0.into_raw());
    let s = cfg.size as f64;
    for i in &m.images {
        let d = Dihedral::from_name(&i.transform).unwrap();
        let got = read_labels(&out.join(&i.label_file), &v).unwrap();
        assert_eq!(got.len(), base.len());
        for (g, b) in got.iter().zip(&base) {
            assert_eq!(g.class, b.class);
            // Same rectangle; the corner order may start elsewhere.
            for bc in b.corners_px(s, s) {
                let want = d.map_point(bc, s, s);
                assert!(
                    g.corners_px(s, s)
                        .iter()
                        .any(|gc| (gc[0] - want[0]).abs() < 1e-3 && (gc[1] - want[1]).abs() < 1e-3),
                    "{}: {:?} lacks {want:?}",
                    i.transform,
                    g.corners_px(s, s)
                );
            }
        }
        // The image is the identity image under the same symmetry.
        let a = image::open(out.join(&id.file)).unwrap().to_luma8();
        let b = image::open(out.join(&i.file)).unwrap().to_luma8();
        assert_eq!(
            apply_symmetry(d, a.as_raw(), cfg.size, cfg.size),
            b.into_raw()
        );
    }
}

#[test]
fn merged_shards_are_byte_identical_to_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let mut cfg = small(7);
    cfg.augment = parse_augment("r0,r90,f_r270").unwrap();
    cfg.crop = Some(CropOptions {
        tile: 64,
        per_image: 2,
        min_boundary_frac: 0.25,
    });
    run(&cfg, &out, ExportTarget::default()).unwrap();
    let single = snapshot(&out);
    assert!(single.contains_key("data.yaml") && single.contains_key("manifest.json"));
    assert_eq!(
        single.keys().filter(|k| k.ends_with(".png")).count(),
        7 * 3 * 2
    );
    std::fs::remove_dir_all(&out).unwrap();
    let mut shards = Vec::new();
    for i in [2, 0, 1] {
        let sd = dir.path().join(format!("shard{i}"));
        let s = run(
            &cfg,
            &sd,
            ExportTarget {
                shard: Some(ShardSpec { index: i, count: 3 }),
                overwrite: false,
            },
        )
        .unwrap();
        assert!(!sd.join("data.yaml").exists(), "a shard is not a dataset");
        assert_eq!(s.base_images, (0..7).filter(|k| k % 3 == i).count());
        shards.push(sd);
    }
    // A missing shard is named.
    let e = merge(&out, &shards[..2], false, &JobControl::detached()).unwrap_err();
    assert!(e.to_string().contains("missing shards: 1/3"), "{e}");
    assert!(!out.exists());
    merge(&out, &shards, false, &JobControl::detached()).unwrap();
    let merged = snapshot(&out);
    assert_eq!(
        single.keys().collect::<Vec<_>>(),
        merged.keys().collect::<Vec<_>>()
    );
    for (k, v) in &single {
        assert!(merged[k] == *v, "{k} differs");
    }
    // Shard folders are left as they were.
    assert!(shards.iter().all(|s| s.join(MANIFEST_FILE).is_file()));
}

#[test]
fn crops_keep_labels_inside_the_tile() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let mut cfg = small(4);
    cfg.size = 160;
    cfg.augment = parse_augment("r0,f_r90").unwrap();
    cfg.crop = Some(CropOptions {
        tile: 96,
        per_image: 2,
        min_boundary_frac: 0.25,
    });
    run(&cfg, &out, ExportTarget::default()).unwrap();
    let r = validate_dataset(&out).unwrap();
    assert!(r.is_ok(), "{}", r.table());
    let v = Validation {
        tolerance: 1e-6,
        ..Default::default()
    };
    let m = Manifest::read(&out).unwrap();
    for i in &m.images {
        assert_eq!((i.width, i.height), (96, 96));
        let c = i.crop.unwrap();
        assert!(c.x + 96 <= 160 && c.y + 96 <= 160);
        read_labels(&out.join(&i.label_file), &v).unwrap();
    }
}

#[test]
fn refuses_non_empty_folders_unless_overwriting_a_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), b"precious").unwrap();
    let cfg = small(2);
    let e = run(&cfg, &out, ExportTarget::default()).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
    // Overwrite never replaces a folder that is not a dataset.
    let e = run(
        &cfg,
        &out,
        ExportTarget {
            shard: None,
            overwrite: true,
        },
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("is not a dataset this program wrote"),
        "{e}"
    );
    assert_eq!(std::fs::read(out.join("thesis.tex")).unwrap(), b"precious");
    // An empty folder is fine; a dataset can be replaced with overwrite.
    let out2 = dir.path().join("empty");
    std::fs::create_dir(&out2).unwrap();
    run(&cfg, &out2, ExportTarget::default()).unwrap();
    assert!(run(&cfg, &out2, ExportTarget::default()).is_err());
    let cfg3 = small(3);
    let s = run(
        &cfg3,
        &out2,
        ExportTarget {
            shard: None,
            overwrite: true,
        },
    )
    .unwrap();
    assert_eq!(s.base_images, 3);
    assert_eq!(Manifest::read(&out2).unwrap().base_images.len(), 3);
    // Nothing but the two targets in the parent: no staging or old folders left.
    let names: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["ds".to_string(), "empty".to_string()])
    );
}

#[test]
fn cancel_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    // Cancelled before the first image.
    let c = JobControl::detached();
    c.cancel();
    let e = export(&small(3), &out, &ExportTarget::default(), &c).unwrap_err();
    assert!(is_cancelled(&e));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // Cancelled in the middle of a run.
    let mut cfg = small(400);
    cfg.size = 64;
    cfg.augment = parse_augment("none").unwrap();
    let out2 = out.clone();
    let job = Job::spawn("export", None, move |c| {
        export(&cfg, &out2, &ExportTarget::default(), c)
    });
    let t0 = Instant::now();
    while job.control().progress() <= 0.0 && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(job.control().progress() < 1.0, "finished before the cancel");
    job.cancel();
    let e = job.block().unwrap_err();
    assert!(is_cancelled(&e), "{e:#}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no target and no staging folder"
    );
}

#[test]
fn stale_staging_of_a_dead_process_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    // Pid numbers this large are not in use (Linux caps them at 2^22).
    let stale = dir.path().join(".ds.partial-99999999");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("x.png"), b"half").unwrap();
    run(&small(1), &dir.path().join("ds"), ExportTarget::default()).unwrap();
    if cfg!(target_os = "linux") {
        assert!(!stale.exists());
    }
}

#[test]
fn validator_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let mut cfg = small(3);
    cfg.augment = parse_augment("r0,r180").unwrap();
    cfg.split = SplitRatios::parse("1,0,0").unwrap();
    run(&cfg, &out, ExportTarget::default()).unwrap();
    let m = Manifest::read(&out).unwrap();
    let a = &m.images[0];
    let mut text = std::fs::read_to_string(out.join(&a.label_file)).unwrap();
    text += "1 0.1 0.1 0.2 0.1 0.2\n";
    let bad_line = text.lines().count();
    std::fs::write(out.join(&a.label_file), text).unwrap();
    let b = &m.images[1];
    std::fs::remove_file(out.join(&b.label_file)).unwrap();
    std::fs::write(out.join("labels/train/orphan.txt"), "").unwrap();
    let r = validate_dataset(&out).unwrap();
    assert!(!r.is_ok());
    let all = r.errors.join("\n");
    let needle = format!("{}:{bad_line}:", out.join(&a.label_file).display());
    assert!(all.contains(&needle), "{all}");
    assert!(all.contains("expected 9 fields"), "{all}");
    assert!(all.contains("image has no label file"), "{all}");
    assert!(all.contains("orphan.txt: label file has no image"), "{all}");
}

#[test]
fn pure_test_set_and_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let mut cfg = small(3);
    cfg.split = SplitRatios::parse("0,0,1").unwrap();
    cfg.augment = parse_augment("none").unwrap();
    let s = run(&cfg, &out, ExportTarget::default()).unwrap();
    assert_eq!(s.splits[&Split::Test].images, 3);
    assert_eq!(s.splits[&Split::Train].images, 0);
    assert!(parse_augment("r45").is_err());
    let mut bad = small(3);
    bad.augment.clear();
    assert!(bad.validate().is_err());
    bad = small(3);
    bad.crop = Some(CropOptions {
        tile: 500,
        ..Default::default()
    });
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("crop tile")
    );
    assert!("3/3".parse::<ShardSpec>().is_err() && "1/4".parse::<ShardSpec>().is_ok());
}

#[test]
fn edited_shard_manifests_are_refused_not_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let sd = dir.path().join("shard0");
    run(
        &small(2),
        &sd,
        ExportTarget {
            shard: Some(ShardSpec { index: 0, count: 2 }),
            overwrite: false,
        },
    )
    .unwrap();
    let path = sd.join(MANIFEST_FILE);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    // An index past the count used to panic on `seen[index]`.
    m["shard"] = serde_json::json!({"index": 3, "count": 2});
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let e = merge(
        &out,
        std::slice::from_ref(&sd),
        false,
        &JobControl::detached(),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("3/2"), "{e:#}");
    // An absurd count used to allocate a slot per shard.
    m["shard"] = serde_json::json!({"index": 0, "count": 1_000_000_000_000_000_000u64});
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let e = merge(
        &out,
        std::slice::from_ref(&sd),
        false,
        &JobControl::detached(),
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("and 999999999999999989 more"),
        "{e:#}"
    );
    assert!(!out.exists());
}

#[test]
fn overwrite_replaces_only_our_files() {
    let dir = tempfile::tempdir().unwrap();
    let over = ExportTarget {
        shard: None,
        overwrite: true,
    };
    // Hand-annotated data (images/ + labels/, no manifest of ours) is never replaced.
    let hand = dir.path().join("hand");
    std::fs::create_dir_all(hand.join("images")).unwrap();
    std::fs::create_dir_all(hand.join("labels")).unwrap();
    std::fs::write(hand.join("labels/a.txt"), b"0 0 0 1 0 1 1 0 1").unwrap();
    std::fs::write(hand.join("data.yaml"), b"names: [a]").unwrap();
    let before = snapshot(&hand);
    let e = run(&small(2), &hand, over.clone()).unwrap_err();
    assert!(
        e.to_string().contains("not a dataset this program wrote"),
        "{e}"
    );
    assert_eq!(snapshot(&hand), before);
    // In one of ours, others' files survive the replacement: a training run, notes, a file
    // inside our folders.
    let out = dir.path().join("ds");
    run(&small(3), &out, ExportTarget::default()).unwrap();
    std::fs::create_dir_all(out.join("runs/obb")).unwrap();
    std::fs::write(out.join("runs/obb/best.pt"), b"weights").unwrap();
    std::fs::write(out.join("notes.md"), b"notes").unwrap();
    std::fs::write(out.join("images/train/extra.png"), b"mine").unwrap();
    // Written by us before but not now (3 base images, then 2): removed.
    let old_files: BTreeSet<String> = snapshot(&out).into_keys().collect();
    run(&small(2), &out, over).unwrap();
    assert_eq!(
        std::fs::read(out.join("runs/obb/best.pt")).unwrap(),
        b"weights"
    );
    assert_eq!(std::fs::read(out.join("notes.md")).unwrap(), b"notes");
    assert_eq!(
        std::fs::read(out.join("images/train/extra.png")).unwrap(),
        b"mine"
    );
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.base_images.len(), 2);
    let ours: BTreeSet<String> = m
        .written_files()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let now: BTreeSet<String> = snapshot(&out).into_keys().collect();
    let foreign: BTreeSet<&str> = now
        .iter()
        .filter(|f| !ours.contains(*f))
        .map(String::as_str)
        .collect();
    assert_eq!(
        foreign,
        BTreeSet::from(["runs/obb/best.pt", "notes.md", "images/train/extra.png"])
    );
    let dropped: Vec<&String> = old_files
        .iter()
        .filter(|f| !ours.contains(*f) && !foreign.contains(f.as_str()))
        .collect();
    assert!(!dropped.is_empty(), "the third base image wrote nothing?");
    assert!(dropped.iter().all(|f| !out.join(f).exists()), "{dropped:?}");
    // No staging, old or previous folders left beside it.
    let names: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["ds".to_string(), "hand".to_string()])
    );
}

#[test]
fn min_detectability_drops_only_the_point_defects_the_dose_hides() {
    let dir = tempfile::tempdir().unwrap();
    let v = Validation::default();
    let mut cfg = small(3);
    cfg.size = 192;
    cfg.augment = vec!["r0".into()];
    let labels_of = |cfg: &DatasetConfig, name: &str| {
        let out = dir.path().join(name);
        run(cfg, &out, ExportTarget::default()).unwrap();
        let m = Manifest::read(&out).unwrap();
        let mut classes = Vec::new();
        let mut sidecar_d = Vec::new();
        for i in &m.images {
            let l = read_labels(&out.join(&i.label_file), &v).unwrap();
            classes.extend(l.iter().map(|l| l.class));
            let sc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(out.join(&i.sidecar)).unwrap()).unwrap();
            for l in sc["labels"].as_array().unwrap() {
                sidecar_d.push(l.get("detectability").and_then(|d| d.as_f64()));
            }
        }
        (classes, sidecar_d)
    };
    let (all, d_none) = labels_of(&cfg, "all");
    assert!(
        d_none.iter().all(Option::is_none),
        "measured without being asked"
    );
    cfg.min_detectability = Some(0.0);
    let (measured, d) = labels_of(&cfg, "zero");
    assert_eq!(measured, all, "a threshold of 0 must leave every label");
    let points = all.iter().filter(|&&c| c != 0).count();
    assert!(points > 0);
    assert_eq!(d.iter().filter(|d| d.is_some()).count(), points);
    // Between the smallest and the largest d′: some point labels go, boundaries stay.
    let mut ds: Vec<f64> = d.iter().flatten().copied().collect();
    ds.sort_by(f64::total_cmp);
    let mid = ds[ds.len() / 2];
    cfg.min_detectability = Some(mid);
    let (kept, _) = labels_of(&cfg, "mid");
    let kept_points = kept.iter().filter(|&&c| c != 0).count();
    assert_eq!(kept_points, ds.iter().filter(|&&x| x >= mid).count());
    assert_eq!(
        kept.iter().filter(|&&c| c == 0).count(),
        all.iter().filter(|&&c| c == 0).count()
    );
    cfg.min_detectability = Some(f64::NAN);
    assert!(cfg.validate().is_err());
}

/// `export --resample-to-pm` writes every frame as the app feeds it to the model: each one
/// `size` pixels at that pixel size whatever pixel size it was drawn at, with the labels, the
/// manifest and the sidecar saying so, and its point defects measured where they were recorded.
#[test]
fn resample_to_pm_writes_frames_as_the_model_is_fed_them() {
    let dir = tempfile::tempdir().unwrap();
    let v = Validation::default();
    let mut cfg = small(9);
    cfg.size = 128;
    cfg.n = 6;
    cfg.augment = vec!["r0".into(), "f_r90".into()];
    cfg.resample_to_pm = Some(16.0);
    cfg.min_detectability = Some(0.0);
    let out = dir.path().join("fed");
    run(&cfg, &out, ExportTarget::default()).unwrap();
    let m = Manifest::read(&out).unwrap();
    let mut drawn = Vec::new();
    for b in &m.base_images {
        // The side is a whole number of recorded pixels: the pixel size is 16 to within one.
        assert!(
            (b.pixel_size_pm / 16.0 - 1.0).abs() < 0.02,
            "{}",
            b.pixel_size_pm
        );
        let sc = crate::synth::read_sidecar(&out.join(&b.sidecar)).unwrap();
        assert!((sc.pixel_size_nm * 1000.0 - b.pixel_size_pm).abs() < 1e-9);
        assert_eq!(sc.params.resample_to, Some([128, 128]));
        drawn.push(sc.params.pixel_size_pm);
        // Every point defect's d′ was measured on the recorded frame.
        assert!(
            sc.labels
                .iter()
                .all(|l| (l.class == DefectClass::GrainBoundary) == l.detectability.is_none())
        );
    }
    drawn.sort_by(f64::total_cmp);
    assert!(
        drawn[0] < 14.0 && drawn[drawn.len() - 1] > 18.0,
        "{drawn:?}"
    );
    for i in &m.images {
        let img = image::open(out.join(&i.file)).unwrap();
        assert_eq!((img.width(), img.height()), (128, 128));
        for l in read_labels(&out.join(&i.label_file), &v).unwrap() {
            let b = l.to_box_px(128.0, 128.0);
            assert!(b.cx > 0.0 && b.cx < 128.0 && b.cy > 0.0 && b.cy < 128.0);
        }
    }
    // A span the resampling cannot reach is refused before anything is written.
    cfg.resample_to_pm = Some(1.0);
    assert!(cfg.validate().is_err());
    cfg.resample_to_pm = Some(400.0);
    assert!(cfg.validate().is_err());
}
