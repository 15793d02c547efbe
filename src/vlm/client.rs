//! A blocking client for OpenAI-compatible chat-completions endpoints (OpenAI, Ollama, vLLM,
//! LM Studio, llama.cpp server), with retries, backoff and a secret-safe API key.

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::jobs::JobControl;

/// An API key held only in memory. It has no `Serialize`, and `Debug` prints `ApiKey(***)`,
/// so it cannot end up in run files, cache files or logs by accident.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key typed by the user for this session.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Reads the key from the environment variable `var`; a missing or empty variable is an
    /// error because the user asked for it by name.
    pub fn from_env(var: &str) -> anyhow::Result<Self> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Self(v.trim().to_string())),
            _ => anyhow::bail!("environment variable {var} (named for the API key) is not set"),
        }
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Endpoint settings. Everything here may be recorded in a run; the key lives apart.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClientConfig {
    /// e.g. `http://localhost:11434/v1` (Ollama) or `https://api.openai.com/v1`;
    /// `/chat/completions` is appended unless already present.
    pub base_url: String,
    pub model: String,
    /// Limit for one HTTP exchange including the response body.
    pub timeout: Duration,
    /// Retries after the first attempt on 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Longest wait a server's `Retry-After` can impose.
    pub retry_after_cap: Duration,
    /// 0 by default: screening should be as repeatable as the server allows.
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// Sends `response_format: {"type": "json_object"}`; not every server accepts it.
    pub json_mode: bool,
    /// Seeds backoff jitter so retries are reproducible.
    pub jitter_seed: u64,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            timeout: Duration::from_secs(60),
            max_retries: 4,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(60),
            temperature: Some(0.0),
            max_tokens: Some(400),
            json_mode: false,
            jitter_seed: 0,
        }
    }

    pub fn chat_url(&self) -> String {
        let b = self.base_url.trim().trim_end_matches('/');
        if b.ends_with("/chat/completions") {
            b.to_string()
        } else {
            format!("{b}/chat/completions")
        }
    }
}

/// Removes credentials a user may have pasted into a URL (`user:pass@`, query string) so the
/// URL can be recorded.
/// Checks a server base URL before a run starts: `http://` or `https://` and a host. A run
/// against `http://`, `ftp://...` or an empty string would only fail every request, one
/// timeout and retry budget at a time.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let url = url.trim();
    if url.is_empty() {
        return Err(
            "the endpoint is empty; give the server's base URL, e.g. http://localhost:8000/v1"
                .into(),
        );
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "endpoint '{}' is not an http:// or https:// URL",
                redact_url(url)
            )
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || url.contains(char::is_whitespace) {
        return Err(format!("endpoint '{}' has no host", redact_url(url)));
    }
    Ok(())
}

pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}{host}{path}")
}

/// One piece of message content.
#[derive(Clone, Debug)]
pub enum ContentPart {
    Text(String),
    /// A PNG sent inline; `hash` (sha256 of `png`) stands for it in cache keys.
    Png {
        png: Arc<[u8]>,
        hash: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Clone, Debug)]
pub struct ChatMessage {
    pub role: Role,
    pub parts: Vec<ContentPart>,
}

impl ChatMessage {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            parts: vec![ContentPart::Text(text.into())],
        }
    }

    /// Request JSON. Text-only messages use a plain string (some servers reject part arrays
    /// for system messages); messages with images use content parts.
    fn to_json(&self) -> serde_json::Value {
        self.to_json_with(|png, _| crate::vlm::patches::png_data_url(png))
    }

    /// The message as it enters a cache key: images replaced by their hash.
    pub fn to_key_json(&self) -> serde_json::Value {
        self.to_json_with(|_, hash| format!("sha256:{hash}"))
    }

    fn to_json_with(&self, image: impl Fn(&[u8], &str) -> String) -> serde_json::Value {
        use serde_json::json;
        let content = match self.parts.as_slice() {
            [ContentPart::Text(t)] => json!(t),
            parts => serde_json::Value::Array(
                parts
                    .iter()
                    .map(|p| match p {
                        ContentPart::Text(t) => json!({"type": "text", "text": t}),
                        ContentPart::Png { png, hash } => {
                            json!({"type": "image_url", "image_url": {"url": image(png, hash)}})
                        }
                    })
                    .collect(),
            ),
        };
        json!({"role": self.role, "content": content})
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// A successful exchange.
#[derive(Clone, Debug)]
pub struct ChatReply {
    /// The assistant's text (`choices[0].message.content`).
    pub content: String,
    pub usage: Option<Usage>,
    /// Duration of the attempt that succeeded (the model's latency, not the retry waits).
    pub latency: Duration,
    pub attempts: u32,
}

/// Why an exchange produced no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatErrorKind {
    /// The server answered with a non-success status (after retries where retryable).
    Http(u16),
    Timeout,
    Connection,
    /// Status 200 but not a chat-completions body.
    BadResponse,
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct ChatError {
    pub kind: ChatErrorKind,
    pub detail: String,
    pub attempts: u32,
}

impl std::fmt::Display for ChatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} after {} attempt(s): {}",
            self.kind, self.attempts, self.detail
        )
    }
}

impl std::error::Error for ChatError {}

/// Largest response body accepted; chat replies are tiny, this only stops a runaway server.
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// Blocking chat-completions client; cheap to share between worker threads and to clone
/// (clones share one connection pool).
#[derive(Clone)]
pub struct ChatClient {
    config: ClientConfig,
    key: Option<ApiKey>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("config", &self.config)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// What one attempt produced.
enum Attempt {
    Done(ChatReply),
    Retry {
        error: ChatError,
        retry_after: Option<Duration>,
    },
    Fail(ChatError),
}

impl ChatClient {
    pub fn new(config: ClientConfig, key: Option<ApiKey>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            // Status codes are read ourselves: 429 and 5xx bodies and headers matter.
            .http_status_as_error(false)
            .user_agent(concat!("defect-detector/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self { config, key, agent }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Can the server be reached at all? One `GET {base}/models` with a short timeout: any
    /// HTTP answer (even 401 or 404) means something is listening; a refused connection, an
    /// unknown host or a timeout is reported as "cannot reach URL: reason" before a run sends
    /// every patch into the same failure.
    pub fn probe(&self) -> Result<u16, String> {
        let url = format!("{}/models", self.config.base_url.trim_end_matches('/'));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.config.timeout.min(Duration::from_secs(5))))
            .http_status_as_error(false)
            .user_agent(concat!("defect-detector/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(k) = &self.key {
            req = req.header("Authorization", &format!("Bearer {}", k.expose()));
        }
        match req.call() {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) => Err(format!(
                "cannot reach {}: {e}",
                redact_url(&self.config.base_url)
            )),
        }
    }

    /// sha256 over everything that determines the answer: endpoint, model, sampling settings
    /// and the full messages with images as hashes. Never includes the key.
    pub fn cache_key(&self, messages: &[ChatMessage]) -> String {
        let material = serde_json::json!({
            "v": 1,
            "endpoint": redact_url(&self.config.chat_url()),
            "model": self.config.model,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "json_mode": self.config.json_mode,
            "messages": messages.iter().map(|m| m.to_key_json()).collect::<Vec<_>>(),
        });
        crate::vlm::patches::sha256_hex(material.to_string().as_bytes())
    }

    fn request_body(&self, messages: &[ChatMessage]) -> Vec<u8> {
        let mut body = serde_json::json!({
            "model": self.config.model,
            "messages": messages.iter().map(|m| m.to_json()).collect::<Vec<_>>(),
            "stream": false,
        });
        if let Some(t) = self.config.temperature {
            body["temperature"] = serde_json::json!(t);
        }
        if let Some(m) = self.config.max_tokens {
            body["max_tokens"] = serde_json::json!(m);
        }
        if self.config.json_mode {
            body["response_format"] = serde_json::json!({"type": "json_object"});
        }
        body.to_string().into_bytes()
    }

    /// Sends one chat request, retrying transient failures with exponential backoff. Waits
    /// between attempts watch `control` so a cancel takes effect within ~50 ms (an HTTP
    /// exchange already in flight runs until its timeout).
    pub fn complete(
        &self,
        messages: &[ChatMessage],
        control: &JobControl,
    ) -> Result<ChatReply, ChatError> {
        let body = self.request_body(messages);
        let digest = Sha256::digest(&body);
        let mut seed_bytes = [0u8; 8];
        seed_bytes.copy_from_slice(&digest[..8]);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(
            self.config.jitter_seed ^ u64::from_le_bytes(seed_bytes),
        );
        let url = self.config.chat_url();
        let mut attempt = 0u32;
        loop {
            if control.is_cancelled() {
                return Err(ChatError {
                    kind: ChatErrorKind::Cancelled,
                    detail: "cancelled".into(),
                    attempts: attempt,
                });
            }
            attempt += 1;
            match self.attempt(&url, &body, attempt) {
                Attempt::Done(r) => return Ok(r),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { error, retry_after } => {
                    if attempt > self.config.max_retries {
                        return Err(error);
                    }
                    let wait = retry_delay(&self.config, attempt - 1, retry_after, &mut rng);
                    tracing::debug!(
                        "chat request attempt {attempt} failed ({}), retrying in {:?}",
                        error.detail,
                        wait
                    );
                    if !sleep_unless_cancelled(wait, control) {
                        return Err(ChatError {
                            kind: ChatErrorKind::Cancelled,
                            detail: "cancelled".into(),
                            attempts: attempt,
                        });
                    }
                }
            }
        }
    }

    fn attempt(&self, url: &str, body: &[u8], attempt: u32) -> Attempt {
        let err = |kind, detail: String| ChatError {
            kind,
            detail,
            attempts: attempt,
        };
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json");
        if let Some(k) = &self.key {
            req = req.header("Authorization", format!("Bearer {}", k.expose()));
        }
        let t0 = Instant::now();
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => return transport_failure(e, attempt),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = match resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_string()
        {
            Ok(t) => t,
            Err(e) => return transport_failure(e, attempt),
        };
        let latency = t0.elapsed();
        if !(200..300).contains(&status) {
            let e = err(
                ChatErrorKind::Http(status),
                format!("HTTP {status}: {}", snippet(&text)),
            );
            return if status == 429 || status >= 500 {
                Attempt::Retry {
                    error: e,
                    retry_after,
                }
            } else {
                Attempt::Fail(e)
            };
        }
        match parse_chat_response(&text) {
            Ok((content, usage)) => Attempt::Done(ChatReply {
                content,
                usage,
                latency,
                attempts: attempt,
            }),
            Err(detail) => Attempt::Fail(err(ChatErrorKind::BadResponse, detail)),
        }
    }
}

fn transport_failure(e: ureq::Error, attempt: u32) -> Attempt {
    let (kind, retryable) = match &e {
        ureq::Error::Timeout(_) => (ChatErrorKind::Timeout, true),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            (ChatErrorKind::Timeout, true)
        }
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_) => {
            (ChatErrorKind::Connection, true)
        }
        _ => (ChatErrorKind::Connection, false),
    };
    let error = ChatError {
        kind,
        detail: e.to_string(),
        attempts: attempt,
    };
    if retryable {
        Attempt::Retry {
            error,
            retry_after: None,
        }
    } else {
        Attempt::Fail(error)
    }
}

/// `Retry-After` in seconds (integer or decimal). HTTP-date values are ignored: backoff applies.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let s: f64 = v.trim().parse().ok()?;
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s))
}

/// Wait before retry number `retry` (0-based). A server's `Retry-After` wins, capped by
/// `retry_after_cap`; otherwise `initial * 2^retry` capped by `backoff_max`, with "equal
/// jitter" (half fixed, half random) so parallel workers do not retry in lockstep.
pub fn retry_delay(
    cfg: &ClientConfig,
    retry: u32,
    retry_after: Option<Duration>,
    rng: &mut impl rand::Rng,
) -> Duration {
    if let Some(ra) = retry_after {
        return ra.min(cfg.retry_after_cap);
    }
    let exp = cfg
        .backoff_initial
        .saturating_mul(1u32.checked_shl(retry.min(30)).unwrap_or(u32::MAX));
    let base = exp.min(cfg.backoff_max);
    let u: f64 = rng.random();
    base.mul_f64(0.5 + 0.5 * u)
}

fn sleep_unless_cancelled(d: Duration, control: &JobControl) -> bool {
    let end = Instant::now() + d;
    loop {
        if control.is_cancelled() {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    let mut out: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Extracts `choices[0].message.content` and `usage` from a chat-completions body.
fn parse_chat_response(text: &str) -> Result<(String, Option<Usage>), String> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("response is not JSON ({e}): {}", snippet(text)))?;
    let content = &v["choices"][0]["message"]["content"];
    let content = match content {
        serde_json::Value::String(s) => s.clone(),
        // Some servers return content parts even for text replies.
        serde_json::Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        serde_json::Value::Null => {
            return Err(format!(
                "no choices[0].message.content in response: {}",
                snippet(text)
            ));
        }
        other => other.to_string(),
    };
    let usage = v.get("usage").filter(|u| u.is_object()).map(|u| Usage {
        prompt_tokens: u["prompt_tokens"].as_u64(),
        completion_tokens: u["completion_tokens"].as_u64(),
    });
    Ok((content, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_endpoints_are_refused_before_a_run() {
        for ok in [
            "http://localhost:8000/v1",
            "https://api.example.org",
            "http://u:p@h/v1",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "  ",
            "http://",
            "https:///v1",
            "ftp://example.org",
            "localhost:8000",
            "http://:80/v1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn key_is_redacted_in_debug() {
        let c = ChatClient::new(
            ClientConfig::new("http://x/v1", "m"),
            Some(ApiKey::new("sk-secret-123")),
        );
        let d = format!("{c:?} {:?}", ApiKey::new("sk-secret-123"));
        assert!(!d.contains("sk-secret-123"), "{d}");
        assert!(d.contains("***"));
    }

    #[test]
    fn urls() {
        let c = ClientConfig::new("http://localhost:11434/v1/", "m");
        assert_eq!(c.chat_url(), "http://localhost:11434/v1/chat/completions");
        let c = ClientConfig::new("https://h/v1/chat/completions", "m");
        assert_eq!(c.chat_url(), "https://h/v1/chat/completions");
        assert_eq!(
            redact_url("https://user:pw@host:8080/v1?key=abc"),
            "https://host:8080/v1"
        );
        assert_eq!(redact_url("localhost:1/v1"), "localhost:1/v1");
    }

    #[test]
    fn retry_delays_follow_backoff_and_retry_after() {
        let mut cfg = ClientConfig::new("http://x", "m");
        cfg.backoff_initial = Duration::from_millis(100);
        cfg.backoff_max = Duration::from_millis(350);
        cfg.retry_after_cap = Duration::from_secs(5);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for (retry, base) in [(0u32, 100u64), (1, 200), (2, 350), (10, 350), (40, 350)] {
            let d = retry_delay(&cfg, retry, None, &mut rng).as_millis() as u64;
            assert!(d >= base / 2 && d <= base, "retry {retry}: {d} vs {base}");
        }
        assert_eq!(
            retry_delay(&cfg, 0, Some(Duration::from_secs(2)), &mut rng),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(&cfg, 0, Some(Duration::from_secs(500)), &mut rng),
            Duration::from_secs(5)
        );
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        // Same seed, same jitter.
        let mut a = Xoshiro256PlusPlus::seed_from_u64(9);
        let mut b = Xoshiro256PlusPlus::seed_from_u64(9);
        assert_eq!(
            retry_delay(&cfg, 1, None, &mut a),
            retry_delay(&cfg, 1, None, &mut b)
        );
    }

    #[test]
    fn parses_chat_bodies() {
        let (c, u) = parse_chat_response(
            r#"{"choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#,
        )
        .unwrap();
        assert_eq!(c, "hi");
        assert_eq!(
            u,
            Some(Usage {
                prompt_tokens: Some(12),
                completion_tokens: Some(3)
            })
        );
        let (c, u) = parse_chat_response(
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#,
        )
        .unwrap();
        assert_eq!((c.as_str(), u), ("ab", None));
        assert!(parse_chat_response("{oops").is_err());
        assert!(parse_chat_response(r#"{"error":"x"}"#).is_err());
    }

    #[test]
    fn image_parts_serialise_as_data_urls_and_hashes_in_keys() {
        let m = ChatMessage {
            role: Role::User,
            parts: vec![
                ContentPart::Text("look".into()),
                ContentPart::Png {
                    png: Arc::from(&b"\x89PNG"[..]),
                    hash: "abc".into(),
                },
            ],
        };
        let j = m.to_json();
        assert_eq!(j["content"][1]["type"], "image_url");
        assert!(
            j["content"][1]["image_url"]["url"]
                .as_str()
                .unwrap()
                .starts_with("data:image/png;base64,")
        );
        assert_eq!(
            m.to_key_json()["content"][1]["image_url"]["url"],
            "sha256:abc"
        );
        assert_eq!(
            ChatMessage::text(Role::System, "s").to_json()["content"],
            "s"
        );
    }
}
