//! Cheap checks on a GraphQL document before anything recursive or costly
//! touches it.
//!
//! async-graphql's parser (pest) bounds how deep it recurses, but turning what it
//! parsed into a syntax tree recurses again on nested argument values
//! (`[[[...]]]`, `{not: {not: ...}}`), and a few hundred levels, under a kilobyte,
//! overflow a 2 MiB worker stack and abort the whole process (no panic to catch).
//! So every transport runs [`document`] first, a linear scan that counts bracket
//! nesting outside strings and comments and refuses what is too large or too
//! deep with `GRAPHQL_PARSE_FAILED`. Once the document is parsed, [`expansion`]
//! bounds what its fragments expand to (validation and complexity walk every
//! spread, so a kilobyte of fragments spreading each other twice costs minutes
//! of CPU), and [`single_root_field`] applies the spec's rule that a
//! subscription selects exactly one root field.

use std::collections::HashMap;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Name, Positioned};

/// Most field selections a document may expand to, fragments spread out.
pub const MAX_EXPANDED_SELECTIONS: usize = 20_000;

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

/// The operation `name` picks in `doc`: the one so named, or the only one.
/// `None` when it cannot be told (a name it lacks; several and no name).
pub fn selected<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), None) => Some(op),
        (DocumentOperations::Single(_), Some(_)) => None,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Refuses a document whose selections, fragments spread out, number more than
/// `max_selections` or nest deeper than `max_nesting`. Each fragment is measured
/// once; the walk itself never goes deeper than `max_nesting` (a chain of
/// fragments spreading each other nests without brackets).
pub fn expansion(
    doc: &ExecutableDocument,
    max_selections: usize,
    max_nesting: usize,
) -> Result<(), String> {
    let mut walk = Expansion {
        doc,
        measured: HashMap::new(),
        max_nesting,
    };
    let mut total = 0usize;
    let sets = doc
        .operations
        .iter()
        .map(|(_, op)| &op.node.selection_set.node)
        .chain(doc.fragments.values().map(|f| &f.node.selection_set.node));
    for set in sets {
        let (size, _) = walk
            .measure(set, 1)
            .ok_or_else(|| format!("the document nests selections more than {max_nesting} deep"))?;
        total = total.saturating_add(size);
        if total > max_selections {
            return Err(format!(
                "the document expands to more than {max_selections} field selections"
            ));
        }
    }
    Ok(())
}

struct Expansion<'a> {
    doc: &'a ExecutableDocument,
    /// Fragment name → (selections, nesting); `None` while being measured (a
    /// cycle, which validation refuses, counts as empty here).
    measured: HashMap<&'a Name, Option<(usize, usize)>>,
    max_nesting: usize,
}

impl<'a> Expansion<'a> {
    /// The selections `set` expands to and how deep they nest, or `None` when
    /// deeper than allowed (`at`: the depth of `set` itself).
    fn measure(&mut self, set: &'a SelectionSet, at: usize) -> Option<(usize, usize)> {
        if at > self.max_nesting {
            return None;
        }
        let (mut size, mut height) = (0usize, 0usize);
        for item in &set.items {
            let (s, h) = match &item.node {
                Selection::Field(f) => {
                    let (s, h) = self.measure(&f.node.selection_set.node, at + 1)?;
                    (s.saturating_add(1), h + 1)
                }
                // A fragment, inline or spread, nests like a selection set: a
                // chain of spreads has no brackets, but validation recurses
                // through it all the same.
                Selection::InlineFragment(frag) => {
                    let (s, h) = self.measure(&frag.node.selection_set.node, at + 1)?;
                    (s, h + 1)
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    match self.measured.get(name) {
                        Some(Some(known)) => *known,
                        Some(None) => (0, 0),
                        None => {
                            let Some(frag) = self.doc.fragments.get(name) else {
                                continue;
                            };
                            self.measured.insert(name, None);
                            let (s, h) = self.measure(&frag.node.selection_set.node, at + 1)?;
                            self.measured.insert(name, Some((s, h + 1)));
                            (s, h + 1)
                        }
                    }
                }
            };
            if at + h > self.max_nesting + 1 {
                return None;
            }
            size = size.saturating_add(s);
            height = height.max(h);
        }
        Some((size, height))
    }
}

/// What a parsed document must pass before validation and execution: its
/// fragments' [`expansion`], and the [`single_root_field`] rule. The message of
/// the validation error when it does not.
pub fn checked(
    doc: &ExecutableDocument,
    name: Option<&str>,
    limits: &super::Limits,
) -> Result<(), String> {
    expansion(doc, MAX_EXPANDED_SELECTIONS, limits.max_nesting)?;
    match single_root_field(doc, name) {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// The spec's "single root field" rule: a subscription operation selects exactly
/// one root field, counted through fragments; an alias, `__typename`, or the same
/// field selected twice beside it makes two (two selections of one field would
/// each start a feed and render for the subscription). Returns the message of the
/// validation error, if the operation `name` picks in `doc` breaks it.
pub fn single_root_field(doc: &ExecutableDocument, name: Option<&str>) -> Option<String> {
    let op = selected(doc, name)?;
    if op.node.ty != OperationType::Subscription {
        return None;
    }
    let mut fields = Vec::new();
    let mut seen = Vec::new();
    collect_root_fields(doc, &op.node.selection_set.node, &mut fields, &mut seen);
    let what = match name {
        Some(name) => format!("subscription \"{name}\""),
        None => "an anonymous subscription".to_string(),
    };
    match fields.len() {
        1 => None,
        0 => Some(format!("{what} must select a root field")),
        _ => Some(format!(
            "{what} must select only one root field; it selects {}",
            fields
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The response keys of the field selections at a selection set's own level,
/// through fragments, each fragment once.
fn collect_root_fields<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    fields: &mut Vec<&'a Name>,
    seen: &mut Vec<&'a Name>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => fields.push(&f.node.response_key().node),
            Selection::InlineFragment(frag) => {
                collect_root_fields(doc, &frag.node.selection_set.node, fields, seen)
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                if seen.contains(&name) {
                    continue;
                }
                seen.push(name);
                if let Some(frag) = doc.fragments.get(name) {
                    collect_root_fields(doc, &frag.node.selection_set.node, fields, seen);
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
        assert!(check("subscription { a { x } a { y } }", None).is_some());
        assert_eq!(
            check("subscription { ...F ...F } fragment F on S { a }", None),
            None
        );
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

    fn expand(q: &str) -> Result<(), String> {
        let doc = async_graphql::parser::parse_query(q).expect("parses");
        expansion(&doc, 1_000, 64)
    }

    #[test]
    fn fragments_expanding_exponentially_are_refused_cheaply() {
        // F0 spreads F1 twice, F1 spreads F2 twice, ...: 2^30 selections.
        let mut q = "query { ...F0 }".to_string();
        for i in 0..30 {
            q.push_str(&format!(
                " fragment F{i} on Query {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        q.push_str(" fragment F30 on Query { a }");
        let started = std::time::Instant::now();
        assert!(expand(&q).unwrap_err().contains("expands"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(
            expand("query { a { b } ...F } fragment F on Query { c { d } }"),
            Ok(())
        );
        // A cycle is validation's to refuse; it is no reason to hang here.
        assert_eq!(
            expand("query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }"),
            Ok(())
        );
    }

    #[test]
    fn a_chain_of_fragments_nests_like_brackets() {
        let mut q = "query { ...F0 }".to_string();
        for i in 0..100 {
            q.push_str(&format!(
                " fragment F{i} on Query {{ a {{ ...F{} }} }}",
                i + 1
            ));
        }
        q.push_str(" fragment F100 on Query { a }");
        assert!(expand(&q).unwrap_err().contains("deep"));
        let mut q = "query { ...F0 }".to_string();
        for i in 0..1_000 {
            q.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", i + 1));
        }
        q.push_str(" fragment F1000 on Query { a }");
        assert!(
            expand(&q).unwrap_err().contains("deep"),
            "spreads alone nest too"
        );
    }
}
