//! `defect-detector synth`: one or more synthetic images with labels and sidecars.

use anyhow::Context;
use clap::Args;
use defect_detector::synth::crystal::Preset;
use defect_detector::synth::detectability::ROSE_SNR;
use defect_detector::synth::params::{CountRange, ProbeModel};
use defect_detector::synth::{self, ImageFormat, SynthParams};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Crystal: cdte110, si110, gaas110 (custom lattices via --params).
    #[arg(long, default_value = "cdte110")]
    preset: String,
    /// Random seed [default: 7, or the one in --params].
    #[arg(long)]
    seed: Option<u64>,
    /// Square image size (px); --width/--height override it [default: 768, or the size in
    /// --params].
    #[arg(long)]
    size: Option<usize>,
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    /// Output folder.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Number of images (seeds seed, seed+1, ...).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Pixel size (pm/px).
    #[arg(long)]
    pixel_size_pm: Option<f64>,
    /// In-plane lattice rotation (degrees); random from the seed when omitted.
    #[arg(long)]
    rotation: Option<f64>,
    /// Count ranges such as `2` or `1-4`.
    #[arg(long)]
    vacancies: Option<String>,
    #[arg(long)]
    interstitials: Option<String>,
    #[arg(long)]
    twins: Option<String>,
    #[arg(long)]
    tilts: Option<String>,
    /// Twin lamellae (pairs of parallel twin planes), a count range.
    #[arg(long)]
    lamellae: Option<String>,
    /// Width of each atom column (Gaussian sigma, Å).
    #[arg(long)]
    column_sigma: Option<f64>,
    /// Background (fraction of a column peak).
    #[arg(long)]
    background: Option<f64>,
    /// Sharp boundaries: no bending, core disorder or intensity band.
    #[arg(long)]
    ideal_boundaries: bool,
    /// Dose (e⁻/Å²).
    #[arg(long)]
    dose: Option<f64>,
    /// Probe model: gaussian or aberrations.
    #[arg(long)]
    probe: Option<String>,
    /// Turn shot and read noise off.
    #[arg(long)]
    no_noise: bool,
    /// png (8-bit, windowed) or tiff16 (raw counts).
    #[arg(long, default_value = "png")]
    format: String,
    /// A JSON file with all parameters (as in a sidecar's "params"); flags override it.
    #[arg(long)]
    params: Option<PathBuf>,
    /// Regenerate exactly the image described by this sidecar.
    #[arg(long)]
    from_sidecar: Option<PathBuf>,
    /// Measure each point defect's signal-to-noise ratio d′ at the dose (the ideal observer's):
    /// written into the sidecar's labels, the count below Rose's 5 printed.
    #[arg(long)]
    detectability: bool,
}

fn parse_range(s: &str) -> anyhow::Result<CountRange> {
    let parse = |t: &str| {
        t.trim()
            .parse::<u32>()
            .with_context(|| format!("'{s}' is not a count or range like 1-4"))
    };
    match s.split_once(['-', ':']) {
        Some((a, b)) => Ok(CountRange::new(parse(a)?, parse(b)?)),
        None => {
            let n = parse(s)?;
            Ok(CountRange::new(n, n))
        }
    }
}

pub fn params_from_args(a: &SynthArgs) -> anyhow::Result<SynthParams> {
    let mut p = match &a.params {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid parameter file", path.display()))?
        }
        None => SynthParams::default(),
    };
    if a.params.is_none() || a.preset != "cdte110" {
        p.crystal.preset = Preset::from_cli_name(&a.preset).with_context(|| {
            format!(
                "unknown preset '{}' (cdte110, si110, gaas110, custom)",
                a.preset
            )
        })?;
    }
    // A parameter file (a sidecar's "params", a benchmark dump) carries its own seed and
    // size: replaced only when given, so `--params` alone reproduces the frame.
    let from_file = a.params.is_some();
    match a.seed {
        Some(s) => p.seed = s,
        None if !from_file => p.seed = 7,
        None => {}
    }
    match a.size {
        Some(n) => (p.width, p.height) = (n, n),
        None if !from_file => (p.width, p.height) = (768, 768),
        None => {}
    }
    if let Some(w) = a.width {
        p.width = w;
    }
    if let Some(h) = a.height {
        p.height = h;
    }
    if let Some(v) = a.pixel_size_pm {
        p.pixel_size_pm = v;
    }
    if a.rotation.is_some() {
        p.rotation_deg = a.rotation;
    }
    if let Some(s) = &a.vacancies {
        p.defects.vacancies = parse_range(s)?;
    }
    if let Some(s) = &a.interstitials {
        p.defects.interstitials = parse_range(s)?;
    }
    if let Some(s) = &a.twins {
        p.defects.twin_boundaries = parse_range(s)?;
    }
    if let Some(s) = &a.tilts {
        p.defects.tilt_boundaries = parse_range(s)?;
    }
    if let Some(s) = &a.lamellae {
        p.defects.twin_lamellae = parse_range(s)?;
    }
    if let Some(v) = a.column_sigma {
        p.specimen.column_sigma_a = v;
    }
    if let Some(v) = a.background {
        p.specimen.background = v;
    }
    if a.ideal_boundaries {
        p.defects.boundary_structure = defect_detector::synth::params::BoundaryStructure::ideal();
    }
    if let Some(d) = a.dose {
        p.noise.dose_e_per_a2 = d;
    }
    if let Some(m) = &a.probe {
        p.probe.model = match m.as_str() {
            "gaussian" => ProbeModel::Gaussian,
            "aberrations" => ProbeModel::Aberrations,
            o => anyhow::bail!("unknown probe model '{o}' (gaussian, aberrations)"),
        };
    }
    if a.no_noise {
        p.noise.enabled = false;
    }
    p.validate()?;
    Ok(p)
}

pub fn run(a: SynthArgs) -> anyhow::Result<()> {
    let format = match a.format.as_str() {
        "png" => ImageFormat::Png,
        "tiff16" | "tiff" | "tif" => ImageFormat::Tiff16,
        o => anyhow::bail!("unknown format '{o}' (png, tiff16)"),
    };
    if let Some(sc) = &a.from_sidecar {
        let s = synth::regenerate_from_sidecar(sc)?;
        let stem = sc
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let files = synth::write_outputs(&s, &a.out, &stem, format)?;
        println!("{}", serde_json::to_string(&files)?);
        return Ok(());
    }
    let base = params_from_args(&a)?;
    for k in 0..a.count {
        let p = SynthParams {
            seed: base.seed + k,
            ..base.clone()
        };
        let mut s = synth::generate(&p)?;
        if a.detectability {
            s.measure_detectability();
        }
        let stem = format!("synth_{}_s{}", p.crystal.preset.cli_name(), p.seed);
        let files = synth::write_outputs(&s, &a.out, &stem, format)?;
        let mut counts = [0usize; 3];
        for l in &s.labels {
            counts[l.class.id()] += 1;
        }
        let hidden = s
            .labels
            .iter()
            .filter(|l| l.hidden_by_noise(Some(ROSE_SNR)))
            .count();
        println!(
            "{}  grain_boundary={} vacancy={} interstitial={}{}{}",
            files.image.display(),
            counts[0],
            counts[1],
            counts[2],
            if a.detectability {
                format!("  below d′ {ROSE_SNR}: {hidden}")
            } else {
                String::new()
            },
            if s.scene.unplaced.is_empty() {
                String::new()
            } else {
                format!("  (could not place: {})", s.scene.unplaced.join(", "))
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: SynthArgs,
    }

    fn parse(args: &[&str]) -> SynthArgs {
        Wrap::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .expect("arguments")
            .a
    }

    #[test]
    fn a_parameter_file_keeps_its_seed_and_size_unless_flags_replace_them() {
        let dir = std::env::temp_dir().join(format!("dd-synth-params-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.json");
        let saved = SynthParams {
            seed: 9_535_435_428_288_770,
            width: 512,
            height: 320,
            ..Default::default()
        };
        std::fs::write(&file, serde_json::to_string(&saved).unwrap()).unwrap();
        let f = file.to_str().unwrap();
        let p = params_from_args(&parse(&["--params", f])).unwrap();
        assert_eq!((p.seed, p.width, p.height), (saved.seed, 512, 320));
        let p = params_from_args(&parse(&["--params", f, "--seed", "3", "--size", "256"])).unwrap();
        assert_eq!((p.seed, p.width, p.height), (3, 256, 256));
        let p = params_from_args(&parse(&["--params", f, "--height", "100"])).unwrap();
        assert_eq!((p.width, p.height), (512, 100));
        let p = params_from_args(&parse(&[])).unwrap();
        assert_eq!((p.seed, p.width, p.height), (7, 768, 768));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn detectability_flag_writes_each_point_defects_snr_into_the_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_str().unwrap();
        let sidecar_labels = |flag: bool| {
            let mut args = vec!["--out", out, "--size", "256", "--dose", "400"];
            if flag {
                args.push("--detectability");
            }
            run(parse(&args)).unwrap();
            let sc: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.path().join("synth_cdte110_s7.json")).unwrap(),
            )
            .unwrap();
            sc["labels"].as_array().unwrap().clone()
        };
        assert!(
            sidecar_labels(false)
                .iter()
                .all(|l| l.get("detectability").is_none())
        );
        let labels = sidecar_labels(true);
        assert!(!labels.is_empty());
        for l in &labels {
            let point = l["class"] != "grain_boundary";
            assert_eq!(l["detectability"].is_f64(), point, "{l}");
        }
    }
}
