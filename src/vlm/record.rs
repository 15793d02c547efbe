//! What a screening run leaves behind, whichever classifier made it (a VLM, the detector): one
//! [`PatchRecord`] per evaluated patch, and the [`RunRecord`] trait that scores records and
//! saves, loads and exports them, so every kind of run does that in one way.
//!
//! Owns the file rules: the `kind` marker, the format version, and the consistency check a
//! loader makes. Must not run a classifier nor know how a record was produced; and since run
//! files outlive the program that wrote them, field names never change here.

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::vlm::metrics::{
    ClassificationMetrics, Outcome, PatchPrediction, UsageSample, UsageStats,
};
use crate::vlm::prompt::{AnswerFormat, FailureKind};

/// The outcome for one evaluated patch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatchRecord {
    pub source: String,
    pub hash: String,
    pub truth: String,
    pub predicted: Option<String>,
    pub failure: Option<FailureKind>,
    pub failure_detail: Option<String>,
    pub answer_format: Option<AnswerFormat>,
    pub confidence: Option<f64>,
    pub explanation: Option<String>,
    /// The model's reply as received (absent when there was none).
    pub raw_reply: Option<String>,
    /// Duration of the successful request (kept from the first fetch for cached replies).
    pub latency_ms: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached: bool,
    /// HTTP attempts made in this run (0 when served from cache).
    pub attempts: u32,
}

/// One CSV column: its header and how a record fills it. Each kind of run lists its own
/// columns because its CSV is an established format of its own, while the writing is shared.
pub type CsvColumn = (&'static str, fn(&PatchRecord) -> String);

/// A screening run as a file: everything after the classifier has answered.
pub trait RunRecord: Serialize + DeserializeOwned {
    /// The `kind` its files carry. VLM runs predate the field, so theirs have none, and its
    /// absence is what marks them.
    const KIND: Option<&'static str>;
    /// How messages name this kind of run.
    const NAME: &'static str;
    /// The newest format this program writes and reads.
    const FORMAT_VERSION: u32;
    const CSV_COLUMNS: &'static [CsvColumn];

    fn format_version(&self) -> u32;
    fn classes(&self) -> &[String];
    fn records(&self) -> &[PatchRecord];

    /// What a record cost. Every field counts by default; a classifier that neither spends
    /// tokens nor caches replies may say so, whatever a hand-edited file holds.
    fn usage_sample(r: &PatchRecord) -> UsageSample {
        UsageSample {
            latency_ms: r.latency_ms,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cached: r.cached,
        }
    }

    /// Records as class indices, for [`ClassificationMetrics::compute`].
    fn predictions(&self) -> anyhow::Result<Vec<PatchPrediction>> {
        records_to_predictions(self.classes(), self.records())
    }

    fn metrics(&self) -> anyhow::Result<ClassificationMetrics> {
        ClassificationMetrics::compute(self.classes(), &self.predictions()?)
    }

    fn usage(&self) -> UsageStats {
        UsageStats::compute(self.records().iter().map(Self::usage_sample))
    }

    fn save_json(&self, path: &Path) -> anyhow::Result<()> {
        crate::fsio::atomic_write(path, &serde_json::to_vec_pretty(self)?)
    }

    fn load_json(path: &Path) -> anyhow::Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_json_bytes(&bytes).with_context(|| path.display().to_string())
    }

    /// A run file's bytes, checked: its kind first (a file of another kind would otherwise
    /// fail on some field it lacks, which says nothing of the real mistake), then the version
    /// and whether its records name only its classes.
    fn from_json_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        // What is not a JSON object has no kind to check: the full parse below says what is
        // wrong with it, with its line and column.
        if let Ok(probe) = serde_json::from_slice::<KindProbe>(bytes) {
            let same_kind = match (&probe.kind, Self::KIND) {
                (None, None) => true,
                (Some(serde_json::Value::String(k)), Some(want)) => k == want,
                _ => false,
            };
            anyhow::ensure!(
                same_kind,
                "not a {} run: {}",
                Self::NAME,
                describe_kind(probe.kind.as_ref())
            );
        }
        let run: Self = serde_json::from_slice(bytes)
            .with_context(|| format!("not a {} run file", Self::NAME))?;
        anyhow::ensure!(
            run.format_version() <= Self::FORMAT_VERSION,
            "{} run format {} is newer than this program understands ({})",
            Self::NAME,
            run.format_version(),
            Self::FORMAT_VERSION
        );
        run.predictions().context("inconsistent run")?;
        Ok(run)
    }

    /// One row per evaluated patch.
    fn to_csv(&self) -> String {
        let header: Vec<&str> = Self::CSV_COLUMNS.iter().map(|(h, _)| *h).collect();
        let mut s = header.join(",");
        s.push('\n');
        for r in self.records() {
            let cells: Vec<String> = Self::CSV_COLUMNS.iter().map(|(_, cell)| cell(r)).collect();
            s.push_str(&cells.join(","));
            s.push('\n');
        }
        s
    }

    fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        crate::fsio::atomic_write(path, self.to_csv().as_bytes())
    }
}

/// Only the `kind` of a run file (`null` counts as absent).
#[derive(Deserialize)]
struct KindProbe {
    #[serde(default)]
    kind: Option<serde_json::Value>,
}

/// What a file's `kind` says, for the message that refuses it.
fn describe_kind(kind: Option<&serde_json::Value>) -> String {
    match kind {
        None => "the file has no kind (as VLM run files)".into(),
        Some(k) => format!("the file's kind is {k}"),
    }
}

/// Records (truth/predicted class names or a failure) as class indices.
pub fn records_to_predictions(
    classes: &[String],
    records: &[PatchRecord],
) -> anyhow::Result<Vec<PatchPrediction>> {
    let idx = |name: &str, i: usize| {
        classes
            .iter()
            .position(|c| c == name)
            .with_context(|| format!("record {i}: class {name:?} is not in the run's classes"))
    };
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let truth = idx(&r.truth, i)?;
            let outcome = match (&r.predicted, r.failure) {
                (Some(p), None) => Outcome::Class(idx(p, i)?),
                (None, Some(f)) => Outcome::Failed(f),
                _ => anyhow::bail!("record {i}: needs exactly one of predicted and failure"),
            };
            Ok(PatchPrediction { truth, outcome })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vlm::detector_classifier::{
        DETECTOR_RUN_FORMAT_VERSION, DETECTOR_RUN_KIND, DetectorRun, DetectorRunMeta, ScreeningRun,
    };
    use crate::vlm::prompt::{PromptTexts, Strategy};
    use crate::vlm::run::{RUN_FORMAT_VERSION, RunMeta, VlmRun};

    fn classes() -> Vec<String> {
        vec!["bulk".into(), "vacancy".into()]
    }

    fn record(truth: &str, predicted: &str) -> PatchRecord {
        PatchRecord {
            source: format!("{truth}.png"),
            hash: format!("h-{truth}"),
            truth: truth.into(),
            predicted: Some(predicted.into()),
            failure: None,
            failure_detail: None,
            answer_format: None,
            confidence: Some(0.9),
            explanation: None,
            raw_reply: None,
            latency_ms: Some(5.0),
            prompt_tokens: Some(10),
            completion_tokens: Some(2),
            cached: false,
            attempts: 1,
        }
    }

    fn vlm_run() -> VlmRun {
        VlmRun {
            format_version: RUN_FORMAT_VERSION,
            meta: RunMeta {
                tool: "test".into(),
                endpoint: "http://127.0.0.1/v1/chat/completions".into(),
                model: "m".into(),
                strategy: Strategy::ZeroShot,
                seed: 1,
                n_per_class: 1,
                k_per_class: 0,
                concurrency: 1,
                timeout_s: 1.0,
                max_retries: 0,
                temperature: None,
                max_tokens: None,
                json_mode: false,
                patch_source: "p".into(),
                started_utc: String::new(),
                finished_utc: String::new(),
                wall_s: 0.0,
                examples: vec![],
                texts: PromptTexts::default(),
                notes: vec![],
            },
            classes: classes(),
            records: vec![record("bulk", "bulk"), record("vacancy", "bulk")],
        }
    }

    fn detector_run() -> DetectorRun {
        DetectorRun {
            format_version: DETECTOR_RUN_FORMAT_VERSION,
            kind: DETECTOR_RUN_KIND.into(),
            meta: DetectorRunMeta {
                tool: "test".into(),
                model_path: "m.onnx".into(),
                model_classes: classes(),
                model_imgsz: 64,
                model_nm_per_px: None,
                provider: "cpu".into(),
                conf: 0.25,
                iou: 0.7,
                patch_nm_per_px: None,
                seed: 1,
                n_per_class: 1,
                k_per_class: 0,
                patch_source: "p".into(),
                started_utc: String::new(),
                finished_utc: String::new(),
                wall_s: 0.0,
                notes: vec![],
            },
            classes: classes(),
            records: vec![record("bulk", "bulk"), record("vacancy", "vacancy")],
        }
    }

    #[test]
    fn each_loader_refuses_the_other_kind_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let vlm_path = dir.path().join("vlm.json");
        let det_path = dir.path().join("det.json");
        vlm_run().save_json(&vlm_path).unwrap();
        detector_run().save_json(&det_path).unwrap();

        let e = format!("{:#}", VlmRun::load_json(&det_path).unwrap_err());
        assert!(e.contains("det.json"), "{e}");
        assert!(
            e.contains(r#"not a VLM run: the file's kind is "detector""#),
            "{e}"
        );
        let e = format!("{:#}", DetectorRun::load_json(&vlm_path).unwrap_err());
        assert!(e.contains("vlm.json"), "{e}");
        assert!(
            e.contains("not a detector run: the file has no kind"),
            "{e}"
        );
        // A kind nobody writes is refused by both.
        let odd = dir.path().join("odd.json");
        let text = std::fs::read_to_string(&det_path)
            .unwrap()
            .replace(r#""kind": "detector""#, r#""kind": "segmenter""#);
        std::fs::write(&odd, text).unwrap();
        assert!(format!("{:#}", DetectorRun::load_json(&odd).unwrap_err()).contains("segmenter"));
        assert!(format!("{:#}", VlmRun::load_json(&odd).unwrap_err()).contains("segmenter"));
        assert!(format!("{:#}", ScreeningRun::load_json(&odd).unwrap_err()).contains("segmenter"));

        // Each still loads as itself, and as either kind.
        assert_eq!(VlmRun::load_json(&vlm_path).unwrap(), vlm_run());
        assert_eq!(DetectorRun::load_json(&det_path).unwrap(), detector_run());
        assert!(matches!(
            ScreeningRun::load_json(&vlm_path).unwrap(),
            ScreeningRun::Vlm(_)
        ));
        assert!(matches!(
            ScreeningRun::load_json(&det_path).unwrap(),
            ScreeningRun::Detector(_)
        ));
    }

    #[test]
    fn shared_scoring_keeps_each_kinds_usage_and_columns() {
        let (v, d) = (vlm_run(), detector_run());
        assert_eq!(v.metrics().unwrap().correct, 1);
        assert_eq!(d.metrics().unwrap().correct, 2);
        // Tokens count for a VLM; a detector spends none, whatever its records say.
        assert_eq!(v.usage().prompt_tokens, 20);
        assert_eq!(d.usage().prompt_tokens, 0);
        assert_eq!(d.usage().responses, 2);
        assert!(
            v.to_csv()
                .starts_with("source,hash,truth,predicted,failure,failure_detail,")
        );
        assert!(
            d.to_csv().starts_with(
                "source,hash,truth,predicted,failure,confidence,detection,latency_ms\n"
            )
        );
        assert_eq!(
            d.to_csv().lines().nth(1),
            Some("bulk.png,h-bulk,bulk,bulk,,0.9000,,5.00")
        );
    }
}
