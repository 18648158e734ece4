//! Realtime feeds: a viewer's stream of committed changes, replayed from a cursor
//! and then live, filtered by account, collection, action, access and `where`.
//! Transports turn these streams into protocol messages; they never filter.
//!
//! The stream subscribes to the bus *before* it replays the log (up to the seq
//! published then), and skips live events at or below it: no gap, no duplicate
//! (see `store::events`). A subscriber that lags behind the bus's bounded ring raises
//! its connection's [`Overflow`] and ends; the transport closes (WebSocket 1013,
//! SSE end of stream) and the client resumes from its last cursor.

pub mod fanout;
pub mod rooms;

pub use fanout::{Live, Pinned};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{Stream, StreamExt};
use tokio::sync::{Notify, broadcast};

use crate::access::{Viewer, may_read_row};
use crate::catalog::{Catalog, Collection, Hints};
use crate::store::{Action, Change, Filter, Store, StoreError};

/// Default of the bytes of results one realtime connection may have waiting
/// for a client that does not read (`--max-buffer-bytes`): 4 MiB holds four
/// records of the largest default size (`--max-record-bytes`, 1 MiB), so a
/// healthy client that pauses through a burst of large rows keeps its
/// connection, and thousands of small results; yet 100 stalled readers hold at
/// most about 400 MiB, where each used to keep a copy of every frame written
/// while it stalled.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Events replayed per log query.
const REPLAY_BATCH: u64 = 500;

/// Raised by a feed that fell behind; the connection that carries it must close so
/// that the client resumes from its cursor.
#[derive(Debug, Default)]
pub struct Overflow {
    raised: AtomicBool,
    notify: Notify,
}

impl Overflow {
    /// Marks the connection as overflowed and wakes whoever waits on it.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether a feed on this connection overflowed.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Resolves once a feed overflows.
    pub async fn raised(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

/// Why a feed could not start or go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// The cursor is older than the kept history.
    CursorExpired,
    /// The cursor is not one this server issued.
    BadCursor(String),
    /// The subscriber fell behind the bus.
    Overflow,
    /// A store failure (already logged).
    Internal,
}

impl From<StoreError> for FeedError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "feed failed");
        FeedError::Internal
    }
}

/// What a feed selects.
#[derive(Clone)]
pub enum Selection {
    /// `<type>Changed`: one collection's changes, optionally only some actions and
    /// rows matching `filter` before or after the change.
    Changed {
        collection: Arc<Collection>,
        actions: Option<Vec<Action>>,
        filter: Option<Filter>,
    },
    /// `changes`: detail-free hints for these collections (all when `None`).
    Changes { collections: Option<Vec<String>> },
}

/// Parses a cursor (`after`, `Last-Event-ID`).
pub fn parse_cursor(cursor: &str) -> Result<i64, FeedError> {
    cursor
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            FeedError::BadCursor(format!("\"{cursor}\" is not a cursor this server issued"))
        })
}

/// Whether `viewer` may see change `ch` through `selection`.
pub fn visible(catalog: &Catalog, viewer: &Viewer, selection: &Selection, ch: &Change) -> bool {
    if ch.record.account_id != viewer.account_id {
        return false;
    }
    let Some(c) = catalog.collection(&ch.collection) else {
        return false;
    };
    // A delete is seen by those who could read the row before it went.
    let row = if ch.action == Action::Delete {
        ch.previous.as_ref().unwrap_or(&ch.record)
    } else {
        &ch.record
    };
    let readable = may_read_row(viewer, c.read, row.owner_id.as_deref());
    match selection {
        Selection::Changed {
            collection,
            actions,
            filter,
        } => {
            collection.key == ch.collection
                && actions.as_ref().is_none_or(|a| a.contains(&ch.action))
                && readable
                && filter.as_ref().is_none_or(|f| {
                    f.matches(c, &ch.record)
                        || ch.previous.as_ref().is_some_and(|p| f.matches(c, p))
                })
        }
        Selection::Changes { collections } => {
            collections
                .as_ref()
                .is_none_or(|keys| keys.contains(&ch.collection))
                && (readable || (c.hints == Hints::All && viewer.user_id.is_some()))
        }
    }
}

/// The collections a selection replays from the log (to narrow the query).
fn replay_keys(selection: &Selection) -> Option<Vec<String>> {
    match selection {
        Selection::Changed { collection, .. } => Some(vec![collection.key.clone()]),
        Selection::Changes { collections } => collections.clone(),
    }
}

/// The viewer's changes after `after` up to `through` from the log (cursor checked
/// against what the log keeps), then nothing more.
pub fn replay(
    store: Store,
    catalog: Arc<Catalog>,
    viewer: Viewer,
    selection: Selection,
    after: i64,
    through: i64,
) -> impl Stream<Item = Result<Arc<Change>, FeedError>> + Send + 'static {
    async_stream::stream! {
        let bounds = match store.log_bounds().await {
            Ok(b) => b,
            Err(e) => { yield Err(e.into()); return; }
        };
        if after < bounds.pruned_through {
            yield Err(FeedError::CursorExpired);
            return;
        }
        if after > bounds.newest {
            yield Err(FeedError::BadCursor(format!("\"{after}\" is newer than any event")));
            return;
        }
        let keys = replay_keys(&selection);
        let mut last = after;
        while last < through {
            let batch = match store.replay(&viewer.account_id, keys.as_deref(), last, REPLAY_BATCH).await {
                Ok(b) => b,
                Err(e) => { yield Err(e.into()); return; }
            };
            if batch.is_empty() {
                break;
            }
            for ch in batch {
                if ch.seq > through {
                    return;
                }
                last = ch.seq;
                if visible(&catalog, &viewer, &selection, &ch) {
                    yield Ok(Arc::new(ch));
                }
            }
        }
    }
}

/// The viewer's feed: events after `after` from the log, then live events.
/// Subscribes to the bus before anything else, so call it when the subscription
/// starts.
pub fn feed(
    store: Store,
    catalog: Arc<Catalog>,
    viewer: Viewer,
    selection: Selection,
    after: Option<i64>,
    overflow: Option<Arc<Overflow>>,
) -> impl Stream<Item = Result<Arc<Change>, FeedError>> + Send + 'static {
    let mut rx = store.subscribe();
    // Read after subscribing: the bus has every change past it. The log may
    // already hold later events, but they are not published yet, and one below
    // them may still be committing: replaying them would skip it.
    let through = store.published_seq();
    async_stream::stream! {
        let mut last = 0i64;
        if let Some(after) = after {
            last = after;
            let mut replayed = Box::pin(replay(
                store.clone(),
                catalog.clone(),
                viewer.clone(),
                selection.clone(),
                after,
                through,
            ));
            while let Some(item) = replayed.next().await {
                match item {
                    Ok(ch) => {
                        last = ch.seq;
                        yield Ok(ch);
                    }
                    Err(e) => { yield Err(e); return; }
                }
            }
            last = last.max(through);
        }
        loop {
            match rx.recv().await {
                Ok(ch) => {
                    if ch.seq <= last {
                        continue;
                    }
                    last = ch.seq;
                    if visible(&catalog, &viewer, &selection, &ch) {
                        yield Ok(ch);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "a subscriber fell behind; closing its connection so it resumes");
                    if let Some(o) = &overflow {
                        o.raise();
                    }
                    yield Err(FeedError::Overflow);
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
