//! The GraphQL schema, built at start-up from the catalog with
//! `async_graphql::dynamic`. Names follow API.md §3 exactly. The dynamic schema has
//! no guards: every resolver asks [`crate::access`] itself.
//!
//! Per request the transport puts a [`RequestCtx`] (store + viewer) into the
//! request data; resolvers read it from there.

mod auth;
mod crud;
mod errors;
mod input;
mod response;
mod subscriptions;
mod types;

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::dynamic::{Object, Schema, SchemaError};

use crate::access::Viewer;
use crate::auth::SignIn;
use crate::catalog::Catalog;
use crate::realtime::Overflow;
use crate::store::Store;

pub use errors::ApiError;
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 16,
            max_complexity: 2_000,
            max_list: 1_000,
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
}

/// The request's context; missing only if a transport forgot it (a bug).
fn request_ctx<'a>(
    ctx: &async_graphql::dynamic::ResolverContext<'a>,
) -> Result<&'a RequestCtx, ApiError> {
    ctx.data::<RequestCtx>()
        .map_err(|_| ApiError::internal("request context missing"))
}

/// Builds the executable schema for `catalog`.
pub fn build_schema(catalog: &Arc<Catalog>, limits: Limits) -> Result<Schema, SchemaError> {
    let mut query = Object::new("Query").description("Read the collections of this app.");
    let mut mutation = Object::new("Mutation").description("Create, update and delete rows.");
    let mut builder = Schema::build("Query", Some("Mutation"), Some("Subscription"));
    let (subscription, change_types) = subscriptions::build(catalog);
    builder = builder.register(subscription);
    for t in change_types {
        builder = builder.register(t);
    }
    builder = types::register_shared(builder).register(auth::session_type());
    query = query.field(auth::me_field());
    for f in auth::mutation_fields() {
        mutation = mutation.field(f);
    }
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
        .extension(response::ErrorPaths)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .finish()
}

/// The SDL of the schema for `catalog`, as committed in `schema/schema.graphql`.
pub fn sdl(catalog: &Arc<Catalog>) -> Result<String, SchemaError> {
    let schema = build_schema(catalog, Limits::default())?;
    Ok(schema.sdl())
}
