//! From app-file text to a [`Catalog`]: syntax and shape errors come from the TOML
//! parser (with the key path and line), semantic errors from the checks below (with
//! the key path). Every error names the file, so start-up can print it as is.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;

use super::file::{AppFile, CollectionFile, FieldFile, FieldKindFile, RoomRuleFile, TriggerFile};
use super::names::{camel, is_key, is_type_name, lower_first, shouty, type_name_for};
use super::{
    Catalog, Collection, Field, FieldKind, Hints, Level, Names, Realtime, RoomRule, Rooms,
    TRIGGER_MAX_ATTEMPTS, TRIGGER_TIMEOUT_MS, Trigger, TriggerUrl, USERS,
};

/// A bad app file: which file, where in it, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{message}{}", if path.is_empty() { String::new() } else { format!("{path}: ") }, line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct CatalogError {
    pub file: String,
    /// Dotted key path, e.g. `collections.posts.fields.title.type`.
    pub path: String,
    pub message: String,
    /// 1-based line, where the parser gives one.
    pub line: Option<usize>,
}

/// Longest `string` value unless `max_length` says otherwise.
pub const STRING_MAX_DEFAULT: u32 = 1_000;
/// Longest `text` value unless `max_length` says otherwise.
pub const TEXT_MAX_DEFAULT: u32 = 1_000_000;

/// Field keys the server owns (system columns), or that would collide with the
/// `where` input's logical operators or nested objects kept for later use.
const RESERVED_FIELDS: &[&str] = &[
    "id",
    "owner_id",
    "account_id",
    "created_at",
    "updated_at",
    "owner",
    "account",
    "and",
    "or",
    "not",
];

/// GraphQL type names the server defines itself.
const BUILTIN_TYPES: &[&str] = &[
    "Query",
    "Mutation",
    "Subscription",
    "String",
    "Int",
    "Float",
    "Boolean",
    "ID",
    "DateTime",
    "JSON",
    "ChangeAction",
    "SortDirection",
    "Change",
    "Session",
    "User",
    "Role",
    "RoomMember",
    "RoomEvent",
    "TriggerDelivery",
    "DeliveryStatus",
    "SystemEvent",
    "StringFilter",
    "IntFilter",
    "FloatFilter",
    "DateTimeFilter",
    "BooleanFilter",
    "IDFilter",
];

/// Root fields the server defines itself.
const BUILTIN_ROOT_FIELDS: &[&str] = &[
    "me",
    "roomMembers",
    "signUp",
    "signIn",
    "refreshSession",
    "signOut",
    "sendToRoom",
    "changes",
    "room",
    "triggerDeliveries",
    "redeliver",
    "systemEvents",
];

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, path: impl Into<String>, message: impl Into<String>) -> CatalogError {
        CatalogError {
            file: self.file.to_string(),
            path: path.into(),
            message: message.into(),
            line: None,
        }
    }
}

pub(super) fn parse(file: &str, text: &str) -> Result<Catalog, CatalogError> {
    let raw = parse_shape(file, text)?;
    let cx = Ctx { file };
    let realtime = realtime(&cx, &raw)?;
    let rooms = rooms(&cx, &raw)?;
    let mut collections = IndexMap::new();
    for (key, coll) in &raw.collections {
        collections.insert(key.clone(), collection(&cx, &raw, key, coll)?);
    }
    check_unique_names(&cx, &collections)?;
    let mut triggers = IndexMap::new();
    for (name, t) in &raw.triggers {
        triggers.insert(name.clone(), trigger(&cx, &collections, name, t)?);
    }
    Ok(Catalog {
        realtime,
        collections,
        rooms,
        triggers,
    })
}

/// Headers a trigger may not set: the request's own and the signature's.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Whether `name` can be an environment variable's name.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn trigger(
    cx: &Ctx,
    collections: &IndexMap<String, Collection>,
    name: &str,
    t: &TriggerFile,
) -> Result<Trigger, CatalogError> {
    let at = |key: &str| format!("triggers.{name}.{key}");
    if !is_key(name) {
        return Err(cx.err(
            format!("triggers.{name}"),
            "a trigger name must be lower snake_case (letters, digits, underscores; a letter first)",
        ));
    }
    let wanted = if t.collections.is_empty() {
        return Err(cx.err(
            at("collections"),
            "name at least one collection, or \"*\" for all of them",
        ));
    } else if t.collections.iter().any(|c| c == "*") {
        if t.collections.len() > 1 {
            return Err(cx.err(
                at("collections"),
                "\"*\" already means every collection: give it alone",
            ));
        }
        None
    } else {
        for c in &t.collections {
            if !collections.contains_key(c) {
                return Err(cx.err(
                    at("collections"),
                    format!(
                        "no collection \"{c}\" in this app file (declared: {})",
                        collections.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        Some(t.collections.clone())
    };
    let mut actions = Vec::new();
    match &t.actions {
        None => actions.extend(["create", "update", "delete"].map(String::from)),
        Some(list) if list.is_empty() => {
            return Err(cx.err(
                at("actions"),
                "name at least one action (create, update, delete), or leave the key out for all three",
            ));
        }
        Some(list) => {
            for a in list {
                if !["create", "update", "delete"].contains(&a.as_str()) {
                    return Err(cx.err(
                        at("actions"),
                        format!("unknown action \"{a}\", expected create, update or delete"),
                    ));
                }
                if !actions.contains(a) {
                    actions.push(a.clone());
                }
            }
        }
    }
    let url = match (&t.url, &t.url_env) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(cx.err(
                format!("triggers.{name}"),
                "give exactly one of `url` and `url_env`",
            ));
        }
        (Some(u), None) => {
            check_webhook_url(u, false).map_err(|m| cx.err(at("url"), m))?;
            TriggerUrl::Literal(u.clone())
        }
        (None, Some(var)) => {
            if !is_env_name(var) {
                return Err(cx.err(
                    at("url_env"),
                    format!("\"{var}\" is not an environment variable's name"),
                ));
            }
            TriggerUrl::Env(var.clone())
        }
    };
    if !is_env_name(&t.secret_env) {
        return Err(cx.err(
            at("secret_env"),
            format!("\"{}\" is not an environment variable's name", t.secret_env),
        ));
    }
    let mut headers = Vec::new();
    for (h, v) in &t.headers {
        let lower = h.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(cx.err(at("headers"), format!("\"{h}\" is not a header name")));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(cx.err(
                at("headers"),
                format!("\"{h}\" is set by livegate itself and cannot be overridden"),
            ));
        }
        if http::HeaderValue::from_str(v).is_err() {
            return Err(cx.err(
                at(&format!("headers.{h}")),
                "not a valid header value (visible ASCII only)",
            ));
        }
        headers.push((lower, v.clone()));
    }
    let timeout_ms = t.timeout_ms.unwrap_or(TRIGGER_TIMEOUT_MS);
    if !(1..=60_000).contains(&timeout_ms) {
        return Err(cx.err(at("timeout_ms"), "must be between 1 and 60000 (a minute)"));
    }
    let max_attempts = t.max_attempts.unwrap_or(TRIGGER_MAX_ATTEMPTS);
    if !(1..=100).contains(&max_attempts) {
        return Err(cx.err(at("max_attempts"), "must be between 1 and 100"));
    }
    Ok(Trigger {
        name: name.to_string(),
        collections: wanted,
        actions,
        url,
        secret_env: t.secret_env.clone(),
        headers,
        timeout_ms,
        max_attempts,
    })
}

/// Why `url` cannot be a webhook's address, if it cannot. Credentials are
/// refused in a URL written in the app file (which lives in a repository), not
/// in one from the environment.
pub fn check_webhook_url(url: &str, credentials_allowed: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "\"{url}\" is not an http:// or https:// URL with a host"
        ));
    }
    if !credentials_allowed && (!parsed.username().is_empty() || parsed.password().is_some()) {
        return Err(
            "a URL in the app file may not hold credentials: give the whole URL in `url_env` (from the environment)".into(),
        );
    }
    Ok(())
}

fn parse_shape(file: &str, text: &str) -> Result<AppFile, CatalogError> {
    let shape_err = |path: String, e: toml::de::Error| CatalogError {
        file: file.to_string(),
        path,
        message: e.message().trim_end().to_string(),
        line: e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
    };
    let de = toml::Deserializer::parse(text).map_err(|e| shape_err(String::new(), e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        shape_err(
            if path == "." { String::new() } else { path },
            e.into_inner(),
        )
    })
}

fn level(cx: &Ctx, path: &str, value: &str, allow_owner: bool) -> Result<Level, CatalogError> {
    let level = match value {
        "anon" => Level::Anon,
        "user" => Level::User,
        "owner" if allow_owner => Level::Owner,
        "admin" => Level::Admin,
        "none" => Level::Nobody,
        _ => {
            let expected = if allow_owner {
                "anon, user, owner, admin or none"
            } else {
                "anon, user, admin or none"
            };
            return Err(cx.err(
                path,
                format!("unknown access level \"{value}\", expected {expected}"),
            ));
        }
    };
    Ok(level)
}

fn realtime(cx: &Ctx, raw: &AppFile) -> Result<Realtime, CatalogError> {
    let r = &raw.realtime;
    if r.max_subscriptions_per_connection == 0 {
        return Err(cx.err(
            "realtime.max_subscriptions_per_connection",
            "must be at least 1",
        ));
    }
    if !(1..=3600).contains(&r.heartbeat_seconds) {
        return Err(cx.err("realtime.heartbeat_seconds", "must be between 1 and 3600"));
    }
    if r.history_hours > 24 * 366 {
        return Err(cx.err("realtime.history_hours", "must be at most 8784 (a year)"));
    }
    Ok(Realtime {
        anonymous: r.anonymous,
        max_subscriptions_per_connection: r.max_subscriptions_per_connection,
        heartbeat_seconds: r.heartbeat_seconds,
        history_hours: r.history_hours,
    })
}

fn rooms(cx: &Ctx, raw: &AppFile) -> Result<Rooms, CatalogError> {
    let r = &raw.rooms;
    let positive = |path: &str, n: u32| {
        if n == 0 {
            Err(cx.err(path, "must be at least 1"))
        } else {
            Ok(n)
        }
    };
    let defaults = RoomRule {
        join: level(cx, "rooms.join", &r.join, false)?,
        send: level(cx, "rooms.send", &r.send, false)?,
        max_payload_bytes: positive("rooms.max_payload_bytes", r.max_payload_bytes)?,
        messages_per_second: positive("rooms.messages_per_second", r.messages_per_second)?,
    };
    let mut patterns = Vec::new();
    for (pattern, rule) in &r.patterns {
        let at = |key: &str| format!("rooms.match.\"{pattern}\".{key}");
        if pattern.is_empty() {
            return Err(cx.err("rooms.match", "a room pattern must not be empty"));
        }
        let RoomRuleFile {
            join,
            send,
            max_payload_bytes,
            messages_per_second,
        } = rule;
        let merged = RoomRule {
            join: join
                .as_deref()
                .map(|v| level(cx, &at("join"), v, false))
                .transpose()?
                .unwrap_or(defaults.join),
            send: send
                .as_deref()
                .map(|v| level(cx, &at("send"), v, false))
                .transpose()?
                .unwrap_or(defaults.send),
            max_payload_bytes: max_payload_bytes
                .map(|n| positive(&at("max_payload_bytes"), n))
                .transpose()?
                .unwrap_or(defaults.max_payload_bytes),
            messages_per_second: messages_per_second
                .map(|n| positive(&at("messages_per_second"), n))
                .transpose()?
                .unwrap_or(defaults.messages_per_second),
        };
        patterns.push((pattern.clone(), merged));
    }
    Ok(Rooms { defaults, patterns })
}

fn collection(
    cx: &Ctx,
    raw: &AppFile,
    key: &str,
    c: &CollectionFile,
) -> Result<Collection, CatalogError> {
    let at = |sub: &str| format!("collections.{key}{sub}");
    if !is_key(key) {
        return Err(cx.err(
            at(""),
            "invalid collection name: use lowercase letters, digits and single underscores, starting with a letter (at most 63 characters)",
        ));
    }
    if key == USERS || key == "accounts" || key.starts_with("livegate_") {
        return Err(cx.err(
            at(""),
            format!("the collection name \"{key}\" is reserved by livegate"),
        ));
    }
    let type_name = match &c.type_name {
        Some(t) if !is_type_name(t) => {
            return Err(cx.err(
                at(".type"),
                format!("invalid GraphQL type name \"{t}\": use PascalCase letters and digits"),
            ));
        }
        Some(t) => t.clone(),
        None => type_name_for(key),
    };
    let single = lower_first(&type_name);
    let list = camel(key);
    if single == list {
        return Err(cx.err(
            at(".type"),
            format!("the singular and plural GraphQL names of \"{key}\" are both \"{list}\"; set `type` to a distinct singular name"),
        ));
    }
    let names = Names {
        count: format!("{list}Count"),
        create: format!("create{type_name}"),
        update: format!("update{type_name}"),
        delete: format!("delete{type_name}"),
        changed: format!("{single}Changed"),
        create_input: format!("{type_name}CreateInput"),
        update_input: format!("{type_name}UpdateInput"),
        where_input: format!("{type_name}Where"),
        field_enum: format!("{type_name}Field"),
        order_input: format!("{type_name}Order"),
        change_type: format!("{type_name}Change"),
        list,
        single,
        type_name,
    };
    let hints = match c.hints.as_str() {
        "readers" => Hints::Readers,
        "all" => Hints::All,
        other => {
            return Err(cx.err(
                at(".hints"),
                format!("unknown hints setting \"{other}\", expected readers or all"),
            ));
        }
    };
    let mut fields = Vec::new();
    let mut gql_seen: HashMap<String, String> = HashMap::new();
    for (fkey, decl) in &c.fields {
        let f = field(cx, raw, key, fkey, &decl.0)?;
        for name in std::iter::once(&f.gql_name).chain(f.object_name.iter()) {
            if let Some(other) = gql_seen.insert(name.clone(), fkey.clone()) {
                return Err(cx.err(
                    at(&format!(".fields.{fkey}")),
                    format!("its GraphQL name \"{name}\" collides with field \"{other}\""),
                ));
            }
        }
        fields.push(f);
    }
    let description = c
        .description
        .clone()
        .unwrap_or_else(|| format!("A row of the `{key}` collection."));
    Ok(Collection {
        key: key.to_string(),
        names,
        description,
        read: level(cx, &at(".read"), &c.read, true)?,
        create: level(cx, &at(".create"), &c.create, true)?,
        update: level(cx, &at(".update"), &c.update, true)?,
        delete: level(cx, &at(".delete"), &c.delete, true)?,
        hints,
        fields,
    })
}

fn field(
    cx: &Ctx,
    raw: &AppFile,
    coll: &str,
    key: &str,
    f: &FieldFile,
) -> Result<Field, CatalogError> {
    let at = |sub: &str| format!("collections.{coll}.fields.{key}{sub}");
    if !is_key(key) {
        return Err(cx.err(
            at(""),
            "invalid field name: use lowercase letters, digits and single underscores, starting with a letter (at most 63 characters)",
        ));
    }
    if RESERVED_FIELDS.contains(&key) {
        return Err(cx.err(at(""), format!("the field name \"{key}\" is reserved (system fields are id, ownerId, accountId, createdAt, updatedAt)")));
    }
    let kind = match f.kind {
        FieldKindFile::String => FieldKind::String,
        FieldKindFile::Text => FieldKind::Text,
        FieldKindFile::Int => FieldKind::Int,
        FieldKindFile::Float => FieldKind::Float,
        FieldKindFile::Bool => FieldKind::Bool,
        FieldKindFile::Datetime => FieldKind::DateTime,
        FieldKindFile::Json => FieldKind::Json,
        FieldKindFile::Ref => FieldKind::Ref,
    };
    let target = match (kind, &f.collection) {
        (FieldKind::Ref, None) => return Err(cx.err(
            at(".collection"),
            "a ref field needs `collection`: the key of the collection it points at (or \"users\")",
        )),
        (FieldKind::Ref, Some(t)) if t != USERS && !raw.collections.contains_key(t) => {
            return Err(cx.err(
                at(".collection"),
                format!(
                    "unknown collection \"{t}\": declare [collections.{t}] or point at \"users\""
                ),
            ));
        }
        (FieldKind::Ref, Some(t)) => Some(t.clone()),
        (_, Some(_)) => return Err(cx.err(at(".collection"), "only ref fields take `collection`")),
        (_, None) => None,
    };
    let max_length = match (kind, f.max_length) {
        (_, Some(0)) => return Err(cx.err(at(".max_length"), "must be at least 1")),
        (FieldKind::String | FieldKind::Text, n) => {
            Some(n.unwrap_or(if kind == FieldKind::String {
                STRING_MAX_DEFAULT
            } else {
                TEXT_MAX_DEFAULT
            }))
        }
        (_, Some(_)) => {
            return Err(cx.err(
                at(".max_length"),
                "only string and text fields take `max_length`",
            ));
        }
        (_, None) => None,
    };
    let default = match &f.default {
        None => None,
        Some(v) => Some(default_value(kind, max_length, v).map_err(|m| cx.err(at(".default"), m))?),
    };
    let (column, gql_name, object_name) = if kind == FieldKind::Ref {
        (
            format!("{key}_id"),
            format!("{}Id", camel(key)),
            Some(camel(key)),
        )
    } else {
        (key.to_string(), camel(key), None)
    };
    let description = f
        .description
        .clone()
        .unwrap_or_else(|| match (&target, kind) {
            (Some(t), _) => format!("The `{t}` row this refers to (`{key}`)."),
            _ => format!("The `{key}` field ({}).", kind.as_str()),
        });
    Ok(Field {
        key: key.to_string(),
        enum_name: shouty(&column),
        column,
        gql_name,
        object_name,
        kind,
        required: f.required,
        max_length,
        default,
        description,
        target,
    })
}

fn default_value(
    kind: FieldKind,
    max_length: Option<u32>,
    v: &toml::Value,
) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    let wrong = |what: &str| {
        Err(format!(
            "the default of a {} field must be {what}",
            kind.as_str()
        ))
    };
    match (kind, v) {
        (FieldKind::String | FieldKind::Text, toml::Value::String(s)) => {
            if max_length.is_some_and(|m| s.chars().count() > m as usize) {
                return Err("the default is longer than max_length".into());
            }
            Ok(J::String(s.clone()))
        }
        (FieldKind::String | FieldKind::Text, _) => wrong("a string"),
        (FieldKind::Int, toml::Value::Integer(i)) if i32::try_from(*i).is_ok() => Ok(J::from(*i)),
        (FieldKind::Int, _) => wrong("an integer between -2147483648 and 2147483647"),
        (FieldKind::Float, toml::Value::Float(x)) if x.is_finite() => Ok(J::from(*x)),
        (FieldKind::Float, toml::Value::Integer(i)) => Ok(J::from(*i as f64)),
        (FieldKind::Float, _) => wrong("a finite number"),
        (FieldKind::Bool, toml::Value::Boolean(b)) => Ok(J::Bool(*b)),
        (FieldKind::Bool, _) => wrong("true or false"),
        (FieldKind::DateTime, toml::Value::String(s)) => crate::values::parse_datetime(s)
            .map(|d| J::String(crate::values::format_datetime(&d)))
            .map_err(|_| "the default of a datetime field must be an RFC 3339 date-time such as \"2026-01-31T12:00:00Z\"".into()),
        (FieldKind::DateTime, toml::Value::Datetime(d)) => crate::values::parse_datetime(&d.to_string())
            .map(|d| J::String(crate::values::format_datetime(&d)))
            .map_err(|_| "the default of a datetime field must include a date, a time and an offset".into()),
        (FieldKind::DateTime, _) => wrong("an RFC 3339 date-time"),
        (FieldKind::Json, v) => serde_json::to_value(v).map_err(|e| format!("cannot be turned into JSON: {e}")),
        (FieldKind::Ref, _) => Err("ref fields take no default".into()),
    }
}

fn check_unique_names(
    cx: &Ctx,
    collections: &IndexMap<String, Collection>,
) -> Result<(), CatalogError> {
    let mut types: HashMap<String, String> = BUILTIN_TYPES
        .iter()
        .map(|t| (t.to_string(), "livegate".to_string()))
        .collect();
    let mut roots: HashMap<String, String> = BUILTIN_ROOT_FIELDS
        .iter()
        .map(|t| (t.to_string(), "livegate".to_string()))
        .collect();
    let mut seen_keys = HashSet::new();
    for c in collections.values() {
        seen_keys.insert(c.key.clone());
        let n = &c.names;
        for t in [
            &n.type_name,
            &n.create_input,
            &n.update_input,
            &n.where_input,
            &n.field_enum,
            &n.order_input,
            &n.change_type,
        ] {
            if let Some(owner) = types.insert(t.clone(), c.key.clone()) {
                let by = if owner == "livegate" {
                    "a built-in type".to_string()
                } else {
                    format!("collection \"{owner}\"")
                };
                return Err(cx.err(format!("collections.{}", c.key), format!("its GraphQL type name \"{t}\" is already used by {by}; set `type` to another name")));
            }
        }
        for f in [
            &n.list, &n.single, &n.count, &n.create, &n.update, &n.delete, &n.changed,
        ] {
            if let Some(owner) = roots.insert(f.clone(), c.key.clone()) {
                let by = if owner == "livegate" {
                    "a built-in field".to_string()
                } else {
                    format!("collection \"{owner}\"")
                };
                return Err(cx.err(
                    format!("collections.{}", c.key),
                    format!("its GraphQL field \"{f}\" is already used by {by}"),
                ));
            }
        }
    }
    Ok(())
}
