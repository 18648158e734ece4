//! The catalog: the app file (`schema/app.toml`) parsed and validated once into an
//! immutable description of collections, fields, access levels, realtime and room
//! settings. Every other layer (store, GraphQL, access, realtime) reads names and
//! rules from here and nowhere else, so table and column names are whitelisted by
//! construction.

mod file;
pub mod names;
mod validate;

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;

pub use validate::{CatalogError, check_webhook_url};

/// Who may do something: the levels of API.md §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Anyone, with or without a token.
    Anon,
    /// Any signed-in user of the same account.
    User,
    /// The row's owner or an admin of the same account.
    Owner,
    /// Role ADMIN of the same account.
    Admin,
    /// Nobody through the API.
    Nobody,
}

impl Level {
    /// The spelling used in the app file.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Anon => "anon",
            Level::User => "user",
            Level::Owner => "owner",
            Level::Admin => "admin",
            Level::Nobody => "none",
        }
    }
}

/// Who gets the detail-free `changes` hints of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hints {
    /// Only viewers who may read the changed row.
    Readers,
    /// Every signed-in viewer of the account.
    All,
}

/// A field's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    String,
    Text,
    Int,
    Float,
    Bool,
    DateTime,
    Json,
    Ref,
}

impl FieldKind {
    /// The spelling used in the app file (and stored to detect retyped fields).
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::String => "string",
            FieldKind::Text => "text",
            FieldKind::Int => "int",
            FieldKind::Float => "float",
            FieldKind::Bool => "bool",
            FieldKind::DateTime => "datetime",
            FieldKind::Json => "json",
            FieldKind::Ref => "ref",
        }
    }
}

/// The built-in users collection that `ref` fields may point at.
pub const USERS: &str = "users";

/// One declared field.
#[derive(Debug, Clone)]
pub struct Field {
    /// Key in the app file (snake_case).
    pub key: String,
    /// Database column: the key, or `<key>_id` for a ref.
    pub column: String,
    /// GraphQL name of the scalar value: `dueAt`, or `authorId` for a ref.
    pub gql_name: String,
    /// For a ref: GraphQL name of the nested object (`author`).
    pub object_name: Option<String>,
    /// Enum value in `<Type>Field` (`DUE_AT`, `AUTHOR_ID`).
    pub enum_name: String,
    pub kind: FieldKind,
    /// Non-null on create and never nullable afterwards.
    pub required: bool,
    /// Longest accepted value in characters (string/text).
    pub max_length: Option<u32>,
    /// Value stored on create when none is given.
    pub default: Option<serde_json::Value>,
    pub description: String,
    /// For a ref: the target collection key (or [`USERS`]).
    pub target: Option<String>,
}

impl Field {
    /// Whether a value is always present when reading (required or defaulted).
    pub fn non_null(&self) -> bool {
        self.required || self.default.is_some()
    }
}

/// GraphQL names derived for one collection (API.md §3).
#[derive(Debug, Clone)]
pub struct Names {
    pub type_name: String,
    pub list: String,
    pub single: String,
    pub count: String,
    pub create: String,
    pub update: String,
    pub delete: String,
    pub changed: String,
    pub create_input: String,
    pub update_input: String,
    pub where_input: String,
    pub field_enum: String,
    pub order_input: String,
    pub change_type: String,
}

/// One declared collection.
#[derive(Debug, Clone)]
pub struct Collection {
    /// Key in the app file, also the table name.
    pub key: String,
    pub names: Names,
    pub description: String,
    pub read: Level,
    pub create: Level,
    pub update: Level,
    pub delete: Level,
    pub hints: Hints,
    pub fields: Vec<Field>,
}

impl Collection {
    /// The field whose app-file key is `key`.
    pub fn field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.key == key)
    }
}

/// `[realtime]`, validated.
#[derive(Debug, Clone)]
pub struct Realtime {
    pub anonymous: bool,
    pub max_subscriptions_per_connection: u32,
    pub heartbeat_seconds: u32,
    pub history_hours: u32,
}

/// Rules of one room (defaults merged with the first matching pattern).
#[derive(Debug, Clone)]
pub struct RoomRule {
    pub join: Level,
    pub send: Level,
    pub max_payload_bytes: u32,
    pub messages_per_second: u32,
}

/// `[rooms]`, validated.
#[derive(Debug, Clone)]
pub struct Rooms {
    pub defaults: RoomRule,
    /// Patterns in declaration order; the first match wins.
    pub patterns: Vec<(String, RoomRule)>,
}

impl Rooms {
    /// The rules that govern room `name`.
    pub fn rule_for(&self, name: &str) -> &RoomRule {
        self.patterns
            .iter()
            .find(|(pattern, _)| glob_match(pattern, name))
            .map(|(_, rule)| rule)
            .unwrap_or(&self.defaults)
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Where a trigger's URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerUrl {
    /// Written in the app file (checked to be an http or https URL).
    Literal(String),
    /// Read from this environment variable at start-up.
    Env(String),
}

/// `[triggers.<name>]`, validated (environment variables are read at start-up,
/// by `crate::triggers`, so that `livegate schema` needs none of them).
#[derive(Debug, Clone)]
pub struct Trigger {
    pub name: String,
    /// Collection keys; `None` for every collection (`["*"]`).
    pub collections: Option<Vec<String>>,
    /// Which actions, as stored in the log (`create`, `update`, `delete`).
    pub actions: Vec<String>,
    pub url: TriggerUrl,
    pub secret_env: String,
    /// Extra headers (names checked, lower-case).
    pub headers: Vec<(String, String)>,
    pub timeout_ms: u64,
    pub max_attempts: u32,
}

impl Trigger {
    /// Whether a change of `collection` by `action` calls this trigger.
    pub fn matches(&self, collection: &str, action: &str) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|c| c.iter().any(|k| k == collection))
            && self.actions.iter().any(|a| a == action)
    }
}

/// Default of `timeout_ms`.
pub const TRIGGER_TIMEOUT_MS: u64 = 5_000;
/// Default of `max_attempts`.
pub const TRIGGER_MAX_ATTEMPTS: u32 = 8;

/// The validated app: immutable, shared behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub realtime: Realtime,
    pub collections: IndexMap<String, Collection>,
    pub rooms: Rooms,
    /// Webhook triggers by name, in declaration order.
    pub triggers: IndexMap<String, Trigger>,
}

impl Catalog {
    /// Reads and validates the app file at `path`.
    pub fn load(path: &Path) -> Result<Arc<Catalog>, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError {
            file: path.display().to_string(),
            path: String::new(),
            message: format!("cannot read the app file: {e}"),
            line: None,
        })?;
        Self::parse(&path.display().to_string(), &text).map(Arc::new)
    }

    /// Validates app-file text; `file` names it in error messages.
    pub fn parse(file: &str, text: &str) -> Result<Catalog, CatalogError> {
        validate::parse(file, text)
    }

    /// The collection with app-file key `key`.
    pub fn collection(&self, key: &str) -> Option<&Collection> {
        self.collections.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("public:*", "public:lobby"));
        assert!(glob_match("public:*", "public:"));
        assert!(!glob_match("public:*", "private:x"));
        assert!(glob_match("*:ops:*", "team:ops:alerts"));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }
}
