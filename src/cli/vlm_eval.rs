//! `vlm-eval`: screen labelled patches with a vision-language model and print the scores.
//! Arguments and printing only: sampling, requests, scoring and run files are `vlm`'s.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use defect_detector::detect::{Detector, DetectorOptions};
use defect_detector::jobs::Job;
use defect_detector::raster::PixelSize;
use defect_detector::synth::crystal::Preset;
use defect_detector::vlm::client::{ApiKey, ChatClient, ClientConfig, check_endpoint};
use defect_detector::vlm::detector_classifier::{DetectorScreenConfig, run_detector_eval};
use defect_detector::vlm::generate::{PatchGenSpec, generate_patch_set};
use defect_detector::vlm::patches::PatchSet;
use defect_detector::vlm::prompt::{PromptTexts, Strategy};
use defect_detector::vlm::record::RunRecord;
use defect_detector::vlm::run::{ResponseCache, RunConfig, VlmRun, run_vlm_eval};

/// Few-shot examples per class when --k is not given.
const DEFAULT_K: usize = 3;

#[derive(Args, Debug)]
pub struct VlmEvalArgs {
    /// Folder of labelled patches: one subfolder per class, or files named Class_N.png.
    #[arg(long, required_unless_present_any = ["dump_texts", "generate"], conflicts_with = "generate")]
    patches: Option<PathBuf>,
    /// Generate a synthetic patch set instead: this many patches per class (bulk, vacancy,
    /// interstitial, grain_boundary).
    #[arg(long)]
    generate: Option<usize>,
    /// Side of generated patches (px).
    #[arg(long, default_value_t = 64)]
    patch_size: usize,
    /// Crystal of generated patches: cdte110, si110 or gaas110.
    #[arg(long, default_value = "cdte110")]
    preset: String,
    /// Pixel size of generated patches (pm/px).
    #[arg(long, default_value_t = 25.0)]
    pixel_size_pm: f64,
    /// Seed of the generated set [default: --seed].
    #[arg(long)]
    gen_seed: Option<u64>,
    /// Write the patch set (loaded or generated) to this folder, one subfolder per class;
    /// without a strategy or detector, stop there.
    #[arg(long)]
    save_patches: Option<PathBuf>,
    /// Classify the same patches with this YOLO-OBB ONNX model instead of a VLM (strongest
    /// detection's class, bulk when none); --out then gets a detector run.
    #[arg(long, conflicts_with_all = ["strategy", "endpoint", "model"])]
    detector: Option<PathBuf>,
    /// Detector confidence threshold.
    #[arg(long, default_value_t = 0.25)]
    det_conf: f32,
    /// Pixel size of folder patches (pm/px), so the detector sees them at its own scale.
    #[arg(long)]
    patch_pixel_size_pm: Option<f64>,
    /// zero-shot, definitions, crystallography or few-shot (each adds to the previous).
    #[arg(long, required_unless_present_any = ["dump_texts", "detector", "save_patches"])]
    strategy: Option<Strategy>,
    /// OpenAI-compatible base URL, e.g. http://localhost:11434/v1 (Ollama).
    #[arg(long, required_unless_present_any = ["dump_texts", "detector", "save_patches"])]
    endpoint: Option<String>,
    /// Model name as the server knows it.
    #[arg(long, required_unless_present_any = ["dump_texts", "detector", "save_patches"])]
    model: Option<String>,
    /// Run file to write (JSON).
    #[arg(long, required_unless_present_any = ["dump_texts", "save_patches"])]
    out: Option<PathBuf>,
    /// Patches evaluated per class.
    #[arg(long, default_value_t = 20)]
    n: usize,
    /// Few-shot examples per class (held out from the evaluated patches) [default: 3]. With
    /// --detector it defaults to 0; give the k of a few-shot run to screen its exact sample.
    #[arg(long)]
    k: Option<usize>,
    /// Seed of the sample and of the example choice: same seed, same patches.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Parallel requests.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds allowed for one request.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Retries on 429, 5xx, timeouts and connection errors.
    #[arg(long, default_value_t = 4)]
    retries: u32,
    /// Name of the environment variable holding the API key (the key itself is never
    /// accepted on the command line, where it would land in shell history).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Sampling temperature sent to the server.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 400)]
    max_tokens: u32,
    /// Ask the server for JSON output (response_format json_object); not all servers accept it.
    #[arg(long)]
    json_mode: bool,
    /// Prompt texts as JSON (write the defaults with --dump-texts, edit, pass here).
    #[arg(long)]
    texts: Option<PathBuf>,
    /// Response cache folder [default: vlm-cache beside the run file].
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Always ask the server, and store nothing.
    #[arg(long)]
    no_cache: bool,
    /// Also write per-patch results as CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the default prompt texts as JSON to this file and exit.
    #[arg(long)]
    dump_texts: Option<PathBuf>,
}

pub fn run(a: VlmEvalArgs) -> anyhow::Result<()> {
    if let Some(p) = &a.dump_texts {
        defect_detector::fsio::atomic_write(
            p,
            &serde_json::to_vec_pretty(&PromptTexts::default())?,
        )?;
        println!("default prompt texts written to {}", p.display());
        return Ok(());
    }
    anyhow::ensure!(a.n > 0, "--n must be at least 1");
    let (set, patch_source, pixel_size) = load_or_generate(&a)?;
    let counts = set.counts();
    println!(
        "{} patches from {}: {}",
        set.patches.len(),
        patch_source,
        set.classes
            .iter()
            .zip(&counts)
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(dir) = &a.save_patches {
        set.save_dir(dir)?;
        println!("patches written to {}", dir.display());
    }
    if let Some(model) = &a.detector {
        let Some(out) = &a.out else {
            anyhow::bail!("--out is required with --detector");
        };
        return run_detector(&a, set, model, out, patch_source, pixel_size);
    }
    // clap enforces these unless --dump-texts, --detector or --save-patches was given.
    let (Some(strategy), Some(endpoint), Some(model), Some(out)) = (
        a.strategy,
        a.endpoint.clone(),
        a.model.clone(),
        a.out.clone(),
    ) else {
        if a.save_patches.is_some() {
            return Ok(());
        }
        anyhow::bail!("--strategy, --endpoint, --model and --out are required");
    };
    anyhow::ensure!(
        a.timeout.is_finite() && a.timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    let texts = match &a.texts {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a prompt-texts JSON file", p.display()))?
        }
        None => PromptTexts::default(),
    };
    check_endpoint(&endpoint).map_err(|e| anyhow::anyhow!("--endpoint: {e}"))?;
    let key = a.api_key_env.as_deref().map(ApiKey::from_env).transpose()?;

    let mut cc = ClientConfig::new(endpoint, model);
    cc.timeout = Duration::from_secs_f64(a.timeout);
    cc.max_retries = a.retries;
    cc.temperature = Some(a.temperature);
    cc.max_tokens = Some(a.max_tokens);
    cc.json_mode = a.json_mode;
    cc.jitter_seed = a.seed;
    let client = ChatClient::new(cc, key);

    let cache_dir = a.cache.clone().unwrap_or_else(|| {
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| p.join("vlm-cache"))
            .unwrap_or_else(|| PathBuf::from("vlm-cache"))
    });
    let cfg = RunConfig {
        strategy,
        n_per_class: a.n,
        k_per_class: a.k.unwrap_or(DEFAULT_K),
        seed: a.seed,
        concurrency: a.concurrency.max(1),
        texts,
        cache: (!a.no_cache).then(|| ResponseCache::new(cache_dir)),
        patch_source,
    };

    let job = Job::spawn("vlm-eval", None, move |c| {
        run_vlm_eval(&set, &client, &cfg, c)
    });
    let run: VlmRun = wait_with_bar(job)?;

    run.save_json(&out)?;
    if let Some(csv) = &a.csv {
        run.write_csv(csv)?;
    }
    print_report(&run)?;
    println!("\nrun written to {}", out.display());
    if let Some(csv) = &a.csv {
        println!("per-patch CSV written to {}", csv.display());
    }
    // The run is kept (it records why), but a script must not take it for a result.
    anyhow::ensure!(
        !run.all_requests_failed(),
        "every one of the {} requests failed (see the failures above); the run measures the \
         server, not the model",
        run.records.len()
    );
    Ok(())
}

/// Shows a progress bar until the job ends.
fn wait_with_bar<T: Send + 'static>(job: Job<T>) -> anyhow::Result<T> {
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while !job.is_done() {
        let c = job.control();
        bar.set_position((c.progress() * 1000.0) as u64);
        bar.set_message(c.message());
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
    job.block()
}

/// The patch set, a description of where it came from, and its pixel size when known.
fn load_or_generate(a: &VlmEvalArgs) -> anyhow::Result<(PatchSet, String, Option<PixelSize>)> {
    if let Some(per_class) = a.generate {
        let preset = Preset::from_cli_name(&a.preset)
            .filter(|p| *p != Preset::Custom)
            .with_context(|| format!("unknown preset '{}' (cdte110, si110, gaas110)", a.preset))?;
        let spec = PatchGenSpec {
            patch_size: a.patch_size,
            per_class,
            seed: a.gen_seed.unwrap_or(a.seed),
            preset,
            pixel_size_pm: a.pixel_size_pm,
            scene_size: 0,
        };
        spec.validate()?;
        let s2 = spec.clone();
        let set = wait_with_bar(Job::spawn("generate-patches", None, move |c| {
            generate_patch_set(&s2, c)
        }))?;
        return Ok((set, spec.describe(), Some(spec.pixel_size())));
    }
    let Some(dir) = &a.patches else {
        anyhow::bail!("give --patches DIR or --generate N");
    };
    let pixel_size = match a.patch_pixel_size_pm {
        Some(pm) => {
            anyhow::ensure!(
                pm.is_finite() && pm > 0.0,
                "--patch-pixel-size-pm must be a positive number"
            );
            Some(PixelSize::from_pm(pm))
        }
        None => None,
    };
    Ok((
        PatchSet::load_dir(dir)?,
        dir.display().to_string(),
        pixel_size,
    ))
}

fn run_detector(
    a: &VlmEvalArgs,
    set: PatchSet,
    model: &std::path::Path,
    out: &std::path::Path,
    patch_source: String,
    pixel_size: Option<PixelSize>,
) -> anyhow::Result<()> {
    let det = Detector::load(model, &DetectorOptions::default())?;
    let mut cfg = DetectorScreenConfig::new(a.n, a.seed);
    // Only a few-shot run holds examples out of the sample; match it when asked to.
    cfg.k_per_class = a.k.unwrap_or(0);
    cfg.conf = a.det_conf;
    cfg.pixel_size = pixel_size;
    cfg.patch_source = patch_source;
    let model = model.to_path_buf();
    let run = wait_with_bar(Job::spawn("detector-eval", None, move |c| {
        run_detector_eval(&set, &det, &model, &cfg, c)
    }))?;
    run.save_json(out)?;
    if let Some(csv) = &a.csv {
        run.write_csv(csv)?;
    }
    let m = &run.meta;
    println!(
        "\ndetector {} ({}) | conf {} | seed {} | n {} per class | {:.1} s",
        m.model_path, m.provider, m.conf, m.seed, m.n_per_class, m.wall_s
    );
    for n in &m.notes {
        println!("note: {n}");
    }
    println!();
    print!("{}", run.metrics()?.render_text());
    let u = run.usage();
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    println!(
        "\nDetection time per patch: p50 {}, p95 {}",
        ms(u.latency_p50_ms),
        ms(u.latency_p95_ms)
    );
    println!("\nrun written to {}", out.display());
    Ok(())
}

fn print_report(run: &VlmRun) -> anyhow::Result<()> {
    let m = &run.meta;
    println!(
        "\n{} on {} | strategy {} | seed {} | n {} per class{} | {:.1} s",
        m.model,
        m.endpoint,
        m.strategy,
        m.seed,
        m.n_per_class,
        if m.k_per_class > 0 {
            format!(" | {} example(s) per class", m.k_per_class)
        } else {
            String::new()
        },
        m.wall_s
    );
    for n in &m.notes {
        println!("note: {n}");
    }
    println!();
    print!("{}", run.metrics()?.render_text());
    let u = run.usage();
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
    println!(
        "\nResponses {} ({} from cache); latency p50 {}, p95 {}; tokens {} prompt + {} completion = {} ({} responses reported usage)",
        u.responses,
        u.cached,
        ms(u.latency_p50_ms),
        ms(u.latency_p95_ms),
        u.prompt_tokens,
        u.completion_tokens,
        u.total_tokens(),
        u.with_usage
    );
    let formats = run.answer_formats();
    if !formats.is_empty() {
        let parts: Vec<String> = formats.iter().map(|(f, n)| format!("{f:?} {n}")).collect();
        println!("Answer formats: {}", parts.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: VlmEvalArgs,
    }

    #[test]
    fn parses_the_documented_command_line() {
        let t = T::try_parse_from([
            "x",
            "--patches",
            "p",
            "--strategy",
            "few-shot",
            "--endpoint",
            "http://localhost:11434/v1",
            "--model",
            "llava",
            "--out",
            "run.json",
            "--n",
            "5",
            "--api-key-env",
            "OPENAI_API_KEY",
        ])
        .unwrap();
        assert_eq!(t.a.strategy, Some(Strategy::FewShot));
        assert_eq!((t.a.n, t.a.k, t.a.seed, t.a.concurrency), (5, None, 1, 4));
        assert!(T::try_parse_from(["x", "--strategy", "one-shot"]).is_err());
        assert!(T::try_parse_from(["x", "--patches", "p"]).is_err());
        assert!(T::try_parse_from(["x", "--dump-texts", "t.json"]).is_ok());
    }

    #[test]
    fn dump_texts_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        let t = T::try_parse_from(["x", "--dump-texts", p.to_str().unwrap()]).unwrap();
        run(t.a).unwrap();
        let back: PromptTexts = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(back, PromptTexts::default());
    }

    #[test]
    fn generated_set_is_saved_and_screened_by_the_detector() {
        let dir = tempfile::tempdir().unwrap();
        let patches = dir.path().join("patches");
        let out = dir.path().join("det.json");
        let model =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_obb.onnx");
        let t = T::try_parse_from([
            "x",
            "--generate",
            "3",
            "--patch-size",
            "48",
            "--save-patches",
            patches.to_str().unwrap(),
            "--detector",
            model.to_str().unwrap(),
            "--n",
            "2",
            "--k",
            "0",
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap();
        run(t.a).unwrap();
        let back = PatchSet::load_dir(&patches).unwrap();
        assert_eq!(back.counts(), vec![3, 3, 3, 3]);
        let det = defect_detector::vlm::detector_classifier::DetectorRun::load_json(&out).unwrap();
        assert_eq!(det.records.len(), 8);
        assert!(det.meta.patch_source.starts_with("synthetic patches "));
        assert_eq!(det.meta.patch_nm_per_px, Some(0.025));
        // A detector run takes no VLM settings, and a patch source is required.
        assert!(
            T::try_parse_from([
                "x",
                "--generate",
                "2",
                "--detector",
                "m",
                "--strategy",
                "zero-shot",
                "--out",
                "o"
            ])
            .is_err()
        );
        assert!(T::try_parse_from(["x", "--detector", "m", "--out", "o"]).is_err());
        assert!(T::try_parse_from(["x", "--generate", "2", "--save-patches", "d"]).is_ok());
    }

    fn vlm_args(endpoint: &str, out: &std::path::Path) -> VlmEvalArgs {
        T::try_parse_from([
            "x",
            "--generate",
            "1",
            "--patch-size",
            "48",
            "--strategy",
            "zero-shot",
            "--endpoint",
            endpoint,
            "--model",
            "m",
            "--n",
            "1",
            "--retries",
            "0",
            "--timeout",
            "2",
            "--no-cache",
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap()
        .a
    }

    #[test]
    fn malformed_endpoints_stop_the_run_before_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run.json");
        for bad in ["http://", "ftp://example.org/v1", ""] {
            let e = format!("{:#}", run(vlm_args(bad, &out)).unwrap_err());
            assert!(e.contains("--endpoint"), "{bad}: {e}");
            assert!(!out.exists());
        }
    }

    #[test]
    fn a_run_whose_every_request_failed_exits_non_zero() {
        // A port nothing listens on: every request is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run.json");
        let e = run(vlm_args(&format!("http://127.0.0.1:{port}/v1"), &out)).unwrap_err();
        assert!(
            format!("{e:#}").contains("every one of the 4 requests failed"),
            "{e:#}"
        );
        // The run is still written: it says why.
        let back = VlmRun::load_json(&out).unwrap();
        assert!(back.all_requests_failed());
    }
}
