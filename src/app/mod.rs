//! The gateway's core, whatever carries its requests: the app, its schema and
//! store, sign-in, rooms and the fan-out engine ([`AppState`]), and how one
//! GraphQL operation runs for a streaming transport ([`operation`]). Transports
//! (`crate::transport`) depend on this; nothing here knows a protocol.

pub mod live;
pub mod operation;

use std::sync::Arc;

use async_graphql::dynamic::Schema;

use crate::auth::SignIn;
use crate::catalog::Catalog;
use crate::graphql::Limits;
use crate::graphql::persisted::Persisted;
use crate::metrics::Metrics;
use crate::realtime::fanout::{Deliveries, Fanout};
use crate::realtime::rooms::Rooms;
use crate::store::Store;

/// Shared state: cheap to clone, one `Arc` inside.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    catalog: Arc<Catalog>,
    schema: Schema,
    store: Store,
    metrics: Metrics,
    auth: Arc<SignIn>,
    default_account_id: String,
    /// Per-operation limits.
    limits: Limits,
    /// Groups of equivalent subscriptions sharing rendered events.
    fanout: Arc<Fanout>,
    /// Live rooms and their members.
    rooms: Arc<Rooms>,
    /// Where realtime connections and dispatchers run.
    deliveries: Arc<Deliveries>,
    /// Parsed documents, by their text.
    documents: crate::graphql::documents::Documents,
    /// Live queries and their cohorts.
    live: Arc<live::LiveQueries>,
    /// Documents requests may name by id.
    persisted: Arc<Persisted>,
}

impl AppState {
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.0.catalog
    }
    pub fn schema(&self) -> &Schema {
        &self.0.schema
    }

    /// Parsed documents, by their text (see `graphql::documents`).
    pub fn documents(&self) -> &crate::graphql::documents::Documents {
        &self.0.documents
    }
    /// Documents requests may name by id (see `graphql::persisted`).
    pub fn persisted(&self) -> &Arc<Persisted> {
        &self.0.persisted
    }
    pub fn store(&self) -> &Store {
        &self.0.store
    }
    /// Per-operation limits.
    pub fn limits(&self) -> &Limits {
        &self.0.limits
    }
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
    /// Tokens, sign-up/sign-in and sessions.
    pub fn auth(&self) -> &Arc<SignIn> {
        &self.0.auth
    }
    /// Groups of equivalent subscriptions sharing rendered events.
    pub fn fanout(&self) -> &Arc<Fanout> {
        &self.0.fanout
    }
    /// Live queries and their cohorts.
    pub fn live(&self) -> &Arc<live::LiveQueries> {
        &self.0.live
    }
    /// Live rooms and their members.
    pub fn rooms(&self) -> &Arc<Rooms> {
        &self.0.rooms
    }
    /// Where realtime connections and dispatchers run.
    pub fn deliveries(&self) -> &Arc<Deliveries> {
        &self.0.deliveries
    }
    /// Runs a realtime task on the delivery runtime, or on the current one
    /// when the server has not set one.
    pub fn spawn_delivery(
        &self,
        connection: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.0.deliveries.spawn(connection);
    }
    /// The account anonymous viewers browse unless they name another.
    pub fn default_account_id(&self) -> &str {
        &self.0.default_account_id
    }
}

/// The parts of an [`AppState`].
pub struct Parts {
    pub catalog: Arc<Catalog>,
    pub schema: Schema,
    pub store: Store,
    pub metrics: Metrics,
    pub auth: Arc<SignIn>,
    pub default_account_id: String,
    pub limits: Limits,
    pub rooms: Arc<Rooms>,
    /// At most this many bytes of results held for a realtime connection.
    pub max_buffer_bytes: usize,
    /// Documents requests may name by id.
    pub persisted: Arc<Persisted>,
}

impl AppState {
    /// The state of `parts`, with a fan-out engine of its own.
    pub fn new(parts: Parts) -> AppState {
        let deliveries = Arc::new(Deliveries::default());
        let fanout = Arc::new(Fanout::new(
            parts.store.clone(),
            parts.catalog.clone(),
            deliveries.clone(),
            parts.max_buffer_bytes,
        ));
        let live = Arc::new(live::LiveQueries::new(
            parts.store.clone(),
            parts.metrics.live.clone(),
        ));
        AppState(Arc::new(Inner {
            live,
            catalog: parts.catalog,
            schema: parts.schema,
            store: parts.store,
            metrics: parts.metrics,
            auth: parts.auth,
            default_account_id: parts.default_account_id,
            limits: parts.limits,
            fanout,
            rooms: parts.rooms,
            deliveries,
            documents: Default::default(),
            persisted: parts.persisted,
        }))
    }
}
