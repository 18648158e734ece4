//! Live queries (API.md §8): a query kept up to date for as long as a client
//! holds it, on one instance, from the changes on its bus (which, on
//! PostgreSQL, are every instance's: the shared log).
//!
//! Live queries with the same document, variables, account and viewer (the
//! same user and role, or any anonymous viewer: what decides which rows they
//! see) form one *cohort*. A cohort is one task: it runs the query as its
//! viewer, notes which collections the run read (lists, single rows, counts,
//! refs: see `graphql::live::Reads`), and waits for a committed change to one
//! of them in its account. Then it runs the query again, at most once per
//! `throttle` and never twice at once (changes that arrive meanwhile make one
//! more run, however many they are), and publishes the result only when it
//! differs from the last one. The cost of a change is a lookup by account and
//! collection and one run per cohort that reads it, whatever the number of
//! viewers; a change to a collection a cohort does not read costs it nothing.
//!
//! A result is published as a [`Snapshot`]: its data serialized once, and a
//! JSON Patch (RFC 6902) against the previous one computed once. Each member
//! (one client's live query) watches the cohort's latest snapshot, so a slow
//! member skips to the newest result instead of queueing them, and numbers
//! its own results from 1 (a member that joins late gets the current result
//! as its first); a member that skipped one gets a patch against the result
//! it last had.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value as Json;
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

use crate::metrics::LiveMetrics;
use crate::realtime::fanout::GroupKey;
use crate::store::Store;

/// One run of a live query: its result, or the errors of a request that
/// cannot run (it fails the same way every time: its members are told and
/// the cohort ends).
pub type RunResult = Result<Run, Vec<Json>>;

/// A live query's result and what it read.
pub struct Run {
    /// `data`.
    pub data: Json,
    /// `errors`, coded, when there are any.
    pub errors: Option<Json>,
    /// The collections read (their app-file keys).
    pub reads: BTreeSet<String>,
}

/// Runs a cohort's query (as its viewer).
pub type Runner = Box<dyn Fn() -> BoxFuture<'static, RunResult> + Send + Sync>;

/// The latest state of a cohort.
#[derive(Debug)]
pub enum Snapshot {
    /// The query cannot run (its request errors).
    Failed(Vec<Json>),
    /// A result.
    Result(Published),
}

/// A result as a cohort published it.
#[derive(Debug)]
pub struct Published {
    /// The cohort's count of results, from 1.
    pub revision: u64,
    /// `data`, for patches against it.
    pub data: Arc<Json>,
    /// `data` serialized.
    pub data_json: Arc<str>,
    /// `errors` serialized, when there are any.
    pub errors_json: Option<Arc<str>>,
    /// The JSON Patch from the previous revision's data to this one's,
    /// serialized (none for the first).
    pub patch_json: Option<Arc<str>>,
}

impl Published {
    /// The payload of this result as a member's `revision`-th: whole, or as a
    /// patch against `previous` (what that member had last).
    pub fn payload(&self, revision: u64, previous: Option<&Published>) -> String {
        let errors = self
            .errors_json
            .as_deref()
            .map(|e| format!(",\"errors\":{e}"))
            .unwrap_or_default();
        let Some(previous) = previous else {
            return format!(
                "{{\"data\":{}{errors},\"revision\":{revision}}}",
                self.data_json
            );
        };
        let patch = match &self.patch_json {
            Some(p) if previous.revision + 1 == self.revision => p.to_string(),
            _ => patch_json(&previous.data, &self.data),
        };
        format!("{{\"patch\":{patch}{errors},\"revision\":{revision}}}")
    }
}

fn patch_json(from: &Json, to: &Json) -> String {
    serde_json::to_string(&json_patch::diff(from, to)).unwrap_or_else(|_| "[]".into())
}

/// A cohort as members find it.
struct Cohort {
    id: u64,
    account_id: String,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    /// Raised by a change to a collection the cohort's last run read.
    dirty: Arc<Notify>,
}

/// Cohort ids by (account, collection) they read.
type Readers = HashMap<(String, String), HashMap<u64, Arc<Notify>>>;

/// The live queries of this instance.
pub struct LiveQueries {
    store: Store,
    cohorts: Mutex<HashMap<Arc<GroupKey>, Arc<Cohort>>>,
    readers: Arc<Mutex<Readers>>,
    next_id: AtomicU64,
    /// The task waking cohorts on changes, started with the first cohort.
    dispatcher: OnceLock<()>,
    metrics: LiveMetrics,
    /// Turns to run a live query, shared by every cohort.
    turns: tokio::sync::Semaphore,
}

/// Live queries of this instance running at once (each holds a database
/// connection while it reads).
pub const RUNS_AT_ONCE: usize = 8;

impl LiveQueries {
    pub fn new(store: Store, metrics: LiveMetrics) -> LiveQueries {
        LiveQueries {
            store,
            cohorts: Mutex::new(HashMap::new()),
            readers: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(1),
            dispatcher: OnceLock::new(),
            metrics,
            turns: tokio::sync::Semaphore::new(RUNS_AT_ONCE),
        }
    }

    /// Joins the cohort of `key` (of `account_id`), starting it with `runner`
    /// (made only when there is none) and `throttle`: the receiver of its
    /// snapshots. Dropping the receiver leaves.
    pub fn join(
        self: &Arc<Self>,
        key: GroupKey,
        account_id: &str,
        throttle: Duration,
        runner: Runner,
    ) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.dispatcher.get_or_init(|| {
            tokio::spawn(dispatch(self.store.subscribe(), self.readers.clone()));
        });
        let mut cohorts = lock(&self.cohorts);
        if let Some(c) = cohorts.get(&key) {
            return c.tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        let cohort = Arc::new(Cohort {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            account_id: account_id.to_owned(),
            tx,
            dirty: Arc::new(Notify::new()),
        });
        let key = Arc::new(key);
        cohorts.insert(key.clone(), cohort.clone());
        drop(cohorts);
        self.metrics.cohorts.inc();
        // From here the cohort is undone when `me` drops: when its task
        // ends, or with the task if it never runs.
        let me = Running {
            live: self.clone(),
            key,
            cohort,
            reads: BTreeSet::new(),
        };
        tokio::spawn(run(me, runner, throttle));
        rx
    }

    /// Moves cohort `c` in the index from `old` reads to `new` ones.
    fn index(&self, c: &Cohort, old: &BTreeSet<String>, new: &BTreeSet<String>) {
        let mut readers = lock(&self.readers);
        for gone in old.difference(new) {
            let at = (c.account_id.clone(), gone.clone());
            if let Some(set) = readers.get_mut(&at) {
                set.remove(&c.id);
                if set.is_empty() {
                    readers.remove(&at);
                }
            }
        }
        for came in new.difference(old) {
            readers
                .entry((c.account_id.clone(), came.clone()))
                .or_default()
                .insert(c.id, c.dirty.clone());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wakes the cohorts that read what changed (all of them when the bus ran
/// ahead of this task: it cannot tell what it missed).
async fn dispatch(
    mut bus: broadcast::Receiver<Arc<crate::store::Change>>,
    readers: Arc<Mutex<Readers>>,
) {
    loop {
        match bus.recv().await {
            Ok(change) => {
                let readers = lock(&readers);
                let at = (change.record.account_id.clone(), change.collection.clone());
                if let Some(set) = readers.get(&at) {
                    set.values().for_each(|dirty| dirty.notify_one());
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let readers = lock(&readers);
                readers
                    .values()
                    .flat_map(|set| set.values())
                    .for_each(|dirty| dirty.notify_one());
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A cohort's bookkeeping, undone when its task ends however it ends (its
/// last member left, its query cannot run, or a run panicked): out of the
/// map (so the next joiner starts afresh; the members it had see their
/// stream end when the sender goes), out of the index, off the gauge.
struct Running {
    live: Arc<LiveQueries>,
    key: Arc<GroupKey>,
    cohort: Arc<Cohort>,
    /// What the last run read.
    reads: BTreeSet<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut cohorts = lock(&self.live.cohorts);
        if cohorts
            .get(&self.key)
            .is_some_and(|c| c.id == self.cohort.id)
        {
            cohorts.remove(&self.key);
        }
        drop(cohorts);
        self.live.index(&self.cohort, &self.reads, &BTreeSet::new());
        self.live.metrics.cohorts.dec();
    }
}

impl Running {
    /// Whether no member is left; if so the cohort leaves the map at once
    /// (members join under the same lock, so none can join it after).
    fn unwatched(&self) -> bool {
        let mut cohorts = lock(&self.live.cohorts);
        if self.cohort.tx.receiver_count() > 0 {
            return false;
        }
        cohorts.remove(&self.key);
        true
    }
}

/// How long after a run that hit an internal error (a database that went
/// away for a moment) it is run again, changes or not; doubled while it
/// keeps failing, up to [`MAX_RETRY`].
const RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A cohort's task: run, publish what changed, wait for a change it read (or
/// for its last member to leave), at most once per `throttle`.
async fn run(mut me: Running, runner: Runner, throttle: Duration) {
    let (live, cohort) = (me.live.clone(), me.cohort.clone());
    let mut last: Option<Arc<Snapshot>> = None;
    let mut revision = 0u64;
    let mut retry_after = RETRY;
    loop {
        let started = Instant::now();
        let seq_before = live.store.published_seq();
        let result = {
            // Runs of every cohort share a bounded number of turns: a burst
            // of changes read by many cohorts queues here, not on the pool.
            let _turn = live.turns.acquire().await;
            // This run sees every change published so far: a wake-up they
            // left (while this cohort waited for its turn or its throttle)
            // would only run it again for the same result.
            let _ = cohort.dirty.notified().now_or_never();
            live.metrics.runs.inc();
            runner().await
        };
        let retry;
        let run = match result {
            Ok(run) => {
                retry = run.errors.as_ref().is_some_and(has_internal);
                if retry && good(last.as_deref()) {
                    // A passing failure: keep the good result, try again.
                    tracing::warn!(errors = ?run.errors, "a live query hit an internal error; its last result stands");
                    Run {
                        data: Json::Null,
                        errors: None,
                        reads: me.reads.clone(),
                    }
                } else {
                    run
                }
            }
            Err(errors) if revision == 0 => {
                // Its members end; the next joiner starts afresh.
                cohort
                    .tx
                    .send_replace(Some(Arc::new(Snapshot::Failed(errors))));
                return;
            }
            // A request that ran before fails now (it should not): keep
            // the last result and try again.
            Err(errors) => {
                tracing::warn!(?errors, "a live query failed to run again");
                retry = true;
                Run {
                    data: match last.as_deref() {
                        Some(Snapshot::Result(p)) => (*p.data).clone(),
                        _ => Json::Null,
                    },
                    errors: match last.as_deref() {
                        Some(Snapshot::Result(p)) => p
                            .errors_json
                            .as_deref()
                            .and_then(|e| serde_json::from_str(e).ok()),
                        _ => None,
                    },
                    reads: me.reads.clone(),
                }
            }
        };
        if run.reads != me.reads {
            live.index(&cohort, &me.reads, &run.reads);
            let added = run.reads.difference(&me.reads).next().is_some();
            me.reads = run.reads;
            // A change to a collection read for the first time that was
            // published before the index had it woke nobody: run again.
            if added && live.store.published_seq() > seq_before {
                cohort.dirty.notify_one();
            }
        }
        let keep = retry && good(last.as_deref());
        let errors_json: Option<Arc<str>> = run.errors.map(|e| e.to_string().into());
        // Compared as JSON: the executor may order an object's fields
        // differently from one run to the next.
        let same = keep
            || match last.as_deref() {
                Some(Snapshot::Result(p)) => *p.data == run.data && p.errors_json == errors_json,
                _ => false,
            };
        if !same {
            let data_json: Arc<str> = run.data.to_string().into();
            revision += 1;
            let patch_json = match last.as_deref() {
                Some(Snapshot::Result(p)) => Some(patch_json(&p.data, &run.data).into()),
                _ => None,
            };
            let snapshot = Arc::new(Snapshot::Result(Published {
                revision,
                data: Arc::new(run.data),
                data_json,
                errors_json,
                patch_json,
            }));
            last = Some(snapshot.clone());
            cohort.tx.send_replace(Some(snapshot));
        }
        let again = tokio::time::sleep(if retry {
            let wait = retry_after;
            retry_after = (retry_after * 2).min(MAX_RETRY);
            wait
        } else {
            retry_after = RETRY;
            Duration::MAX / 4
        });
        tokio::pin!(again);
        loop {
            tokio::select! {
                _ = cohort.dirty.notified() => break,
                _ = &mut again => break,
                _ = cohort.tx.closed() => {
                    if me.unwatched() {
                        return;
                    }
                }
            }
        }
        // Changes during the wait are one run.
        let throttled = tokio::time::sleep_until(started + throttle);
        tokio::pin!(throttled);
        loop {
            tokio::select! {
                _ = &mut throttled => break,
                _ = cohort.tx.closed() => {
                    if me.unwatched() {
                        return;
                    }
                }
            }
        }
    }
}

/// Whether `last` is a result without errors.
fn good(last: Option<&Snapshot>) -> bool {
    matches!(last, Some(Snapshot::Result(p)) if p.errors_json.is_none())
}

/// Whether coded `errors` hold an internal one.
fn has_internal(errors: &Json) -> bool {
    errors
        .as_array()
        .is_some_and(|errors| errors.iter().any(|e| e["extensions"]["code"] == "INTERNAL"))
}
