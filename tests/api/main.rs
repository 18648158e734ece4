//! Black-box tests of the GraphQL API: each test starts a real server on
//! 127.0.0.1:0 and talks to it over HTTP. Run against PostgreSQL by setting
//! `LIVEGATE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres`.

mod access;
mod app_file;
mod auth;
mod budget;
mod cli;
mod crud;
mod docs;
mod filters;
mod harness;
mod hostile;
mod http;
mod instances;
mod jwks;
mod layers;
mod limits;
mod live;
mod oracle;
mod persisted;
mod playground;
mod realtime;
mod revocation;
mod rooms;
mod sign_up;
mod sse;
mod sseclient;
mod system_events;
mod telemetry;
mod triggers;
mod validation;
mod wsclient;
