//! End-to-end runs against the scripted loopback server. Nothing here may reach a real
//! server or write a real key.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use super::client::{ApiKey, ChatClient, ClientConfig};
use super::patches::{PatchSet, sha256_hex};
use super::prompt::{AnswerFormat, FailureKind, Strategy};
use super::record::RunRecord;
use super::run::{ResponseCache, RunConfig, plan_sample, run_vlm_eval};
use super::testserver::{Request, Response, TestServer};
use crate::jobs::{JobControl, is_cancelled};

const SECRET: &str = "sk-test-SECRET-4242";

/// Writes `per_class` distinct 8x8 PNGs per default class as flat `class_N.png` files.
fn write_patches(dir: &Path, per_class: usize) {
    for (c, class) in ["bulk", "vacancy", "interstitial", "grain_boundary"]
        .iter()
        .enumerate()
    {
        for i in 0..per_class {
            let img = image::GrayImage::from_fn(8, 8, |x, y| {
                image::Luma([(x * 17 + y * 5 + c as u32 * 40 + i as u32 * 3) as u8])
            });
            img.save(dir.join(format!("{class}_{i}.png"))).unwrap();
        }
    }
}

/// Hashes of the images in a request: (query = last image, examples = the others).
fn image_hashes(req: &Request) -> (String, Vec<String>) {
    use base64::Engine;
    let body = req.json();
    let mut hashes = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        for part in m["content"].as_array().into_iter().flatten() {
            if let Some(url) = part["image_url"]["url"].as_str() {
                let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
                let png = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap();
                hashes.push(sha256_hex(&png));
            }
        }
    }
    let query = hashes.pop().unwrap_or_default();
    (query, hashes)
}

fn chat_body(content: &str) -> String {
    serde_json::json!({
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    })
    .to_string()
}

fn answer(class: &str) -> String {
    format!(r#"{{"class": "{class}", "confidence": 0.9, "explanation": "looks like it"}}"#)
}

#[derive(Clone, Debug)]
enum Script {
    Answer(String),
    RateLimitOnce(String),
    Always500,
    Slow,
    BadEnvelope,
}

fn test_client(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url, "test-vlm");
    c.timeout = Duration::from_millis(400);
    c.max_retries = 1;
    c.backoff_initial = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(50);
    c.retry_after_cap = Duration::from_millis(50);
    c
}

/// A server that answers according to `scripts` (keyed by query image hash), refusing any
/// request without the right key.
fn scripted_server(scripts: HashMap<String, Script>) -> TestServer {
    let seen: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
    TestServer::start(move |req| {
        if req.header("authorization") != Some(&format!("Bearer {SECRET}")) {
            return Response::json(401, r#"{"error":"bad key"}"#);
        }
        if req.method != "POST" || req.path != "/v1/chat/completions" {
            return Response::json(404, r#"{"error":"not found"}"#);
        }
        let (q, _) = image_hashes(req);
        let n = {
            let mut s = seen.lock().unwrap();
            let e = s.entry(q.clone()).or_insert(0);
            *e += 1;
            *e
        };
        match scripts.get(&q) {
            Some(Script::Answer(c)) => Response::json(200, chat_body(c)),
            Some(Script::RateLimitOnce(c)) => {
                if n == 1 {
                    let mut r = Response::json(429, r#"{"error":"slow down"}"#);
                    // Far longer than the test could wait: the cap must apply.
                    r.headers.push(("Retry-After".into(), "30".into()));
                    r
                } else {
                    Response::json(200, chat_body(c))
                }
            }
            Some(Script::Always500) => Response::json(500, r#"{"error":"boom"}"#),
            Some(Script::Slow) => {
                let mut r = Response::json(200, chat_body(&answer("bulk")));
                r.delay = Duration::from_millis(1500);
                r
            }
            Some(Script::BadEnvelope) => Response::json(200, "{\"choices\": [ oops"),
            None => Response::json(200, chat_body(&answer("bulk"))),
        }
    })
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn scripted_failures_are_counted_and_cache_makes_reruns_free() {
    let tmp = tempfile::tempdir().unwrap();
    let pdir = tmp.path().join("patches");
    std::fs::create_dir(&pdir).unwrap();
    write_patches(&pdir, 6);
    let set = PatchSet::load_dir(&pdir).unwrap();

    let mut cfg = RunConfig::new(Strategy::FewShot);
    cfg.n_per_class = 3;
    cfg.k_per_class = 1;
    cfg.seed = 7;
    cfg.concurrency = 4;
    cfg.cache = Some(ResponseCache::new(tmp.path().join("cache")));
    cfg.patch_source = pdir.display().to_string();

    let plan = plan_sample(&set, 3, 1, 7).unwrap();
    assert_eq!(plan.eval.len(), 12);
    let truth = |j: usize| set.classes[set.patches[plan.eval[j]].class].clone();
    let wrong = |j: usize| {
        if truth(j) == "bulk" {
            "vacancy".to_string()
        } else {
            "bulk".to_string()
        }
    };
    let mut scripts = HashMap::new();
    let mut put = |j: usize, s: Script| {
        scripts.insert(set.patches[plan.eval[j]].hash.clone(), s);
    };
    put(0, Script::RateLimitOnce(answer(&truth(0))));
    put(1, Script::Always500);
    put(2, Script::Slow);
    put(3, Script::BadEnvelope);
    put(4, Script::Answer("I think this is a vacancy.".into()));
    put(5, Script::Answer(answer("dislocation")));
    put(
        6,
        Script::Answer(format!("```json\n{}\n```", answer(&truth(6)))),
    );
    put(7, Script::Answer(answer(&wrong(7))));
    for j in 8..12 {
        put(j, Script::Answer(answer(&truth(j))));
    }
    let server = scripted_server(scripts);
    let client = ChatClient::new(test_client(&server.base_url()), Some(ApiKey::new(SECRET)));

    let control = JobControl::detached();
    let run = run_vlm_eval(&set, &client, &cfg, &control).unwrap();
    assert!((control.progress() - 1.0).abs() < 1e-9);
    assert_eq!(run.records.len(), 12);
    let m = run.metrics().unwrap();
    assert_eq!((m.total, m.answered, m.correct), (12, 7, 6));
    let f = |k| m.failures.get(&k).copied().unwrap_or(0);
    assert_eq!(f(FailureKind::Http), 1);
    assert_eq!(f(FailureKind::Timeout), 1);
    assert_eq!(f(FailureKind::BadResponse), 1);
    assert_eq!(f(FailureKind::NotJson), 1);
    assert_eq!(f(FailureKind::UnknownClass), 1);
    let rec = |j: usize| {
        run.records
            .iter()
            .find(|r| r.hash == set.patches[plan.eval[j]].hash)
            .unwrap()
    };
    assert_eq!(rec(0).attempts, 2, "429 then success");
    assert_eq!(rec(0).predicted.as_deref(), Some(truth(0).as_str()));
    assert_eq!(rec(1).attempts, 2, "500 retried once");
    assert_eq!(rec(2).attempts, 2, "timeout retried once");
    assert_eq!(rec(3).attempts, 1, "malformed body is not retried");
    assert_eq!(rec(6).answer_format, Some(AnswerFormat::Fenced));
    assert_eq!(rec(8).answer_format, Some(AnswerFormat::Strict));
    assert_eq!(rec(8).prompt_tokens, Some(100));
    assert!(rec(8).latency_ms.is_some() && rec(2).latency_ms.is_none());
    assert_eq!(run.usage().prompt_tokens, 100 * 7 + 100 * 2);
    // 12 patches + one extra attempt each for the 429, the 500 and the slow one.
    assert_eq!(server.request_count(), 15);
    assert!(run.meta.wall_s < 10.0, "Retry-After must be capped");

    // Few-shot examples are never evaluated, neither in the record nor on the wire.
    assert_eq!(run.meta.examples.len(), 4);
    let evaluated: HashSet<&str> = run.records.iter().map(|r| r.hash.as_str()).collect();
    assert!(
        run.meta
            .examples
            .iter()
            .all(|e| !evaluated.contains(e.hash.as_str()))
    );
    let mut queries = HashSet::new();
    let mut shown = HashSet::new();
    for r in server.requests() {
        let (q, ex) = image_hashes(&r);
        assert_eq!(ex.len(), 4);
        queries.insert(q);
        shown.extend(ex);
    }
    assert!(queries.is_disjoint(&shown));

    // Save, reload, export; the key appears nowhere on disk.
    let out = tmp.path().join("run.json");
    run.save_json(&out).unwrap();
    run.write_csv(&tmp.path().join("run.csv")).unwrap();
    let back = super::run::VlmRun::load_json(&out).unwrap();
    assert_eq!(back, run);
    let csv = std::fs::read_to_string(tmp.path().join("run.csv")).unwrap();
    assert_eq!(csv.lines().count(), 13);
    let mut files = Vec::new();
    all_files(tmp.path(), &mut files);
    let cache_files = files
        .iter()
        .filter(|p| p.starts_with(tmp.path().join("cache")))
        .count();
    assert_eq!(cache_files, 9, "successful exchanges only");
    for p in &files {
        let bytes = std::fs::read(p).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("SECRET"), "key leaked into {}", p.display());
    }

    // Second run: cached answers cost nothing; only transport failures are asked again.
    let before = server.request_count();
    let client2 = ChatClient::new(test_client(&server.base_url()), Some(ApiKey::new(SECRET)));
    let run2 = run_vlm_eval(&set, &client2, &cfg, &JobControl::detached()).unwrap();
    let again: Vec<Request> = server.requests()[before..].to_vec();
    let asked: HashSet<String> = again.iter().map(|r| image_hashes(r).0).collect();
    let expected: HashSet<String> = [1, 2, 3]
        .iter()
        .map(|&j| set.patches[plan.eval[j]].hash.clone())
        .collect();
    assert_eq!(asked, expected);
    assert_eq!(again.len(), 5);
    assert_eq!(run2.records.iter().filter(|r| r.cached).count(), 9);
    for (a, b) in run.records.iter().zip(&run2.records) {
        assert_eq!(a.hash, b.hash, "same seed, same sample, same order");
        if b.cached {
            assert_eq!(
                (&a.predicted, a.failure, a.latency_ms),
                (&b.predicted, b.failure, b.latency_ms)
            );
            assert_eq!(b.attempts, 0);
        }
    }
}

#[test]
fn a_clean_rerun_sends_zero_requests() {
    let tmp = tempfile::tempdir().unwrap();
    write_patches(tmp.path(), 4);
    let set = PatchSet::load_dir(tmp.path()).unwrap();
    let server = scripted_server(HashMap::new());
    let mut cfg = RunConfig::new(Strategy::Crystallography);
    cfg.n_per_class = 4;
    cfg.cache = Some(ResponseCache::new(tmp.path().join("cache")));
    let client = ChatClient::new(test_client(&server.base_url()), Some(ApiKey::new(SECRET)));
    let r1 = run_vlm_eval(&set, &client, &cfg, &JobControl::detached()).unwrap();
    assert_eq!(server.request_count(), 16);
    assert!(r1.meta.examples.is_empty());
    let r2 = run_vlm_eval(&set, &client, &cfg, &JobControl::detached()).unwrap();
    assert_eq!(server.request_count(), 16, "second run must be free");
    assert!(r2.records.iter().all(|r| r.cached));
    assert_eq!(r1.metrics().unwrap(), r2.metrics().unwrap());

    // A different strategy is a different prompt: not served from this cache.
    cfg.strategy = Strategy::ZeroShot;
    run_vlm_eval(&set, &client, &cfg, &JobControl::detached()).unwrap();
    assert_eq!(server.request_count(), 32);
}

#[test]
fn cancel_stops_a_run_and_keeps_finished_answers_cached() {
    let tmp = tempfile::tempdir().unwrap();
    write_patches(tmp.path(), 10);
    let set = PatchSet::load_dir(tmp.path()).unwrap();
    let server = TestServer::start(|_| {
        let mut r = Response::json(200, chat_body(&answer("bulk")));
        r.delay = Duration::from_millis(60);
        r
    });
    let mut cfg = RunConfig::new(Strategy::ZeroShot);
    cfg.n_per_class = 10;
    cfg.concurrency = 2;
    cfg.cache = Some(ResponseCache::new(tmp.path().join("cache")));
    let mut cc = test_client(&server.base_url());
    cc.timeout = Duration::from_secs(5);
    let client = ChatClient::new(cc, None);
    let control = JobControl::detached();
    let c2 = control.clone();
    let canceller = std::thread::spawn(move || {
        while c2.progress() < 0.1 {
            std::thread::sleep(Duration::from_millis(5));
        }
        c2.cancel();
    });
    let e = run_vlm_eval(&set, &client, &cfg, &control).unwrap_err();
    canceller.join().unwrap();
    assert!(is_cancelled(&e), "{e:#}");
    let sent = server.request_count();
    assert!(sent < 40, "cancel did not stop the run ({sent} requests)");
    let mut files = Vec::new();
    all_files(&tmp.path().join("cache"), &mut files);
    assert_eq!(files.len(), sent, "every finished answer is cached");
}

#[test]
fn unreachable_endpoint_and_wrong_key_are_failures_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    write_patches(tmp.path(), 1);
    let set = PatchSet::load_dir(tmp.path()).unwrap();
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = RunConfig::new(Strategy::Definitions);
    cfg.n_per_class = 1;
    let client = ChatClient::new(test_client(&format!("http://127.0.0.1:{port}/v1")), None);
    let run = run_vlm_eval(&set, &client, &cfg, &JobControl::detached()).unwrap();
    assert!(
        run.records
            .iter()
            .all(|r| r.failure == Some(FailureKind::Connection)),
        "{:?}",
        run.records
    );

    let server = scripted_server(HashMap::new());
    let client = ChatClient::new(test_client(&server.base_url()), Some(ApiKey::new("wrong")));
    let run = run_vlm_eval(&set, &client, &cfg, &JobControl::detached()).unwrap();
    assert!(
        run.records
            .iter()
            .all(|r| r.failure == Some(FailureKind::Http))
    );
    assert!(
        run.records[0]
            .failure_detail
            .as_deref()
            .unwrap()
            .contains("401")
    );
    // 401 is not retried.
    assert_eq!(server.request_count(), 4);
}
