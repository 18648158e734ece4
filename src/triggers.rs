//! Webhook triggers (API.md §9): every change a trigger matches becomes a
//! delivery in the database (`store::deliveries`), which this module POSTs,
//! signed per the Standard Webhooks spec, until the endpoint answers 2xx or
//! the attempts run out.
//!
//! Each trigger runs on a task of its own with at most [`CONCURRENCY`]
//! attempts in flight, each bounded by the trigger's `timeout_ms`: a slow or
//! dead endpoint holds up its own trigger's queue and nothing else (no write,
//! no subscriber, no other trigger). Retries back off exponentially from 1 s,
//! at most 5 minutes apart. Attempts are made in no particular order across a
//! trigger's deliveries; a receiver orders by `cursor` if it must.

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Catalog, CatalogError, Trigger, TriggerUrl, check_webhook_url};
use crate::metrics::TriggerMetrics;
use crate::store::{Change, Claimed, Outcome, Store, now_ms};
use serde_json::Value as Json;

/// Attempts of one trigger in flight at once.
pub const CONCURRENCY: usize = 8;

/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Added to an attempt's timeout for its lease: past both, another instance
/// may take the delivery over. The HTTP client gives up at the timeout, so
/// this covers writing the outcome, and clock skew between instances (leases
/// are compared with each instance's clock: keep them in sync, e.g. NTP).
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The longest a trigger goes without looking at the log and its queue.
const POLL: Duration = Duration::from_secs(1);

/// The shortest signing key accepted, in bytes (the spec asks for 24 to 64).
const MIN_SECRET_BYTES: usize = 16;

/// A trigger ready to call: its URL and signing key read from the environment.
pub struct Armed {
    pub trigger: Trigger,
    url: String,
    signer: standardwebhooks::Webhook,
    client: reqwest::Client,
}

/// Reads every trigger's URL and secret from the environment (`var` looks one
/// up); a variable that is missing or unusable is an error naming its key.
pub fn arm(
    file: &str,
    catalog: &Catalog,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Armed>, CatalogError> {
    let err = |path: String, message: String| CatalogError {
        file: file.to_string(),
        path,
        message,
        line: None,
    };
    let mut armed = Vec::new();
    for t in catalog.triggers.values() {
        let at = |key: &str| format!("triggers.{}.{key}", t.name);
        let url = match &t.url {
            TriggerUrl::Literal(u) => u.clone(),
            TriggerUrl::Env(name) => {
                let u = var(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                    err(
                        at("url_env"),
                        format!("the environment variable {name} is not set"),
                    )
                })?;
                // The message never repeats the URL: it may hold credentials.
                check_webhook_url(&u, true).map_err(|_| {
                    err(
                        at("url_env"),
                        format!(
                            "the environment variable {name} does not hold an http:// or https:// URL with a host"
                        ),
                    )
                })?;
                u
            }
        };
        let name = &t.secret_env;
        let secret = var(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            err(
                at("secret_env"),
                format!("the environment variable {name} is not set"),
            )
        })?;
        let usable = secret
            .strip_prefix("whsec_")
            .and_then(|b64| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b64).ok()
            })
            .is_some_and(|key| key.len() >= MIN_SECRET_BYTES);
        let signer = standardwebhooks::Webhook::new(&secret)
            .ok()
            .filter(|_| usable)
            .ok_or_else(|| {
                err(
                    at("secret_env"),
                    format!(
                        "the environment variable {name} must hold a Standard Webhooks secret: \
                         whsec_ followed by at least {MIN_SECRET_BYTES} bytes in base64 \
                         (e.g. from `openssl rand -base64 32`)"
                    ),
                )
            })?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(t.timeout_ms))
            .user_agent(concat!("livegate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| err(at("url"), format!("cannot make an HTTP client: {e}")))?;
        armed.push(Armed {
            trigger: t.clone(),
            url,
            signer,
            client,
        });
    }
    Ok(armed)
}

/// The delay before the attempt after attempt number `attempt` (1-based).
fn backoff(attempt: i32) -> Duration {
    let doublings = attempt.saturating_sub(1).clamp(0, 16) as u32;
    FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

/// Runs every armed trigger until the returned tasks are aborted.
pub fn start(
    store: Store,
    armed: Vec<Armed>,
    metrics: TriggerMetrics,
) -> Vec<tokio::task::JoinHandle<()>> {
    armed
        .into_iter()
        .map(|a| tokio::spawn(run(store.clone(), Arc::new(a), metrics.clone())))
        .collect()
}

/// One trigger: enqueue what the log has for it, claim what is due, attempt
/// it, wait for a matching change, a finished attempt or the next due time.
/// Its attempts run in a `JoinSet`: when the trigger's task is aborted (the
/// server stops), they stop with it, and their leases run out (or, on SQLite,
/// are cleared at the next start).
async fn run(store: Store, armed: Arc<Armed>, metrics: TriggerMetrics) {
    let name = armed.trigger.name.clone();
    let mut bus = store.subscribe();
    let mut attempts = tokio::task::JoinSet::new();
    let lease_ms =
        (Duration::from_millis(armed.trigger.timeout_ms) + LEASE_MARGIN).as_millis() as i64;
    // The log is looked at only when it has news; the queue is claimed from
    // only when something was added or is due (another instance's additions
    // show in `due`, read each turn).
    let mut looked_through = 0i64;
    let mut due: Option<i64> = Some(0);
    // Attempts that ended since the last turn, their outcomes not yet written.
    let mut done: Vec<(Claimed, Outcome)> = Vec::new();
    loop {
        while let Some(ended) = attempts.try_join_next() {
            done.extend(ended.ok());
        }
        // One batch of the log per turn: under a stream of writes, the
        // outcomes of ended attempts wait for no more than that.
        let mut added = 0;
        let mut behind = false;
        if store.published_seq() > looked_through {
            let body = |c: &Change| webhook_body(&name, store.catalog(), c);
            match store.enqueue_deliveries(&armed.trigger, body).await {
                Ok((n, more, through)) => {
                    added = n;
                    looked_through = looked_through.max(through);
                    behind = more;
                }
                Err(e) => {
                    tracing::warn!(trigger = %name, error = %e, "could not enqueue deliveries");
                }
            }
        }
        let free = CONCURRENCY.saturating_sub(attempts.len());
        let claim = if free > 0 && (added > 0 || due.is_some_and(|d| d <= now_ms())) {
            free as u64
        } else {
            0
        };
        // The outcomes and the next claim are one write.
        let ended = std::mem::take(&mut done);
        match store
            .settle_deliveries(&ended, &name, claim, lease_ms)
            .await
        {
            Ok((written, claimed)) => {
                for ((c, outcome), written) in ended.into_iter().zip(written) {
                    settled(&store, &name, c, outcome, written);
                }
                for c in claimed {
                    let (armed, metrics) = (armed.clone(), metrics.clone());
                    attempts.spawn(async move { attempt(&armed, &metrics, c).await });
                }
            }
            Err(e) => {
                // Kept for the next turn (no claim was made meanwhile, so at
                // most CONCURRENCY wait): written while its lease holds, the
                // attempt counts; once it ran out, the delivery is attempted
                // again (at least once).
                tracing::warn!(trigger = %name, error = %e, outcomes = ended.len(), "could not record attempts; trying again");
                done = ended;
            }
        }
        let mut wait = if behind { Duration::ZERO } else { POLL };
        match store.pending_deliveries(&name).await {
            Ok((next, oldest)) => {
                let now = now_ms();
                let age = oldest.map_or(0, |o| (now - o).max(0));
                metrics.queue_age(&name, age as f64 / 1000.0);
                // Deliveries being attempted here end in `attempts`; one
                // leased elsewhere is looked at again within `POLL`.
                due = next;
                if let Some(next) = next
                    && attempts.len() < CONCURRENCY
                {
                    wait = wait.min(Duration::from_millis((next - now).max(10) as u64));
                }
            }
            Err(e) => {
                due = Some(0);
                tracing::warn!(trigger = %name, error = %e, "could not read the queue");
            }
        }
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                Some(ended) = attempts.join_next(), if !attempts.is_empty() => {
                    done.extend(ended.ok());
                    break;
                }
                heard = bus.recv() => match heard {
                    Ok(change) if armed.trigger.matches(&change.collection, change.action.as_str()) => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        // The store is closing: poll until the task is aborted.
                        (&mut sleep).await;
                        break;
                    }
                },
            }
        }
    }
}

/// One attempt of a claimed delivery, and how it ended; a client span when
/// traces are exported (never with the URL, which may hold credentials).
async fn attempt(armed: &Armed, metrics: &TriggerMetrics, c: Claimed) -> (Claimed, Outcome) {
    use tracing::Instrument;
    let span = tracing::info_span!(
        target: crate::telemetry::TARGET,
        "webhook",
        otel.name = format!("webhook {}", armed.trigger.name),
        otel.kind = "client",
        livegate.trigger = %armed.trigger.name,
        livegate.delivery.attempt = c.attempt,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    attempt_once(armed, metrics, c).instrument(span).await
}

async fn attempt_once(armed: &Armed, metrics: &TriggerMetrics, c: Claimed) -> (Claimed, Outcome) {
    let t = &armed.trigger;
    // Stable across attempts (and instances): receivers drop duplicates by it.
    let id = format!("evt_{}_{}", c.seq, t.name);
    let timestamp = chrono::Utc::now().timestamp();
    let answer = match armed.signer.sign(&id, timestamp, c.body.as_bytes()) {
        Ok(signature) => {
            let mut req = armed
                .client
                .post(&armed.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(standardwebhooks::HEADER_WEBHOOK_ID, &id)
                .header(
                    standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                    timestamp.to_string(),
                )
                .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature);
            for (h, v) in &t.headers {
                req = req.header(h, v);
            }
            match req.body(c.body.clone()).send().await {
                Ok(resp) if resp.status().is_success() => Ok(resp.status().as_u16()),
                Ok(resp) => Err((
                    Some(resp.status().as_u16()),
                    format!("the endpoint answered {}", resp.status()),
                )),
                Err(e) if e.is_timeout() => {
                    Err((None, format!("no answer within {} ms", t.timeout_ms)))
                }
                // Without the URL: it may hold credentials.
                Err(e) => Err((None, format!("request failed: {}", e.without_url()))),
            }
        }
        Err(e) => Err((None, format!("cannot sign: {e}"))),
    };
    let span = tracing::Span::current();
    match &answer {
        Ok(status) | Err((Some(status), _)) => {
            span.record("http.response.status_code", status);
        }
        Err((None, _)) => {}
    }
    span.record(
        "otel.status_code",
        if answer.is_ok() { "OK" } else { "ERROR" },
    );
    let (outcome, label) = match answer {
        Ok(status) => (
            Outcome::Delivered {
                status: i32::from(status),
            },
            "delivered",
        ),
        Err((status, error)) if c.attempt >= t.max_attempts as i32 => (
            Outcome::Failed {
                status: status.map(i32::from),
                error,
            },
            "failed",
        ),
        Err((status, error)) => (
            Outcome::Retry {
                at_ms: now_ms() + backoff(c.attempt).as_millis() as i64,
                status: status.map(i32::from),
                error,
            },
            "retried",
        ),
    };
    metrics.attempt(&t.name, label);
    (c, outcome)
}

/// What follows an attempt's outcome: written (`true`), or found stale (the
/// delivery changed hands during the attempt).
fn settled(store: &Store, trigger: &str, c: Claimed, outcome: Outcome, written: bool) {
    if !written {
        tracing::info!(trigger, delivery = %c.id, "a delivery changed hands during its attempt (lease ran out, or redelivered)");
        return;
    }
    if let Outcome::Failed { error, status } = &outcome {
        tracing::warn!(trigger, delivery = %c.id, attempts = c.attempt, %error, "a delivery failed for good");
        store.emit(
            &c.account_id,
            "trigger.failed",
            None,
            serde_json::json!({
                "trigger": trigger, "delivery": c.id, "cursor": c.seq.to_string(),
                "attempts": c.attempt, "lastStatusCode": status, "lastError": error,
            }),
        );
    }
}

/// A change as a webhook body (API.md §9): `record` and `previous` as the
/// GraphQL API shows rows (`ownerId`, `createdAt`, fields by their GraphQL
/// names).
fn webhook_body(trigger: &str, catalog: &crate::catalog::Catalog, change: &Change) -> String {
    let row = |r: &crate::values::Row| {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), Json::String(r.id.clone()));
        m.insert(
            "ownerId".into(),
            r.owner_id.clone().map_or(Json::Null, Json::String),
        );
        m.insert("accountId".into(), Json::String(r.account_id.clone()));
        m.insert(
            "createdAt".into(),
            Json::String(crate::values::format_datetime(&r.created_at)),
        );
        m.insert(
            "updatedAt".into(),
            Json::String(crate::values::format_datetime(&r.updated_at)),
        );
        let coll = catalog.collection(&change.collection);
        for (key, value) in &r.data {
            let name = coll
                .and_then(|c| c.field(key))
                .map_or_else(|| key.clone(), |f| f.gql_name.clone());
            m.insert(name, value.clone());
        }
        Json::Object(m)
    };
    serde_json::json!({
        "trigger": trigger,
        "collection": change.collection,
        "action": change.action.as_str(),
        "account": change.record.account_id,
        "at": crate::values::format_datetime(&change.at),
        "cursor": change.seq.to_string(),
        "record": row(&change.record),
        "previous": change.previous.as_ref().map(row),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(1000), MAX_BACKOFF);
        assert_eq!(backoff(0), Duration::from_secs(1));
    }
}
