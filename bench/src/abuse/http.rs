//! HTTP and SSE abuse: bad bodies, headers and methods through an HTTP client,
//! and truncated or half-sent requests over raw TCP.

use std::time::Duration;

use anyhow::bail;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cases::{Ctx, garbage};
use super::tally::summarize;
use crate::client::tcp;

const SUB: &str = "subscription { postChanged { id } }";
const STREAM: &str = "/graphql/stream";
const JSON: &str = "application/json";
const EVENTS: &str = "text/event-stream";

/// Sends `req`, reads the answer (an event stream only for half a second) and
/// records it.
async fn answer(ctx: &Ctx, kind: &'static str, input: &str, req: reqwest::RequestBuilder) {
    ctx.tally.sent(kind, 1);
    let outcome = match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let stream = resp
                .headers()
                .get(CONTENT_TYPE)
                .is_some_and(|c| c.as_bytes().starts_with(EVENTS.as_bytes()));
            let mut body = Vec::new();
            let mut chunks = resp.bytes_stream();
            let wait = if stream { 500 } else { 10_000 };
            let _ = tokio::time::timeout(Duration::from_millis(wait), async {
                while let Some(Ok(c)) = chunks.next().await {
                    if body.len() < 16 * 1024 {
                        body.extend_from_slice(&c);
                    }
                }
            })
            .await;
            let body = String::from_utf8_lossy(&body).into_owned();
            ctx.tally.inspect(kind, input, Some(status), &body);
            summarize(&format!("http {status}"), &body)
        }
        Err(e) if e.is_timeout() => "no answer in 15 s".to_string(),
        Err(e) if e.is_connect() => "connect error".to_string(),
        Err(_) => "request error (connection closed)".to_string(),
    };
    ctx.tally.outcome(kind, outcome);
}

fn gql_body(query: &str) -> String {
    json!({ "query": query }).to_string()
}

/// Runs one HTTP or SSE case (all but the huge body).
pub async fn case(ctx: &Ctx, kind: &'static str, i: u64, v: u64) -> anyhow::Result<()> {
    let c = ctx.http(i);
    let graphql = ctx.url(&ctx.path);
    let stream = ctx.url(STREAM);
    let auth = |r: reqwest::RequestBuilder| match ctx.token_for(i) {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let post_json = |url: &str, body: String| {
        auth(c.post(url))
            .header(CONTENT_TYPE, JSON)
            .header(ACCEPT, JSON)
            .body(body)
    };
    match kind {
        "sse_bad_accept" => {
            let accept = [
                "text/html",
                "application/xml",
                "*/*;q=garbage",
                "",
                "text/event-stream;;;;=",
                "image/png",
            ][v as usize % 6];
            let req = if v.is_multiple_of(2) {
                auth(c.post(&stream))
                    .header(CONTENT_TYPE, JSON)
                    .body(gql_body(SUB))
            } else {
                auth(c.get(format!("{graphql}?query={}", enc(SUB))))
            };
            answer(
                ctx,
                kind,
                &format!("Accept: {accept}"),
                req.header(ACCEPT, accept),
            )
            .await;
        }
        "sse_bad_last_event_id" => {
            let ids: [&[u8]; 6] = [
                b"garbage",
                b"-1",
                b"999999999999999999999999999",
                b"0:0:0",
                b"\xff\xfe\xfd",
                b"%00",
            ];
            let id: Vec<u8> = if v % 7 == 6 {
                vec![b'x'; 8000]
            } else {
                ids[v as usize % 6].to_vec()
            };
            let req = auth(c.get(format!("{stream}?query={}", enc(SUB))))
                .header(ACCEPT, EVENTS)
                .header("last-event-id", HeaderValue::from_bytes(&id)?);
            answer(
                ctx,
                kind,
                &format!(
                    "Last-Event-ID: {}",
                    String::from_utf8_lossy(&id[..id.len().min(40)])
                ),
                req,
            )
            .await;
        }
        "sse_bad_reservation_token" => {
            let token = if v % 4 == 3 {
                "t".repeat(10_000)
            } else {
                ["bogus", "", "../../etc/passwd"][v as usize % 3].to_string()
            };
            let req = match v % 3 {
                0 => auth(c.get(format!("{stream}?token={}", enc(&token)))).header(ACCEPT, EVENTS),
                1 => post_json(
                    &stream,
                    json!({ "query": SUB, "extensions": { "operationId": "1" } }).to_string(),
                )
                .header(
                    "x-graphql-event-stream-token",
                    HeaderValue::from_str(&token)?,
                ),
                _ => auth(c.delete(format!("{stream}?token={}&operationId=1", enc(&token)))),
            };
            answer(
                ctx,
                kind,
                &format!("reservation token {:?}", &token[..token.len().min(20)]),
                req,
            )
            .await;
        }
        "sse_put_delete_misuse" => misuse(ctx, kind, i, v).await?,
        "sse_half_sent_body" => {
            let body = json!({ "query": SUB }).to_string();
            let head = format!(
                "POST {STREAM} HTTP/1.1\r\nHost: {}\r\nAccept: {EVENTS}\r\nContent-Type: {JSON}\r\nContent-Length: {}\r\n\r\n",
                ctx.addr,
                body.len() + 100
            );
            let cut = body.len() * (v as usize % 4) / 4;
            raw(
                ctx,
                kind,
                i,
                v,
                format!("{head}{}", &body[..cut]).into_bytes(),
                "a POST body cut short",
            )
            .await?;
        }
        "sse_where_or_terms" => {
            let body = format!(
                r#"{{"query":"subscription($w: PostWhere) {{ postChanged(where: $w) {{ id }} }}","variables":{{"w":{}}}}}"#,
                ctx.p.or_json
            );
            let req = auth(c.post(&stream))
                .header(CONTENT_TYPE, JSON)
                .header(ACCEPT, EVENTS)
                .body(body);
            answer(
                ctx,
                kind,
                "an SSE subscription whose where is an or of 20,000 terms",
                req,
            )
            .await;
        }
        "http_invalid_json" => {
            let bodies = [
                "{",
                "{\"query\":1}",
                "[]",
                "null",
                "\"str\"",
                "{\"query\":\"{ postsCount }\",\"variables\":\"x\"}",
                "{\"query\":\"{ postsCount\"}",
                "{\"query\":\"{ postsCount }\",\"operationName\":5}",
                "{\"query\":\"{ postsCount }\",\"extensions\":{\"persistedQuery\":7}}",
                "{\"query\":\"{ postsCount }\",\"variables\":{\"a\":1e999}}",
            ];
            let body = bodies[v as usize % bodies.len()];
            answer(ctx, kind, body, post_json(&graphql, body.to_string())).await;
        }
        "http_wrong_content_type" => {
            let types = [
                "text/plain",
                "application/xml",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=utf-16",
                "application/graphql",
                "",
            ];
            let ct = types[v as usize % types.len()];
            let req = auth(c.post(&graphql))
                .header(CONTENT_TYPE, ct)
                .body(gql_body("{ postsCount }"));
            answer(ctx, kind, &format!("Content-Type: {ct}"), req).await;
        }
        "http_truncated" => {
            let full = format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {JSON}\r\nContent-Length: 30\r\n\r\n{{\"query\":\"{{ postsCount }}\"}}",
                ctx.path, ctx.addr
            );
            let bytes: Vec<u8> = match v % 5 {
                0 => full.as_bytes()[..(v as usize * 13) % full.len()].to_vec(),
                1 => format!("POST {} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{\"query\":", ctx.path).into_bytes(),
                2 => format!("POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n", ctx.path).into_bytes(),
                3 => garbage(i, 1 + (v as usize % 1000)),
                _ => format!("GET {}?query=%7B%20postsCount HTTP/1.1\r\nHost: x\r\nX-Long: {}", ctx.path, "a".repeat(20_000)).into_bytes(),
            };
            raw(ctx, kind, i, v, bytes, "a truncated or garbage request").await?;
        }
        "http_invalid_utf8" => match v % 3 {
            0 => {
                let mut body = b"{\"query\":\"{ posts(where: { title: { eq: \\\"".to_vec();
                body.extend_from_slice(b"\xff\xfe\xc3\x28");
                body.extend_from_slice(b"\\\" } }) { id } }\"}");
                answer(
                    ctx,
                    kind,
                    "a JSON body with invalid UTF-8",
                    auth(c.post(&graphql)).header(CONTENT_TYPE, JSON).body(body),
                )
                .await;
            }
            1 => {
                answer(
                    ctx,
                    kind,
                    "?query=%ff%fe",
                    auth(c.get(format!("{graphql}?query=%ff%fe%7B"))),
                )
                .await
            }
            _ => {
                let req = c
                    .post(&graphql)
                    .header(CONTENT_TYPE, JSON)
                    .header(
                        "authorization",
                        HeaderValue::from_bytes(b"Bearer \xff\xfe")?,
                    )
                    .body(gql_body("{ postsCount }"));
                answer(ctx, kind, "Authorization with invalid UTF-8", req).await;
            }
        },
        "http_mutation_over_get" => {
            let m =
                format!("mutation {{ createPost(input: {{ title: \"over GET {i}\" }}) {{ id }} }}");
            let accept = if v.is_multiple_of(2) {
                JSON
            } else {
                "application/graphql-response+json"
            };
            // Always with a valid token: a mutation that ran would show up at
            // the well-behaved subscriber as an unexpected post.
            let req = c
                .get(format!("{graphql}?query={}", enc(&m)))
                .bearer_auth(&ctx.token)
                .header(ACCEPT, accept);
            answer(ctx, kind, "a mutation over GET", req).await;
        }
        "http_deep_document" => {
            let doc = if v.is_multiple_of(2) {
                &ctx.p.deep_list
            } else {
                &ctx.p.deep_selection
            };
            let req = if v % 4 < 2 {
                post_json(&graphql, gql_body(doc))
            } else {
                auth(c.get(format!("{graphql}?query={}", enc(doc)))).header(ACCEPT, JSON)
            };
            answer(ctx, kind, &doc[..60], req).await;
        }
        "http_where_or_terms" => {
            let (input, body) = if v.is_multiple_of(2) {
                (
                    "postsCount(where: $w), or of 20,000 terms",
                    format!(
                        r#"{{"query":"query($w: PostWhere) {{ postsCount(where: $w) }}","variables":{{"w":{}}}}}"#,
                        ctx.p.or_json
                    ),
                )
            } else {
                (
                    "postsCount(where: <literal or of 20,000 terms>)",
                    gql_body(&format!("{{ postsCount(where: {}) }}", ctx.p.or_literal)),
                )
            };
            answer(ctx, kind, input, post_json(&graphql, body)).await;
        }
        "http_where_not_nesting" => {
            let (input, body) = if v.is_multiple_of(2) {
                (
                    "posts(where: $w), 2,000 nested nots",
                    format!(
                        r#"{{"query":"query($w: PostWhere) {{ posts(where: $w) {{ id }} }}","variables":{{"w":{}}}}}"#,
                        ctx.p.not_json
                    ),
                )
            } else {
                (
                    "postsCount(where: <2,000 nested nots>)",
                    gql_body(&format!("{{ postsCount(where: {}) }}", ctx.p.not_literal)),
                )
            };
            answer(ctx, kind, input, post_json(&graphql, body)).await;
        }
        other => bail!("unknown HTTP case {other}"),
    }
    Ok(())
}

/// Single connection mode used wrongly: requests out of order, without the
/// operation id, twice, on tokens that are gone.
async fn misuse(ctx: &Ctx, kind: &'static str, i: u64, v: u64) -> anyhow::Result<()> {
    let c = ctx.http(i);
    let stream = ctx.url(STREAM);
    let tok = &ctx.token;
    let reserved = c.put(&stream).bearer_auth(tok).send().await?.text().await?;
    ctx.tally.sent(kind, 1);
    let r = HeaderValue::from_str(reserved.trim()).unwrap_or(HeaderValue::from_static("x"));
    let op = |id: Option<&str>| {
        let ext = id.map_or(json!({}), |id| json!({ "operationId": id }));
        c.post(&stream)
            .bearer_auth(tok)
            .header(CONTENT_TYPE, JSON)
            .header("x-graphql-event-stream-token", r.clone())
            .body(json!({ "query": SUB, "extensions": ext }).to_string())
    };
    let t = enc(reserved.trim());
    match v % 6 {
        0 => answer(ctx, kind, "an operation without operationId", op(None)).await,
        1 => {
            answer(ctx, kind, "an operation", op(Some("a"))).await;
            answer(ctx, kind, "the same operation id again", op(Some("a"))).await;
        }
        2 => {
            answer(
                ctx,
                kind,
                "DELETE without operationId",
                c.delete(format!("{stream}?token={t}")).bearer_auth(tok),
            )
            .await
        }
        3 => {
            answer(
                ctx,
                kind,
                "DELETE of an unknown operation",
                c.delete(format!("{stream}?token={t}&operationId=zz"))
                    .bearer_auth(tok),
            )
            .await
        }
        4 => {
            answer(
                ctx,
                kind,
                "PUT with a garbage body",
                c.put(&stream).bearer_auth(tok).body(garbage(i, 200)),
            )
            .await
        }
        _ => {
            answer(
                ctx,
                kind,
                "a reservation used by someone else",
                op(Some("b")).bearer_auth(crate::client::token(&ctx.target.secret, "intruder")),
            )
            .await
        }
    }
    Ok(())
}

/// A body beyond every limit: 3 MiB (`huge`) or just over the document limit.
pub async fn huge(ctx: &Ctx, kind: &'static str, i: u64, huge: bool) -> anyhow::Result<()> {
    let pad = if huge { 3 << 20 } else { 110_000 };
    let body = json!({ "query": format!("{{ postsCount }} # {}", "a".repeat(pad)) }).to_string();
    let req = ctx
        .http(i)
        .post(ctx.url(&ctx.path))
        .header(CONTENT_TYPE, JSON);
    let req = if i.is_multiple_of(2) {
        req.body(body)
    } else {
        // Chunked: no Content-Length to refuse it by, the server must count.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
            .into_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
    };
    answer(
        ctx,
        kind,
        if huge {
            "a 3 MiB body"
        } else {
            "a 110 kB document"
        },
        req,
    )
    .await;
    Ok(())
}

/// Writes `bytes` on a fresh connection, then either vanishes or half-closes
/// and reads what the server says.
async fn raw(
    ctx: &Ctx,
    kind: &'static str,
    i: u64,
    v: u64,
    bytes: Vec<u8>,
    input: &str,
) -> anyhow::Result<()> {
    let mut s = tcp(&ctx.target, ctx.source(i)).await?;
    ctx.tally
        .connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = s.write_all(&bytes).await;
    ctx.tally.sent(kind, 1);
    if v.is_multiple_of(3) {
        ctx.tally.outcome(kind, "dropped".into());
        return Ok(());
    }
    let _ = s.shutdown().await;
    let mut buf = vec![0u8; 8192];
    let end = match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
        Ok(Ok(0)) => "closed without answer".to_string(),
        Ok(Ok(n)) => {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            ctx.tally.inspect(kind, input, status, &text);
            summarize(&format!("http {}", status.unwrap_or(0)), &text)
        }
        Ok(Err(_)) => "connection reset".to_string(),
        Err(_) => "no answer in 1 s".to_string(),
    };
    ctx.tally.outcome(kind, end);
    Ok(())
}

/// Percent-encodes a query parameter.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
