//! Transports: bytes and protocols in, GraphQL requests to the schema, responses
//! out. Each transport resolves the viewer and hands the schema a request; none of
//! them decides access.

pub mod http;
pub mod operation;
pub mod ws;
