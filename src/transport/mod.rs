//! Transports: bytes and protocols in, GraphQL requests to the schema, responses
//! out. Each transport resolves the viewer and hands the schema a request; none of
//! them decides access. [`playground`] serves the embedded playground page,
//! which talks to the others like any client.

pub(crate) mod accept;
pub mod feed;
pub mod http;
pub mod operation;
pub mod playground;
pub mod slots;
pub mod sse;
pub mod ws;

/// The tokio instant at which a token that expires at `at` does.
pub(crate) fn expiry_instant(at: chrono::DateTime<chrono::Utc>) -> tokio::time::Instant {
    let left = (at - chrono::Utc::now())
        .to_std()
        .unwrap_or(std::time::Duration::ZERO);
    tokio::time::Instant::now() + left
}
