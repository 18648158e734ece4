//! Values as they travel between GraphQL, the store and the event log: rows with
//! their system fields, and typed scalars. Date-times have one canonical text form
//! (RFC 3339, UTC, microseconds) so that equal instants compare equal everywhere.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::Serialize;
use serde_json::{Map, Value as Json};

/// Parses an RFC 3339 date-time and normalises it to UTC, microsecond precision (the
/// precision PostgreSQL keeps), so what is stored is what is read back.
pub fn parse_datetime(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|d| d.with_timezone(&Utc).trunc_subsecs(6))
}

/// The canonical text of a date-time: `2026-11-22T07:55:09.123456Z`.
pub fn format_datetime(d: &DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Now, at the precision the store keeps.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A non-null typed value bound into a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    DateTime(DateTime<Utc>),
    Json(Json),
}

impl Scalar {
    /// The JSON form used in rows and events.
    pub fn to_json(&self) -> Json {
        match self {
            Scalar::Str(s) => Json::String(s.clone()),
            Scalar::Int(i) => Json::from(*i),
            Scalar::Float(f) => Json::from(*f),
            Scalar::Bool(b) => Json::Bool(*b),
            Scalar::DateTime(d) => Json::String(format_datetime(d)),
            Scalar::Json(j) => j.clone(),
        }
    }
}

/// One row of a collection: the server-owned system fields plus the declared fields
/// (keyed by field key; ref fields hold the target id; date-times in canonical text).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub id: String,
    pub owner_id: Option<String>,
    pub account_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub data: Map<String, Json>,
}

impl Row {
    /// The JSON object stored in the event log.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("id".into(), Json::String(self.id.clone()));
        m.insert(
            "owner_id".into(),
            self.owner_id
                .clone()
                .map(Json::String)
                .unwrap_or(Json::Null),
        );
        m.insert("account_id".into(), Json::String(self.account_id.clone()));
        m.insert(
            "created_at".into(),
            Json::String(format_datetime(&self.created_at)),
        );
        m.insert(
            "updated_at".into(),
            Json::String(format_datetime(&self.updated_at)),
        );
        m.insert("data".into(), Json::Object(self.data.clone()));
        Json::Object(m)
    }
}

/// A new UUID v7 id in its text form: time-ordered, so ids sort by creation.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The length of `value` serialized, without building the text.
pub fn json_len(value: &Json) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, nor can serializing a JSON value.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}
