//! Whole HTTP requests to every route: GraphQL over HTTP, both graphql-sse modes
//! (reservations, streams, operations, cancellations), the `/realtime` feed.
//! Input layout: method byte, path byte, then header lines (`name: value`) up to
//! an empty line, then the body. `{admin}`, `{user}` and `{stream}` in it stand
//! for real credentials and a real reservation, so the fuzzer reaches past auth.
#![no_main]

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
];
const PATHS: [&str; 6] = [
    "/graphql",
    "/graphql/stream",
    "/realtime",
    "/graphql?query=%7B__typename%7D",
    "/graphql/stream?query=subscription%7BpostChanged%7Bid%7D%7D",
    "/realtime?collections=posts,notes",
];

fn reservation(t: &livegate_fuzz::Target) -> String {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let request = Request::put("/graphql/stream")
                .header("authorization", format!("Bearer {}", t.admin))
                .body(Body::empty())
                .expect("request");
            String::from_utf8_lossy(&t.call(request).body).into_owned()
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let t = livegate_fuzz::target();
    let method = METHODS[usize::from(data[0]) % METHODS.len()].clone();
    let mut path = PATHS[usize::from(data[1]) % PATHS.len()].to_string();
    let text = String::from_utf8_lossy(&data[2..])
        .replace("{admin}", &t.admin)
        .replace("{user}", &t.user)
        .replace("{stream}", &reservation(t));
    let (head, body) = text.split_once("\n\n").unwrap_or((text.as_str(), ""));
    let mut lines = head.lines().peekable();
    if let Some(extra) = lines.next_if(|l| l.starts_with('?') || l.starts_with('&')) {
        path.push_str(extra);
    }
    let mut request = Request::builder().method(method);
    if let Ok(uri) = path.parse::<axum::http::Uri>() {
        request = request.uri(uri);
    } else {
        return;
    }
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            request = request.header(name.trim(), value.trim());
        }
    }
    let Ok(request) = request.body(Body::from(body.to_string())) else {
        return;
    };
    let answer = t.call(request);
    livegate_fuzz::check(&answer, &text);
});
