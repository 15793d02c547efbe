//! `defect-detector synth`: one or more synthetic images with labels and sidecars.

use anyhow::Context;
use clap::Args;
use defect_detector::synth::crystal::Preset;
use defect_detector::synth::params::{CountRange, ProbeModel};
use defect_detector::synth::{self, ImageFormat, SynthParams};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Crystal: cdte110, si110, gaas110 (custom lattices via --params).
    #[arg(long, default_value = "cdte110")]
    preset: String,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Square image size (px); --width/--height override it.
    #[arg(long, default_value_t = 768)]
    size: usize,
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
    p.seed = a.seed;
    p.width = a.width.unwrap_or(a.size);
    p.height = a.height.unwrap_or(a.size);
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
        let s = synth::generate(&p)?;
        let stem = format!("synth_{}_s{}", p.crystal.preset.cli_name(), p.seed);
        let files = synth::write_outputs(&s, &a.out, &stem, format)?;
        let mut counts = [0usize; 3];
        for l in &s.labels {
            counts[l.class.id()] += 1;
        }
        println!(
            "{}  grain_boundary={} vacancy={} interstitial={}{}",
            files.image.display(),
            counts[0],
            counts[1],
            counts[2],
            if s.scene.unplaced.is_empty() {
                String::new()
            } else {
                format!("  (could not place: {})", s.scene.unplaced.join(", "))
            }
        );
    }
    Ok(())
}
