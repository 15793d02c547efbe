//! Scores for any patch classifier: a VLM run, or any other classifier that produces a
//! [`PatchPrediction`] per patch (e.g. a detector run on each patch).
//!
//! Conventions: a failure (no usable answer) counts as wrong for accuracy and recall and is
//! shown in an extra "no answer" column of the confusion matrix; precision only looks at real
//! answers. Macro-F1 averages over classes that occur in the truth, a class that is never
//! predicted scoring F1 = 0.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::vlm::prompt::FailureKind;

/// What a classifier said about one patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Class(usize),
    Failed(FailureKind),
}

/// Truth and outcome for one patch; class indices refer to one shared class list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchPrediction {
    pub truth: usize,
    pub outcome: Outcome,
}

/// Rows are the true class, columns the predicted class, plus a last "no answer" column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub classes: Vec<String>,
    pub counts: Vec<Vec<u64>>,
}

pub const NO_ANSWER: &str = "no answer";

impl ConfusionMatrix {
    /// Index of the "no answer" column.
    pub fn no_answer_column(&self) -> usize {
        self.classes.len()
    }

    /// Each row divided by its total (all zeros for a class with no patches).
    pub fn row_normalised(&self) -> Vec<Vec<f64>> {
        self.counts
            .iter()
            .map(|row| {
                let total: u64 = row.iter().sum();
                row.iter()
                    .map(|&c| {
                        if total == 0 {
                            0.0
                        } else {
                            c as f64 / total as f64
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: String,
    /// Patches of this class (answered or not).
    pub support: u64,
    /// Answers naming this class.
    pub predicted: u64,
    pub correct: u64,
    /// `None` when the class was never predicted.
    pub precision: Option<f64>,
    /// `None` when the class has no patches.
    pub recall: Option<f64>,
    /// `None` when the class has no patches; 0 when it has some but none were found.
    pub f1: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    pub matrix: ConfusionMatrix,
    pub total: u64,
    pub answered: u64,
    pub correct: u64,
    /// correct / total (failures count as wrong); `None` for no patches.
    pub accuracy: Option<f64>,
    /// correct / answered.
    pub answered_accuracy: Option<f64>,
    pub macro_f1: Option<f64>,
    pub per_class: Vec<ClassScore>,
    pub failures: BTreeMap<FailureKind, u64>,
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl ClassificationMetrics {
    /// Scores predictions against `classes`. Predictions whose class index is out of range
    /// are an error (they would otherwise vanish from the matrix).
    pub fn compute(classes: &[String], preds: &[PatchPrediction]) -> anyhow::Result<Self> {
        let nc = classes.len();
        let mut counts = vec![vec![0u64; nc + 1]; nc];
        let mut failures = BTreeMap::new();
        for (i, p) in preds.iter().enumerate() {
            anyhow::ensure!(
                p.truth < nc,
                "prediction {i}: true class index {} but only {nc} classes",
                p.truth
            );
            let col = match p.outcome {
                Outcome::Class(c) => {
                    anyhow::ensure!(
                        c < nc,
                        "prediction {i}: predicted class index {c} but only {nc} classes"
                    );
                    c
                }
                Outcome::Failed(kind) => {
                    *failures.entry(kind).or_insert(0) += 1;
                    nc
                }
            };
            counts[p.truth][col] += 1;
        }
        let total = preds.len() as u64;
        let answered = total - failures.values().sum::<u64>();
        let correct: u64 = (0..nc).map(|c| counts[c][c]).sum();
        let per_class: Vec<ClassScore> = (0..nc)
            .map(|c| {
                let support: u64 = counts[c].iter().sum();
                let predicted: u64 = (0..nc).map(|t| counts[t][c]).sum();
                let tp = counts[c][c];
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = recall.map(|r| {
                    let p = precision.unwrap_or(0.0);
                    if p + r > 0.0 {
                        2.0 * p * r / (p + r)
                    } else {
                        0.0
                    }
                });
                ClassScore {
                    class: classes[c].clone(),
                    support,
                    predicted,
                    correct: tp,
                    precision,
                    recall,
                    f1,
                }
            })
            .collect();
        let f1s: Vec<f64> = per_class.iter().filter_map(|s| s.f1).collect();
        let macro_f1 = (!f1s.is_empty()).then(|| f1s.iter().sum::<f64>() / f1s.len() as f64);
        Ok(Self {
            matrix: ConfusionMatrix {
                classes: classes.to_vec(),
                counts,
            },
            total,
            answered,
            correct,
            accuracy: ratio(correct, total),
            answered_accuracy: ratio(correct, answered),
            macro_f1,
            per_class,
            failures,
        })
    }

    /// Plain-text report: counts, row-normalised matrix, per-class scores, failures.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let m = &self.matrix;
        let mut cols: Vec<String> = m.classes.clone();
        cols.push(NO_ANSWER.into());
        let w0 = m
            .classes
            .iter()
            .map(|c| c.len())
            .max()
            .unwrap_or(4)
            .max("true \\ predicted".len());
        let wc: Vec<usize> = cols.iter().map(|c| c.len().max(6)).collect();
        let header = |s: &mut String| {
            let _ = write!(s, "{:<w0$}", "true \\ predicted");
            for (c, w) in cols.iter().zip(&wc) {
                let _ = write!(s, "  {c:>w$}");
            }
            s.push('\n');
        };
        s.push_str("Confusion matrix (counts)\n");
        header(&mut s);
        for (r, row) in m.counts.iter().enumerate() {
            let _ = write!(s, "{:<w0$}", m.classes[r]);
            for (v, w) in row.iter().zip(&wc) {
                let _ = write!(s, "  {v:>w$}");
            }
            s.push('\n');
        }
        s.push_str("\nConfusion matrix (row-normalised)\n");
        header(&mut s);
        for (r, row) in m.row_normalised().iter().enumerate() {
            let _ = write!(s, "{:<w0$}", m.classes[r]);
            for (v, w) in row.iter().zip(&wc) {
                let _ = write!(s, "  {v:>w$.2}");
            }
            s.push('\n');
        }
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let _ = writeln!(
            s,
            "\nAccuracy {} ({} of {}), on answered patches {} ({} answered); macro-F1 {}",
            pct(self.accuracy),
            self.correct,
            self.total,
            pct(self.answered_accuracy),
            self.answered,
            num(self.macro_f1)
        );
        let _ = writeln!(
            s,
            "\n{:<w0$}  {:>7}  {:>9}  {:>9}  {:>6}",
            "class", "support", "precision", "recall", "F1"
        );
        for c in &self.per_class {
            let _ = writeln!(
                s,
                "{:<w0$}  {:>7}  {:>9}  {:>9}  {:>6}",
                c.class,
                c.support,
                num(c.precision),
                num(c.recall),
                num(c.f1)
            );
        }
        if self.failures.is_empty() {
            s.push_str("\nNo failures\n");
        } else {
            s.push_str("\nFailures:");
            for (k, n) in &self.failures {
                let _ = write!(s, " {k} {n};");
            }
            s.pop();
            s.push('\n');
        }
        s
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values; `None` when empty.
pub fn percentile_nearest_rank(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * v.len() as f64)
        .ceil()
        .max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

/// Cost of one patch's request, as far as known.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UsageSample {
    /// `None` when the server never answered (timeout, connection failure).
    pub latency_ms: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cached: bool,
}

/// Latency and token totals. Cached answers keep the latency measured when they were first
/// fetched, so a rerun from cache reproduces the same numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageStats {
    /// Patches the server answered (with any content).
    pub responses: u64,
    pub cached: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Responses that reported token usage.
    pub with_usage: u64,
}

impl UsageStats {
    pub fn compute(samples: impl IntoIterator<Item = UsageSample>) -> Self {
        let mut lat = Vec::new();
        let mut s = Self::default();
        for u in samples {
            if let Some(l) = u.latency_ms {
                lat.push(l);
                s.responses += 1;
            }
            s.cached += u64::from(u.cached);
            if u.prompt_tokens.is_some() || u.completion_tokens.is_some() {
                s.with_usage += 1;
            }
            s.prompt_tokens += u.prompt_tokens.unwrap_or(0);
            s.completion_tokens += u.completion_tokens.unwrap_or(0);
        }
        s.latency_p50_ms = percentile_nearest_rank(&lat, 50.0);
        s.latency_p95_ms = percentile_nearest_rank(&lat, 95.0);
        s
    }

    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureKind as F;
    use Outcome::{Class, Failed};

    fn p(truth: usize, outcome: Outcome) -> PatchPrediction {
        PatchPrediction { truth, outcome }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_three_class_case() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let preds = vec![
            // truth a: a, a, b, no answer (not JSON)
            p(0, Class(0)),
            p(0, Class(0)),
            p(0, Class(1)),
            p(0, Failed(F::NotJson)),
            // truth b: b, a, no answer (timeout)
            p(1, Class(1)),
            p(1, Class(0)),
            p(1, Failed(F::Timeout)),
            // truth c: c, b, no answer (unknown class)
            p(2, Class(2)),
            p(2, Class(1)),
            p(2, Failed(F::UnknownClass)),
        ];
        let m = ClassificationMetrics::compute(&classes, &preds).unwrap();
        // Columns a, b, c, no answer.
        assert_eq!(
            m.matrix.counts,
            vec![vec![2, 1, 0, 1], vec![1, 1, 0, 1], vec![0, 1, 1, 1]]
        );
        let rn = m.matrix.row_normalised();
        assert_eq!(rn[0], vec![0.5, 0.25, 0.0, 0.25]);
        assert!(close(rn[1][0], 1.0 / 3.0) && close(rn[1][3], 1.0 / 3.0));
        assert_eq!((m.total, m.answered, m.correct), (10, 7, 4));
        // 4 correct of 10; of 7 answered.
        assert!(close(m.accuracy.unwrap(), 0.4));
        assert!(close(m.answered_accuracy.unwrap(), 4.0 / 7.0));
        // Column sums over real answers: a 3, b 3, c 1.
        // precision a 2/3, b 1/3, c 1/1; recall a 2/4, b 1/3, c 1/3.
        let pc = &m.per_class;
        assert_eq!((pc[0].support, pc[0].predicted, pc[0].correct), (4, 3, 2));
        assert!(close(pc[0].precision.unwrap(), 2.0 / 3.0));
        assert!(close(pc[1].precision.unwrap(), 1.0 / 3.0));
        assert!(close(pc[2].precision.unwrap(), 1.0));
        assert!(close(pc[0].recall.unwrap(), 0.5));
        assert!(close(pc[1].recall.unwrap(), 1.0 / 3.0));
        assert!(close(pc[2].recall.unwrap(), 1.0 / 3.0));
        // F1 a = 2(2/3)(1/2)/(2/3+1/2) = 4/7; b = 1/3; c = 2(1)(1/3)/(4/3) = 1/2.
        assert!(close(pc[0].f1.unwrap(), 4.0 / 7.0));
        assert!(close(pc[1].f1.unwrap(), 1.0 / 3.0));
        assert!(close(pc[2].f1.unwrap(), 0.5));
        // macro-F1 = (4/7 + 1/3 + 1/2) / 3 = 59/126.
        assert!(close(m.macro_f1.unwrap(), 59.0 / 126.0));
        assert_eq!(
            m.failures,
            BTreeMap::from([(F::NotJson, 1), (F::Timeout, 1), (F::UnknownClass, 1)])
        );
        let text = m.render_text();
        assert!(
            text.contains("no answer") && text.contains("40.0%"),
            "{text}"
        );
    }

    #[test]
    fn never_predicted_and_absent_classes() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // b is never predicted; c has no patches.
        let preds = vec![p(0, Class(0)), p(1, Class(0))];
        let m = ClassificationMetrics::compute(&classes, &preds).unwrap();
        let pc = &m.per_class;
        // a: precision 1/2, recall 1, F1 2/3.
        assert!(close(pc[0].f1.unwrap(), 2.0 / 3.0));
        // b: precision undefined, recall 0, F1 0.
        assert_eq!(
            (pc[1].precision, pc[1].recall, pc[1].f1),
            (None, Some(0.0), Some(0.0))
        );
        // c: no support, excluded from the macro average.
        assert_eq!(
            (pc[2].precision, pc[2].recall, pc[2].f1),
            (None, None, None)
        );
        // macro-F1 = (2/3 + 0) / 2 = 1/3.
        assert!(close(m.macro_f1.unwrap(), 1.0 / 3.0));
        assert_eq!(m.matrix.row_normalised()[2], vec![0.0; 4]);

        let empty = ClassificationMetrics::compute(&classes, &[]).unwrap();
        assert_eq!((empty.accuracy, empty.macro_f1), (None, None));
        assert!(ClassificationMetrics::compute(&classes, &[p(3, Class(0))]).is_err());
        assert!(ClassificationMetrics::compute(&classes, &[p(0, Class(7))]).is_err());
    }

    #[test]
    fn nearest_rank_percentiles_and_usage() {
        let v: Vec<f64> = (1..=10).map(|i| i as f64 * 10.0).collect();
        // p50: rank ceil(0.5*10)=5 -> 50; p95: rank ceil(9.5)=10 -> 100.
        assert_eq!(percentile_nearest_rank(&v, 50.0), Some(50.0));
        assert_eq!(percentile_nearest_rank(&v, 95.0), Some(100.0));
        // [1,3,5]: p50 rank 2 -> 3; p95 rank ceil(2.85)=3 -> 5.
        assert_eq!(percentile_nearest_rank(&[5.0, 1.0, 3.0], 50.0), Some(3.0));
        assert_eq!(percentile_nearest_rank(&[5.0, 1.0, 3.0], 95.0), Some(5.0));
        assert_eq!(percentile_nearest_rank(&[], 50.0), None);

        let u = UsageStats::compute([
            UsageSample {
                latency_ms: Some(5.0),
                prompt_tokens: Some(100),
                completion_tokens: Some(10),
                cached: false,
            },
            UsageSample {
                latency_ms: Some(1.0),
                prompt_tokens: Some(50),
                completion_tokens: None,
                cached: true,
            },
            UsageSample {
                latency_ms: Some(3.0),
                ..Default::default()
            },
            UsageSample::default(),
        ]);
        assert_eq!((u.responses, u.cached, u.with_usage), (3, 1, 2));
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens()),
            (150, 10, 160)
        );
        assert_eq!((u.latency_p50_ms, u.latency_p95_ms), (Some(3.0), Some(5.0)));
    }
}
