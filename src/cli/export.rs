//! `defect-detector export`: a YOLO-OBB training dataset with honest splits; also merges
//! shard folders and validates datasets.

use anyhow::Context;
use clap::Args;
use defect_detector::dataset::export::{
    CropOptions, DatasetConfig, ExportSummary, ExportTarget, ShardSpec, SplitRatios, export,
    parse_augment,
};
use defect_detector::dataset::merge::merge;
use defect_detector::dataset::randomize::{DomainRandomization, Sampling};
use defect_detector::dataset::validate_dataset;
use defect_detector::jobs::Job;
use defect_detector::synth::SynthParams;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SamplingArg {
    LatinHypercube,
    Independent,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  defect-detector export --out data/cdte --n 80 --seed 1
  defect-detector export --out test-set --n 20 --seed 99 --augment none --split 0,0,1
  defect-detector export --out shard3 --n 800 --shard 3/8      (one SLURM array task)
  defect-detector export --merge data/full shard0 shard1 ...   (after all tasks)
  defect-detector export --validate data/cdte
  defect-detector export --print-dr > dr.json                  (edit, then --dr dr.json)
  defect-detector export --out matched --n 200 --like frame1.dm4 frame2.dm4   (fine-tuning set)
  defect-detector export --out real --pseudo frames/*.dm4 --nm-per-px 0.016   (real frames, lattice labels)")]
pub struct ExportArgs {
    /// Output folder (must be empty or absent, unless --overwrite replaces an old dataset).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Number of base images (each yields one image per symmetry and crop).
    #[arg(long, default_value_t = 80)]
    n: usize,
    /// Dataset seed: base images, splits and crops all derive from it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Base image side (px).
    #[arg(long, default_value_t = 768)]
    size: usize,
    /// Symmetries: all, none, or a list such as r0,r90,f_r0.
    #[arg(long, default_value = "all")]
    augment: String,
    /// How the base images share out the randomization's ranges: latin-hypercube (each knob
    /// takes each of n equal-probability strata once, so even a small dataset spans every
    /// range) or independent (each image draws on its own, as datasets before 2026-12).
    #[arg(long, value_enum, default_value_t = SamplingArg::LatinHypercube)]
    sampling: SamplingArg,
    /// Base-image fractions train,val,test (0,0,1 makes a pure test set).
    #[arg(long, default_value = "0.8,0.1,0.1")]
    split: String,
    /// Write only shard i of n (base images with index % n == i) with a partial manifest.
    #[arg(long, value_name = "i/n")]
    shard: Option<String>,
    /// Replace a dataset this program wrote in the output folder (its manifest.json says so);
    /// files it did not write (training runs, notes) are kept in the new one.
    #[arg(long)]
    overwrite: bool,
    /// Random square crops of this side (px) from every variant.
    #[arg(long, value_name = "TILE")]
    crop: Option<usize>,
    /// Crops per variant (with --crop).
    #[arg(long, default_value_t = 1)]
    crops_per_image: usize,
    /// Leave out of the labels the vacancies and interstitials the frame's dose hides: those
    /// whose ideal-observer signal-to-noise ratio d′ is below this (Rose's criterion: 5). The
    /// sidecars keep every label with its d′; 0 measures d′ and leaves nothing out.
    #[arg(long, value_name = "D")]
    min_detectability: Option<f64>,
    /// Show every frame as the app feeds it to a model of this pixel size (pm/px): recorded at
    /// its drawn pixel size over the field of view that fills --size pixels at PM, then
    /// resampled to PM (area filter when shrinking, bilinear when enlarging), as `detect` and
    /// the Viewer bring a calibrated frame to the model's pixel size. The sidecars record
    /// both; `synth --from-sidecar` draws the same frame.
    #[arg(long, value_name = "PM")]
    resample_to_pm: Option<f64>,
    /// Domain-randomization ranges (JSON; missing fields take defaults, see --print-dr).
    #[arg(long, value_name = "FILE.json")]
    dr: Option<PathBuf>,
    /// Synthesis settings that are not randomized (JSON, as a sidecar's "params").
    #[arg(long, value_name = "FILE.json")]
    params: Option<PathBuf>,
    /// Merge shard folders: --merge OUT SHARD_DIR...
    #[arg(long, num_args = 2.., value_names = ["OUT", "SHARD_DIRS"])]
    merge: Option<Vec<PathBuf>>,
    /// Check a dataset folder (labels, pairing, split honesty) and print its counts.
    #[arg(long, value_name = "DIR")]
    validate: Option<PathBuf>,
    /// Print the default domain-randomization JSON and exit.
    #[arg(long)]
    print_dr: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Real frames to match: the randomization is centred on their measured pixel size, column
    /// width, background, noise and scan distortions (rotations and defects stay free).
    /// Writes match.json beside the dataset.
    #[arg(long, num_args = 1.., value_name = "FRAME")]
    like: Vec<PathBuf>,
    /// Crystal of the --like or --pseudo frames (cdte110, si110, gaas110).
    #[arg(long, default_value = "cdte110")]
    crystal: String,
    /// Real frames to label with the lattice analysis (boundaries, vacancies, interstitials)
    /// into a dataset for review and fine-tuning: pseudo labels, check them in the Review tab.
    #[arg(long, num_args = 1.., value_name = "FRAME", conflicts_with_all = ["like", "merge", "validate"])]
    pseudo: Vec<PathBuf>,
    /// With --pseudo: resample calibrated frames to this pixel size (nm/px; the model's, e.g.
    /// 0.016), as the detector does before it looks.
    #[arg(long, requires = "pseudo")]
    nm_per_px: Option<f64>,
    /// With --pseudo: lowest lattice-analysis score written as a label.
    #[arg(long, default_value_t = 0.25, requires = "pseudo")]
    pseudo_conf: f32,
}

/// Measures the --like frames and matches the randomization to them.
fn match_frames(
    a: &ExportArgs,
    base: &DomainRandomization,
) -> anyhow::Result<defect_detector::dataset::like::MatchReport> {
    use defect_detector::synth::crystal::Preset;
    let preset = Preset::named_crystal(&a.crystal)?;
    let spec = preset.spec();
    let mut stats = Vec::new();
    for f in &a.like {
        let img = defect_detector::formats::load(f)?;
        let s = defect_detector::realism::measure(
            &img.image,
            &spec,
            img.pixel_size.map(|p| p.nm_per_px),
            None,
        )
        .with_context(|| format!("{}: cannot measure it", f.display()))?;
        stats.push(s);
    }
    let report = defect_detector::dataset::like::matched_randomization(&stats, preset, base)?;
    if !a.json {
        eprintln!(
            "matched to {} frame(s): {}",
            a.like.len(),
            serde_json::to_string(&report.target)?
        );
    }
    Ok(report)
}

fn config_from_args(a: &ExportArgs) -> anyhow::Result<DatasetConfig> {
    let randomization = match &a.dr {
        Some(p) => DomainRandomization::read(p)?,
        None => DomainRandomization::default(),
    };
    let base = match &a.params {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str::<SynthParams>(&text)
                .with_context(|| format!("{} is not a valid parameter file", p.display()))?
        }
        None => SynthParams::default(),
    };
    let cfg = DatasetConfig {
        n: a.n,
        seed: a.seed,
        size: a.size,
        augment: parse_augment(&a.augment)?,
        split: SplitRatios::parse(&a.split)?,
        crop: a.crop.map(|tile| CropOptions {
            tile,
            per_image: a.crops_per_image,
            ..Default::default()
        }),
        randomization,
        sampling: match a.sampling {
            SamplingArg::LatinHypercube => Sampling::LatinHypercube,
            SamplingArg::Independent => Sampling::Independent,
        },
        base,
        min_detectability: a.min_detectability,
        resample_to_pm: a.resample_to_pm,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Runs the work on a worker thread and draws a progress bar until it ends.
fn with_progress(
    what: &str,
    work: impl FnOnce(&defect_detector::jobs::JobControl) -> anyhow::Result<ExportSummary>
    + Send
    + 'static,
) -> anyhow::Result<ExportSummary> {
    let job = Job::spawn(what, None, work);
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:40}] {percent:>3}% {msg}  elapsed {elapsed}  ETA {eta}",
        )
        .map_err(|e| anyhow::anyhow!("progress bar template: {e}"))?
        .progress_chars("=> "),
    );
    let job = loop {
        let c = job.control();
        bar.set_position((c.progress() * 1000.0) as u64);
        bar.set_message(c.message());
        if job.is_done() {
            break job;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    bar.finish_and_clear();
    job.block()
}

fn report(s: &ExportSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        print!("{}", s.table());
        println!(
            "{} images from {} base images, {:.1} MB in {:.1} s -> {}",
            s.images,
            s.base_images,
            s.bytes as f64 / 1e6,
            s.seconds,
            s.out.display()
        );
    }
    Ok(())
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    if a.print_dr {
        println!(
            "{}",
            serde_json::to_string_pretty(&DomainRandomization::default())?
        );
        return Ok(());
    }
    if let Some(dir) = &a.validate {
        let r = validate_dataset(dir)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{}", r.table());
        }
        anyhow::ensure!(
            r.is_ok(),
            "{} has {} problem(s)",
            dir.display(),
            r.errors.len()
        );
        return Ok(());
    }
    if let Some(list) = &a.merge {
        let out = list[0].clone();
        let shards = list[1..].to_vec();
        let overwrite = a.overwrite;
        let s = with_progress("merge", move |c| merge(&out, &shards, overwrite, c))?;
        return report(&s, a.json);
    }
    let out = a
        .out
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--out DIR is required (or use --merge / --validate)"))?;
    if !a.pseudo.is_empty() {
        return pseudo(&a, &out);
    }
    let mut cfg = config_from_args(&a)?;
    let matched = if a.like.is_empty() {
        None
    } else {
        let m = match_frames(&a, &cfg.randomization)?;
        cfg.randomization = m.randomization.clone();
        cfg.validate()?;
        Some(m)
    };
    let target = ExportTarget {
        shard: a
            .shard
            .as_deref()
            .map(str::parse::<ShardSpec>)
            .transpose()?,
        overwrite: a.overwrite,
    };
    let dest = out.clone();
    let s = with_progress("export", move |c| export(&cfg, &out, &target, c))?;
    if let Some(m) = matched {
        defect_detector::fsio::atomic_write(
            &dest.join("match.json"),
            &serde_json::to_vec_pretty(&m)?,
        )?;
    }
    report(&s, a.json)
}

/// `--pseudo`: real frames labelled by the lattice analysis.
fn pseudo(a: &ExportArgs, out: &std::path::Path) -> anyhow::Result<()> {
    use defect_detector::dataset::pseudo::{PseudoOptions, export_pseudo};
    if let Some(nm) = a.nm_per_px {
        anyhow::ensure!(nm.is_finite() && nm > 0.0, "--nm-per-px must be positive");
    }
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.pseudo_conf),
        "--pseudo-conf must be between 0 and 1"
    );
    let opts = PseudoOptions {
        crystal: defect_detector::synth::crystal::Preset::named_crystal(&a.crystal)?.spec(),
        nm_per_px: a.nm_per_px,
        conf: a.pseudo_conf,
        val_every: 5,
    };
    let s = export_pseudo(&a.pseudo, out, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    for f in &s.frames {
        match &f.error {
            Some(e) => eprintln!("{}: skipped: {e}", f.source.display()),
            None => println!(
                "{} -> {} ({}x{}, {} boundaries, {} vacancies, {} interstitials; pixel size {})",
                f.source.display(),
                f.image,
                f.width,
                f.height,
                f.labels[0],
                f.labels[1],
                f.labels[2],
                match (f.source_nm_per_px, f.nm_per_px) {
                    (Some(src), Some(px)) => format!(
                        "{:.2} pm from the {}, written at {:.2} pm",
                        src * 1e3,
                        f.calibration,
                        px * 1e3
                    ),
                    _ => "unknown".into(),
                }
            ),
        }
    }
    println!(
        "{} of {} frame(s) labelled -> {} (pseudo labels: check them in the Review tab)",
        s.written(),
        s.frames.len(),
        out.display()
    );
    Ok(())
}
