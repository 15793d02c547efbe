//! Small helpers turning vendor metadata (INI text, JSON trees) into display strings.

use std::collections::BTreeMap;

use serde_json::Value;

/// Longest metadata value kept: this is a summary for people, not an archive.
const MAX_VALUE_CHARS: usize = 200;
/// Most entries one flattened tree contributes.
const MAX_ENTRIES: usize = 300;

pub(crate) fn truncate_value(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_VALUE_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_VALUE_CHARS).collect();
        t.push('…');
        t
    }
}

/// `[Section]` / `key=value` text (FEI/Thermo Fisher TIFF headers) as section -> key -> value.
pub(crate) fn ini_sections(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim().trim_matches(char::from(0));
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

/// Flattens a JSON tree into dotted keys. Long arrays (calibration tables, per-frame lists)
/// are skipped; short ones are shown inline.
pub(crate) fn flatten_json(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    if out.len() >= MAX_ENTRIES {
        return;
    }
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, child) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_json(&key, child, out);
            }
        }
        Value::Array(a) => {
            if a.len() <= 4 && a.iter().all(|x| !x.is_object() && !x.is_array()) {
                let parts: Vec<String> = a.iter().map(scalar).collect();
                out.insert(prefix.to_string(), truncate_value(&parts.join(", ")));
            } else if a.len() <= 4 {
                for (i, child) in a.iter().enumerate() {
                    flatten_json(&format!("{prefix}[{i}]"), child, out);
                }
            }
        }
        _ => {
            out.insert(prefix.to_string(), truncate_value(&scalar(v)));
        }
    }
}

pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// First value under a key whose name contains `needle` (case-insensitive), depth-first,
/// with the dotted path where it was found.
pub(crate) fn find_key(
    v: &Value,
    needle: &str,
    path: &str,
    depth: usize,
) -> Option<(String, String)> {
    if depth > 12 {
        return None;
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if k.to_ascii_lowercase().contains(needle)
                    && !child.is_object()
                    && !child.is_array()
                {
                    return Some((p, scalar(child)));
                }
                if let Some(hit) = find_key(child, needle, &p, depth + 1) {
                    return Some(hit);
                }
            }
            None
        }
        Value::Array(a) => a
            .iter()
            .take(8)
            .enumerate()
            .find_map(|(i, c)| find_key(c, needle, &format!("{path}[{i}]"), depth + 1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_and_find() {
        let v = serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "long": (0..50).collect::<Vec<_>>(),
            "Scan": {"DwellTime": "2e-6"}});
        let mut out = BTreeMap::new();
        flatten_json("", &v, &mut out);
        assert_eq!(out["a.b"], "1");
        assert_eq!(out["a.c"], "1, 2");
        assert!(!out.contains_key("long"));
        assert_eq!(
            find_key(&v, "dwell", "", 0),
            Some(("Scan.DwellTime".into(), "2e-6".into()))
        );
    }

    #[test]
    fn ini_parsing() {
        let s = ini_sections("[Beam]\nHV=300\n\n[Scan]\nPixelWidth = 1e-9\n");
        assert_eq!(s["Beam"]["HV"], "300");
        assert_eq!(s["Scan"]["PixelWidth"], "1e-9");
    }
}
