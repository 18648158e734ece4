//! The `@live` directive of live queries (API.md §8), as a document carries it,
//! and what a live query's execution reads.
//!
//! async-graphql's dynamic schema has no way to declare a directive of our
//! own, so `@live` never reaches its validation: the streaming transports read
//! it here and run the document without it ([`without_live`]); HTTP refuses it.
//! The SDL (`livegate schema`) declares it ([`LIVE_DIRECTIVE_SDL`]) for code
//! generators.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use async_graphql::parser::types::{ExecutableDocument, OperationDefinition, OperationType};
use async_graphql::{Name, Positioned, Value};
use serde_json::{Map, Value as Json};

/// The directive's definition, as the SDL shows it.
pub const LIVE_DIRECTIVE_SDL: &str = "\"\"\"\nKeeps a query's result up to date over a streaming transport (graphql-ws, GraphQL over SSE): the whole result first, then a new one (or, with `patch`, a JSON Patch against the last) whenever a committed change alters it. `throttle` is the least time between two results, in milliseconds (default 100).\n\"\"\"\ndirective @live(if: Boolean = true, throttle: Int, patch: Boolean = false) on QUERY\n";

/// The default least time between two results of a live query.
pub const DEFAULT_THROTTLE: Duration = Duration::from_millis(100);

/// The longest `throttle` accepted, in milliseconds (an hour).
pub const MAX_THROTTLE_MS: i64 = 3_600_000;

/// How a live query wants its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Live {
    /// The least time between two results.
    pub throttle: Duration,
    /// Results after the first as JSON Patches.
    pub patch: bool,
}

/// Whether `op` carries `@live` at all (whatever its arguments say).
pub fn has_live(op: &OperationDefinition) -> bool {
    op.ty == OperationType::Query
        && op
            .directives
            .iter()
            .any(|d| d.node.name.node.as_str() == "live")
}

/// What the `@live` directive of query `op` asks for, `variables` applied:
/// `None` when there is none or `if` is false; an error message for
/// arguments it does not take or values of the wrong type.
pub fn live_of(
    op: &OperationDefinition,
    variables: &Map<String, Json>,
) -> Result<Option<Live>, String> {
    if op.ty != OperationType::Query {
        return Ok(None);
    }
    let mut lives = op
        .directives
        .iter()
        .filter(|d| d.node.name.node.as_str() == "live");
    let Some(directive) = lives.next() else {
        return Ok(None);
    };
    if lives.next().is_some() {
        return Err("@live may be given once".into());
    }
    let mut live = Live {
        throttle: DEFAULT_THROTTLE,
        patch: false,
    };
    let mut on = true;
    for (name, value) in &directive.node.arguments {
        let value = value
            .node
            .clone()
            .into_const_with(|var| Ok::<_, ()>(variable(op, variables, &var)))
            .unwrap_or(Value::Null);
        match (name.node.as_str(), value) {
            ("if", Value::Boolean(b)) => on = b,
            ("patch", Value::Boolean(b)) => live.patch = b,
            ("if" | "patch", Value::Null) => {}
            ("throttle", Value::Null) => {}
            ("throttle", Value::Number(n)) => match n.as_i64() {
                Some(ms) if (0..=MAX_THROTTLE_MS).contains(&ms) => {
                    live.throttle = Duration::from_millis(ms as u64);
                }
                _ => {
                    return Err(format!(
                        "@live(throttle:) takes milliseconds from 0 to {MAX_THROTTLE_MS}"
                    ));
                }
            },
            ("if" | "patch", _) => {
                return Err(format!("@live({}:) takes a Boolean", name.node));
            }
            ("throttle", _) => return Err("@live(throttle:) takes an Int".into()),
            (other, _) => {
                return Err(format!(
                    "@live takes no argument {other:?} (it takes if, throttle and patch)"
                ));
            }
        }
    }
    Ok(on.then_some(live))
}

/// A variable's value: as sent, else its definition's default, else null.
fn variable(op: &OperationDefinition, variables: &Map<String, Json>, name: &Name) -> Value {
    if let Some(v) = variables.get(name.as_str()) {
        return Value::from_json(v.clone()).unwrap_or(Value::Null);
    }
    op.variable_definitions
        .iter()
        .find(|d| d.node.name.node == *name)
        .and_then(|d| d.node.default_value.as_ref())
        .map_or(Value::Null, |v| v.node.clone())
}

/// `doc` with `@live` taken off every query operation.
pub fn without_live(doc: &ExecutableDocument) -> ExecutableDocument {
    let mut doc = doc.clone();
    let strip = |op: &mut Positioned<OperationDefinition>| {
        op.node
            .directives
            .retain(|d| d.node.name.node.as_str() != "live");
    };
    match &mut doc.operations {
        async_graphql::parser::types::DocumentOperations::Single(op) => strip(op),
        async_graphql::parser::types::DocumentOperations::Multiple(ops) => {
            ops.values_mut().for_each(strip)
        }
    }
    doc
}

/// The collections an execution read (by their app-file keys): a live query
/// is run again only after a change to one of them.
#[derive(Debug, Default)]
pub struct Reads(Mutex<BTreeSet<String>>);

impl Reads {
    /// Notes that `collection` was read.
    pub fn read(&self, collection: &str) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !set.contains(collection) {
            set.insert(collection.to_owned());
        }
    }

    /// What was read.
    pub fn take(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(doc: &str, vars: Json) -> Result<Option<Live>, String> {
        let doc = async_graphql::parser::parse_query(doc).expect("parses");
        let op = crate::graphql::guard::selected(&doc, None).expect("one operation");
        let Json::Object(vars) = vars else {
            panic!("an object")
        };
        live_of(&op.node, &vars)
    }

    #[test]
    fn reads_the_directive_and_its_arguments() {
        let default = Live {
            throttle: DEFAULT_THROTTLE,
            patch: false,
        };
        assert_eq!(live("{ posts { id } }", json_obj()), Ok(None));
        assert_eq!(
            live("query @live { posts { id } }", json_obj()),
            Ok(Some(default))
        );
        assert_eq!(
            live("query @live(patch: true, throttle: 0) { a }", json_obj()),
            Ok(Some(Live {
                throttle: Duration::ZERO,
                patch: true
            }))
        );
        assert_eq!(live("query @live(if: false) { a }", json_obj()), Ok(None));
        assert_eq!(
            live(
                "query Q($on: Boolean = true) @live(if: $on) { a }",
                serde_json::json!({ "on": false })
            ),
            Ok(None)
        );
        assert_eq!(
            live(
                "query Q($on: Boolean = true) @live(if: $on) { a }",
                json_obj()
            ),
            Ok(Some(default))
        );
        assert!(live("query @live(throttle: -1) { a }", json_obj()).is_err());
        assert!(live("query @live(throttle: \"x\") { a }", json_obj()).is_err());
        assert!(live("query @live(patch: 1) { a }", json_obj()).is_err());
        assert!(live("query @live(every: 1) { a }", json_obj()).is_err());
        assert!(live("query @live @live { a }", json_obj()).is_err());
        assert_eq!(live("subscription @live { a }", json_obj()), Ok(None));
    }

    #[test]
    fn strips_only_live() {
        let doc = async_graphql::parser::parse_query("query @live(patch: true) @other { a }")
            .expect("parses");
        let doc = without_live(&doc);
        let op = crate::graphql::guard::selected(&doc, None).expect("one operation");
        let names: Vec<_> = op
            .node
            .directives
            .iter()
            .map(|d| d.node.name.node.to_string())
            .collect();
        assert_eq!(names, ["other"]);
    }

    fn json_obj() -> Json {
        Json::Object(Map::new())
    }
}
