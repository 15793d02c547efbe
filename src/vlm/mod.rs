//! Screening labelled STEM patches with vision-language models (and, through the same
//! metrics, with any other patch classifier).
//!
//! - [`patches`]: labelled patch sets (folders, or generated images).
//! - [`client`]: OpenAI-compatible chat-completions client with retries and a secret-safe key.
//! - [`prompt`]: prompt strategies, editable texts, robust answer parsing.
//! - [`run`]: seeded, cached, cancellable VLM screening runs.
//! - [`record`]: what any run leaves behind (per-patch records, scores, JSON/CSV files).
//! - [`generate`]: labelled patch sets cut from synthetic images.
//! - [`detector_classifier`]: the ONNX detector as a patch classifier, scored like a VLM.
//! - [`metrics`]: confusion matrix, accuracy, macro-F1, latency and token statistics.
//!
//! Library code: never egui. The VLM tab and `vlm-eval` only call it.

pub mod client;
pub mod detector_classifier;
pub mod generate;
pub mod metrics;
pub mod patches;
pub mod prompt;
pub mod record;
pub mod run;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testserver;

pub use client::{ApiKey, ChatClient, ClientConfig};
pub use generate::{PatchGenSpec, generate_patch_set};
pub use metrics::{ClassificationMetrics, Outcome, PatchPrediction, UsageStats};
pub use patches::{DEFAULT_PATCH_CLASSES, GeneratedPatch, Patch, PatchSet};
pub use prompt::{FailureKind, PromptTexts, Strategy};
pub use record::{PatchRecord, RunRecord};
pub use run::{ResponseCache, RunConfig, VlmRun, run_vlm_eval};
