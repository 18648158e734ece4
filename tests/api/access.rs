//! The access policy on every path: each operation × each access level × each kind
//! of viewer, with the expected outcome spelled out in one table below.

use std::collections::HashMap;

use livegate::access::Role;
use sea_orm::ConnectionTrait;
use sea_orm::sea_query::Query;
use serde_json::{Value, json};

use crate::harness::{Db, Server, TestUser};

/// One collection per access level (all four actions at that level), a mixed one,
/// and `links` pointing at a row of each.
const ACCESS_APP: &str = r#"
[collections.anon_items]
read = "anon"
create = "anon"
update = "anon"
delete = "anon"
[collections.anon_items.fields]
name = "string"

[collections.user_items]
read = "user"
create = "user"
update = "user"
delete = "user"
[collections.user_items.fields]
name = "string"

[collections.owner_items]
read = "owner"
create = "owner"
update = "owner"
delete = "owner"
[collections.owner_items.fields]
name = "string"

[collections.admin_items]
read = "admin"
create = "admin"
update = "admin"
delete = "admin"
[collections.admin_items.fields]
name = "string"

[collections.none_items]
read = "none"
create = "none"
update = "none"
delete = "none"
[collections.none_items.fields]
name = "string"

[collections.mixed_items]
read = "user"
create = "user"
update = "owner"
delete = "admin"
[collections.mixed_items.fields]
name = "string"

[collections.links]
read = "anon"
create = "anon"
[collections.links.fields]
anon_item = { type = "ref", collection = "anon_items" }
user_item = { type = "ref", collection = "user_items" }
owner_item = { type = "ref", collection = "owner_items" }
admin_item = { type = "ref", collection = "admin_items" }
none_item = { type = "ref", collection = "none_items" }
"#;

/// The viewers, in the column order of [`EXPECTED`]:
/// - `anonymous`: no token (browses the default account);
/// - `member`: a USER of the default account who does not own the rows;
/// - `owner`: the USER of the default account who owns every seeded row;
/// - `admin`: an ADMIN of the default account;
/// - `stranger`: a USER of another account;
/// - `foreign admin`: an ADMIN of another account.
const VIEWERS: [&str; 6] = [
    "anonymous",
    "member",
    "owner",
    "admin",
    "stranger",
    "foreign admin",
];

/// Outcomes: `ok` (the row is listed / fetched / counted, or the write succeeds),
/// `empty` (listed without it, counted 0, no error), `null` (the ref resolves to
/// null without an error), or the error code.
#[rustfmt::skip]
const EXPECTED: &[(&str, &str, [&str; 6])] = &[
    //  operation  level     anonymous          member       owner        admin        stranger     foreign admin
    ("list",   "anon",  ["ok",              "ok",        "ok",        "ok",        "empty",     "empty"]),
    ("list",   "user",  ["UNAUTHENTICATED", "ok",        "ok",        "ok",        "empty",     "empty"]),
    ("list",   "owner", ["UNAUTHENTICATED", "empty",     "ok",        "ok",        "empty",     "empty"]),
    ("list",   "admin", ["UNAUTHENTICATED", "empty",     "empty",     "ok",        "empty",     "empty"]),
    ("list",   "none",  ["UNAUTHENTICATED", "empty",     "empty",     "empty",     "empty",     "empty"]),
    ("count",  "anon",  ["ok",              "ok",        "ok",        "ok",        "empty",     "empty"]),
    ("count",  "user",  ["UNAUTHENTICATED", "ok",        "ok",        "ok",        "empty",     "empty"]),
    ("count",  "owner", ["UNAUTHENTICATED", "empty",     "ok",        "ok",        "empty",     "empty"]),
    ("count",  "admin", ["UNAUTHENTICATED", "empty",     "empty",     "ok",        "empty",     "empty"]),
    ("count",  "none",  ["UNAUTHENTICATED", "empty",     "empty",     "empty",     "empty",     "empty"]),
    ("get",    "anon",  ["ok",              "ok",        "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("get",    "user",  ["UNAUTHENTICATED", "ok",        "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("get",    "owner", ["UNAUTHENTICATED", "NOT_FOUND", "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("get",    "admin", ["UNAUTHENTICATED", "NOT_FOUND", "NOT_FOUND", "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("get",    "none",  ["UNAUTHENTICATED", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND"]),
    ("create", "anon",  ["ok",              "ok",        "ok",        "ok",        "ok",        "ok"]),
    ("create", "user",  ["UNAUTHENTICATED", "ok",        "ok",        "ok",        "ok",        "ok"]),
    ("create", "owner", ["UNAUTHENTICATED", "ok",        "ok",        "ok",        "ok",        "ok"]),
    ("create", "admin", ["UNAUTHENTICATED", "FORBIDDEN", "FORBIDDEN", "ok",        "FORBIDDEN", "ok"]),
    ("create", "none",  ["UNAUTHENTICATED", "FORBIDDEN", "FORBIDDEN", "FORBIDDEN", "FORBIDDEN", "FORBIDDEN"]),
    ("update", "anon",  ["ok",              "ok",        "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("update", "user",  ["UNAUTHENTICATED", "ok",        "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("update", "owner", ["UNAUTHENTICATED", "NOT_FOUND", "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("update", "admin", ["UNAUTHENTICATED", "NOT_FOUND", "NOT_FOUND", "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("update", "none",  ["UNAUTHENTICATED", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND"]),
    ("update", "mixed", ["UNAUTHENTICATED", "FORBIDDEN", "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("delete", "anon",  ["ok",              "ok",        "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("delete", "user",  ["UNAUTHENTICATED", "ok",        "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("delete", "owner", ["UNAUTHENTICATED", "NOT_FOUND", "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("delete", "admin", ["UNAUTHENTICATED", "NOT_FOUND", "NOT_FOUND", "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("delete", "none",  ["UNAUTHENTICATED", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND"]),
    ("delete", "mixed", ["UNAUTHENTICATED", "FORBIDDEN", "FORBIDDEN", "ok",        "NOT_FOUND", "NOT_FOUND"]),
    // A ref from a readable `links` row of the default account (strangers cannot
    // see the link itself).
    ("ref",    "anon",  ["ok",              "ok",        "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("ref",    "user",  ["null",            "ok",        "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("ref",    "owner", ["null",            "null",      "ok",        "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("ref",    "admin", ["null",            "null",      "null",      "ok",        "NOT_FOUND", "NOT_FOUND"]),
    ("ref",    "none",  ["null",            "null",      "null",      "null",      "NOT_FOUND", "NOT_FOUND"]),
];

struct World {
    s: Server,
    db_url: String,
    owner: TestUser,
    tokens: HashMap<&'static str, Option<String>>,
}

fn names(level: &str) -> (String, String, String) {
    let pascal = format!("{}{}", level[..1].to_uppercase(), &level[1..]);
    (
        format!("{level}Items"),
        format!("{level}Item"),
        format!("{pascal}Item"),
    )
}

impl World {
    /// Inserts a row owned by `owner` in the default account, behind the API's back
    /// (the API itself would refuse to create rows at some levels).
    async fn seed(&self, level: &str) -> String {
        self.insert(&format!("{level}_items"), "name", "seeded")
            .await
    }

    async fn insert(&self, table: &str, column: &str, value: &str) -> String {
        let id = livegate::values::new_id();
        let now = livegate::values::now();
        let conn = sea_orm::Database::connect(&self.db_url)
            .await
            .expect("connect");
        let q = Query::insert()
            .into_table(table.to_string())
            .columns([
                "id".to_string(),
                "owner_id".into(),
                "account_id".into(),
                "created_at".into(),
                "updated_at".into(),
                column.to_string(),
            ])
            .values_panic([
                id.clone().into(),
                self.owner.id.clone().into(),
                self.owner.account_id.clone().into(),
                now.into(),
                now.into(),
                value.into(),
            ])
            .to_owned();
        conn.execute(&q).await.expect("seed");
        conn.close().await.ok();
        id
    }

    async fn outcome(&self, op: &str, level: &str, viewer: &str) -> String {
        let token = self.tokens[viewer].as_deref();
        let (list, single, type_name) = names(level);
        let (query, vars) = match op {
            "list" | "count" | "get" => {
                let id = self.seed(level).await;
                let q = match op {
                    "list" => format!(
                        "query($id: ID!) {{ r: {list}(where: {{ id: {{ eq: $id }} }}) {{ id }} }}"
                    ),
                    "count" => format!(
                        "query($id: ID!) {{ r: {list}Count(where: {{ id: {{ eq: $id }} }}) }}"
                    ),
                    _ => format!("query($id: ID!) {{ r: {single}(id: $id) {{ id }} }}"),
                };
                (q, json!({ "id": id }))
            }
            "create" => (
                format!("mutation {{ r: create{type_name}(input: {{ name: \"new\" }}) {{ id }} }}"),
                json!({}),
            ),
            "update" => (
                format!(
                    "mutation($id: ID!) {{ r: update{type_name}(id: $id, input: {{ name: \"changed\" }}) {{ id }} }}"
                ),
                json!({ "id": self.seed(level).await }),
            ),
            "delete" => (
                format!("mutation($id: ID!) {{ r: delete{type_name}(id: $id) {{ id }} }}"),
                json!({ "id": self.seed(level).await }),
            ),
            "ref" => {
                let target = self.seed(level).await;
                let link = self
                    .insert("links", &format!("{level}_item_id"), &target)
                    .await;
                (
                    format!("query($id: ID!) {{ r: link(id: $id) {{ t: {level}Item {{ id }} }} }}"),
                    json!({ "id": link }),
                )
            }
            other => panic!("unknown op {other}"),
        };
        let body = self.s.gql_as(token, &query, vars).await;
        if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
            return code.to_string();
        }
        let r = &body["data"]["r"];
        match op {
            "list" => {
                if r.as_array().is_some_and(|a| a.len() == 1) {
                    "ok"
                } else {
                    "empty"
                }
            }
            "count" => {
                if *r == json!(1) {
                    "ok"
                } else {
                    "empty"
                }
            }
            "ref" => {
                if r["t"].is_null() {
                    "null"
                } else {
                    "ok"
                }
            }
            _ => {
                if r["id"].is_string() {
                    "ok"
                } else {
                    "unexpected"
                }
            }
        }
        .to_string()
    }
}

#[tokio::test]
async fn every_operation_at_every_level_for_every_viewer() {
    let db = Db::fresh().await;
    let s = Server::start(&db, ACCESS_APP).await;
    let owner = s.user_for("owner@test.local", Role::User, "default").await;
    let member = s.user_for("member@test.local", Role::User, "default").await;
    let admin = s.user_for("boss@test.local", Role::Admin, "default").await;
    let stranger = s.user_for("stranger@other.test", Role::User, "other").await;
    let foreign_admin = s.user_for("boss@other.test", Role::Admin, "other").await;
    let tokens = HashMap::from([
        ("anonymous", None),
        ("member", Some(member.token)),
        ("owner", Some(owner.token.clone())),
        ("admin", Some(admin.token)),
        ("stranger", Some(stranger.token)),
        ("foreign admin", Some(foreign_admin.token)),
    ]);
    let world = World {
        db_url: db.url.clone(),
        owner,
        tokens,
        s,
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for (op, level, expected) in EXPECTED {
        for (viewer, want) in VIEWERS.iter().zip(expected) {
            let got = world.outcome(op, level, viewer).await;
            checked += 1;
            if got != *want {
                failures.push(format!(
                    "{op:>6} {level:<5} as {viewer:<13}: expected {want}, got {got}"
                ));
            }
        }
    }
    assert_eq!(checked, EXPECTED.len() * VIEWERS.len());
    assert!(
        failures.is_empty(),
        "{} of {checked} access checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    world.s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn accounts_never_see_each_other() {
    let db = Db::fresh().await;
    let s = Server::start(&db, ACCESS_APP).await;
    let here = s.user_for("here@test.local", Role::Admin, "default").await;
    let there = s.user_for("there@other.test", Role::Admin, "other").await;
    let mine = s
        .gql_as(
            Some(&here.token),
            "mutation { createAnonItem(input: { name: \"mine\" }) { id accountId } }",
            json!({}),
        )
        .await;
    let theirs = s
        .gql_as(
            Some(&there.token),
            "mutation { createAnonItem(input: { name: \"theirs\" }) { id accountId } }",
            json!({}),
        )
        .await;
    assert_eq!(
        mine["data"]["createAnonItem"]["accountId"],
        here.account_id.as_str()
    );
    assert_eq!(
        theirs["data"]["createAnonItem"]["accountId"],
        there.account_id.as_str(),
        "a row belongs to its creator's account"
    );
    let theirs_id = theirs["data"]["createAnonItem"]["id"].clone();

    let names = |body: Value| -> Vec<String> {
        body["data"]["anonItems"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["name"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let q = "{ anonItems { name } }";
    assert_eq!(
        names(s.gql_as(Some(&here.token), q, json!({})).await),
        ["mine"]
    );
    assert_eq!(
        names(s.gql_as(Some(&there.token), q, json!({})).await),
        ["theirs"]
    );
    assert_eq!(
        names(s.gql_as(None, q, json!({})).await),
        ["mine"],
        "anonymous viewers browse the default account"
    );
    let (_, by_slug) = s.post(None, &[("x-account", "other")], q, json!({})).await;
    assert_eq!(
        names(by_slug),
        ["theirs"],
        "X-Account names another account by slug"
    );
    let (_, by_id) = s
        .post(None, &[("x-account", &there.account_id)], q, json!({}))
        .await;
    assert_eq!(names(by_id), ["theirs"], "or by id");
    let (_, header_ignored) = s
        .post(Some(&here.token), &[("x-account", "other")], q, json!({}))
        .await;
    assert_eq!(
        names(header_ignored),
        ["mine"],
        "a signed-in viewer stays in the token's account"
    );
    let (status, unknown) = s.post(None, &[("x-account", "nope")], q, json!({})).await;
    assert_eq!(
        (status, unknown["errors"][0]["extensions"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED")),
        "{unknown}"
    );

    for q in [
        "query($id: ID!) { anonItem(id: $id) { id } }",
        "mutation($id: ID!) { updateAnonItem(id: $id, input: { name: \"hijacked\" }) { id } }",
        "mutation($id: ID!) { deleteAnonItem(id: $id) { id } }",
    ] {
        let body = s
            .gql_as(Some(&here.token), q, json!({ "id": theirs_id }))
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{q}: {body}"
        );
    }
    let link = s
        .gql_as(
            Some(&here.token),
            "mutation($t: ID!) { createLink(input: { anonItemId: $t }) { id } }",
            json!({ "t": theirs_id }),
        )
        .await;
    assert_eq!(
        link["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "a ref cannot point into another account: {link}"
    );
    let still = s
        .gql_as(
            Some(&there.token),
            "query($id: ID!) { anonItem(id: $id) { name } }",
            json!({ "id": theirs_id }),
        )
        .await;
    assert_eq!(
        still["data"]["anonItem"]["name"], "theirs",
        "nothing was changed across accounts"
    );
    s.stop().await;
    db.drop_db().await;
}
