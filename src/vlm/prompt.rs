//! Prompt strategies and answer parsing.
//!
//! Strategies form a ladder, each adding one kind of information to the previous one, so that a
//! comparison on the same patches shows what each addition is worth:
//! zero-shot < definitions < crystallography < few-shot (crystallography + k labelled images
//! per class). A text left empty is simply omitted, which also allows e.g. examples without
//! descriptions.
//!
//! Answers: the model is asked for exactly one JSON object. Parsing accepts that object bare
//! (`Strict`), inside a ``` fence (`Fenced`), or as the only JSON object inside prose
//! (`Embedded`); the format is recorded so compliance can be measured separately from
//! correctness. Anything else is a named failure.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::vlm::client::{ChatMessage, ContentPart, Role};
use crate::vlm::patches::{Patch, normalise_class_name};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    ZeroShot,
    Definitions,
    Crystallography,
    FewShot,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::ZeroShot,
        Strategy::Definitions,
        Strategy::Crystallography,
        Strategy::FewShot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::ZeroShot => "zero-shot",
            Strategy::Definitions => "definitions",
            Strategy::Crystallography => "crystallography",
            Strategy::FewShot => "few-shot",
        }
    }

    pub fn uses_definitions(self) -> bool {
        self != Strategy::ZeroShot
    }

    pub fn uses_crystallography(self) -> bool {
        matches!(self, Strategy::Crystallography | Strategy::FewShot)
    }

    pub fn uses_examples(self) -> bool {
        self == Strategy::FewShot
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let n = s.trim().to_lowercase().replace('_', "-");
        Strategy::ALL
            .into_iter()
            .find(|st| st.name() == n)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown strategy {s:?}: use zero-shot, definitions, crystallography or few-shot"
                )
            })
    }
}

/// A text attached to one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassText {
    pub class: String,
    pub text: String,
}

/// Every text a prompt is built from. Placeholders: `{classes}` (the quoted class list) in
/// `task` and `answer_format`; `{n}` and `{class}` in `example_label`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptTexts {
    pub system: String,
    pub task: String,
    pub answer_format: String,
    pub definitions_intro: String,
    pub definitions: Vec<ClassText>,
    pub crystallography: String,
    pub appearance_intro: String,
    pub appearance: Vec<ClassText>,
    pub examples_intro: String,
    pub example_label: String,
    pub query_intro: String,
}

fn ct(class: &str, text: &str) -> ClassText {
    ClassText {
        class: class.into(),
        text: text.into(),
    }
}

impl Default for PromptTexts {
    fn default() -> Self {
        Self {
            system: "You are an expert in atomic-resolution scanning transmission electron \
                     microscopy (STEM) of semiconductor crystals. You classify small image \
                     patches. You always answer with a single JSON object and nothing else."
                .into(),
            task: "The image is a small high-angle annular dark-field (HAADF) STEM patch of \
                   CdTe. Bright spots are atomic columns. Classify the patch into exactly one \
                   of these classes: {classes}."
                .into(),
            answer_format: "Answer with exactly one JSON object and no other text: \
                            {\"class\": <one of {classes}>, \"confidence\": <number from 0 to 1>, \
                            \"explanation\": <one short sentence>}"
                .into(),
            definitions_intro: "Class definitions:".into(),
            definitions: vec![
                ct(
                    "bulk",
                    "perfect crystal: every atomic column is at its lattice site; nothing is \
                     missing, extra or displaced and the lattice orientation is the same \
                     everywhere.",
                ),
                ct(
                    "vacancy",
                    "point defect: an atomic column is missing or much dimmer than its \
                     neighbours, leaving a dark gap in an otherwise regular lattice.",
                ),
                ct(
                    "interstitial",
                    "point defect: extra atoms sit between the regular lattice sites, seen as \
                     an additional spot where the perfect lattice has none.",
                ),
                ct(
                    "grain_boundary",
                    "planar defect: two crystal regions of different orientation (or mirrored \
                     stacking, as in a twin) meet along a line crossing the patch.",
                ),
            ],
            crystallography: "CdTe has the zinc-blende structure (a = 6.48 Å). Viewed along \
                              [110] in HAADF, the atomic columns pair into dumbbells: a Cd and a \
                              Te column 1.62 Å apart along [001]. Te (Z = 52) is only slightly \
                              brighter than Cd (Z = 48), so both halves of a dumbbell look \
                              alike. Dumbbells sit on a centred rectangular net of a x a/√2 \
                              (6.48 Å x 4.58 Å). The two edge-on {111} planes run at ±35.3° \
                              to [001] and cross at 70.5°."
                .into(),
            appearance_intro: "How each class looks in such an image:".into(),
            appearance: vec![
                ct(
                    "bulk",
                    "regular rows of identical dumbbells with uniform spacing and brightness; \
                     any variation is noise.",
                ),
                ct(
                    "vacancy",
                    "one dumbbell, or one column of a dumbbell, is missing or clearly dimmer \
                     (partly empty column) while its neighbours stay on their sites.",
                ),
                ct(
                    "interstitial",
                    "an extra, often fainter spot between dumbbells, e.g. in the open channel \
                     at the centre of the rectangular cell; neighbouring columns may be \
                     slightly pushed aside.",
                ),
                ct(
                    "grain_boundary",
                    "a sharp line across the patch where the dumbbell rows change direction; \
                     across a Σ3 twin on a {111} plane the lattice is mirrored and the dumbbell \
                     polarity flips.",
                ),
            ],
            examples_intro: "Labelled example patches:".into(),
            example_label: "Example {n}: class \"{class}\".".into(),
            query_intro: "Now classify this patch:".into(),
        }
    }
}

/// A few-shot example: an image and its class name.
#[derive(Clone, Copy, Debug)]
pub struct Example<'a> {
    pub patch: &'a Patch,
    pub class: &'a str,
}

fn quoted_classes(classes: &[String]) -> String {
    classes
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn class_lines(intro: &str, texts: &[ClassText], classes: &[String]) -> Option<String> {
    // Only the classes being screened are described, in screening order.
    let lines: Vec<String> = classes
        .iter()
        .filter_map(|c| {
            texts
                .iter()
                .find(|t| normalise_class_name(&t.class) == *c && !t.text.trim().is_empty())
                .map(|t| format!("- {c}: {}", t.text.trim()))
        })
        .collect();
    if lines.is_empty() {
        return None;
    }
    let mut s = String::new();
    if !intro.trim().is_empty() {
        s.push_str(intro.trim());
        s.push('\n');
    }
    s.push_str(&lines.join("\n"));
    Some(s)
}

/// Builds the messages for one query patch. `examples` are used only by few-shot.
pub fn build_messages(
    texts: &PromptTexts,
    strategy: Strategy,
    classes: &[String],
    examples: &[Example<'_>],
    query: &Patch,
) -> Vec<ChatMessage> {
    let cl = quoted_classes(classes);
    let fill = |s: &str| s.replace("{classes}", &cl);
    let mut msgs = Vec::new();
    if !texts.system.trim().is_empty() {
        msgs.push(ChatMessage::text(Role::System, texts.system.trim()));
    }
    let mut blocks: Vec<String> = Vec::new();
    if !texts.task.trim().is_empty() {
        blocks.push(fill(texts.task.trim()));
    }
    if strategy.uses_definitions()
        && let Some(b) = class_lines(&texts.definitions_intro, &texts.definitions, classes)
    {
        blocks.push(b);
    }
    if strategy.uses_crystallography() {
        if !texts.crystallography.trim().is_empty() {
            blocks.push(texts.crystallography.trim().to_string());
        }
        if let Some(b) = class_lines(&texts.appearance_intro, &texts.appearance, classes) {
            blocks.push(b);
        }
    }
    let mut parts = Vec::new();
    if strategy.uses_examples() && !examples.is_empty() {
        if !texts.examples_intro.trim().is_empty() {
            blocks.push(texts.examples_intro.trim().to_string());
        }
        parts.push(ContentPart::Text(blocks.join("\n\n")));
        for (i, ex) in examples.iter().enumerate() {
            let label = texts
                .example_label
                .replace("{n}", &(i + 1).to_string())
                .replace("{class}", ex.class);
            parts.push(ContentPart::Text(label));
            parts.push(ContentPart::Png {
                png: ex.patch.png.clone(),
                hash: ex.patch.hash.clone(),
            });
        }
        blocks.clear();
    }
    if !texts.query_intro.trim().is_empty() {
        blocks.push(texts.query_intro.trim().to_string());
    }
    if !blocks.is_empty() {
        parts.push(ContentPart::Text(blocks.join("\n\n")));
    }
    parts.push(ContentPart::Png {
        png: query.png.clone(),
        hash: query.hash.clone(),
    });
    if !texts.answer_format.trim().is_empty() {
        parts.push(ContentPart::Text(fill(texts.answer_format.trim())));
    }
    msgs.push(ChatMessage {
        role: Role::User,
        parts,
    });
    msgs
}

/// How the JSON answer was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    /// The whole reply is the JSON object.
    Strict,
    /// The object sits in a ``` code fence.
    Fenced,
    /// The object is the only one inside other prose.
    Embedded,
}

/// Why a patch got no class. Answer-level kinds come from [`parse_answer`]; transport kinds
/// from the client; `NoDetection` is for non-VLM classifiers that found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// No JSON object in the reply (prose, empty, a bare string...).
    NotJson,
    /// Several different JSON objects: the answer is ambiguous.
    MultipleJson,
    /// A JSON object without a string `class` field.
    MissingClass,
    /// `class` is not one of the screened classes.
    UnknownClass,
    /// Non-success HTTP status after retries.
    Http,
    Timeout,
    Connection,
    /// HTTP success but not a chat-completions body.
    BadResponse,
    NoDetection,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::NotJson => "not_json",
            FailureKind::MultipleJson => "multiple_json",
            FailureKind::MissingClass => "missing_class",
            FailureKind::UnknownClass => "unknown_class",
            FailureKind::Http => "http",
            FailureKind::Timeout => "timeout",
            FailureKind::Connection => "connection",
            FailureKind::BadResponse => "bad_response",
            FailureKind::NoDetection => "no_detection",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedAnswer {
    pub class: usize,
    /// In `[0, 1]`; absent or out-of-range values give `None` (the class still counts).
    pub confidence: Option<f64>,
    pub explanation: String,
    pub format: AnswerFormat,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AnswerError {
    pub kind: FailureKind,
    pub detail: String,
}

/// Parses a model reply against the screened classes (see the module doc for what is accepted).
pub fn parse_answer(reply: &str, classes: &[String]) -> Result<ParsedAnswer, AnswerError> {
    let fail = |kind, detail: String| AnswerError { kind, detail };
    // Reasoning models may think aloud first; braces in their thoughts are not the answer.
    let text = strip_think_blocks(reply);
    let trimmed = text.trim();
    let (obj, format) = match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(serde_json::Value::Object(o)) => (o, AnswerFormat::Strict),
        _ => {
            let mut distinct: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
            for span in top_level_object_spans(trimmed) {
                if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(span)
                    && !distinct.contains(&o)
                {
                    distinct.push(o);
                }
            }
            match distinct.len() {
                0 => {
                    return Err(fail(
                        FailureKind::NotJson,
                        format!("no JSON object in reply: {}", short(trimmed)),
                    ));
                }
                1 => {
                    let format = if trimmed.contains("```") {
                        AnswerFormat::Fenced
                    } else {
                        AnswerFormat::Embedded
                    };
                    (distinct.remove(0), format)
                }
                n => {
                    return Err(fail(
                        FailureKind::MultipleJson,
                        format!("{n} different JSON objects in reply"),
                    ));
                }
            }
        }
    };
    let Some(name) = obj.get("class").and_then(|v| v.as_str()) else {
        return Err(fail(
            FailureKind::MissingClass,
            format!(
                "JSON object without a string \"class\": {}",
                short(&serde_json::Value::Object(obj.clone()).to_string())
            ),
        ));
    };
    let norm = normalise_class_name(name);
    let Some(class) = classes.iter().position(|c| *c == norm) else {
        return Err(fail(
            FailureKind::UnknownClass,
            format!("class {name:?} is not one of {}", quoted_classes(classes)),
        ));
    };
    let confidence = match obj.get("confidence") {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|c| (0.0..=1.0).contains(c));
    let explanation = obj
        .get("explanation")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    Ok(ParsedAnswer {
        class,
        confidence,
        explanation,
        format,
    })
}

fn short(s: &str) -> String {
    let mut o: String = s.chars().take(120).collect();
    if s.chars().count() > 120 {
        o.push('…');
    }
    o
}

fn strip_think_blocks(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<think>") {
        out.push_str(&rest[..i]);
        match rest[i..].find("</think>") {
            Some(j) => rest = &rest[i + j + "</think>".len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Balanced `{...}` spans at nesting depth 0, aware of JSON strings and escapes.
fn top_level_object_spans(s: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        if in_str {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_str = false;
            }
            continue;
        }
        match ch {
            '"' if depth > 0 => in_str = true,
            '{' => {
                if depth == 0 {
                    start = i;
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    spans.push(&s[start..=i]);
                }
            }
            _ => {}
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        ["bulk", "vacancy", "interstitial", "grain_boundary"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn accepts_strict_fenced_and_embedded() {
        let c = classes();
        let a = parse_answer(
            r#"{"class":"vacancy","confidence":0.8,"explanation":"gap"}"#,
            &c,
        )
        .unwrap();
        assert_eq!(
            (a.class, a.confidence, a.format),
            (1, Some(0.8), AnswerFormat::Strict)
        );
        let a = parse_answer(
            "```json\n{\"class\": \"Grain boundary\", \"confidence\": \"0.5\"}\n```",
            &c,
        )
        .unwrap();
        assert_eq!(
            (a.class, a.confidence, a.format),
            (3, Some(0.5), AnswerFormat::Fenced)
        );
        let a = parse_answer(
            "Sure! {\"class\": \"bulk\", \"confidence\": 7, \"explanation\": \"a } brace\"} Hope that helps.",
            &c,
        )
        .unwrap();
        assert_eq!(
            (a.class, a.confidence, a.format, a.explanation.as_str()),
            (0, None, AnswerFormat::Embedded, "a } brace")
        );
        let a = parse_answer(
            "<think>maybe {\"class\":\"bulk\"}?</think>{\"class\":\"interstitial\"}",
            &c,
        )
        .unwrap();
        assert_eq!((a.class, a.format), (2, AnswerFormat::Strict));
    }

    #[test]
    fn names_each_failure() {
        let c = classes();
        let kind = |s: &str| parse_answer(s, &c).unwrap_err().kind;
        assert_eq!(kind("It looks like a vacancy to me."), FailureKind::NotJson);
        assert_eq!(kind(""), FailureKind::NotJson);
        assert_eq!(kind("\"vacancy\""), FailureKind::NotJson);
        assert_eq!(kind("{\"class\": \"vacancy\""), FailureKind::NotJson);
        assert_eq!(
            kind("{\"class\":\"bulk\"} or {\"class\":\"vacancy\"}"),
            FailureKind::MultipleJson
        );
        assert_eq!(kind("{\"label\":\"bulk\"}"), FailureKind::MissingClass);
        assert_eq!(kind("{\"class\": 3}"), FailureKind::MissingClass);
        assert_eq!(
            kind("{\"class\":\"dislocation\"}"),
            FailureKind::UnknownClass
        );
        // The same object repeated is not ambiguous.
        assert_eq!(
            parse_answer("{\"class\":\"bulk\"}\n{\"class\":\"bulk\"}", &c)
                .unwrap()
                .class,
            0
        );
    }

    #[test]
    fn strategies_round_trip_and_build_a_ladder() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>().unwrap(), s);
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.name())
            );
        }
        assert!("few_shot".parse::<Strategy>().is_ok());
        assert!("one-shot".parse::<Strategy>().is_err());

        let q = Patch::from_gray8(0, 2, 2, vec![0, 1, 2, 3], "q").unwrap();
        let e = Patch::from_gray8(1, 2, 2, vec![9, 9, 9, 9], "e").unwrap();
        let texts = PromptTexts::default();
        let c = classes();
        let text_of = |s: Strategy| {
            let m = build_messages(
                &texts,
                s,
                &c,
                &[Example {
                    patch: &e,
                    class: "vacancy",
                }],
                &q,
            );
            m.iter()
                .map(|m| m.to_key_json().to_string())
                .collect::<String>()
        };
        let zs = text_of(Strategy::ZeroShot);
        let df = text_of(Strategy::Definitions);
        let cr = text_of(Strategy::Crystallography);
        let fs = text_of(Strategy::FewShot);
        assert!(!zs.contains("Class definitions") && df.contains("Class definitions"));
        assert!(!df.contains("dumbbells") && cr.contains("dumbbells"));
        assert!(!cr.contains(&e.hash) && fs.contains(&e.hash));
        assert!(fs.contains("Example 1: class \\\"vacancy\\\""));
        assert!(zs.contains(&q.hash) && fs.contains(&q.hash));
        assert!(zs.contains("\\\"grain_boundary\\\""));
    }
}
