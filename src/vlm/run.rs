//! Screening runs: a seeded sample of patches, sent to a chat model with a prompt strategy,
//! with a response cache so reruns are free and reproducible.
//!
//! Sampling: each class's patches are shuffled with a stream derived from (seed, class name);
//! the first N are evaluated and few-shot examples come from the rest. The evaluated sample
//! therefore does not depend on the strategy or on k, so strategies run with one seed are
//! compared on the same patches (a paired comparison). Examples are never evaluated, neither
//! by index nor by image hash (a folder may hold the same image twice).
//!
//! Owns the VLM run: sampling, the reply cache, the requests and [`VlmRun`]'s metadata.
//! Scoring and the JSON/CSV files are [`crate::vlm::record`]'s, shared with the detector; this
//! module must not grow its own. Nothing written here may hold the API key.

use crate::fsio::csv_field;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::jobs::JobControl;
use crate::vlm::client::{ChatClient, ChatErrorKind, redact_url};
use crate::vlm::patches::{PatchSet, sha256_hex};
use crate::vlm::prompt::{
    AnswerFormat, Example, FailureKind, PromptTexts, Strategy, build_messages, parse_answer,
};
use crate::vlm::record::{CsvColumn, PatchRecord, RunRecord};

/// Which patches are evaluated and which serve as few-shot examples (indices into the set).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplePlan {
    pub eval: Vec<usize>,
    /// In prompt order (shuffled, so classes interleave rather than the last class always
    /// coming right before the query).
    pub examples: Vec<usize>,
    /// Shortfalls worth telling the user (a class with fewer patches than asked).
    pub notes: Vec<String>,
}

fn stream_seed(seed: u64, label: &str) -> u64 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(label.as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    u64::from_le_bytes(out)
}

/// Deterministic sample: same set, `n_per_class`, `k_per_class` and seed give the same plan.
pub fn plan_sample(
    set: &PatchSet,
    n_per_class: usize,
    k_per_class: usize,
    seed: u64,
) -> anyhow::Result<SamplePlan> {
    let mut eval = Vec::new();
    let mut leftovers: Vec<Vec<usize>> = Vec::new();
    let mut notes = Vec::new();
    for (c, name) in set.classes.iter().enumerate() {
        let mut idx: Vec<usize> = (0..set.patches.len())
            .filter(|&i| set.patches[i].class == c)
            .collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(stream_seed(seed, name));
        idx.shuffle(&mut rng);
        // Keep k for examples when the class is too small for both; the evaluated patches
        // stay a prefix of the zero-shot sample, so the comparison remains paired.
        let n_eval = n_per_class.min(idx.len().saturating_sub(k_per_class));
        if n_eval < n_per_class {
            notes.push(format!(
                "class {name}: {} patches, evaluating {n_eval} instead of {n_per_class}{}",
                idx.len(),
                if k_per_class > 0 {
                    format!(" ({k_per_class} held out as examples)")
                } else {
                    String::new()
                }
            ));
        }
        eval.extend_from_slice(&idx[..n_eval]);
        leftovers.push(idx[n_eval..].to_vec());
    }
    anyhow::ensure!(
        !eval.is_empty(),
        "nothing to evaluate: the patch set has no patches left after holding out {k_per_class} examples per class"
    );
    let eval_hashes: HashSet<&str> = eval.iter().map(|&i| set.patches[i].hash.as_str()).collect();
    let mut used: HashSet<&str> = HashSet::new();
    let mut examples = Vec::new();
    for (c, rest) in leftovers.iter().enumerate() {
        let mut taken = 0;
        for &i in rest {
            if taken == k_per_class {
                break;
            }
            let h = set.patches[i].hash.as_str();
            if eval_hashes.contains(h) || !used.insert(h) {
                continue;
            }
            examples.push(i);
            taken += 1;
        }
        if taken < k_per_class {
            notes.push(format!(
                "class {}: only {taken} distinct example(s) instead of {k_per_class}",
                set.classes[c]
            ));
        }
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(stream_seed(seed, "example order"));
    examples.shuffle(&mut rng);
    Ok(SamplePlan {
        eval,
        examples,
        notes,
    })
}

/// A cached model reply: the raw content, so improved parsing applies to old answers too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedReply {
    pub content: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub latency_ms: f64,
    pub created_utc: String,
}

/// Replies on disk, one JSON file per cache key (`dir/ab/abcdef....json`). Only successful
/// exchanges are stored: transport failures are retried on the next run.
#[derive(Clone, Debug)]
pub struct ResponseCache {
    pub dir: PathBuf,
}

impl ResponseCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(key.get(..2).unwrap_or("xx"))
            .join(format!("{key}.json"))
    }

    /// A damaged entry counts as a miss (and is overwritten by the next reply).
    pub fn get(&self, key: &str) -> Option<CachedReply> {
        let p = self.path(key);
        let bytes = std::fs::read(&p).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("ignoring damaged cache entry {}: {e}", p.display());
                None
            }
        }
    }

    pub fn put(&self, key: &str, reply: &CachedReply) -> anyhow::Result<()> {
        crate::fsio::atomic_write(&self.path(key), &serde_json::to_vec_pretty(reply)?)
    }
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub strategy: Strategy,
    pub n_per_class: usize,
    /// Examples per class; used by few-shot only.
    pub k_per_class: usize,
    pub seed: u64,
    /// Worker threads (parallel requests).
    pub concurrency: usize,
    pub texts: PromptTexts,
    pub cache: Option<ResponseCache>,
    /// Where the patches came from (folder or generator description), for the record.
    pub patch_source: String,
}

impl RunConfig {
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            n_per_class: 20,
            k_per_class: 3,
            seed: 1,
            concurrency: 4,
            texts: PromptTexts::default(),
            cache: None,
            patch_source: String::new(),
        }
    }

    /// k actually used: zero unless the strategy shows examples.
    pub fn effective_k(&self) -> usize {
        if self.strategy.uses_examples() {
            self.k_per_class
        } else {
            0
        }
    }
}

/// A few-shot example as recorded in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExampleRef {
    pub class: String,
    pub source: String,
    pub hash: String,
}

/// Everything needed to understand and repeat a run. Never holds the API key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub tool: String,
    /// Chat-completions URL with any credentials stripped.
    pub endpoint: String,
    pub model: String,
    pub strategy: Strategy,
    pub seed: u64,
    pub n_per_class: usize,
    pub k_per_class: usize,
    pub concurrency: usize,
    pub timeout_s: f64,
    pub max_retries: u32,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub json_mode: bool,
    pub patch_source: String,
    pub started_utc: String,
    pub finished_utc: String,
    pub wall_s: f64,
    pub examples: Vec<ExampleRef>,
    pub texts: PromptTexts,
    pub notes: Vec<String>,
}

pub const RUN_FORMAT_VERSION: u32 = 1;

/// A VLM screening run as saved (see [`RunRecord`] for scoring and files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VlmRun {
    pub format_version: u32,
    pub meta: RunMeta,
    pub classes: Vec<String>,
    pub records: Vec<PatchRecord>,
}

/// A VLM's answers are written out in full (failure detail, answer format, tokens, cache
/// and attempts), since judging a model by its replies needs them; the detector's CSV is
/// narrower.
const VLM_CSV: &[CsvColumn] = &[
    ("source", |r| csv_field(&r.source)),
    ("hash", |r| csv_field(&r.hash)),
    ("truth", |r| csv_field(&r.truth)),
    ("predicted", |r| {
        csv_field(r.predicted.as_deref().unwrap_or_default())
    }),
    ("failure", |r| {
        r.failure.map(|f| f.name().to_string()).unwrap_or_default()
    }),
    ("failure_detail", |r| {
        csv_field(r.failure_detail.as_deref().unwrap_or_default())
    }),
    ("answer_format", |r| {
        r.answer_format
            .and_then(|f| serde_json::to_value(f).ok())
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    }),
    ("confidence", |r| {
        r.confidence.map(|c| c.to_string()).unwrap_or_default()
    }),
    ("explanation", |r| {
        csv_field(r.explanation.as_deref().unwrap_or_default())
    }),
    ("latency_ms", |r| {
        r.latency_ms.map(|l| format!("{l:.1}")).unwrap_or_default()
    }),
    ("prompt_tokens", |r| {
        r.prompt_tokens.map(|t| t.to_string()).unwrap_or_default()
    }),
    ("completion_tokens", |r| {
        r.completion_tokens
            .map(|t| t.to_string())
            .unwrap_or_default()
    }),
    ("cached", |r| r.cached.to_string()),
    ("attempts", |r| r.attempts.to_string()),
];

impl RunRecord for VlmRun {
    const KIND: Option<&'static str> = None;
    const NAME: &'static str = "VLM";
    const FORMAT_VERSION: u32 = RUN_FORMAT_VERSION;
    const CSV_COLUMNS: &'static [CsvColumn] = VLM_CSV;

    fn format_version(&self) -> u32 {
        self.format_version
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn records(&self) -> &[PatchRecord] {
        &self.records
    }
}

impl VlmRun {
    /// True when the run has records and not one request reached the model (HTTP errors,
    /// timeouts, refused connections, non-chat bodies): its 0 % accuracy measures the server,
    /// not the model.
    pub fn all_requests_failed(&self) -> bool {
        !self.records.is_empty()
            && self.records.iter().all(|r| {
                matches!(
                    r.failure,
                    Some(
                        FailureKind::Http
                            | FailureKind::Timeout
                            | FailureKind::Connection
                            | FailureKind::BadResponse
                    )
                )
            })
    }

    /// How answers were formatted: strict JSON compliance is a result in itself.
    pub fn answer_formats(&self) -> BTreeMap<AnswerFormat, u64> {
        let mut m = BTreeMap::new();
        for f in self.records.iter().filter_map(|r| r.answer_format) {
            *m.entry(f).or_insert(0) += 1;
        }
        m
    }
}

/// Runs the screening. Progress and cancel go through `control`; a cancelled run returns
/// `Err(Cancelled)`, and the replies received so far stay in the cache, so restarting costs
/// nothing for them.
pub fn run_vlm_eval(
    set: &PatchSet,
    client: &ChatClient,
    cfg: &RunConfig,
    control: &JobControl,
) -> anyhow::Result<VlmRun> {
    let started_utc = utc_now();
    let t0 = std::time::Instant::now();
    let k = cfg.effective_k();
    let plan = plan_sample(set, cfg.n_per_class, k, cfg.seed)?;
    if cfg.strategy.uses_examples() && plan.examples.is_empty() {
        anyhow::bail!("few-shot needs examples, but no patch is left over after the sample");
    }
    let examples: Vec<Example<'_>> = plan
        .examples
        .iter()
        .map(|&i| Example {
            patch: &set.patches[i],
            class: &set.classes[set.patches[i].class],
        })
        .collect();
    let total = plan.eval.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<PatchRecord>>> = Mutex::new(vec![None; total]);
    control.set_progress(0.0, format!("0/{total} patches"));
    let workers = cfg.concurrency.clamp(1, total.max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    if control.is_cancelled() {
                        return;
                    }
                    let j = next.fetch_add(1, Ordering::SeqCst);
                    if j >= total {
                        return;
                    }
                    let Some(rec) =
                        evaluate_patch(set, plan.eval[j], &examples, client, cfg, control)
                    else {
                        return;
                    };
                    if rec.failure.is_some() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(mut r) = results.lock() {
                        r[j] = Some(rec);
                    }
                    let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                    control.set_progress(
                        d as f64 / total as f64,
                        format!(
                            "{d}/{total} patches, {} without answer",
                            failed.load(Ordering::Relaxed)
                        ),
                    );
                }
            });
        }
    });
    control.check()?;
    let records: Vec<PatchRecord> = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a worker thread panicked"))?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow::anyhow!("a worker stopped before finishing its patches"))?;
    let ccfg = client.config();
    let meta = RunMeta {
        tool: concat!("defect-detector ", env!("CARGO_PKG_VERSION")).into(),
        endpoint: redact_url(&ccfg.chat_url()),
        model: ccfg.model.clone(),
        strategy: cfg.strategy,
        seed: cfg.seed,
        n_per_class: cfg.n_per_class,
        k_per_class: k,
        concurrency: workers,
        timeout_s: ccfg.timeout.as_secs_f64(),
        max_retries: ccfg.max_retries,
        temperature: ccfg.temperature,
        max_tokens: ccfg.max_tokens,
        json_mode: ccfg.json_mode,
        patch_source: cfg.patch_source.clone(),
        started_utc,
        finished_utc: utc_now(),
        wall_s: t0.elapsed().as_millis() as f64 / 1000.0,
        examples: examples
            .iter()
            .map(|e| ExampleRef {
                class: e.class.to_string(),
                source: e.patch.source.clone(),
                hash: e.patch.hash.clone(),
            })
            .collect(),
        texts: cfg.texts.clone(),
        notes: plan.notes,
    };
    Ok(VlmRun {
        format_version: RUN_FORMAT_VERSION,
        meta,
        classes: set.classes.clone(),
        records,
    })
}

/// One patch end to end; `None` when the run was cancelled meanwhile.
fn evaluate_patch(
    set: &PatchSet,
    index: usize,
    examples: &[Example<'_>],
    client: &ChatClient,
    cfg: &RunConfig,
    control: &JobControl,
) -> Option<PatchRecord> {
    let patch = &set.patches[index];
    let messages = build_messages(&cfg.texts, cfg.strategy, &set.classes, examples, patch);
    let key = client.cache_key(&messages);
    let mut rec = PatchRecord {
        source: patch.source.clone(),
        hash: patch.hash.clone(),
        truth: set.classes[patch.class].clone(),
        predicted: None,
        failure: None,
        failure_detail: None,
        answer_format: None,
        confidence: None,
        explanation: None,
        raw_reply: None,
        latency_ms: None,
        prompt_tokens: None,
        completion_tokens: None,
        cached: false,
        attempts: 0,
    };
    let cached = cfg.cache.as_ref().and_then(|c| c.get(&key));
    let reply = match cached {
        Some(r) => {
            rec.cached = true;
            r
        }
        None => match client.complete(&messages, control) {
            Ok(r) => {
                rec.attempts = r.attempts;
                let c = CachedReply {
                    content: r.content,
                    prompt_tokens: r.usage.and_then(|u| u.prompt_tokens),
                    completion_tokens: r.usage.and_then(|u| u.completion_tokens),
                    // Whole microseconds survive a JSON round trip exactly.
                    latency_ms: r.latency.as_micros() as f64 / 1000.0,
                    created_utc: utc_now(),
                };
                if let Some(cache) = &cfg.cache
                    && let Err(e) = cache.put(&key, &c)
                {
                    // A full disk should not throw away the answer we already paid for.
                    tracing::warn!("cannot cache a reply: {e:#}");
                }
                c
            }
            Err(e) => {
                rec.attempts = e.attempts;
                rec.failure = Some(match e.kind {
                    ChatErrorKind::Cancelled => return None,
                    ChatErrorKind::Http(_) => FailureKind::Http,
                    ChatErrorKind::Timeout => FailureKind::Timeout,
                    ChatErrorKind::Connection => FailureKind::Connection,
                    ChatErrorKind::BadResponse => FailureKind::BadResponse,
                });
                rec.failure_detail = Some(e.detail);
                return Some(rec);
            }
        },
    };
    rec.latency_ms = Some(reply.latency_ms);
    rec.prompt_tokens = reply.prompt_tokens;
    rec.completion_tokens = reply.completion_tokens;
    match parse_answer(&reply.content, &set.classes) {
        Ok(a) => {
            rec.predicted = Some(set.classes[a.class].clone());
            rec.confidence = a.confidence;
            rec.explanation = Some(a.explanation);
            rec.answer_format = Some(a.format);
        }
        Err(e) => {
            rec.failure = Some(e.kind);
            rec.failure_detail = Some(e.detail);
        }
    }
    rec.raw_reply = Some(reply.content);
    Some(rec)
}

/// Current UTC time as RFC 3339 (seconds), without a date-time dependency.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    crate::clock::format_utc(secs)
}

/// sha256 of a run's JSON, handy to cite a run unambiguously.
pub fn run_digest(run: &VlmRun) -> anyhow::Result<String> {
    Ok(sha256_hex(&serde_json::to_vec(run)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vlm::patches::Patch;

    fn set_with(counts: &[usize]) -> PatchSet {
        let classes: Vec<String> = ["bulk", "vacancy", "interstitial", "grain_boundary"]
            [..counts.len()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut patches = Vec::new();
        for (c, &n) in counts.iter().enumerate() {
            for i in 0..n {
                let px = vec![c as u8 * 60 + 1, i as u8, (i >> 8) as u8, 7];
                patches.push(Patch::from_gray8(c, 2, 2, px, format!("{c}-{i}")).unwrap());
            }
        }
        PatchSet { classes, patches }
    }

    #[test]
    fn sample_is_deterministic_disjoint_and_paired_across_strategies() {
        let set = set_with(&[30, 30, 13]);
        let a = plan_sample(&set, 10, 3, 42).unwrap();
        let b = plan_sample(&set, 10, 3, 42).unwrap();
        assert_eq!(a, b);
        let zs = plan_sample(&set, 10, 0, 42).unwrap();
        assert_eq!(a.eval, zs.eval, "few-shot evaluates the zero-shot sample");
        assert_eq!(a.examples.len(), 9);
        let ev: HashSet<usize> = a.eval.iter().copied().collect();
        assert!(a.examples.iter().all(|i| !ev.contains(i)));
        let other = plan_sample(&set, 10, 3, 43).unwrap();
        assert_ne!(a.eval, other.eval);
        assert!(a.notes.is_empty(), "{:?}", a.notes);

        // A small class gives up evaluated patches, keeping a prefix of the zero-shot sample.
        let small = plan_sample(&set, 10, 5, 42).unwrap();
        let zs_c2: Vec<usize> = zs
            .eval
            .iter()
            .copied()
            .filter(|&i| set.patches[i].class == 2)
            .collect();
        let fs_c2: Vec<usize> = small
            .eval
            .iter()
            .copied()
            .filter(|&i| set.patches[i].class == 2)
            .collect();
        assert_eq!(fs_c2.len(), 8);
        assert_eq!(fs_c2[..], zs_c2[..8]);
        assert_eq!(small.notes.len(), 1, "{:?}", small.notes);
    }

    #[test]
    fn duplicate_images_never_serve_as_examples() {
        // Every vacancy patch is the same image: none may be an example of an evaluated copy.
        let mut set = set_with(&[6]);
        set.classes.push("vacancy".into());
        for i in 0..6 {
            set.patches
                .push(Patch::from_gray8(1, 2, 2, vec![5, 5, 5, 5], format!("dup{i}")).unwrap());
        }
        let p = plan_sample(&set, 2, 2, 1).unwrap();
        let eval_hashes: HashSet<&str> = p
            .eval
            .iter()
            .map(|&i| set.patches[i].hash.as_str())
            .collect();
        assert!(
            p.examples
                .iter()
                .all(|&i| !eval_hashes.contains(set.patches[i].hash.as_str()))
        );
        assert_eq!(
            p.examples
                .iter()
                .filter(|&&i| set.patches[i].class == 1)
                .count(),
            0
        );
        assert!(
            p.notes.iter().any(|n| n.contains("vacancy")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(crate::clock::format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            crate::clock::format_utc(951_782_400),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            crate::clock::format_utc(1_700_000_000),
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn csv_quotes_fields() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
