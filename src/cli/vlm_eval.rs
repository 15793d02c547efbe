//! `vlm-eval`: screen labelled patches with a vision-language model and print the scores.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use defect_detector::jobs::Job;
use defect_detector::vlm::client::{ApiKey, ChatClient, ClientConfig};
use defect_detector::vlm::patches::PatchSet;
use defect_detector::vlm::prompt::{PromptTexts, Strategy};
use defect_detector::vlm::run::{ResponseCache, RunConfig, VlmRun, run_vlm_eval};

#[derive(Args, Debug)]
pub struct VlmEvalArgs {
    /// Folder of labelled patches: one subfolder per class, or files named Class_N.png.
    #[arg(long, required_unless_present = "dump_texts")]
    patches: Option<PathBuf>,
    /// zero-shot, definitions, crystallography or few-shot (each adds to the previous).
    #[arg(long, required_unless_present = "dump_texts")]
    strategy: Option<Strategy>,
    /// OpenAI-compatible base URL, e.g. http://localhost:11434/v1 (Ollama).
    #[arg(long, required_unless_present = "dump_texts")]
    endpoint: Option<String>,
    /// Model name as the server knows it.
    #[arg(long, required_unless_present = "dump_texts")]
    model: Option<String>,
    /// Run file to write (JSON).
    #[arg(long, required_unless_present = "dump_texts")]
    out: Option<PathBuf>,
    /// Patches evaluated per class.
    #[arg(long, default_value_t = 20)]
    n: usize,
    /// Few-shot examples per class (held out from the evaluated patches).
    #[arg(long, default_value_t = 3)]
    k: usize,
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
    // clap enforces these unless --dump-texts was given.
    let (Some(patches), Some(strategy), Some(endpoint), Some(model), Some(out)) =
        (a.patches, a.strategy, a.endpoint, a.model, a.out)
    else {
        anyhow::bail!("--patches, --strategy, --endpoint, --model and --out are required");
    };
    anyhow::ensure!(
        a.timeout.is_finite() && a.timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    anyhow::ensure!(a.n > 0, "--n must be at least 1");
    let texts = match &a.texts {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a prompt-texts JSON file", p.display()))?
        }
        None => PromptTexts::default(),
    };
    let key = a.api_key_env.as_deref().map(ApiKey::from_env).transpose()?;

    let set = PatchSet::load_dir(&patches)?;
    let counts = set.counts();
    println!(
        "{} patches from {}: {}",
        set.patches.len(),
        patches.display(),
        set.classes
            .iter()
            .zip(&counts)
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

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
        k_per_class: a.k,
        seed: a.seed,
        concurrency: a.concurrency.max(1),
        texts,
        cache: (!a.no_cache).then(|| ResponseCache::new(cache_dir)),
        patch_source: patches.display().to_string(),
    };

    let job = Job::spawn("vlm-eval", None, move |c| {
        run_vlm_eval(&set, &client, &cfg, c)
    });
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
    let run: VlmRun = job.block()?;

    run.save_json(&out)?;
    if let Some(csv) = &a.csv {
        run.write_csv(csv)?;
    }
    print_report(&run)?;
    println!("\nrun written to {}", out.display());
    if let Some(csv) = &a.csv {
        println!("per-patch CSV written to {}", csv.display());
    }
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
        assert_eq!((t.a.n, t.a.k, t.a.seed, t.a.concurrency), (5, 3, 1, 4));
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
}
