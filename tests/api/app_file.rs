//! The app file: every kind of bad file stops start-up with a message naming the
//! file, the key path and what was expected; any valid app is served; tables are
//! reconciled when the app file changes, and data is never dropped.

use std::process::Command;

use serde_json::json;

use crate::harness::{Db, EXAMPLE_APP, Server};

/// Runs `livegate serve` on app text `toml`; returns (succeeded, stderr).
fn serve_app(toml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let app = dir.path().join("bad-app.toml");
    std::fs::write(&app, toml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(format!("sqlite://{}", dir.path().join("x.db").display()))
        .arg("--app")
        .arg(&app)
        .output()
        .expect("run livegate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
        app.display().to_string(),
    )
}

#[test]
fn bad_app_files_stop_start_up_with_a_clear_message() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown key",
            "[collections.posts]\nreed = \"anon\"\n",
            &["collections.posts", "unknown field `reed`", "line 2"],
        ),
        (
            "unknown top-level key",
            "[realtimes]\n",
            &["unknown field `realtimes`", "line 1"],
        ),
        (
            "unknown field type",
            "[collections.posts.fields]\ntitle = \"strin\"\n",
            &[
                "collections.posts.fields.title",
                "unknown variant `strin`",
                "`string`",
                "line 2",
            ],
        ),
        (
            "unknown field option",
            "[collections.posts.fields]\ntitle = { type = \"string\", maxlength = 3 }\n",
            &["collections.posts.fields.title", "maxlength"],
        ),
        (
            "ref to an unknown collection",
            "[collections.posts.fields]\nauthor = { type = \"ref\", collection = \"writers\" }\n",
            &[
                "collections.posts.fields.author.collection",
                "unknown collection \"writers\"",
            ],
        ),
        (
            "ref without a target",
            "[collections.posts.fields]\nauthor = \"ref\"\n",
            &[
                "collections.posts.fields.author.collection",
                "needs `collection`",
            ],
        ),
        (
            "duplicate type names",
            "[collections.posts]\n[collections.articles]\ntype = \"Post\"\n",
            &[
                "collections.articles",
                "\"Post\"",
                "already used by collection \"posts\"",
            ],
        ),
        (
            "type name of a built-in",
            "[collections.users_list]\ntype = \"User\"\n",
            &["collections.users_list", "\"User\"", "built-in"],
        ),
        (
            "reserved field name",
            "[collections.posts.fields]\nid = \"string\"\n",
            &["collections.posts.fields.id", "reserved"],
        ),
        (
            "reserved system column",
            "[collections.posts.fields]\ncreated_at = \"datetime\"\n",
            &["collections.posts.fields.created_at", "reserved"],
        ),
        (
            "reserved collection",
            "[collections.users]\n",
            &["collections.users", "reserved"],
        ),
        (
            "invalid collection name",
            "[collections.Posts]\n",
            &["collections.Posts", "invalid collection name"],
        ),
        (
            "invalid field name",
            "[collections.posts.fields]\n\"due-at\" = \"datetime\"\n",
            &["collections.posts.fields.due-at", "invalid field name"],
        ),
        (
            "invalid type name",
            "[collections.posts]\ntype = \"my_post\"\n",
            &["collections.posts.type", "PascalCase"],
        ),
        (
            "field names colliding in GraphQL",
            "[collections.posts.fields]\nauthor = { type = \"ref\", collection = \"posts\" }\nauthor_id = \"string\"\n",
            &[
                "collections.posts.fields.author_id",
                "\"authorId\"",
                "collides",
            ],
        ),
        (
            "unknown access level",
            "[collections.posts]\nread = \"everyone\"\n",
            &[
                "collections.posts.read",
                "\"everyone\"",
                "anon, user, owner, admin or none",
            ],
        ),
        (
            "owner level on a room",
            "[rooms]\njoin = \"owner\"\n",
            &["rooms.join", "anon, user, admin or none"],
        ),
        (
            "bad default",
            "[collections.posts.fields]\nviews = { type = \"int\", default = \"many\" }\n",
            &["collections.posts.fields.views.default", "integer"],
        ),
        (
            "max_length on a number",
            "[collections.posts.fields]\nviews = { type = \"int\", max_length = 3 }\n",
            &[
                "collections.posts.fields.views.max_length",
                "only string and text",
            ],
        ),
        (
            "zero heartbeat",
            "[realtime]\nheartbeat_seconds = 0\n",
            &["realtime.heartbeat_seconds", "between 1 and 3600"],
        ),
        ("TOML syntax", "[collections.posts\n", &["line 1"]),
        (
            "wrong value type",
            "[realtime]\nanonymous = \"yes\"\n",
            &["realtime.anonymous", "invalid type", "line 2"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, toml, expected) in cases {
        let (ok, stderr, file) = serve_app(toml);
        let file = file.as_str();
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .chain([file])
            .filter(|e| !stderr.contains(e))
            .collect();
        if ok || !missing.is_empty() {
            failures.push(format!(
                "{what}: exited ok={ok}, message lacks {missing:?}:\n{stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn unreadable_app_file_and_bad_database_url_are_explained() {
    let out = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--app",
            "/nonexistent/app.toml",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("/nonexistent/app.toml")
            && stderr.contains("cannot read the app file"),
        "{stderr}"
    );

    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/app.toml");
    for (url, words) in [
        (
            "mysql://root@127.0.0.1/x",
            "unsupported database URL scheme",
        ),
        (
            "postgres://nobody:hunter2@127.0.0.1:1/x",
            "cannot connect to the database",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_livegate"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--app",
                app,
                "--database-url",
                url,
            ])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(words),
            "{url}: {stderr}"
        );
        assert!(
            !stderr.contains("hunter2"),
            "the password must not be printed: {stderr}"
        );
    }
}

const LIBRARY_APP: &str = r#"
[collections.chat_lines]
read = "anon"
create = "user"
[collections.chat_lines.fields]
text = { type = "string", required = true }
due_at = "datetime"
author = { type = "ref", collection = "users" }
score = "int"

[collections.people]
type = "Person"
description = "Someone in the address book."
[collections.people.fields]
full_name = { type = "string", required = true, max_length = 50, description = "Given and family name." }
best_line = { type = "ref", collection = "chat_lines" }
"#;

#[tokio::test]
async fn any_valid_app_file_is_served_with_derived_names() {
    let db = Db::fresh().await;
    let s = Server::start(&db, LIBRARY_APP).await;
    let line = s
        .data("mutation { createChatLine(input: { text: \"hi\", dueAt: \"2026-05-01T00:00:00Z\", score: 3 }) { id text dueAt score authorId } }", json!({}))
        .await["createChatLine"]
        .clone();
    assert_eq!(line["dueAt"], "2026-05-01T00:00:00.000000Z");
    let person = s
        .data("mutation($l: ID!) { createPerson(input: { fullName: \"Ada L\", bestLineId: $l }) { id fullName bestLine { text } } }", json!({ "l": line["id"] }))
        .await["createPerson"]
        .clone();
    assert_eq!(person["bestLine"]["text"], "hi");
    let read = s
        .data(
            "query($id: ID!) { chatLines(where: { dueAt: { gt: \"2026-01-01T00:00:00Z\" } }, orderBy: [{ field: DUE_AT }]) { text } chatLinesCount chatLine(id: $id) { score } people { fullName } peopleCount }",
            json!({ "id": line["id"] }),
        )
        .await;
    assert_eq!(read["chatLines"], json!([{ "text": "hi" }]));
    assert_eq!(read["chatLinesCount"], 1);
    assert_eq!(read["chatLine"]["score"], 3);
    assert_eq!(read["people"], json!([{ "fullName": "Ada L" }]));
    let upd = s.data("mutation($id: ID!) { updateChatLine(id: $id, input: { score: 4 }) { score } deleteChatLine(id: $id) { id } }", json!({ "id": line["id"] })).await;
    assert_eq!(upd["updateChatLine"]["score"], 4);
    let (code, _) = s.error_code("{ posts { id } }", json!({})).await;
    assert_eq!(
        code, "GRAPHQL_VALIDATION_FAILED",
        "the example app's collections are not in this app"
    );
    let intro = s
        .data(
            "{ __type(name: \"Person\") { description fields { name description } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        intro["__type"]["description"],
        "Someone in the address book."
    );
    assert!(
        intro["__type"]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .any(|f| f["name"] == "fullName" && f["description"] == "Given and family name.")
    );
    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn tables_follow_the_app_file_without_losing_data() {
    let db = Db::fresh().await;
    let v1 = "[collections.items]\nread = \"anon\"\n[collections.items.fields]\nname = { type = \"string\", required = true }\n";
    let s = Server::start(&db, v1).await;
    let item = s
        .data(
            "mutation { createItem(input: { name: \"apple\" }) { id } }",
            json!({}),
        )
        .await["createItem"]["id"]
        .clone();
    s.stop().await;

    // A new field (with a default for the existing row) and a new collection.
    let v2 = format!(
        "{v1}qty = {{ type = \"int\", default = 5 }}\nnote = \"text\"\nmade = {{ type = \"bool\", default = true }}\n[collections.tags.fields]\nlabel = \"string\"\n"
    );
    let s = Server::start(&db, &v2).await;
    let got = s
        .data(
            "query($id: ID!) { item(id: $id) { name qty note made } }",
            json!({ "id": item }),
        )
        .await;
    assert_eq!(
        got["item"],
        json!({ "name": "apple", "qty": 5, "note": null, "made": true }),
        "existing rows get the new field's default"
    );
    s.data("mutation { createItem(input: { name: \"pear\", qty: 2, note: \"n\" }) { id } createTag(input: { label: \"fruit\" }) { id } }", json!({})).await;
    assert_eq!(
        s.data(
            "{ itemsCount tagsCount items(where: { qty: { lt: 3 } }) { name } }",
            json!({})
        )
        .await,
        json!({ "itemsCount": 2, "tagsCount": 1, "items": [{ "name": "pear" }] })
    );
    s.stop().await;

    let refused = [
        (v2.replace("name = { type = \"string\", required = true }\n", ""), vec!["collections.items.fields.name", "removed", "never drops data"]),
        (v2.replace("qty = { type = \"int\", default = 5 }", "qty = { type = \"string\" }"), vec!["collections.items.fields.qty", "\"int\"", "\"string\""]),
        (v2.replace("[collections.tags.fields]\nlabel = \"string\"\n", "[collections.tags]\n"), vec!["collections.tags.fields.label", "removed"]),
        (format!("{v2}[collections.items.fields.size]\ntype = \"int\"\nrequired = true\n").replace("[collections.items.fields.size]", "[collections.extras]\n[collections.extras.fields]\nx = \"int\"\n[collections.items.fields.size]"),
         vec!["collections.items.fields.size", "needs a `default`"]),
    ];
    for (app, words) in refused {
        let path = db.app_file("changed.toml", &app);
        let err = match crate::harness::Server::start_with(&db, path, Default::default()).await {
            Ok(s) => {
                s.stop().await;
                panic!("start-up should refuse:\n{app}");
            }
            Err(e) => format!("{e:#}"),
        };
        for w in &words {
            assert!(err.contains(w), "message lacks {w:?}: {err}");
        }
    }
    // Nothing was touched: the old app file still starts, with the data intact,
    // and the refused run created nothing (collection `extras` does not exist).
    let s = Server::start(&db, &v2).await;
    assert_eq!(
        s.data(
            "{ items(orderBy: [{ field: NAME }]) { name qty } }",
            json!({})
        )
        .await["items"],
        json!([{ "name": "apple", "qty": 5 }, { "name": "pear", "qty": 2 }])
    );
    s.stop().await;
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    let extra = sea_orm::ConnectionTrait::execute_unprepared(&conn, "SELECT x FROM extras").await;
    assert!(extra.is_err(), "a refused start-up must not create tables");
    conn.close().await.ok();
    db.drop_db().await;
}

#[test]
fn committed_schema_matches_the_example_app() {
    let catalog = livegate::catalog::Catalog::parse("schema/app.toml", EXAMPLE_APP)
        .expect("example app is valid");
    let sdl = livegate::graphql::sdl(&std::sync::Arc::new(catalog)).expect("sdl");
    let committed = include_str!("../../schema/schema.graphql");
    assert!(
        sdl == committed,
        "schema/schema.graphql is stale: regenerate it with `cargo run -- schema > schema/schema.graphql` and commit it"
    );
}

/// Every schema element of the committed SDL that lacks a description: a path per
/// element, e.g. `Query.post(id:)`.
fn undocumented(sdl: &str) -> Vec<String> {
    use async_graphql::parser::types::{InputValueDefinition, TypeKind, TypeSystemDefinition};
    use async_graphql::parser::{Positioned, parse_schema};
    fn inputs(owner: &str, list: &[Positioned<InputValueDefinition>], out: &mut Vec<String>) {
        for v in list.iter().filter(|v| v.node.description.is_none()) {
            out.push(format!("{owner}({}:)", v.node.name.node));
        }
    }
    let doc = parse_schema(sdl).expect("the committed SDL parses");
    let mut out = Vec::new();
    for def in &doc.definitions {
        let TypeSystemDefinition::Type(t) = def else {
            continue;
        };
        let t = &t.node;
        let name = t.name.node.as_str();
        if t.description.is_none() {
            out.push(name.to_string());
        }
        match &t.kind {
            TypeKind::Object(o) => {
                for f in &o.fields {
                    let path = format!("{name}.{}", f.node.name.node);
                    if f.node.description.is_none() {
                        out.push(path.clone());
                    }
                    inputs(&path, &f.node.arguments, &mut out);
                }
            }
            TypeKind::InputObject(i) => inputs(name, &i.fields, &mut out),
            TypeKind::Enum(e) => {
                for v in e.values.iter().filter(|v| v.node.description.is_none()) {
                    out.push(format!("{name}.{}", v.node.value.node));
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_type_field_argument_and_enum_value_is_described() {
    let missing = undocumented(include_str!("../../schema/schema.graphql"));
    assert!(
        missing.is_empty(),
        "schema/schema.graphql has elements without a description (generated types and the playground docs show them bare): {missing:?}"
    );
}

#[test]
fn app_file_descriptions_win_and_others_are_generated() {
    let app = r#"
[collections.chat_lines]
description = "One line of chat."
[collections.chat_lines.fields]
text = { type = "string", description = "What was said." }
mood = "string"
"#;
    let catalog = livegate::catalog::Catalog::parse("app.toml", app).expect("valid");
    let sdl = livegate::graphql::sdl(&std::sync::Arc::new(catalog)).expect("sdl");
    assert!(undocumented(&sdl).is_empty(), "{:?}", undocumented(&sdl));
    assert!(
        sdl.contains("\"\"\"\nOne line of chat.\n\"\"\"\ntype ChatLine {"),
        "{sdl}"
    );
    assert!(
        sdl.contains("\t\"\"\"\n\tWhat was said.\n\t\"\"\"\n\ttext: String"),
        "{sdl}"
    );
    // Without one, a sentence is generated from the key.
    assert!(
        sdl.contains("\t\"\"\"\n\tThe `mood` field (string).\n\t\"\"\"\n\tmood: String"),
        "{sdl}"
    );
}
