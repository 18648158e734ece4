//! An event stream's results from subscription groups.
//!
//! As on WebSocket (see `transport::ws::outbox`), a live subscription on a
//! stream of its own (distinct connections mode) is delivered to by its group's
//! dispatcher: the dispatcher renders each change once and leaves the `next`
//! event here, waking the stream's task once for however many it left, instead
//! of every subscriber's task receiving the change from the bus, checking it
//! and rendering it on its own. The stream takes what waits when it is polled
//! and turns it into events then; what waits is the group's shared payload.
//!
//! More than `limit` results waiting (the client stopped reading, so the stream
//! is not polled), or more than `max_bytes` of them, raise the stream's
//! [`Overflow`]: it ends, and the client resumes from the last `id` it got, as
//! when a subscriber falls behind the bus. A result's bytes count from when it
//! is left here until the stream has written it out (see [`SseOut::written`]),
//! since the stream takes everything waiting at once and then yields it event
//! by event to a client that may not read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use prometheus_client::metrics::counter::Counter;

use crate::realtime::Overflow;
use crate::realtime::fanout::DirectOut;

/// A change's cursor and its rendered payload, shared with the group.
pub type Queued = (i64, Arc<str>);

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Bytes of results left here and not yet written out by the stream.
    pending_bytes: usize,
    waker: Option<Waker>,
}

pub struct SseOut {
    state: Mutex<State>,
    overflow: Arc<Overflow>,
    limit: usize,
    /// Bytes that may be pending (one result always may, however large).
    max_bytes: usize,
    /// Deliveries, for `/metrics`.
    deliveries: Counter,
}

impl SseOut {
    pub fn new(
        overflow: Arc<Overflow>,
        limit: usize,
        max_bytes: usize,
        deliveries: Counter,
    ) -> Self {
        SseOut {
            state: Mutex::default(),
            overflow,
            limit: limit.max(1),
            max_bytes,
            deliveries,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing is left half-done under this lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every result waiting, in order; when none waits, the task is woken once
    /// some does.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> Poll<VecDeque<Queued>> {
        let mut state = self.lock();
        if !state.queue.is_empty() {
            return Poll::Ready(std::mem::take(&mut state.queue));
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The stream wrote out a taken result of `bytes`.
    pub fn written(&self, bytes: usize) {
        let mut state = self.lock();
        state.pending_bytes = state.pending_bytes.saturating_sub(bytes);
    }
}

impl DirectOut for SseOut {
    fn next(&self, _id: &str, active: &AtomicBool, results: &[(i64, &Arc<str>)]) {
        if self.overflow.is_raised() {
            // Nothing more: the client resumes from the last id it got.
            return;
        }
        let waker = {
            let mut state = self.lock();
            if !active.load(Ordering::SeqCst) {
                return;
            }
            let bytes: usize = results.iter().map(|(_, p)| p.len()).sum();
            let alone = state.pending_bytes == 0 && results.len() == 1;
            let over = state.queue.len() + results.len() > self.limit
                || (!alone && state.pending_bytes + bytes > self.max_bytes);
            if over {
                // Of no use to a client that will resume: free it now.
                state.queue = VecDeque::new();
                state.pending_bytes = 0;
                drop(state);
                self.overflow.raise();
                return;
            }
            state.pending_bytes += bytes;
            self.deliveries.inc_by(results.len() as u64);
            state
                .queue
                .extend(results.iter().map(|(c, p)| (*c, Arc::clone(p))));
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn retire(&self, active: &AtomicBool) {
        let _state = self.lock();
        active.store(false, Ordering::SeqCst);
    }
}
