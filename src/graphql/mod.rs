//! The GraphQL schema, built at start-up from the catalog with
//! `async_graphql::dynamic`. Names follow API.md §3 exactly. The dynamic schema has
//! no guards: every resolver asks [`crate::access`] itself.
//!
//! Per request the transport puts a [`RequestCtx`] (store + viewer) into the
//! request data; resolvers read it from there.

mod auth;
mod crud;
pub mod documents;
mod errors;
pub mod guard;
mod input;
pub mod live;
pub mod persisted;
mod response;
mod rooms;
mod subscriptions;
mod system;
mod triggers;
mod types;

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::dynamic::{FieldValue, Object, Schema, SchemaError};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::access::Viewer;
use crate::auth::SignIn;
use crate::catalog::Catalog;
use crate::realtime::Overflow;
use crate::realtime::rooms::{Peers, Rooms};
use crate::store::Store;

pub use crate::realtime::{Live, Pinned};
pub use errors::{ApiError, coded_errors, give_codes, set_code, take_paths};
pub use response::complete;

/// Limits applied to every operation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest selection allowed.
    pub max_depth: usize,
    /// Largest query complexity (one per field) allowed.
    pub max_complexity: usize,
    /// Largest `limit` honoured on lists; larger values are capped.
    pub max_list: u64,
    /// Longest document accepted, in bytes (checked before parsing).
    pub max_document_bytes: usize,
    /// Deepest nesting of brackets (`{`, `[`, `(`) in a document (checked before
    /// parsing: the parser recurses on nested values).
    pub max_nesting: usize,
    /// Largest record a create or update may leave, in bytes of the row's JSON
    /// as stored and published (every subscriber's frame carries it).
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 16,
            max_complexity: 2_000,
            max_list: 1_000,
            max_document_bytes: 100_000,
            max_nesting: 64,
            max_record_bytes: crate::store::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// What resolvers need for one request.
#[derive(Clone)]
pub struct RequestCtx {
    pub store: Store,
    pub viewer: Viewer,
    /// Sign-up, sign-in and session handling.
    pub auth: Arc<SignIn>,
    /// The client's address, for rate limits.
    pub client_ip: Option<IpAddr>,
    /// Raised by a subscription that fell behind (realtime transports only).
    pub overflow: Option<Arc<Overflow>>,
    /// Set by streaming transports: a subscription field hands its feed over
    /// here instead of streaming through the executor (see [`Handoff`]).
    pub handoff: Option<Arc<Handoff>>,
    /// Set when rendering one event for a subscription (see [`Pinned`]).
    pub pinned: Option<Pinned>,
    /// The room memberships of the connection the request came over, if any.
    pub peers: Option<Arc<Peers>>,
    /// A cursor the transport resumes from (SSE `Last-Event-ID`): it takes the
    /// place of a subscription's `after` argument.
    pub resume_after: Option<i64>,
    /// Set when running a live query: the collections it reads are noted here.
    pub reads: Option<Arc<live::Reads>>,
}

impl RequestCtx {
    /// Notes that the request read `collection` (for live queries).
    pub fn read(&self, collection: &str) {
        if let Some(reads) = &self.reads {
            reads.read(collection);
        }
    }

    /// The context of a plain request (HTTP, or a socket's query or mutation).
    pub fn new(store: Store, viewer: Viewer, auth: Arc<SignIn>, client_ip: Option<IpAddr>) -> Self {
        RequestCtx {
            store,
            viewer,
            auth,
            client_ip,
            overflow: None,
            handoff: None,
            pinned: None,
            resume_after: None,
            peers: None,
            reads: None,
        }
    }
}

/// A subscription's started feed, handed to the transport.
///
/// Fan-out is the hot path: resolving the selection of every event once per
/// subscriber in the executor would cost as much as everything else together. So
/// a streaming transport asks each subscription field to hand its feed over (the
/// field checks access and parses its arguments as always, then either starts
/// its feed or, on a transport that delivers change feeds from its group's one
/// bus receiver, hands over only what it selects, as [`Live`]), then renders
/// each event once per group of equivalent subscriptions by executing the
/// operation again with the event [`Pinned`], and shares the bytes.
pub struct Feed {
    /// The viewer's events: changes already filtered by account, access and
    /// arguments, or room events. A [`Pinned::Error`] ends it. Empty when
    /// `live` is set.
    pub stream: BoxStream<'static, Pinned>,
    /// Whether the rendered event depends on who views it (the selection reaches
    /// `ref` objects, whose access is checked per viewer).
    pub viewer_dependent: bool,
    /// Set instead of a stream when the transport takes change feeds from its
    /// group's one bus receiver (see `realtime::fanout`): what the
    /// subscription selects, for whom, and from which cursor.
    pub live: Option<Live>,
}

/// Where a subscription field leaves its [`Feed`].
#[derive(Default)]
pub struct Handoff {
    slot: std::sync::Mutex<Option<Feed>>,
    /// The transport takes change feeds as [`Live`] (no stream of their own).
    direct: bool,
}

impl Handoff {
    /// A handoff for a transport that delivers change feeds itself when `direct`.
    pub fn new(direct: bool) -> Self {
        Handoff {
            slot: Default::default(),
            direct,
        }
    }

    fn put(&self, feed: Feed) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(feed);
        }
    }

    /// The feed a subscription field handed over, if one did.
    pub fn take(&self) -> Option<Feed> {
        self.slot.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// The one-item stream a subscription field answers with when rendering `pinned`.
pub(crate) fn pinned_once<'a>(
    pinned: &Pinned,
) -> BoxStream<'a, async_graphql::Result<FieldValue<'a>>> {
    let item = match pinned {
        Pinned::Change(ch) => Ok(FieldValue::owned_any(ch.clone())),
        Pinned::Room(ev) => Ok(FieldValue::owned_any(ev.clone())),
        Pinned::Error(e) => Err(ApiError::from(e.clone()).into_gql()),
    };
    futures_util::stream::once(async move { item }).boxed()
}

/// The request's context; missing only if a transport forgot it (a bug).
fn request_ctx<'a>(
    ctx: &async_graphql::dynamic::ResolverContext<'a>,
) -> Result<&'a RequestCtx, ApiError> {
    ctx.data::<RequestCtx>()
        .map_err(|_| ApiError::internal("request context missing"))
}

/// Builds the executable schema for `catalog`.
pub fn build_schema(
    catalog: &Arc<Catalog>,
    limits: Limits,
    rooms: Arc<Rooms>,
) -> Result<Schema, SchemaError> {
    let mut query = Object::new("Query").description("Read the collections of this app.");
    let mut mutation = Object::new("Mutation").description("Create, update and delete rows.");
    let mut builder = Schema::build("Query", Some("Mutation"), Some("Subscription"));
    let (subscription, change_types) = subscriptions::build(catalog);
    builder = builder.register(
        subscription
            .field(rooms::subscription_field(catalog))
            .field(system::subscription_field()),
    );
    builder = builder.register(system::event_type());
    for t in change_types.into_iter().chain(rooms::types()) {
        builder = builder.register(t);
    }
    builder = types::register_shared(builder).register(auth::session_type());
    let (delivery_status, delivery) = triggers::types();
    builder = builder.register(delivery_status).register(delivery);
    query = query
        .field(auth::me_field())
        .field(subscriptions::cursor_field())
        .field(rooms::members_field(catalog))
        .field(triggers::deliveries_field());
    for f in auth::mutation_fields() {
        mutation = mutation.field(f);
    }
    mutation = mutation
        .field(rooms::send_field(catalog))
        .field(triggers::redeliver_field());
    for c in catalog.collections.values() {
        builder = types::register_collection(builder, catalog, c);
        for f in crud::query_fields(catalog, c, limits) {
            query = query.field(f);
        }
        for f in crud::mutation_fields(catalog, c) {
            mutation = mutation.field(f);
        }
    }
    builder
        .register(query)
        .register(mutation)
        .data(limits)
        .data(rooms)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .finish()
}

/// The SDL of the schema for `catalog`, as committed in `schema/schema.graphql`.
pub fn sdl(catalog: &Arc<Catalog>) -> Result<String, SchemaError> {
    let schema = build_schema(catalog, Limits::default(), Arc::default())?;
    // `@live` is read by the transports, not the executor (see `live`).
    Ok(format!(
        "{}\n\n{}",
        schema.sdl().trim_end(),
        live::LIVE_DIRECTIVE_SDL
    ))
}
