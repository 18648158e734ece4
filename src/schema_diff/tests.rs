//! Unit tests of the classifier: one edit to a small SDL, the change it must yield.

use super::*;

const OLD: &str = r#"
    "A post." type Post { id: ID! title: String! body: String tags: [String!]! }
    enum Role { USER ADMIN }
    input PostWhere { title: String id: ID! }
    type Query { posts(where: PostWhere, limit: Int = 50): [Post!]! post(id: ID!): Post }
    directive @cached on FIELD
"#;

/// The changes from OLD to OLD with `from` replaced by `to`.
fn changes(from: &str, to: &str) -> Vec<(Severity, String)> {
    assert!(OLD.contains(from), "{from}");
    let new = OLD.replacen(from, to, 1);
    diff("old", OLD, "new", &new)
        .expect("both parse")
        .into_iter()
        .map(|c| (c.severity, c.message))
        .collect()
}

fn one(from: &str, to: &str, severity: Severity, message: &str) {
    assert_eq!(
        changes(from, to),
        vec![(severity, message.to_string())],
        "{from} → {to}"
    );
}

#[test]
fn identical_schemas_have_no_changes() {
    assert!(changes("", "").is_empty());
}

#[test]
fn removals_break_clients() {
    use Severity::Breaking;
    one(
        "body: String ",
        "",
        Breaking,
        "Field `Post.body` was removed.",
    );
    one(
        " ADMIN",
        "",
        Breaking,
        "Enum value `Role.ADMIN` was removed.",
    );
    one(
        "title: String id",
        "id",
        Breaking,
        "Input field `PostWhere.title` was removed.",
    );
    one(
        ", limit: Int = 50",
        "",
        Breaking,
        "Argument `Query.posts(limit:)` was removed.",
    );
    one(
        "directive @cached on FIELD",
        "",
        Breaking,
        "Directive `@cached` was removed.",
    );
    let removed = changes("enum Role { USER ADMIN }", "");
    assert_eq!(
        removed,
        vec![(Breaking, "Type `Role` was removed.".to_string())]
    );
}

#[test]
fn field_types_may_narrow_but_not_widen() {
    use Severity::{Breaking, Safe};
    one(
        "body: String ",
        "body: String! ",
        Safe,
        "Field `Post.body` changed type from `String` to `String!`.",
    );
    one(
        "title: String!",
        "title: String",
        Breaking,
        "Field `Post.title` changed type from `String!` to `String`.",
    );
    one(
        "tags: [String!]!",
        "tags: [String]!",
        Breaking,
        "Field `Post.tags` changed type from `[String!]!` to `[String]!`.",
    );
    one(
        "title: String!",
        "title: Int!",
        Breaking,
        "Field `Post.title` changed type from `String!` to `Int!`.",
    );
    one(
        "tags: [String!]!",
        "tags: String!",
        Breaking,
        "Field `Post.tags` changed type from `[String!]!` to `String!`.",
    );
}

#[test]
fn inputs_may_widen_but_not_narrow() {
    use Severity::{Breaking, Safe};
    one(
        "title: String id",
        "title: String! id",
        Breaking,
        "Input field `PostWhere.title` changed type from `String` to `String!`.",
    );
    one(
        "id: ID! }",
        "id: ID }",
        Safe,
        "Input field `PostWhere.id` changed type from `ID!` to `ID`.",
    );
    one(
        "post(id: ID!)",
        "post(id: String!)",
        Breaking,
        "Argument `Query.post(id:)` changed type from `ID!` to `String!`.",
    );
}

#[test]
fn additions() {
    use Severity::{Breaking, Dangerous, Safe};
    one(
        "body: String ",
        "body: String views: Int ",
        Safe,
        "Field `Post.views` was added.",
    );
    one(
        " ADMIN",
        " ADMIN GUEST",
        Dangerous,
        "Enum value `Role.GUEST` was added: clients that switch over every value may not handle it.",
    );
    one(
        "post(id: ID!)",
        "post(id: ID!, draft: Boolean)",
        Safe,
        "Argument `Query.post(draft:)` was added.",
    );
    one(
        "post(id: ID!)",
        "post(id: ID!, draft: Boolean!)",
        Breaking,
        "Required argument `Query.post(draft:)` was added: operations without it fail.",
    );
    one(
        "post(id: ID!)",
        "post(id: ID!, draft: Boolean! = false)",
        Safe,
        "Argument `Query.post(draft:)` was added.",
    );
    one(
        "id: ID! }",
        "id: ID! rank: Int! }",
        Breaking,
        "Required input field `PostWhere.rank` was added: operations without it fail.",
    );
    one(
        "enum Role",
        "scalar JSON enum Role",
        Safe,
        "Type `JSON` was added.",
    );
}

#[test]
fn defaults_kinds_roots_and_descriptions() {
    use Severity::{Breaking, Dangerous, Safe};
    one(
        "limit: Int = 50",
        "limit: Int = 20",
        Dangerous,
        "Argument `Query.posts(limit:)` changed its default from 50 to 20.",
    );
    one(
        "enum Role { USER ADMIN }",
        "input Role { user: Int }",
        Breaking,
        "`Role` changed from an enum to an input object.",
    );
    one(
        "\"A post.\"",
        "\"A blog post.\"",
        Safe,
        "Description of type `Post` changed.",
    );
    assert_eq!(
        changes("type Query", "schema { query: Root } type Root"),
        vec![
            (
                Breaking,
                "The query root type changed from `Query` to `Root`.".to_string()
            ),
            (Breaking, "Type `Query` was removed.".to_string()),
            (Safe, "Type `Root` was added.".to_string()),
        ]
    );
}

#[test]
fn breaking_changes_come_first_and_the_report_counts_them() {
    let new = OLD.replacen("body: String ", "views: Int ", 1);
    let changes = diff("old", OLD, "new", &new).expect("parses");
    assert_eq!(changes[0].severity, Severity::Breaking);
    let report = Report(&changes).to_string();
    assert_eq!(
        report,
        "breaking:\n  - Field `Post.body` was removed.\nsafe:\n  - Field `Post.views` was added.\n1 breaking, 0 dangerous, 1 safe\n"
    );
    assert_eq!(Report(&[]).to_string(), "no changes\n");
}

#[test]
fn unparsable_sdl_names_the_file_and_line() {
    let err = diff(
        "schema/schema.graphql",
        "type Query {\n  a: \n}",
        "new",
        OLD,
    )
    .expect_err("does not parse");
    assert_eq!(err.what, "schema/schema.graphql");
    assert_eq!(err.line, Some(3));
}
