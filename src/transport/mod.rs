//! Transports: bytes and protocols in, GraphQL requests to the schema, responses
//! out. Each transport resolves the viewer and hands the schema a request; none of
//! them decides access. [`playground`] serves the embedded playground page,
//! which talks to the others like any client.

pub mod http;
pub mod playground;
pub mod ws;
