//! `defect-detector realism FILE_OR_DIR... [--crystal C] [--nm-per-px X] [--json]
//! [--against DATASET_DIR] [--max-images N]`: does a frame look like our synthetic data?

use std::path::{Path, PathBuf};

use clap::Args;
use defect_detector::formats;
use defect_detector::realism::{self, RealismStats, StatRange};
use defect_detector::synth::crystal::Preset;

#[derive(Args)]
pub struct RealismArgs {
    /// Images or folders (a folder contributes its readable images).
    #[arg(required_unless_present = "write_card")]
    pub paths: Vec<PathBuf>,
    /// Crystal and zone axis: cdte110, si110 or gaas110.
    #[arg(long, default_value = "cdte110")]
    pub crystal: String,
    /// Pixel size (nm/px), overriding the files' calibration.
    #[arg(long)]
    pub nm_per_px: Option<f64>,
    /// Print one JSON array of per-file records instead of a table.
    #[arg(long)]
    pub json: bool,
    /// A dataset folder (from `export`, or `synth` output, or plain images): list the
    /// statistics of each frame outside the dataset's 5–95 % ranges.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// At most this many dataset images for `--against`.
    #[arg(long, default_value_t = 200)]
    pub max_images: usize,
    /// Record the `--against` dataset's ranges in this model card (`model.json` beside the
    /// ONNX) as `training_realism`, which the Viewer's out-of-distribution warning reads.
    #[arg(long, value_name = "MODEL.json", requires = "against")]
    pub write_card: Option<PathBuf>,
    /// With --write-card: how the training data was made, in words (recipe, seeds).
    #[arg(long, default_value = "")]
    pub source: String,
}

/// Writes the dataset's ranges into a model card, keeping everything else in it.
fn write_card(card: &std::path::Path, tr: &realism::TrainingRealism) -> anyhow::Result<()> {
    defect_detector::fsio::set_json_key(card, "training_realism", serde_json::to_value(tr)?)
}

#[derive(serde::Serialize)]
struct Record {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<RealismStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lattice_vs_file_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outside: Option<Vec<realism::Outside>>,
    /// With `--against`: each statistic's percentile rank in the dataset.
    #[serde(skip_serializing_if = "Option::is_none")]
    percentiles: Option<Vec<realism::Rank>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn expand(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(formats::list_images(p));
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn measure_file(path: &Path, a: &RealismArgs, preset: Preset) -> anyhow::Result<RealismStats> {
    let img = formats::load(path)?;
    realism::measure(
        &img.image,
        &preset.spec(),
        img.pixel_size.map(|p| p.nm_per_px),
        a.nm_per_px,
    )
}

pub fn run(a: RealismArgs) -> anyhow::Result<()> {
    let preset = Preset::named_crystal(&a.crystal)?;
    if let Some(x) = a.nm_per_px {
        anyhow::ensure!(x.is_finite() && x > 0.0, "--nm-per-px {x} must be positive");
    }
    let mut measured = 0usize;
    let mut dataset: Vec<RealismStats> = Vec::new();
    let ranges: Option<Vec<StatRange>> = match &a.against {
        Some(dir) => {
            dataset = realism::dataset_stats(dir, &preset.spec(), a.max_images)?;
            measured = dataset.len();
            Some(realism::ranges(&dataset))
        }
        None => None,
    };
    if let (Some(card), Some(r)) = (&a.write_card, &ranges) {
        anyhow::ensure!(measured > 0, "the dataset has no images to measure");
        let tr = realism::TrainingRealism {
            crystal: preset.cli_name().to_string(),
            images: measured,
            source: a.source.clone(),
            ranges: r.clone(),
        };
        write_card(card, &tr)?;
        eprintln!(
            "{}: training_realism from {measured} images written",
            card.display()
        );
        if a.paths.is_empty() {
            return Ok(());
        }
    }
    let files = expand(&a.paths);
    anyhow::ensure!(!files.is_empty(), "no readable images in the given paths");
    let mut records = Vec::new();
    let mut failed = 0usize;
    for f in &files {
        match measure_file(f, &a, preset) {
            Ok(s) => records.push(Record {
                file: f.display().to_string(),
                lattice_vs_file_pct: s.lattice_vs_file_pct(),
                outside: ranges.as_ref().map(|r| realism::outside(&s, r)),
                percentiles: ranges
                    .as_ref()
                    .map(|_| realism::percentile_ranks(&s, &dataset)),
                stats: Some(s),
                error: None,
            }),
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e:#}", f.display());
                records.push(Record {
                    file: f.display().to_string(),
                    stats: None,
                    lattice_vs_file_pct: None,
                    outside: None,
                    percentiles: None,
                    error: Some(format!("{e:#}")),
                });
            }
        }
    }
    if a.json {
        let v = serde_json::json!({
            "records": records,
            "ranges": ranges,
        });
        let v = if ranges.is_none() {
            v["records"].clone()
        } else {
            v
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_table(&records, ranges.as_deref(), a.against.as_deref());
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} files could not be measured",
        files.len()
    );
    Ok(())
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn print_table(records: &[Record], ranges: Option<&[StatRange]>, against: Option<&Path>) {
    use realism::fmt_num;
    if let (Some(r), Some(dir)) = (ranges, against) {
        println!("dataset {} (5–95 % ranges):", dir.display());
        for r in r {
            println!(
                "  {:<30} {:>10} .. {:<10} (n = {})",
                r.label,
                fmt_num(r.p5),
                fmt_num(r.p95),
                r.n
            );
        }
        println!();
    }
    for rec in records {
        println!("{}", rec.file);
        let Some(s) = &rec.stats else {
            println!("  error: {}", rec.error.as_deref().unwrap_or("?"));
            continue;
        };
        let src = match s.nm_per_px_source {
            realism::CalibrationSource::File => "file",
            realism::CalibrationSource::Lattice => "lattice",
            realism::CalibrationSource::User => "user",
        };
        let mut px = format!(
            "  pixel size      {:.2} pm/px ({src})",
            s.nm_per_px * 1000.0
        );
        if let Some(f) = s.file_nm_per_px {
            px += &format!(", file {:.2}", f * 1000.0);
        }
        if let Some(l) = &s.lattice {
            px += &format!(", lattice {:.2}", l.nm_per_px * 1000.0);
        }
        if let Some(d) = rec.lattice_vs_file_pct {
            px += &format!(" ({d:+.1} %)");
        }
        println!("{px}");
        match &s.lattice {
            Some(l) => println!(
                "  lattice         rotation {:.2}°, score {:.1}, {} peaks{}",
                l.rotation_deg,
                l.score,
                l.peaks_used,
                s.lattice_crop.map_or(String::new(), |[x, y, n]| format!(
                    " (one grain: the {n}² crop at {x}, {y})"
                ))
            ),
            None => println!("  lattice         not found"),
        }
        println!(
            "  column FWHM     {}",
            opt(s.column_fwhm_a, |v| format!("{v:.2} Å"))
        );
        let note = if s.eight_bit {
            "  (8-bit export: a display window, not detector counts)"
        } else {
            ""
        };
        println!("  background      {}{note}", fmt_num(s.background));
        println!("  contrast        {}{note}", fmt_num(s.contrast));
        println!("  noise           {}", opt(s.noise, fmt_num));
        println!(
            "  line jitter     {}",
            opt(s.line_jitter_px, |v| format!("{v:.2} px"))
        );
        println!(
            "  shear           {}",
            opt(s.shear, |v| format!("{v:+.4} px/line"))
        );
        println!(
            "  stretch         {}",
            opt(s.stretch, |v| format!("{v:+.4}"))
        );
        println!(
            "  lattice match   {}",
            opt(s.lattice_match, |v| format!(
                "{:.0} % of the strongest spectrum peaks on its rings",
                v * 100.0
            ))
        );
        if let Some(m) = s.lattice_mismatch() {
            println!(
                "  NOT THE CRYSTAL: only {:.0} % of the strongest spectrum peaks lie on the \
                 lattice's rings: another crystal or zone axis?",
                m * 100.0
            );
        }
        if let Some(out) = &rec.outside {
            if out.is_empty() {
                println!("  inside the dataset's ranges");
            } else {
                for o in out {
                    println!("  OUTSIDE: {o}");
                }
            }
        }
        if let Some(ranks) = &rec.percentiles {
            let list: Vec<String> = ranks
                .iter()
                .map(|r| format!("{} {:.0} %", r.label, r.percentile))
                .collect();
            println!("  percentile in the dataset: {}", list.join(", "));
        }
    }
}
