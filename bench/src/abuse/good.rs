//! The well-behaved side of the abuse run: one graphql-transport-ws subscriber
//! on `postChanged` and a writer that creates posts at a steady pace. At the end
//! the ids the subscriber received must be the ids the writer was given back,
//! each once, in order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::Target;
use crate::client::{gql, http_client, token, ws_next, ws_open, ws_subscribe};

const CREATE: &str = "mutation($t: String!) { createPost(input: { title: $t }) { id } }";

/// What the subscriber received, shared with its task.
#[derive(Default)]
struct Received {
    ids: Vec<String>,
    cursor: Option<String>,
    /// Times its connection ended and it resumed from its cursor.
    reconnects: u64,
    /// Error frames or unreadable events.
    errors: Vec<String>,
}

pub struct Good {
    received: Arc<Mutex<Received>>,
    warmup: Vec<String>,
}

/// What the writer created.
pub struct Written {
    pub ids: Vec<String>,
    pub failed: u64,
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    done: tokio::sync::oneshot::Receiver<Written>,
}

impl Good {
    /// Subscribes, and creates warm-up posts until one arrives: the
    /// subscription is live.
    pub async fn start(target: &Target) -> anyhow::Result<Good> {
        let received = Arc::new(Mutex::new(Received::default()));
        tokio::spawn(subscribe(target.clone(), received.clone()));
        let http = http_client();
        let tok = token(&target.secret, "good-writer");
        let mut warmup = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (body, _) = gql(&http, target, &tok, CREATE, json!({ "t": "warmup" })).await?;
            warmup.push(id_of(&body["data"]["createPost"]).context("warm-up post id")?);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let got = received.lock().map(|r| r.ids.len()).unwrap_or(0);
            if got > 0 {
                return Ok(Good { received, warmup });
            }
            if Instant::now() > deadline {
                bail!("no event reached the subscriber in 30 s");
            }
        }
    }

    /// Starts the writer: one post every 1/`rate` s, from a thread of its own so
    /// that the abusive clients on the generator's runtime do not hold it back.
    pub fn write(&self, target: Target, rate: f64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = tokio::sync::oneshot::channel();
        let stopping = stop.clone();
        let _ = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let written = rt.block_on(async move {
                    let http = http_client();
                    let tok = token(&target.secret, "good-writer");
                    let mut written = Written {
                        ids: Vec::new(),
                        failed: 0,
                    };
                    let clock = Instant::now();
                    let mut i = 0u64;
                    while !stopping.load(Ordering::Relaxed) {
                        let due = Duration::from_secs_f64(i as f64 / rate.max(0.1));
                        if let Some(wait) = due.checked_sub(clock.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                        let title = format!("good:{i}");
                        match gql(&http, &target, &tok, CREATE, json!({ "t": title })).await {
                            Ok((body, _)) => match id_of(&body["data"]["createPost"]) {
                                Some(id) => written.ids.push(id),
                                None => written.failed += 1,
                            },
                            Err(e) => {
                                eprintln!("writer: createPost {i} failed: {e:#}");
                                written.failed += 1;
                            }
                        }
                        i += 1;
                    }
                    written
                });
                let _ = tx.send(written);
            });
        Writer { stop, done }
    }

    /// Waits until every written post arrived (or nothing more arrives for
    /// 15 s) and compares.
    pub async fn finish(&self, written: &Written) -> Events {
        let wanted: HashSet<&str> = written.ids.iter().map(String::as_str).collect();
        let mut last = (usize::MAX, Instant::now());
        loop {
            let have: HashSet<String> = self
                .received
                .lock()
                .map(|r| r.ids.iter().cloned().collect())
                .unwrap_or_default();
            if wanted.iter().all(|id| have.contains(*id)) {
                break;
            }
            if have.len() != last.0 {
                last = (have.len(), Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(15) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A moment more for duplicates to show.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = self.received.lock();
        let (ids, reconnects, errors) = match &r {
            Ok(r) => (r.ids.clone(), r.reconnects, r.errors.clone()),
            Err(_) => Default::default(),
        };
        Events::compare(&written.ids, &self.warmup, &ids, reconnects, errors)
    }
}

impl Writer {
    pub async fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.done.await.unwrap_or(Written {
            ids: Vec::new(),
            failed: 1,
        })
    }
}

fn id_of(v: &Value) -> Option<String> {
    v["id"].as_str().map(str::to_string)
}

/// The subscriber: reads `postChanged` ids; when its connection ends it
/// resumes from the last cursor, as a graphql-ws client does.
async fn subscribe(target: Target, received: Arc<Mutex<Received>>) {
    let tok = token(&target.secret, "good-subscriber");
    let source = target.sources[0];
    let attempts = AtomicU64::new(0);
    loop {
        let after = received.lock().ok().and_then(|r| r.cursor.clone());
        let query = match &after {
            Some(c) => format!("subscription {{ postChanged(after: {c:?}) {{ id cursor }} }}"),
            None => "subscription { postChanged { id cursor } }".to_string(),
        };
        let mut ws = match ws_open(&target, source, &tok).await {
            Ok(ws) => ws,
            Err(e) => {
                if attempts.fetch_add(1, Ordering::Relaxed) > 50 {
                    eprintln!("the well-behaved subscriber gave up: {e:#}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if ws_subscribe(&mut ws, "1", &query).await.is_err() {
            continue;
        }
        while let Some((frame, _)) = ws_next(&mut ws).await {
            let v: Value = serde_json::from_str(&frame).unwrap_or_default();
            let change = &v["payload"]["data"]["postChanged"];
            let (Some(id), Some(cursor)) = (id_of(change), change["cursor"].as_str()) else {
                if let Ok(mut r) = received.lock() {
                    r.errors.push(frame.chars().take(300).collect());
                }
                continue;
            };
            if let Ok(mut r) = received.lock() {
                r.ids.push(id);
                r.cursor = Some(cursor.to_string());
            }
        }
        if let Ok(mut r) = received.lock() {
            r.reconnects += 1;
        }
    }
}

/// The subscriber's events against the writer's posts.
pub struct Events {
    expected: usize,
    received: usize,
    missing: usize,
    duplicated: usize,
    unexpected: usize,
    in_order: bool,
    reconnects: u64,
    errors: Vec<String>,
}

impl Events {
    fn compare(
        written: &[String],
        warmup: &[String],
        got: &[String],
        reconnects: u64,
        errors: Vec<String>,
    ) -> Events {
        let wanted: HashSet<&str> = written.iter().map(String::as_str).collect();
        let warm: HashSet<&str> = warmup.iter().map(String::as_str).collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut order = Vec::new();
        let mut unexpected = 0;
        for id in got {
            if wanted.contains(id.as_str()) {
                let n = seen.entry(id).or_default();
                *n += 1;
                if *n == 1 {
                    order.push(id.as_str());
                }
            } else if !warm.contains(id.as_str()) {
                unexpected += 1;
            }
        }
        let in_received_order: Vec<&str> = written
            .iter()
            .map(String::as_str)
            .filter(|id| seen.contains_key(id))
            .collect();
        Events {
            expected: written.len(),
            received: seen.values().sum(),
            missing: written.len() - seen.len(),
            duplicated: seen.values().map(|n| n - 1).sum(),
            unexpected,
            in_order: order == in_received_order,
            reconnects,
            errors,
        }
    }

    /// Every post once, in order, nothing else, no error.
    pub fn clean(&self) -> bool {
        self.expected > 0
            && self.missing == 0
            && self.duplicated == 0
            && self.unexpected == 0
            && self.in_order
            && self.errors.is_empty()
    }

    pub fn verdict(&self) -> String {
        format!(
            "expected {}, missing {}, duplicated {}, unexpected {}, in order {}, errors {:?}",
            self.expected,
            self.missing,
            self.duplicated,
            self.unexpected,
            self.in_order,
            self.errors
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "expected": self.expected, "received": self.received, "missing": self.missing,
            "duplicated": self.duplicated, "unexpected": self.unexpected, "in_order": self.in_order,
            "subscriber_reconnects": self.reconnects, "subscriber_errors": self.errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Events;

    fn ids(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn compare(written: &str, got: &str) -> Events {
        Events::compare(&ids(written), &ids("w"), &ids(got), 0, Vec::new())
    }

    #[test]
    fn every_post_once_in_order_is_clean() {
        assert!(compare("a b c", "w a b c").clean());
    }

    #[test]
    fn a_missing_duplicated_reordered_or_foreign_event_is_not() {
        let e = compare("a b c", "a c");
        assert_eq!((e.missing, e.clean()), (1, false));
        let e = compare("a b c", "a b b c");
        assert_eq!((e.duplicated, e.clean()), (1, false));
        let e = compare("a b c", "a c b");
        assert!(!e.in_order && !e.clean());
        let e = compare("a b c", "a b x c");
        assert_eq!((e.unexpected, e.clean()), (1, false));
        assert!(!compare("", "").clean());
    }
}
