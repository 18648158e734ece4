//! Schema-change check (`livegate schema --diff OLD.graphql`): compares the SDL clients
//! were built against (OLD, usually the committed `schema/schema.graphql`) with the SDL
//! the current app file produces (NEW), and sorts every difference by what it does to
//! those clients, as graphql-inspector does:
//!
//! - **breaking**: a valid operation or a generated type of an existing client stops
//!   working: a type, field, argument, input field, enum value, union member, interface
//!   or directive removed; a type's kind changed; a field's type changed so that it may
//!   now return something the client does not expect (e.g. non-null → nullable); an
//!   argument's or input field's type changed so that a value the client sends may be
//!   refused (e.g. nullable → non-null); a required argument or input field (non-null,
//!   no default) added; a root type changed.
//! - **dangerous**: existing operations still validate, but may behave differently: an
//!   enum value or union member added (exhaustive switches), an interface implemented,
//!   a default value changed.
//! - **safe**: additions clients can ignore (types, fields, optional arguments and
//!   input fields, directives), narrowing a field to non-null, widening an input to
//!   nullable, description and deprecation changes.
//!
//! It works on SDL text alone, so it can compare any two schemas, not only livegate's.

use std::fmt;

use async_graphql::Name;
use async_graphql::parser::types::{
    BaseType, ConstDirective, DirectiveDefinition, EnumType, FieldDefinition, InputValueDefinition,
    ServiceDocument, Type, TypeDefinition, TypeKind, TypeSystemDefinition,
};
use async_graphql::parser::{Positioned, parse_schema};
use indexmap::IndexMap;

use crate::catalog::names::lower_first;

/// What a change does to clients built against the old schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Existing operations or generated types stop working.
    Breaking,
    /// Existing operations still validate, but may behave differently.
    Dangerous,
    /// Nothing a client relies on changes.
    Safe,
}

impl Severity {
    /// The word used in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Breaking => "breaking",
            Severity::Dangerous => "dangerous",
            Severity::Safe => "safe",
        }
    }
}

/// One difference between the old and the new schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub severity: Severity,
    /// A sentence naming the schema element, e.g. "Field `Post.title` was removed."
    pub message: String,
}

/// An SDL that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
pub struct SdlError {
    /// Which schema: a file name or "the new schema".
    pub what: String,
    pub message: String,
    pub line: Option<usize>,
}

/// Every change from `old` to `new`, breaking first, then in schema order.
/// `old_name` and `new_name` only label parse errors.
pub fn diff(old_name: &str, old: &str, new_name: &str, new: &str) -> Result<Vec<Change>, SdlError> {
    let (old_doc, new_doc) = (parse(old_name, old)?, parse(new_name, new)?);
    let mut d = Differ::default();
    d.schemas(&Index::of(&old_doc), &Index::of(&new_doc));
    // A stable sort keeps schema order within each severity.
    d.changes.sort_by_key(|c| c.severity);
    Ok(d.changes)
}

fn parse(what: &str, sdl: &str) -> Result<ServiceDocument, SdlError> {
    parse_schema(sdl).map_err(|e| SdlError {
        what: what.to_string(),
        message: e.to_string(),
        line: e.positions().next().map(|p| p.line),
    })
}

/// The report printed by `livegate schema --diff`: changes grouped by severity and a
/// closing count.
pub struct Report<'a>(pub &'a [Change]);

impl Report<'_> {
    /// How many changes of `severity` there are.
    pub fn count(&self, severity: Severity) -> usize {
        self.0.iter().filter(|c| c.severity == severity).count()
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "no changes");
        }
        let all = [Severity::Breaking, Severity::Dangerous, Severity::Safe];
        for severity in all {
            let mut group = self.0.iter().filter(|c| c.severity == severity).peekable();
            if group.peek().is_some() {
                writeln!(f, "{}:", severity.as_str())?;
                for c in group {
                    writeln!(f, "  - {}", c.message)?;
                }
            }
        }
        let counts: Vec<String> = all
            .iter()
            .map(|&s| format!("{} {}", self.count(s), s.as_str()))
            .collect();
        writeln!(f, "{}", counts.join(", "))
    }
}

/// A parsed SDL indexed by name. Without a `schema { … }` block the roots are the
/// types named Query, Mutation and Subscription, as the spec says.
struct Index<'a> {
    types: IndexMap<&'a str, &'a TypeDefinition>,
    directives: IndexMap<&'a str, &'a DirectiveDefinition>,
    roots: [(&'static str, Option<&'a str>); 3],
}

impl<'a> Index<'a> {
    fn of(doc: &'a ServiceDocument) -> Self {
        let mut types = IndexMap::new();
        let mut directives = IndexMap::new();
        let mut schema = None;
        for def in &doc.definitions {
            match def {
                TypeSystemDefinition::Type(t) => {
                    types.insert(t.node.name.node.as_str(), &t.node);
                }
                TypeSystemDefinition::Directive(d) => {
                    directives.insert(d.node.name.node.as_str(), &d.node);
                }
                TypeSystemDefinition::Schema(s) if !s.node.extend => schema = Some(&s.node),
                TypeSystemDefinition::Schema(_) => {}
            }
        }
        let root = |given: Option<&'a Positioned<Name>>, default: &'static str| match schema {
            Some(_) => given.map(|n| n.node.as_str()),
            None => types.contains_key(default).then_some(default),
        };
        let roots = [
            (
                "query",
                root(schema.and_then(|s| s.query.as_ref()), "Query"),
            ),
            (
                "mutation",
                root(schema.and_then(|s| s.mutation.as_ref()), "Mutation"),
            ),
            (
                "subscription",
                root(schema.and_then(|s| s.subscription.as_ref()), "Subscription"),
            ),
        ];
        Index {
            types,
            directives,
            roots,
        }
    }
}

#[derive(Default)]
struct Differ {
    changes: Vec<Change>,
}

/// Whether a list of input values holds arguments or input-object fields (for messages).
#[derive(Clone, Copy)]
enum Inputs {
    Argument,
    InputField,
}

impl Differ {
    fn push(&mut self, severity: Severity, message: String) {
        self.changes.push(Change { severity, message });
    }

    fn schemas(&mut self, old: &Index, new: &Index) {
        for ((op, o), (_, n)) in old.roots.iter().zip(&new.roots) {
            match (o, n) {
                (Some(o), Some(n)) if o != n => self.push(
                    Severity::Breaking,
                    format!("The {op} root type changed from `{o}` to `{n}`."),
                ),
                (Some(o), None) => self.push(
                    Severity::Breaking,
                    format!("The {op} root type `{o}` was removed."),
                ),
                (None, Some(n)) => self.push(
                    Severity::Safe,
                    format!("The {op} root type `{n}` was added."),
                ),
                _ => {}
            }
        }
        for (name, o) in &old.types {
            match new.types.get(name) {
                Some(n) => self.type_def(name, o, n),
                None => self.push(Severity::Breaking, format!("Type `{name}` was removed.")),
            }
        }
        for name in new.types.keys().filter(|n| !old.types.contains_key(*n)) {
            self.push(Severity::Safe, format!("Type `{name}` was added."));
        }
        for (name, o) in &old.directives {
            match new.directives.get(name) {
                Some(n) => self.inputs(
                    &format!("@{name}"),
                    &o.arguments,
                    &n.arguments,
                    Inputs::Argument,
                ),
                None => self.push(
                    Severity::Breaking,
                    format!("Directive `@{name}` was removed."),
                ),
            }
        }
        for name in new
            .directives
            .keys()
            .filter(|n| !old.directives.contains_key(*n))
        {
            self.push(Severity::Safe, format!("Directive `@{name}` was added."));
        }
    }

    fn type_def<'a>(&mut self, name: &str, old: &'a TypeDefinition, new: &'a TypeDefinition) {
        self.description(
            &format!("type `{name}`"),
            &old.description,
            &new.description,
        );
        match (&old.kind, &new.kind) {
            (TypeKind::Scalar, TypeKind::Scalar) => {}
            (TypeKind::Object(o), TypeKind::Object(n)) => {
                self.implements(name, &o.implements, &n.implements);
                self.fields(name, &o.fields, &n.fields);
            }
            (TypeKind::Interface(o), TypeKind::Interface(n)) => {
                self.implements(name, &o.implements, &n.implements);
                self.fields(name, &o.fields, &n.fields);
            }
            (TypeKind::Union(o), TypeKind::Union(n)) => {
                let (o, n) = (names(&o.members), names(&n.members));
                for m in o.iter().filter(|m| !n.contains(m)) {
                    self.push(
                        Severity::Breaking,
                        format!("Member `{m}` was removed from union `{name}`."),
                    );
                }
                for m in n.iter().filter(|m| !o.contains(m)) {
                    self.push(Severity::Dangerous, format!("Member `{m}` was added to union `{name}`: exhaustive checks on it may miss it."));
                }
            }
            (TypeKind::Enum(o), TypeKind::Enum(n)) => {
                let values =
                    |e: &'a EnumType| -> IndexMap<&'a str, &'a Option<Positioned<String>>> {
                        e.values
                            .iter()
                            .map(|v| (v.node.value.node.as_str(), &v.node.description))
                            .collect()
                    };
                let (o, n) = (values(o), values(n));
                for (v, od) in &o {
                    match n.get(v) {
                        Some(nd) => self.description(&format!("enum value `{name}.{v}`"), od, nd),
                        None => self.push(
                            Severity::Breaking,
                            format!("Enum value `{name}.{v}` was removed."),
                        ),
                    }
                }
                for v in n.keys().filter(|v| !o.contains_key(*v)) {
                    self.push(Severity::Dangerous, format!("Enum value `{name}.{v}` was added: clients that switch over every value may not handle it."));
                }
            }
            (TypeKind::InputObject(o), TypeKind::InputObject(n)) => {
                self.inputs(name, &o.fields, &n.fields, Inputs::InputField)
            }
            (o, n) => self.push(
                Severity::Breaking,
                format!(
                    "`{name}` changed from {} to {}.",
                    kind_name(o),
                    kind_name(n)
                ),
            ),
        }
    }

    fn implements(&mut self, name: &str, old: &[Positioned<Name>], new: &[Positioned<Name>]) {
        let (o, n) = (names(old), names(new));
        for i in o.iter().filter(|i| !n.contains(i)) {
            self.push(
                Severity::Breaking,
                format!("`{name}` no longer implements interface `{i}`."),
            );
        }
        for i in n.iter().filter(|i| !o.contains(i)) {
            self.push(
                Severity::Dangerous,
                format!("`{name}` now implements interface `{i}`."),
            );
        }
    }

    fn fields(
        &mut self,
        owner: &str,
        old: &[Positioned<FieldDefinition>],
        new: &[Positioned<FieldDefinition>],
    ) {
        for o in old.iter().map(|f| &f.node) {
            let fname = o.name.node.as_str();
            let path = format!("{owner}.{fname}");
            let Some(n) = new
                .iter()
                .map(|f| &f.node)
                .find(|n| n.name.node == o.name.node)
            else {
                self.push(Severity::Breaking, format!("Field `{path}` was removed."));
                continue;
            };
            let (ot, nt) = (&o.ty.node, &n.ty.node);
            if ot != nt {
                let severity = if output_safe(ot, nt) {
                    Severity::Safe
                } else {
                    Severity::Breaking
                };
                self.push(
                    severity,
                    format!("Field `{path}` changed type from `{ot}` to `{nt}`."),
                );
            }
            self.description(&format!("field `{path}`"), &o.description, &n.description);
            match (deprecation(&o.directives), deprecation(&n.directives)) {
                (None, Some(_)) => {
                    self.push(Severity::Safe, format!("Field `{path}` was deprecated."))
                }
                (Some(_), None) => self.push(
                    Severity::Safe,
                    format!("Field `{path}` is no longer deprecated."),
                ),
                _ => {}
            }
            self.inputs(&path, &o.arguments, &n.arguments, Inputs::Argument);
        }
        for n in new.iter().map(|f| &f.node) {
            if !old.iter().any(|o| o.node.name.node == n.name.node) {
                self.push(
                    Severity::Safe,
                    format!("Field `{owner}.{}` was added.", n.name.node),
                );
            }
        }
    }

    /// Arguments of a field or directive, or fields of an input object.
    fn inputs(
        &mut self,
        owner: &str,
        old: &[Positioned<InputValueDefinition>],
        new: &[Positioned<InputValueDefinition>],
        what: Inputs,
    ) {
        let label = |name: &str| match what {
            Inputs::Argument => format!("Argument `{owner}({name}:)`"),
            Inputs::InputField => format!("Input field `{owner}.{name}`"),
        };
        for o in old.iter().map(|v| &v.node) {
            let label = label(&o.name.node);
            let Some(n) = new
                .iter()
                .map(|v| &v.node)
                .find(|n| n.name.node == o.name.node)
            else {
                self.push(Severity::Breaking, format!("{label} was removed."));
                continue;
            };
            let (ot, nt) = (&o.ty.node, &n.ty.node);
            if ot != nt {
                let severity = if input_safe(ot, nt) {
                    Severity::Safe
                } else {
                    Severity::Breaking
                };
                self.push(
                    severity,
                    format!("{label} changed type from `{ot}` to `{nt}`."),
                );
            }
            let (od, nd) = (default_of(o), default_of(n));
            if od != nd {
                let show = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".into());
                self.push(
                    Severity::Dangerous,
                    format!(
                        "{label} changed its default from {} to {}.",
                        show(&od),
                        show(&nd)
                    ),
                );
            }
            self.description(&lower_first(&label), &o.description, &n.description);
        }
        for n in new.iter().map(|v| &v.node) {
            if old.iter().any(|o| o.node.name.node == n.name.node) {
                continue;
            }
            let label = label(&n.name.node);
            if !n.ty.node.nullable && n.default_value.is_none() {
                self.push(
                    Severity::Breaking,
                    format!(
                        "Required {} was added: operations without it fail.",
                        lower_first(&label)
                    ),
                );
            } else {
                self.push(Severity::Safe, format!("{label} was added."));
            }
        }
    }

    fn description(
        &mut self,
        what: &str,
        old: &Option<Positioned<String>>,
        new: &Option<Positioned<String>>,
    ) {
        let (o, n) = (old.as_ref().map(|d| &d.node), new.as_ref().map(|d| &d.node));
        if o != n {
            let verb = match (o, n) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "changed",
            };
            self.push(Severity::Safe, format!("Description of {what} {verb}."));
        }
    }
}

fn names(list: &[Positioned<Name>]) -> Vec<&str> {
    list.iter().map(|n| n.node.as_str()).collect()
}

fn kind_name(kind: &TypeKind) -> &'static str {
    match kind {
        TypeKind::Scalar => "a scalar",
        TypeKind::Object(_) => "an object type",
        TypeKind::Interface(_) => "an interface",
        TypeKind::Union(_) => "a union",
        TypeKind::Enum(_) => "an enum",
        TypeKind::InputObject(_) => "an input object",
    }
}

fn default_of(v: &InputValueDefinition) -> Option<String> {
    v.default_value.as_ref().map(|d| d.node.to_string())
}

fn deprecation(directives: &[Positioned<ConstDirective>]) -> Option<()> {
    directives
        .iter()
        .any(|d| d.node.name.node == "deprecated")
        .then_some(())
}

/// Whether a client that reads a value of type `old` can read every value of type
/// `new`: the same named type, and never null where it was non-null.
fn output_safe(old: &Type, new: &Type) -> bool {
    if !old.nullable && new.nullable {
        return false;
    }
    match (&old.base, &new.base) {
        (BaseType::Named(o), BaseType::Named(n)) => o == n,
        (BaseType::List(o), BaseType::List(n)) => output_safe(o, n),
        _ => false,
    }
}

/// Whether every value a client may send for type `old` is still accepted as `new`:
/// the same named type, and never non-null where it was nullable.
fn input_safe(old: &Type, new: &Type) -> bool {
    if old.nullable && !new.nullable {
        return false;
    }
    match (&old.base, &new.base) {
        (BaseType::Named(o), BaseType::Named(n)) => o == n,
        (BaseType::List(o), BaseType::List(n)) => input_safe(o, n),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
