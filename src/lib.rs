//! livegate: a declared app file (`schema/app.toml`) served as a live GraphQL API.
//!
//! A request flows one way through these modules:
//!
//! | module | role |
//! |---|---|
//! | [`cli`] | command line: `serve`, `schema` (`--diff`), `migrate`, `token` |
//! | [`server`] | start-up, router and graceful shutdown |
//! | [`transport`] | protocols only: GraphQL over HTTP, WebSocket and SSE, the `/realtime` feed; the playground; connection caps (`Gateway` is their state) |
//! | [`app`] | the core state (`AppState`) and one GraphQL operation run for a streaming transport |
//! | [`realtime`] | change feeds (replay, then live, filtered by access), the fan-out engine (groups rendering once, dispatchers, catching up from a cursor), rooms with presence (across instances on PostgreSQL) |
//! | [`graphql`] | the dynamic schema built from the catalog, and its resolvers |
//! | [`auth`] | JWT verify/mint, passwords, sessions, credentials → viewer |
//! | [`access`] | the one access policy: pure functions of viewer, level and owner |
//! | [`store`] | sea-orm/sea-query: migrations, table reconciliation, CRUD + event log; the log follower that publishes committed events (any instance's) in order |
//! | [`catalog`] | the app file parsed and validated into an immutable catalog |
//! | [`values`] | rows and typed scalars shared by store and GraphQL |
//! | [`metrics`] | Prometheus metrics held in the app state |
//! | [`schema_diff`] | `schema --diff`: breaking / dangerous / safe changes between two SDLs |

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
pub mod transport;
pub mod values;
