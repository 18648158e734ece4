//! Cheap checks on a GraphQL document before anything recursive touches it.
//!
//! async-graphql's parser bounds the depth of selection sets, but not of nested
//! argument values (`[[[...]]]`, `{not: {not: ...}}`), and it recurses on them:
//! about 2,000 levels in a 4 KB document overflow a worker thread's stack and abort
//! the whole process (no panic to catch). So every transport runs [`document`]
//! first, a linear scan that counts bracket nesting outside strings and comments,
//! and refuses what is too large or too deep with `GRAPHQL_PARSE_FAILED`. Then, once
//! the document is parsed, [`single_root_field`] applies the spec's rule that a
//! subscription selects exactly one root field.

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned};

/// Why a document was refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// Refuses a document longer than `max_bytes`, or whose brackets (`{`, `[`, `(`)
/// nest deeper than `max_nesting`, without parsing it. Strings, block strings and
/// comments are skipped, so brackets inside them do not count.
pub fn document(query: &str, max_bytes: usize, max_nesting: usize) -> Result<(), Refused> {
    if query.len() > max_bytes {
        return Err(Refused(format!(
            "the document is {} bytes; at most {max_bytes} are accepted (--max-document-bytes)",
            query.len()
        )));
    }
    let bytes = query.as_bytes();
    let (mut depth, mut at) = (0usize, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'#' => {
                while at < bytes.len() && bytes[at] != b'\n' && bytes[at] != b'\r' {
                    at += 1;
                }
            }
            b'"' if bytes[at..].starts_with(b"\"\"\"") => {
                at += 3;
                // A block string ends at the first `"""` not escaped as `\"""`.
                while at < bytes.len() && !bytes[at..].starts_with(b"\"\"\"") {
                    at += if bytes[at..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                at += 2;
            }
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' && bytes[at] != b'\n' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > max_nesting {
                    return Err(Refused(format!(
                        "the document nests brackets more than {max_nesting} deep"
                    )));
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// The spec's "single root field" rule: a subscription operation selects exactly
/// one root field (an alias, or `__typename` beside another field, makes two),
/// counted through fragments. Returns the message of the validation error, if
/// the operation `name` picks in `doc` breaks it.
pub fn single_root_field(doc: &ExecutableDocument, name: Option<&str>) -> Option<String> {
    let op = match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next()?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    if op.node.ty != OperationType::Subscription {
        return None;
    }
    let mut keys = Vec::new();
    collect_keys(doc, &op.node.selection_set.node, &mut keys, 0);
    let what = match name {
        Some(name) => format!("subscription \"{name}\""),
        None => "an anonymous subscription".to_string(),
    };
    match keys.len() {
        1 => None,
        0 => Some(format!("{what} must select a root field")),
        _ => Some(format!(
            "{what} must select only one root field; it selects {}",
            keys.iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The response keys a selection set yields at its own level, through fragments
/// (a fragment cycle is a validation error elsewhere; `hops` stops it here).
fn collect_keys(doc: &ExecutableDocument, set: &SelectionSet, keys: &mut Vec<Name>, hops: usize) {
    if hops > 32 {
        return;
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => {
                let key = f.node.response_key().node.clone();
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            Selection::InlineFragment(frag) => {
                collect_keys(doc, &frag.node.selection_set.node, keys, hops + 1)
            }
            Selection::FragmentSpread(spread) => {
                let name: &Positioned<Name> = &spread.node.fragment_name;
                if let Some(frag) = doc.fragments.get(&name.node) {
                    collect_keys(doc, &frag.node.selection_set.node, keys, hops + 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(n: usize) -> String {
        format!("{{ __typename(x: {}1{}) }}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn refuses_deep_and_large_documents_without_parsing() {
        assert!(document("{ a { b { c } } }", 1000, 3).is_ok());
        assert!(document("{ a { b { c { d } } } }", 1000, 3).is_err());
        assert!(document(&deep(2_000), 100_000, 64).is_err());
        assert!(document(&deep(10), 100_000, 64).is_ok());
        assert!(document(&"x".repeat(101), 100, 64).is_err());
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let q = format!(
            "{{ a(s: \"{o}\\\"{o}\", b: \"\"\"{o}\\\"\"\"{o}\"\"\") # {o}\n }}",
            o = "[".repeat(100)
        );
        assert_eq!(document(&q, 100_000, 4), Ok(()));
        // An unterminated string does not hide what follows its line.
        let q = format!("{{ a(s: \"open\n{}) }}", "[".repeat(10));
        assert!(document(&q, 100_000, 4).is_err());
    }

    fn check(q: &str, name: Option<&str>) -> Option<String> {
        let doc = async_graphql::parser::parse_query(q).expect("parses");
        single_root_field(&doc, name)
    }

    #[test]
    fn one_root_field_per_subscription() {
        assert_eq!(check("subscription { a { x } }", None), None);
        assert_eq!(check("subscription { a { x } a { y } }", None), None);
        assert!(check("subscription { a b }", None).is_some());
        assert!(check("subscription { x: a y: a }", None).is_some());
        assert!(check("subscription { __typename a }", None).is_some());
        assert!(check("subscription { ...F } fragment F on S { a b }", None).is_some());
        assert!(check("subscription { a ... on S { b } }", None).is_some());
        assert_eq!(check("{ a b }", None), None);
        assert_eq!(
            check("query Q { a b } subscription S { a }", Some("S")),
            None
        );
        assert!(check("query Q { a } subscription S { a b }", Some("S")).is_some());
    }
}
