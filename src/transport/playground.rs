//! The playground: `GET /playground` serves GraphiQL wired to `/graphql` (queries
//! and mutations over HTTP, subscriptions over graphql-ws), with a sign-in panel.
//!
//! The page is built ahead of time from `playground/` (`npm run build`) into
//! `playground/dist/`, which is committed and embedded in the binary here: serving
//! it needs neither Node nor the network, `cargo run` works from a clean checkout,
//! and the page makes no request except to this server.
//!
//! URLs: a page `dist/index.html` is served at `/playground`, a page
//! `dist/<name>/index.html` at `/playground/<name>`, and every other file at
//! `/playground/<path>`. Pages reference their assets by relative URL, so the
//! whole tree also works under a path prefix behind a reverse proxy. Assets carry a
//! content hash in their names and are cached for a year; pages are revalidated
//! (ETag) on every load so a new build is picked up at once.

use std::fmt::Write as _;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use rust_embed::{Embed, EmbeddedFile};

/// Where the playground is served.
pub const PATH: &str = "/playground";

/// The built playground, embedded at compile time (`debug-embed`: debug builds too).
#[derive(Embed)]
#[folder = "playground/dist/"]
struct Dist;

/// Pages may load scripts, styles, fonts and images from this server only, and
/// connect only back to it (HTTP and WebSocket). A stray reference to a CDN is
/// refused by the browser instead of leaking a request. GraphiQL sets inline
/// `style` attributes, hence `'unsafe-inline'` for styles (never for scripts).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Hashed asset names change with their content, so they never need revalidating.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Pages keep their names across builds: revalidate each time (cheap: 304 by ETag).
const REVALIDATE: &str = "no-cache";

/// The playground's routes; they need no state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(PATH, get(index))
        .route("/playground/", get(trailing_slash))
        .route("/playground/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    page("index.html", &headers)
}

/// `/playground/` would resolve the page's relative asset URLs one level too deep:
/// send the browser to `/playground`, keeping the query (a shared `?query=` link).
async fn trailing_slash(uri: Uri) -> Redirect {
    let target = match uri.query() {
        Some(q) => format!("../playground?{q}"),
        None => "../playground".to_string(),
    };
    Redirect::permanent(&target)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    // A page is reached by its folder's URL only: at `<name>/index.html` its
    // relative asset URLs would point one level too deep.
    if path == "index.html" || path.ends_with("/index.html") {
        return not_found();
    }
    if Dist::get(&path).is_some() {
        return serve(&path, &headers, IMMUTABLE);
    }
    let page_path = format!("{}/index.html", path.trim_end_matches('/'));
    if !path.ends_with('/') && Dist::get(&page_path).is_some() {
        return page(&page_path, &headers);
    }
    not_found()
}

fn page(path: &str, headers: &HeaderMap) -> Response {
    let mut response = serve(path, headers, REVALIDATE);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Answers with an embedded file, or 304 when the client's copy is current.
fn serve(path: &str, headers: &HeaderMap, cache_control: &'static str) -> Response {
    let Some(EmbeddedFile { data, metadata }) = Dist::get(path) else {
        return not_found();
    };
    let etag = etag(&metadata.sha256_hash());
    let common = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches_etag(headers, &etag) {
        return (
            StatusCode::NOT_MODIFIED,
            common,
            [(header::ETAG, etag_value)],
        )
            .into_response();
    }
    let body = Body::from(data);
    (
        common,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            ),
            (header::ETAG, etag_value),
        ],
        body,
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

/// A strong ETag from the file's SHA-256 (computed at compile time).
fn etag(hash: &[u8; 32]) -> String {
    let mut out = String::with_capacity(2 + 32);
    out.push('"');
    for byte in &hash[..16] {
        let _ = write!(out, "{byte:02x}");
    }
    out.push('"');
    out
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak comparison, as RFC 9110
/// asks for `If-None-Match`.
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// The media type of a built file, by extension.
fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_embedded() {
        let page = Dist::get("index.html").expect("playground/dist/index.html is embedded");
        let text = String::from_utf8_lossy(&page.data);
        assert!(text.contains("playground/assets/"), "{text}");
        let demo =
            Dist::get("demo/index.html").expect("playground/dist/demo/index.html is embedded");
        let text = String::from_utf8_lossy(&demo.data);
        assert!(text.contains("assets/demo-"), "{text}");
    }

    #[test]
    fn media_types_by_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("assets/playground-AB12.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("assets/a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("assets/font.woff2"), "font/woff2");
        assert_eq!(content_type("LICENSE"), "application/octet-stream");
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let tag = etag(&[0xab; 32]);
        assert_eq!(tag.len(), 34);
        let mut h = HeaderMap::new();
        assert!(!matches_etag(&h, &tag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}")).expect("header"),
        );
        assert!(matches_etag(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!matches_etag(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(matches_etag(&h, &tag));
    }
}
