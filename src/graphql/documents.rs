//! Parsed documents, by their text. Clients send the same few documents over
//! and over (each `useQuery` of an app is one text, its variables apart), and
//! parsing one is the largest part of what async-graphql spends on a small
//! request. A hit costs a clone of the parsed document instead.
//!
//! Bounded by the text it holds ([`CACHED_BYTES`], documents up to
//! [`CACHED_DOCUMENT_BYTES`] each; larger ones are parsed every time), so a
//! client sending endless distinct documents only evicts, never grows it.
//! Only documents that parse are kept: an error is reported afresh each time.

use std::sync::Arc;

use async_graphql::ServerError;
use async_graphql::parser::types::ExecutableDocument;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Text held in all, in bytes.
pub const CACHED_BYTES: u64 = 4 * 1024 * 1024;

/// The largest document kept, in bytes of text.
pub const CACHED_DOCUMENT_BYTES: usize = 16 * 1024;

#[derive(Clone)]
struct ByText;

impl Weighter<Arc<str>, Arc<ExecutableDocument>> for ByText {
    fn weight(&self, text: &Arc<str>, _: &Arc<ExecutableDocument>) -> u64 {
        // A parsed document takes a few times its text: count it so.
        (text.len() as u64).saturating_mul(4).max(1)
    }
}

/// The cache (cheap to share).
pub struct Documents {
    parsed: Cache<Arc<str>, Arc<ExecutableDocument>, ByText>,
}

impl Default for Documents {
    fn default() -> Self {
        Documents {
            parsed: Cache::with_weighter(1024, CACHED_BYTES, ByText),
        }
    }
}

impl Documents {
    /// `text` parsed, from the cache when it was parsed before.
    pub fn parse(&self, text: &str) -> Result<Arc<ExecutableDocument>, ServerError> {
        if let Some(doc) = self.parsed.get(text) {
            return Ok(doc);
        }
        let doc = Arc::new(async_graphql::parser::parse_query(text).map_err(ServerError::from)?);
        if text.len() <= CACHED_DOCUMENT_BYTES {
            self.parsed.insert(Arc::from(text), doc.clone());
        }
        Ok(doc)
    }

    /// How many documents are held.
    pub fn len(&self) -> usize {
        self.parsed.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.parsed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_once_and_stays_bounded() {
        let docs = Documents::default();
        let a = docs.parse("{ posts { id } }").expect("parses");
        let b = docs.parse("{ posts { id } }").expect("parses");
        assert!(Arc::ptr_eq(&a, &b), "the second is the cached one");
        assert!(docs.parse("{ posts { ").is_err());
        assert_eq!(docs.len(), 1, "errors are not kept");
        let big = format!("{{ {} }}", "__typename ".repeat(CACHED_DOCUMENT_BYTES / 10));
        let c = docs.parse(&big).expect("parses");
        let d = docs.parse(&big).expect("parses");
        assert!(!Arc::ptr_eq(&c, &d), "too large to keep");
        // Distinct documents of about 1 KiB, well past what the cache holds.
        let pad = "__typename ".repeat(100);
        for i in 0..3_000 {
            docs.parse(&format!("{{ a{i}: __typename {pad} }}"))
                .expect("parses");
        }
        let each = format!("{{ a1000: __typename {pad} }}").len() as u64 * 4;
        assert!(docs.len() < 3_000, "evicted: {} held", docs.len());
        assert!(
            docs.len() as u64 * each <= CACHED_BYTES,
            "bounded: {} held",
            docs.len()
        );
    }
}
