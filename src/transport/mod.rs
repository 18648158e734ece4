//! Transports: bytes and protocols in, GraphQL requests to the schema, responses
//! out. Each transport resolves the viewer and hands the schema a request; none of
//! them decides access. [`playground`] serves the embedded playground page,
//! which talks to the others like any client.

pub mod feed;
pub mod http;
pub mod operation;
pub mod playground;
pub mod sse;
pub mod ws;

/// The tokio instant at which a token that expires at `at` does.
pub(crate) fn expiry_instant(at: chrono::DateTime<chrono::Utc>) -> tokio::time::Instant {
    let left = (at - chrono::Utc::now())
        .to_std()
        .unwrap_or(std::time::Duration::ZERO);
    tokio::time::Instant::now() + left
}

/// Where long-lived realtime connections run: a runtime of their own, beside the
/// one that serves requests.
///
/// An event for 10,000 subscribers wakes 10,000 connection tasks at once. On one
/// runtime they queue ahead of everything woken after them, so a mutation (whose
/// every await wakes it from the database's thread into that queue) waited for
/// whole fan-outs: 160 ms per write instead of 3 ms, and every event then fanned
/// out on its own instead of several per wake-up. On a runtime of their own the
/// operating system shares the cores between requests and deliveries, and a write
/// never waits behind a fan-out. Created on first use and kept for the life of the
/// process (it has as many workers as the request runtime: the usable cores).
pub(crate) fn delivery() -> tokio::runtime::Handle {
    static DELIVERY: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    let runtime = DELIVERY.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("livegate-delivery")
            .enable_all()
            .build()
            .inspect_err(|e| {
                tracing::warn!(error = %e, "no runtime for realtime connections; they share the request runtime")
            })
            .ok()
    });
    match runtime {
        Some(r) => r.handle().clone(),
        None => tokio::runtime::Handle::current(),
    }
}
