//! The app file as written: serde structs that mirror `schema/app.toml` one to one.
//!
//! Every struct denies unknown keys, so a typo is an error that names its key path
//! instead of a setting that silently does nothing. Semantic checks (does a `ref`
//! point at a collection that exists? are names valid identifiers?) live in
//! `validate.rs`; this file only says what shapes are allowed.

use indexmap::IndexMap;
use serde::Deserialize;

/// The whole app file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    /// Realtime settings shared by every collection and room.
    #[serde(default)]
    pub realtime: RealtimeFile,
    /// Collections by key; the key names the table and derives the GraphQL names.
    #[serde(default)]
    pub collections: IndexMap<String, CollectionFile>,
    /// Room defaults and per-pattern rules.
    #[serde(default)]
    pub rooms: RoomsFile,
    /// Webhooks called for the changes of collections, by name.
    #[serde(default)]
    pub triggers: IndexMap<String, TriggerFile>,
}

/// `[triggers.<name>]`: a webhook called for every matching change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerFile {
    /// Collection keys, or `["*"]` for every collection.
    pub collections: Vec<String>,
    /// `create`, `update`, `delete`; all three when left out.
    pub actions: Option<Vec<String>>,
    /// Where to POST; exactly one of `url` and `url_env`.
    pub url: Option<String>,
    /// The environment variable that holds the URL.
    pub url_env: Option<String>,
    /// The environment variable that holds the signing secret (`whsec_...`).
    pub secret_env: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// How long one attempt may take, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Attempts before a delivery is `FAILED`.
    pub max_attempts: Option<u32>,
}

/// `[realtime]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeFile {
    /// Whether connections without a token may open realtime streams.
    pub anonymous: bool,
    /// Concurrent subscriptions one connection may hold.
    pub max_subscriptions_per_connection: u32,
    /// WebSocket ping / SSE comment interval.
    pub heartbeat_seconds: u32,
    /// How far back a resumed subscription can replay.
    pub history_hours: u32,
}

impl Default for RealtimeFile {
    fn default() -> Self {
        Self {
            anonymous: false,
            max_subscriptions_per_connection: 100,
            heartbeat_seconds: 30,
            history_hours: 24,
        }
    }
}

/// `[collections.<key>]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionFile {
    /// GraphQL type name; defaults to the singular PascalCase of the key.
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    /// Carried into the SDL.
    pub description: Option<String>,
    /// Who may read rows.
    #[serde(default = "level_user")]
    pub read: String,
    /// Who may create rows.
    #[serde(default = "level_user")]
    pub create: String,
    /// Who may update rows.
    #[serde(default = "level_owner")]
    pub update: String,
    /// Who may delete rows.
    #[serde(default = "level_owner")]
    pub delete: String,
    /// Who gets detail-free `changes` hints: `readers` or `all`.
    #[serde(default = "hints_readers")]
    pub hints: String,
    /// Declared fields in declaration order.
    #[serde(default)]
    pub fields: IndexMap<String, FieldDecl>,
}

fn level_user() -> String {
    "user".into()
}
fn level_owner() -> String {
    "owner".into()
}
fn hints_readers() -> String {
    "readers".into()
}

/// A field is either a bare type name (`body = "text"`) or a table of options.
#[derive(Debug)]
pub struct FieldDecl(pub FieldFile);

/// `[collections.<key>.fields.<name>]` in its long form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldFile {
    /// One of the field types.
    #[serde(rename = "type")]
    pub kind: FieldKindFile,
    /// The value must be present (non-null) on create and may never become null.
    #[serde(default)]
    pub required: bool,
    /// Longest accepted value in characters (string and text only).
    pub max_length: Option<u32>,
    /// Value used on create when the client gives none.
    pub default: Option<toml::Value>,
    /// Carried into the SDL.
    pub description: Option<String>,
    /// Target collection key (ref only); `users` is the built-in users.
    pub collection: Option<String>,
}

/// Field types as spelled in the app file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKindFile {
    String,
    Text,
    Int,
    Float,
    Bool,
    Datetime,
    Json,
    Ref,
}

impl<'de> Deserialize<'de> for FieldDecl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FieldDecl;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field type name such as \"string\" or a table like { type = \"string\", required = true }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldDecl, E> {
                let kind = FieldKindFile::deserialize(serde::de::value::StrDeserializer::new(v))?;
                Ok(FieldDecl(FieldFile {
                    kind,
                    required: false,
                    max_length: None,
                    default: None,
                    description: None,
                    collection: None,
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FieldDecl, A::Error> {
                FieldFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(FieldDecl)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[rooms]`: defaults for every room, plus `[rooms.match."pattern"]` overrides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsFile {
    /// Who may join (subscribe to) a room.
    pub join: String,
    /// Who may send to a room.
    pub send: String,
    /// Largest accepted `payload`, serialized, in bytes.
    pub max_payload_bytes: u32,
    /// Messages each member may send per second.
    pub messages_per_second: u32,
    /// Overrides by room-name pattern (`*` matches any run of characters); first match wins.
    #[serde(rename = "match")]
    pub patterns: IndexMap<String, RoomRuleFile>,
}

impl Default for RoomsFile {
    fn default() -> Self {
        Self {
            join: "user".into(),
            send: "user".into(),
            max_payload_bytes: 16 * 1024,
            messages_per_second: 20,
            patterns: IndexMap::new(),
        }
    }
}

/// `[rooms.match."pattern"]`: any key left out falls back to `[rooms]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomRuleFile {
    pub join: Option<String>,
    pub send: Option<String>,
    pub max_payload_bytes: Option<u32>,
    pub messages_per_second: Option<u32>,
}
