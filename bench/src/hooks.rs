//! A webhook receiver for trigger benchmarks (`--webhook-port`): answers every
//! POST with 204 at once, counts the calls and how long after its change's
//! commit (`at` in the body) each one arrived.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(Default)]
struct Seen {
    calls: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Milliseconds from the change's commit to the call's arrival.
    delay: Vec<f64>,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    /// Listens on 127.0.0.1:`port`.
    pub async fn start(port: u16) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let seen = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let now = Instant::now();
                            let delay = body
                                .ok()
                                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                                .and_then(|v| v["at"].as_str().map(str::to_string))
                                .and_then(|at| chrono_ms(&at))
                                .map(|at_ms| (wall_ms() - at_ms).max(0.0));
                            if let Ok(mut s) = seen.lock() {
                                s.calls += 1;
                                s.first.get_or_insert(now);
                                s.last = Some(now);
                                if let Some(d) = delay {
                                    s.delay.push(d);
                                }
                            }
                            hyper::Response::builder()
                                .status(204)
                                .body(http_body_util::Empty::<bytes::Bytes>::new())
                        }
                    });
                    http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await
                        .ok();
                });
            }
        });
        Ok(Receiver { seen })
    }

    fn calls(&self) -> u64 {
        self.seen.lock().map(|s| s.calls).unwrap_or(0)
    }

    /// Waits until no call came for two seconds (at most `within`), then
    /// sums up: calls, calls per second from the first to the last, delay.
    pub async fn settle(&self, within: Duration) -> Value {
        let until = Instant::now() + within;
        let mut last = self.calls();
        let mut quiet_since = Instant::now();
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.calls();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let Ok(s) = self.seen.lock() else {
            return json!(null);
        };
        let span = match (s.first, s.last) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        let mut d = s.delay.clone();
        d.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if d.is_empty() {
                0.0
            } else {
                d[((d.len() - 1) as f64 * p).round() as usize]
            }
        };
        json!({
            "calls": s.calls,
            "calls_per_s": if span > 0.0 { s.calls as f64 / span } else { 0.0 },
            "delay_ms": { "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0) },
        })
    }
}

fn wall_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Milliseconds since the epoch of an RFC 3339 UTC time such as
/// `2026-12-07T20:19:00.123456Z` (all livegate writes).
fn chrono_ms(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    Some(secs as f64 * 1000.0 + frac * 1000.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_to_ms() {
        assert_eq!(super::chrono_ms("1970-01-01T00:00:01.5Z"), Some(1500.0));
        assert_eq!(
            super::chrono_ms("2026-12-07T20:19:00Z"),
            Some(1_796_674_740_000.0)
        );
    }
}
