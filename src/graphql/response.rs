//! Spec-shaped execution results. async-graphql's dynamic executor reports a
//! resolver error without a `path` and drops the failed field from `data` instead
//! of nulling it (and never propagates null past a non-null field). Clients such
//! as Apollo rely on both, so:
//! - [`take_paths`](super::errors::take_paths) gives every resolver error its
//!   path (which [`resolve`](super::errors::resolve) and its kin record);
//! - [`complete`] then writes `null` where each error happened, or at the nearest
//!   nullable ancestor when the field is non-null (`data: null` at the root).
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::registry::Registry;
use async_graphql::{PathSegment, Value};

/// For one path segment: is the value there allowed to be null?
fn nullability(
    registry: &Registry,
    doc: &ExecutableDocument,
    root: &SelectionSet,
    root_type: &str,
    path: &[PathSegment],
) -> Option<Vec<bool>> {
    let mut out = Vec::with_capacity(path.len());
    let mut type_name = root_type.to_string();
    let mut selection = root.clone();
    // The type string still to unwrap for list indices, e.g. "[Post!]!".
    let mut pending: Option<String> = None;
    for seg in path {
        match seg {
            PathSegment::Field(key) => {
                let field = find_field(doc, &selection, key)?;
                let meta = registry
                    .types
                    .get(&type_name)?
                    .field_by_name(&field.node.name.node)?;
                out.push(!meta.ty.ends_with('!'));
                let inner = meta.ty.trim_end_matches('!');
                pending = inner.starts_with('[').then(|| inner.to_string());
                type_name = meta
                    .ty
                    .trim_matches(|c| c == '[' || c == ']' || c == '!')
                    .to_string();
                selection = field.node.selection_set.node.clone();
            }
            PathSegment::Index(_) => {
                let list = pending.take()?;
                let element = list.strip_prefix('[')?.strip_suffix(']')?.to_string();
                out.push(!element.ends_with('!'));
                let inner = element.trim_end_matches('!');
                pending = inner.starts_with('[').then(|| inner.to_string());
            }
        }
    }
    Some(out)
}

/// The field selected under response key `key`, looking through fragments.
fn find_field(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    key: &str,
) -> Option<async_graphql::Positioned<async_graphql::parser::types::Field>> {
    for item in &set.items {
        let found = match &item.node {
            Selection::Field(f) if f.node.response_key().node.as_str() == key => {
                return Some(f.clone());
            }
            Selection::Field(_) => None,
            Selection::InlineFragment(inline) => {
                find_field(doc, &inline.node.selection_set.node, key)
            }
            Selection::FragmentSpread(spread) => doc
                .fragments
                .get(&spread.node.fragment_name.node)
                .and_then(|frag| find_field(doc, &frag.node.selection_set.node, key)),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn set_null(data: &mut Value, path: &[PathSegment]) {
    let Some((last, parents)) = path.split_last() else {
        *data = Value::Null;
        return;
    };
    let mut cur = data;
    for seg in parents {
        cur = match (seg, cur) {
            (PathSegment::Field(k), Value::Object(m)) => match m.get_mut(k.as_str()) {
                Some(v) => v,
                None => return,
            },
            (PathSegment::Index(i), Value::List(l)) => match l.get_mut(*i) {
                Some(v) => v,
                None => return,
            },
            // An ancestor is already null (another error got there first).
            _ => return,
        };
    }
    match (last, cur) {
        (PathSegment::Field(k), Value::Object(m)) => {
            m.insert(async_graphql::Name::new(k), Value::Null);
        }
        (PathSegment::Index(i), Value::List(l)) => {
            if let Some(v) = l.get_mut(*i) {
                *v = Value::Null;
            }
        }
        _ => {}
    }
}

/// Writes `null` for every errored field of an executed operation, propagating
/// through non-null positions as the GraphQL spec requires.
pub fn complete(
    registry: &Registry,
    doc: &ExecutableDocument,
    operation_name: Option<&str>,
    response: &mut async_graphql::Response,
) {
    let operation = match (&doc.operations, operation_name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name) {
            Some(op) => op,
            None => return,
        },
        (DocumentOperations::Multiple(ops), None) => match ops.values().next() {
            Some(op) if ops.len() == 1 => op,
            _ => return,
        },
    };
    let root_type = match operation.node.ty {
        async_graphql::parser::types::OperationType::Query => registry.query_type.clone(),
        async_graphql::parser::types::OperationType::Mutation => {
            registry.mutation_type.clone().unwrap_or_default()
        }
        async_graphql::parser::types::OperationType::Subscription => {
            registry.subscription_type.clone().unwrap_or_default()
        }
    };
    let root = &operation.node.selection_set.node;
    if response.data == Value::Null && !response.errors.is_empty() {
        response.data = Value::Object(Default::default());
    }
    let paths: Vec<Vec<PathSegment>> = response
        .errors
        .iter()
        .map(|e| e.path.clone())
        .filter(|p| !p.is_empty())
        .collect();
    for path in paths {
        let Some(nullable) = nullability(registry, doc, root, &root_type, &path) else {
            continue;
        };
        match nullable.iter().rposition(|n| *n) {
            Some(at) => set_null(&mut response.data, &path[..=at]),
            None => {
                response.data = Value::Null;
                return;
            }
        }
    }
}
