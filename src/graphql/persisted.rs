//! Persisted documents: a request may name its document by id instead of
//! sending its text.
//!
//! - Automatic persisted queries (Apollo's protocol): a request sends
//!   `extensions.persistedQuery = { version: 1, sha256Hash }` without `query`;
//!   when the server does not know the hash it answers
//!   `PERSISTED_QUERY_NOT_FOUND` (message `PersistedQueryNotFound`, which
//!   clients match on), and the client sends the text with the hash once,
//!   which registers it. The hash must be the SHA-256 of the text.
//! - A manifest (`--persisted-documents FILE`): the JSON object of id to
//!   document that graphql-codegen's client preset writes
//!   (`persistedDocuments: true`). Its ids are taken as given (with or without
//!   a `sha256:` prefix); a request names one by `extensions.persistedQuery.sha256Hash`
//!   or by a top-level `documentId`.
//! - `--only-persisted`: every request must be a document of the manifest,
//!   by id or by its exact text; anything else is `PERSISTED_QUERY_REQUIRED`,
//!   and nothing is registered.
//!
//! Registered documents are held in a cache bounded by their text (like
//! [`super::documents`]): endless distinct registrations only evict, and a
//! client whose hash was evicted is told `PERSISTED_QUERY_NOT_FOUND` and sends
//! the text again. Each instance keeps its own registrations; behind a load
//! balancer that costs at most one extra round trip per document and instance.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

/// Text of registered documents held in all, in bytes.
pub const REGISTERED_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Clone)]
struct ByText;

impl Weighter<String, Arc<str>> for ByText {
    fn weight(&self, id: &String, text: &Arc<str>) -> u64 {
        (id.len() + text.len()) as u64
    }
}

/// Why a request's persisted document cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistedError {
    /// The id is neither in the manifest nor registered.
    #[error("PersistedQueryNotFound")]
    NotFound,
    /// `--only-persisted` and the request is not a document of the manifest.
    #[error(
        "this server runs only persisted documents: send the id of a document from its manifest (extensions.persistedQuery.sha256Hash or documentId)"
    )]
    Required,
    /// The text sent with a hash does not have that hash.
    #[error("the persisted query's sha256Hash is not the SHA-256 of the query sent with it")]
    HashMismatch,
    /// `extensions.persistedQuery` or `documentId` is not of the expected shape.
    #[error("{0}")]
    Malformed(String),
}

impl PersistedError {
    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            PersistedError::NotFound => "PERSISTED_QUERY_NOT_FOUND",
            PersistedError::Required => "PERSISTED_QUERY_REQUIRED",
            PersistedError::HashMismatch | PersistedError::Malformed(_) => "BAD_USER_INPUT",
        }
    }

    /// The error as a GraphQL error object.
    pub fn to_json(&self) -> Json {
        serde_json::json!({ "message": self.to_string(), "extensions": { "code": self.code() } })
    }
}

/// The id a request names its document by, if any: `documentId`, else
/// `extensions.persistedQuery.sha256Hash`.
pub fn requested_id(
    extensions: &Map<String, Json>,
    document_id: Option<&Json>,
) -> Result<Option<String>, PersistedError> {
    match document_id {
        None | Some(Json::Null) => {}
        Some(Json::String(id)) if !id.is_empty() => return Ok(Some(id.clone())),
        Some(_) => {
            return Err(PersistedError::Malformed(
                "`documentId` must be a non-empty string".into(),
            ));
        }
    }
    let Some(pq) = extensions.get("persistedQuery") else {
        return Ok(None);
    };
    let malformed = || {
        PersistedError::Malformed(
            "`extensions.persistedQuery` must be { \"version\": 1, \"sha256Hash\": \"<hex>\" }"
                .into(),
        )
    };
    let pq = match pq {
        Json::Null => return Ok(None),
        Json::Object(pq) => pq,
        _ => return Err(malformed()),
    };
    match pq.get("version") {
        None => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(PersistedError::Malformed(
                "only version 1 of persisted queries is supported".into(),
            ));
        }
    }
    match pq.get("sha256Hash") {
        Some(Json::String(h)) if !h.is_empty() => Ok(Some(h.clone())),
        _ => Err(malformed()),
    }
}

/// The lowercase hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The persisted documents of a server (cheap to share behind an `Arc`).
pub struct Persisted {
    /// The manifest's documents, by id (a `sha256:` prefix removed).
    manifest: HashMap<String, Arc<str>>,
    /// The manifest's documents by their text, for `--only-persisted`
    /// requests that send the text itself.
    manifest_texts: std::collections::HashSet<Arc<str>>,
    only: bool,
    /// Documents registered by automatic persisted queries, by hash.
    registered: Cache<String, Arc<str>, ByText>,
    /// What a document must pass to be registered or loaded (its size and
    /// nesting, see [`super::guard::document`]): a stored text is parsed
    /// later with no other check, and the parser recurses on nesting.
    max_document_bytes: usize,
    max_nesting: usize,
}

impl std::fmt::Debug for Persisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persisted")
            .field("manifest", &self.manifest.len())
            .field("only", &self.only)
            .field("registered", &self.registered.len())
            .finish()
    }
}

impl Default for Persisted {
    fn default() -> Self {
        let limits = super::Limits::default();
        Persisted::new(HashMap::new(), false, &limits)
    }
}

fn bare(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

impl Persisted {
    fn new(manifest: HashMap<String, Arc<str>>, only: bool, limits: &super::Limits) -> Self {
        let manifest_texts = manifest.values().cloned().collect();
        Persisted {
            manifest,
            manifest_texts,
            only,
            registered: Cache::with_weighter(1024, REGISTERED_BYTES, ByText),
            max_document_bytes: limits.max_document_bytes,
            max_nesting: limits.max_nesting,
        }
    }

    /// Whether `text` passes the document guard (size and nesting).
    fn passes_guard(&self, text: &str) -> Result<(), String> {
        super::guard::document(text, self.max_document_bytes, self.max_nesting).map_err(|e| e.0)
    }

    /// Persisted documents from the manifest at `path` (if any); `only` refuses
    /// every other document. A manifest that is not a JSON object of strings,
    /// or holds a document that does not parse, is an error naming it.
    pub fn load(
        path: Option<&Path>,
        only: bool,
        limits: &super::Limits,
    ) -> anyhow::Result<Persisted> {
        let Some(path) = path else {
            anyhow::ensure!(
                !only,
                "--only-persisted needs --persisted-documents: the manifest of the documents allowed"
            );
            return Ok(Persisted::new(HashMap::new(), false, limits));
        };
        let empty = Persisted::new(HashMap::new(), false, limits);
        let named = || format!("--persisted-documents {}", path.display());
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", named()))?;
        let json: Map<String, Json> = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{}: not a JSON object of id to document ({e})", named())
        })?;
        let mut manifest = HashMap::with_capacity(json.len());
        for (id, document) in json {
            let Json::String(document) = document else {
                anyhow::bail!("{}: the document of id {id:?} is not a string", named());
            };
            if let Err(e) = empty.passes_guard(&document) {
                anyhow::bail!("{}: the document of id {id:?} is refused: {e}", named());
            }
            if let Err(e) = async_graphql::parser::parse_query(&document) {
                anyhow::bail!("{}: the document of id {id:?} does not parse: {e}", named());
            }
            let document: Arc<str> = Arc::from(document);
            match manifest.insert(bare(&id).to_string(), document.clone()) {
                Some(other) if other != document => anyhow::bail!(
                    "{}: id {id:?} names two different documents (with and without `sha256:`)",
                    named()
                ),
                _ => {}
            }
        }
        Ok(Persisted::new(manifest, only, limits))
    }

    /// How many documents the manifest holds.
    pub fn manifest_len(&self) -> usize {
        self.manifest.len()
    }

    /// Whether only the manifest's documents run.
    pub fn only(&self) -> bool {
        self.only
    }

    /// The text of the request's document: `None` for `query` as sent (most
    /// requests: nothing copied), or the persisted document `id` names.
    /// `query` is empty when the request sent none. Text sent with a hash is
    /// checked against it and registered.
    pub fn resolve(
        &self,
        query: &str,
        id: Option<&str>,
    ) -> Result<Option<Arc<str>>, PersistedError> {
        let Some(id) = id else {
            if self.only && !self.manifest_texts.contains(query) {
                return Err(PersistedError::Required);
            }
            return Ok(None);
        };
        let id = bare(id);
        if query.is_empty() {
            if let Some(doc) = self.manifest.get(id) {
                return Ok(Some(doc.clone()));
            }
            if !self.only
                && let Some(doc) = self.registered.get(&id.to_ascii_lowercase())
            {
                return Ok(Some(doc));
            }
            return Err(PersistedError::NotFound);
        }
        if self.manifest.get(id).is_some_and(|doc| **doc == *query) {
            return Ok(None);
        }
        if self.only {
            return Err(PersistedError::Required);
        }
        let hash = sha256_hex(query);
        if !hash.eq_ignore_ascii_case(id) {
            return Err(PersistedError::HashMismatch);
        }
        // Only what the guard passes is kept: a later request naming the hash
        // runs the text with no other check. (The request itself goes on, and
        // the guard refuses it where every request is checked.)
        if self.passes_guard(query).is_ok() {
            self.registered.insert(hash, Arc::from(query));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "{ posts { id } }";

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn automatic_persisted_queries_register_and_check_their_hash() {
        let p = Persisted::default();
        let hash = sha256_hex(DOC);
        assert_eq!(p.resolve("", Some(&hash)), Err(PersistedError::NotFound));
        assert_eq!(
            p.resolve("{ posts { title } }", Some(&hash)),
            Err(PersistedError::HashMismatch)
        );
        assert_eq!(p.resolve("", Some(&hash)), Err(PersistedError::NotFound));
        assert_eq!(p.resolve(DOC, Some(&hash)), Ok(None));
        assert_eq!(
            p.resolve("", Some(&hash))
                .map(|d| d.as_deref().map(str::to_string)),
            Ok(Some(DOC.to_string()))
        );
        assert_eq!(
            p.resolve("", Some(&hash.to_ascii_uppercase()))
                .map(|d| d.as_deref().map(str::to_string)),
            Ok(Some(DOC.to_string()))
        );
        assert_eq!(p.resolve(DOC, None), Ok(None));
    }

    #[test]
    fn texts_the_guard_refuses_are_never_registered() {
        let p = Persisted::default();
        let deep = format!(
            "{{ postsCount(x: {}1{}) }}",
            "[".repeat(600),
            "]".repeat(600)
        );
        let hash = sha256_hex(&deep);
        assert!(
            p.resolve(&deep, Some(&hash)).is_ok(),
            "the request goes on to the guard"
        );
        assert_eq!(p.resolve("", Some(&hash)), Err(PersistedError::NotFound));
    }

    #[test]
    fn only_persisted_runs_the_manifest_and_nothing_else() {
        let manifest = HashMap::from([("abc".to_string(), Arc::from(DOC))]);
        let p = Persisted::new(manifest, true, &crate::graphql::Limits::default());
        let named = |id: &str| {
            p.resolve("", Some(id))
                .map(|d| d.as_deref().map(str::to_string))
        };
        assert_eq!(named("abc"), Ok(Some(DOC.to_string())));
        assert_eq!(named("sha256:abc"), Ok(Some(DOC.to_string())));
        assert_eq!(p.resolve(DOC, None), Ok(None));
        assert_eq!(
            p.resolve("{ postsCount }", None),
            Err(PersistedError::Required)
        );
        let other = "{ postsCount }";
        assert_eq!(
            p.resolve(other, Some(&sha256_hex(other))),
            Err(PersistedError::Required)
        );
        assert_eq!(
            p.resolve("", Some(&sha256_hex(other))),
            Err(PersistedError::NotFound)
        );
    }

    #[test]
    fn malformed_references_say_what_is_expected() {
        let ext = |v: Json| match v {
            Json::Object(m) => m,
            _ => Map::new(),
        };
        let bad = [
            ext(serde_json::json!({ "persistedQuery": "x" })),
            ext(serde_json::json!({ "persistedQuery": { "version": 2, "sha256Hash": "x" } })),
            ext(serde_json::json!({ "persistedQuery": { "version": 1 } })),
        ];
        for e in bad {
            assert!(matches!(
                requested_id(&e, None),
                Err(PersistedError::Malformed(_))
            ));
        }
        assert!(matches!(
            requested_id(&Map::new(), Some(&Json::from(3))),
            Err(PersistedError::Malformed(_))
        ));
        assert_eq!(
            requested_id(&Map::new(), Some(&Json::from("id1"))),
            Ok(Some("id1".into()))
        );
    }
}
