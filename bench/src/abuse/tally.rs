//! What the abusive clients sent and what they got back.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};

/// Examples of findings kept for the summary (the counters count them all).
const KEPT_FINDINGS: usize = 20;

#[derive(Default)]
pub struct Tally {
    /// Malformed frames and requests sent.
    pub frames: AtomicU64,
    /// Connections the abusive clients opened (WebSocket and raw TCP).
    pub connections: AtomicU64,
    /// Per kind: frames sent and how many answers of each sort came back.
    kinds: Mutex<BTreeMap<&'static str, Kind>>,
    /// Answers with a 5xx status.
    pub server_errors: AtomicU64,
    /// Answers carrying `extensions.code` INTERNAL.
    pub internal: AtomicU64,
    findings: Mutex<Vec<String>>,
    pub rss_peak: AtomicU64,
    pub server_died: AtomicBool,
}

#[derive(Default)]
struct Kind {
    frames: u64,
    outcomes: BTreeMap<String, u64>,
}

impl Tally {
    /// `n` malformed frames or requests of `kind` sent.
    pub fn sent(&self, kind: &'static str, n: u64) {
        self.frames.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut k) = self.kinds.lock() {
            k.entry(kind).or_default().frames += n;
        }
    }

    /// What one abusive exchange of `kind` ended with ("close 4400", "http 400 [GRAPHQL_PARSE_FAILED]", ...).
    pub fn outcome(&self, kind: &'static str, what: String) {
        if let Ok(mut k) = self.kinds.lock() {
            *k.entry(kind).or_default().outcomes.entry(what).or_default() += 1;
        }
    }

    /// Looks at an answer to `input`: a 5xx status or an INTERNAL code is a finding.
    pub fn inspect(&self, kind: &'static str, input: &str, status: Option<u16>, body: &str) {
        let codes = codes(body);
        let five = status.is_some_and(|s| s >= 500);
        let internal = codes.iter().any(|c| c == "INTERNAL");
        if five {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        if internal {
            self.internal.fetch_add(1, Ordering::Relaxed);
        }
        if five || internal {
            let mut answer: String = body.chars().take(300).collect();
            if let Some(s) = status {
                answer = format!("HTTP {s} {answer}");
            }
            if let Ok(mut f) = self.findings.lock()
                && f.len() < KEPT_FINDINGS
            {
                f.push(format!("{kind}: {input} -> {answer}"));
            }
        }
    }

    pub fn kinds_json(&self) -> Value {
        let kinds = self.kinds.lock().map(|k| {
            k.iter()
                .map(|(name, k)| {
                    (
                        name.to_string(),
                        json!({ "frames": k.frames, "outcomes": k.outcomes }),
                    )
                })
                .collect::<serde_json::Map<String, Value>>()
        });
        Value::Object(kinds.unwrap_or_default())
    }

    pub fn findings_json(&self) -> Value {
        json!(self.findings.lock().map(|f| f.clone()).unwrap_or_default())
    }
}

/// The `extensions.code`s in an answer, found without parsing it (answers may
/// be truncated streams).
pub fn codes(body: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find(r#""code":""#) {
        rest = &rest[at + 8..];
        let code = &rest[..rest.find('"').unwrap_or(rest.len())];
        if !found.iter().any(|c| c == code) {
            found.push(code.to_string());
        }
    }
    found.sort();
    found
}

/// An answer in a few words for the outcome counts: its status and codes.
pub fn summarize(status: &str, body: &str) -> String {
    let codes = codes(body);
    if codes.is_empty() {
        status.to_string()
    } else {
        format!("{status} [{}]", codes.join(","))
    }
}
