//! Caps on concurrent realtime connections: WebSockets, SSE streams and
//! `/realtime` feeds each hold a [`Slot`] while open. Past a cap a new one is
//! refused before any work is done for it, with HTTP 503 `RATE_LIMITED` and a
//! `Retry-After` (WebSocket upgrades too: refused in HTTP, before the upgrade, so
//! every client library reports a failed connection it may retry).
//!
//! The total cap keeps the process below its open-file limit: a process out of
//! descriptors cannot accept anything, `/healthz` and plain queries included.
//! The per-address cap keeps one client from taking every slot; it counts the
//! socket's peer address, which behind a proxy is the proxy's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::http::{Media, bad_request};
use crate::metrics::Metrics;

/// Seconds a refused client is asked to wait.
const RETRY_AFTER_SECONDS: &str = "5";

/// Descriptors kept for everything that is not a realtime connection: the
/// listener, the database pool, plain HTTP requests, logs.
fn reserved(fd_limit: u64) -> u64 {
    (fd_limit / 10).clamp(64, 512)
}

/// The default total cap: the open-file limit less what the rest of the
/// process needs (see [`reserved`]); 20,000 where the limit cannot be read.
pub fn default_max_connections() -> usize {
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, _)) if soft != rlimit::INFINITY => {
            usize::try_from(soft.saturating_sub(reserved(soft)).max(32)).unwrap_or(usize::MAX)
        }
        Ok(_) => 0,
        Err(_) => 20_000,
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Open realtime connections, counted against the caps.
pub struct Slots {
    /// At most this many in all (0: no cap).
    max_total: usize,
    /// At most this many from one address (0: no cap).
    max_per_address: usize,
    counts: Mutex<Counts>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server holds `--max-connections` already.
    Total,
    /// This address holds `--max-connections-per-ip` already.
    PerAddress,
}

impl Refused {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerAddress => "per_address",
        }
    }

    /// The 503 a refused client gets.
    pub fn into_response(self) -> Response {
        let message = match self {
            Refused::Total => "Too many open connections to this server: try again later",
            Refused::PerAddress => {
                "Too many open connections from your address: close one, or try again later"
            }
        };
        let mut resp = bad_request(
            Media::Json,
            StatusCode::SERVICE_UNAVAILABLE,
            "RATE_LIMITED",
            message,
        );
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
        resp
    }
}

/// One open connection's place; freed when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    address: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_address.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.by_address.remove(&self.address);
            }
        }
    }
}

impl Slots {
    /// Caps of `max_total` connections, `max_per_address` from one address (0: none).
    pub fn new(max_total: usize, max_per_address: usize) -> Slots {
        Slots {
            max_total,
            max_per_address,
            counts: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Plain counters: nothing is left half-done by a panic.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `address`, or why not.
    pub fn acquire(self: &Arc<Self>, address: IpAddr) -> Result<Slot, Refused> {
        let address = crate::auth::address_key(address);
        let mut counts = self.lock();
        if self.max_total > 0 && counts.total >= self.max_total {
            return Err(Refused::Total);
        }
        let mine = counts.by_address.get(&address).copied().unwrap_or(0);
        if self.max_per_address > 0 && mine >= self.max_per_address {
            return Err(Refused::PerAddress);
        }
        counts.total += 1;
        counts.by_address.insert(address, mine + 1);
        Ok(Slot {
            slots: self.clone(),
            address,
        })
    }

    /// Like [`Slots::acquire`], counting a refusal in `metrics` and answering it.
    // The refusal is the response itself, built at most once per request.
    #[allow(clippy::result_large_err)]
    pub fn admit(self: &Arc<Self>, address: IpAddr, metrics: &Metrics) -> Result<Slot, Response> {
        self.acquire(address).map_err(|refused| {
            metrics.refused(refused.reason());
            tracing::debug!(%address, reason = refused.reason(), "realtime connection refused");
            refused.into_response()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_slots_free_on_drop() {
        let slots = Arc::new(Slots::new(3, 2));
        let (a, b): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        let a1 = slots.acquire(a).expect("first");
        let _a2 = slots.acquire(a).expect("second");
        assert_eq!(slots.acquire(a).err(), Some(Refused::PerAddress));
        let _b1 = slots.acquire(b).expect("another address");
        assert_eq!(slots.acquire(b).err(), Some(Refused::Total));
        drop(a1);
        let _a3 = slots.acquire(a).expect("a freed slot is reused");
        let unlimited = Arc::new(Slots::new(0, 0));
        let held: Vec<Slot> = (0..100)
            .map(|_| unlimited.acquire(a).expect("no cap"))
            .collect();
        drop(held);
        assert!(
            unlimited.lock().by_address.is_empty(),
            "no entry is left behind"
        );
    }

    #[test]
    fn the_default_leaves_descriptors_for_the_rest() {
        assert_eq!(reserved(1024), 102);
        assert_eq!(reserved(20_000), 512);
        assert_eq!(reserved(100), 64);
    }
}
