//! A WebSocket connection's outgoing frames, sendable from any task.
//!
//! The connection's own task sends its protocol frames here, and a subscription
//! group's dispatcher (see `realtime::fanout`) sends result frames straight
//! to every member's socket, without waking the member's task: at a fan-out of
//! one event to a thousand connections, that wake-up chain cost as much as the
//! rest of the delivery outside the kernel.
//!
//! A frame leaves at once when the socket takes it. When it does not, frames
//! queue in order and the connection's task (woken by [`Outbox::poll_signal`]
//! when the socket drains) sends them on; a queue of more than `limit` frames,
//! or of more than `max_bytes` bytes, raises the connection's [`Overflow`] (it
//! closes with 1013 and the client resumes from its last cursor) and drops what
//! waits, so a reader that stalls costs bounded memory and never holds up
//! anyone else. Each frame is a copy of its own (the group's payload behind this
//! operation's prefix), so the bytes are what the connection really holds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use futures_util::task::AtomicWaker;

use super::protocol::{Proto, next_frame};
use crate::realtime::Overflow;
use crate::realtime::fanout::DirectOut;
use prometheus_client::metrics::counter::Counter;

/// How a drain left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Everything queued left and was flushed.
    Idle,
    /// Frames wait for the socket; the signal fires when it takes more.
    Busy,
    /// The socket failed: the connection is gone.
    Broken,
}

struct State {
    sink: SplitSink<WebSocket, Message>,
    queue: VecDeque<Message>,
    /// Bytes of the frames in `queue`.
    queued_bytes: usize,
    broken: bool,
}

/// The bytes a frame holds while it waits.
fn size(msg: &Message) -> usize {
    match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) => 0,
    }
}

/// Wakes the connection's task when its socket can take more (or a frame it
/// must see was queued).
#[derive(Default)]
struct Signal {
    task: AtomicWaker,
    raised: AtomicBool,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raised.store(true, Ordering::SeqCst);
        self.task.wake();
    }
}

pub struct Outbox {
    state: Mutex<State>,
    signal: Arc<Signal>,
    /// Hands socket readiness to [`Signal`], whoever polled the sink.
    waker: Waker,
    proto: Proto,
    overflow: Arc<Overflow>,
    limit: usize,
    /// Bytes that may wait (one frame always may, however large).
    max_bytes: usize,
    /// Deliveries, for `/metrics`.
    deliveries: Counter,
}

impl Outbox {
    pub fn new(
        sink: SplitSink<WebSocket, Message>,
        proto: Proto,
        overflow: Arc<Overflow>,
        limit: usize,
        max_bytes: usize,
        deliveries: Counter,
    ) -> Self {
        let signal = Arc::new(Signal::default());
        Outbox {
            state: Mutex::new(State {
                sink,
                queue: VecDeque::new(),
                queued_bytes: 0,
                broken: false,
            }),
            waker: Waker::from(signal.clone()),
            signal,
            proto,
            overflow,
            limit: limit.max(1),
            max_bytes,
            deliveries,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while sending leaves nothing half-done that matters here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `msg` now if the socket takes it, else queues it; false once the
    /// connection is broken.
    pub fn push(&self, msg: Message) -> bool {
        let mut state = self.lock();
        self.push_locked(&mut state, msg) && self.flush_locked(&mut state)
    }

    /// Hands `msg` to the socket if it is ready (to leave on the next flush),
    /// else queues it; false once the connection is broken.
    fn push_locked(&self, state: &mut State, msg: Message) -> bool {
        if state.broken {
            return false;
        }
        if !state.queue.is_empty() {
            state.queued_bytes += size(&msg);
            state.queue.push_back(msg);
            return true;
        }
        let mut cx = Context::from_waker(&self.waker);
        match state.sink.poll_ready_unpin(&mut cx) {
            Poll::Ready(Ok(())) => {
                if state.sink.start_send_unpin(msg).is_err() {
                    return self.broke(state);
                }
                true
            }
            Poll::Ready(Err(_)) => self.broke(state),
            Poll::Pending => {
                state.queued_bytes += size(&msg);
                state.queue.push_back(msg);
                true
            }
        }
    }

    /// Writes out what the socket was handed; false once it is broken.
    fn flush_locked(&self, state: &mut State) -> bool {
        let mut cx = Context::from_waker(&self.waker);
        match state.sink.poll_flush_unpin(&mut cx) {
            Poll::Ready(Err(_)) => self.broke(state),
            _ => true,
        }
    }

    fn broke(&self, state: &mut State) -> bool {
        state.broken = true;
        self.signal.task.wake();
        false
    }

    /// Sends queued frames as far as the socket takes them, and flushes.
    pub fn drain(&self) -> Drained {
        let mut state = self.lock();
        if state.broken {
            return Drained::Broken;
        }
        let mut cx = Context::from_waker(&self.waker);
        let drained = loop {
            if state.queue.is_empty() {
                break match state.sink.poll_flush_unpin(&mut cx) {
                    Poll::Ready(Ok(())) => Drained::Idle,
                    Poll::Pending => Drained::Busy,
                    Poll::Ready(Err(_)) => Drained::Broken,
                };
            }
            match state.sink.poll_ready_unpin(&mut cx) {
                Poll::Ready(Ok(())) => {
                    if let Some(msg) = state.queue.pop_front() {
                        state.queued_bytes -= size(&msg);
                        if state.sink.start_send_unpin(msg).is_err() {
                            break Drained::Broken;
                        }
                    }
                }
                Poll::Pending => break Drained::Busy,
                Poll::Ready(Err(_)) => break Drained::Broken,
            }
        };
        if drained == Drained::Broken {
            state.broken = true;
        }
        drained
    }

    /// Drops every frame still waiting: the connection is closing because it
    /// fell behind, its client resumes from the last cursor it got, and its
    /// close frame should not wait behind (nor its memory stay held by) results
    /// the client will fetch again.
    pub fn discard_queued(&self) {
        let mut state = self.lock();
        state.queue = VecDeque::new();
        state.queued_bytes = 0;
    }

    /// Ready when the socket may take more since the last time it was.
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.signal.task.register(cx.waker());
        if self.signal.raised.swap(false, Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Sends everything queued, waiting for the socket; false if it broke.
    pub async fn settle(&self) -> bool {
        std::future::poll_fn(|cx| {
            loop {
                match self.drain() {
                    Drained::Idle => return Poll::Ready(true),
                    Drained::Broken => return Poll::Ready(false),
                    Drained::Busy => {
                        if self.poll_signal(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                }
            }
        })
        .await
    }

    /// Completes the closing handshake the client started.
    pub async fn close(&self) {
        std::future::poll_fn(|cx| {
            loop {
                let mut state = self.lock();
                let mut wake = Context::from_waker(&self.waker);
                if state.sink.poll_close_unpin(&mut wake).is_ready() {
                    return Poll::Ready(());
                }
                drop(state);
                if self.poll_signal(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await
    }
}

impl DirectOut for Outbox {
    fn next(&self, id: &str, active: &AtomicBool, results: &[(i64, &Arc<str>)]) {
        if self.overflow.is_raised() {
            // Nothing more: the client resumes from the last cursor it got.
            return;
        }
        // A cursor travels in the payload (the selection's `cursor`).
        let texts: Vec<String> = results
            .iter()
            .map(|(_, p)| next_frame(self.proto, id, p))
            .collect();
        let mut state = self.lock();
        if !active.load(Ordering::SeqCst) {
            return;
        }
        for text in texts {
            let over = state.queue.len() >= self.limit
                || (!state.queue.is_empty() && state.queued_bytes + text.len() > self.max_bytes);
            if over {
                // What waits is of no use to a client that will resume: free it now.
                state.queue = VecDeque::new();
                state.queued_bytes = 0;
                drop(state);
                self.overflow.raise();
                return;
            }
            if !self.push_locked(&mut state, Message::Text(text.into())) {
                return;
            }
            self.deliveries.inc();
        }
        self.flush_locked(&mut state);
    }

    fn retire(&self, active: &AtomicBool) {
        let _state = self.lock();
        active.store(false, Ordering::SeqCst);
    }
}
