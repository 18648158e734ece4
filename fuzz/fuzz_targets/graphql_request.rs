//! GraphQL documents and variables through the whole request path: the guard,
//! the parser and validator, argument parsing (`where` trees down to the SQL
//! they build and run on SQLite), and the resolvers. The first byte picks what
//! the rest is: a document of its own, or the variables of a filtered list, a
//! count, a create or an update.
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const WITH_VARIABLES: [&str; 5] = [
    "query($w: PostWhere, $o: [PostOrder!], $l: Int, $f: Int) { posts(where: $w, orderBy: $o, limit: $l, offset: $f) { id title author { id } } }",
    "query($w: CommentWhere) { commentsCount(where: $w) }",
    "mutation($i: PostCreateInput!) { createPost(input: $i) { id title rating meta publishedAt } }",
    "mutation($id: ID!, $i: NoteUpdateInput!) { updateNote(id: $id, input: $i) { id } }",
    "subscription($w: PostWhere, $a: String) { postChanged(where: $w, after: $a) { id } }",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let t = livegate_fuzz::target();
    let body = match usize::from(first) % (WITH_VARIABLES.len() + 1) {
        0 => json!({ "query": text }),
        n => {
            let Ok(variables) = serde_json::from_str::<Value>(text) else {
                return;
            };
            json!({ "query": WITH_VARIABLES[n - 1], "variables": variables })
        }
    };
    let token = if first & 0x80 == 0 { &t.admin } else { &t.user };
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body.to_string()))
        .expect("request");
    let answer = t.call(request);
    livegate_fuzz::check(&answer, &body);
});
