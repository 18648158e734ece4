//! livegate: a declared app file (`schema/app.toml`) served as a live GraphQL API.
//!
//! A request flows one way through these modules, from the top of this table
//! down: a module uses only modules of a lower layer (`tests/api/layers.rs`
//! reads `src/` and fails on a path that climbs).
//!
//! | layer | module | role |
//! |---|---|---|
//! | 9 | [`cli`] | command line: `serve`, `schema` (`--diff`), `migrate`, `token` |
//! | 8 | [`server`] | start-up, router and graceful shutdown |
//! | 7 | [`transport`] | protocols only: GraphQL over HTTP, WebSocket and SSE, the `/realtime` feed; the playground; connection caps (`Gateway` is their state) |
//! | 6 | [`app`] | the core state (`AppState`) and one GraphQL operation run for a streaming transport |
//! | 5 | [`graphql`] | the dynamic schema built from the catalog, and its resolvers |
//! | 4 | [`realtime`] | change feeds (replay, then live, filtered by access), the fan-out engine (groups rendering once, dispatchers, catching up from a cursor), rooms with presence (across instances on PostgreSQL) |
//! | 4 | [`triggers`] | webhook triggers: deliveries from the event log, signed (Standard Webhooks), retried, one attempt per instance at a time |
//! | 4 | [`auth`] | JWT verify/mint, passwords, sessions, credentials → viewer |
//! | 3 | [`store`] | sea-orm/sea-query: migrations, table reconciliation, CRUD + event log; the log follower that publishes committed events (any instance's) in order |
//! | 2 | [`access`] | the one access policy: pure functions of viewer, level and owner |
//! | 2 | [`schema_diff`] | `schema --diff`: breaking / dangerous / safe changes between two SDLs |
//! | 1 | [`catalog`] | the app file parsed and validated into an immutable catalog |
//! | 1 | [`metrics`] | Prometheus metrics held in the app state |
//! | 1 | [`telemetry`] | OpenTelemetry traces: the export pipeline and following a caller's `traceparent` |
//! | 0 | [`values`] | rows and typed scalars shared by store and GraphQL |

pub mod access;
pub mod app;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod graphql;
pub mod metrics;
pub mod realtime;
pub mod schema_diff;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod triggers;
pub mod values;
