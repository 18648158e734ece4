//! The playground page: served from the binary with every asset it references, each
//! with its media type and caching, and nothing loaded from anywhere else.

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};

use crate::harness::{Db, EXAMPLE_APP, Server};

/// The values of `attr="..."` in `html`, in order.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!("{attr}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

fn header(r: &reqwest::Response, name: reqwest::header::HeaderName) -> &str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_page_and_every_asset_it_references_are_served() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let page_url = format!("{}/playground", s.base);
    let page = s.client.get(&page_url).send().await.expect("page");
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(header(&page, CACHE_CONTROL), "no-cache");
    let csp = header(&page, reqwest::header::CONTENT_SECURITY_POLICY).to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "the page may only talk to this server: {csp}"
    );
    let etag = header(&page, ETAG).to_string();
    assert!(etag.starts_with('"'), "a strong ETag: {etag:?}");
    let html = page.text().await.expect("html");
    assert!(
        html.contains("<title>livegate playground</title>"),
        "{html}"
    );

    // Revalidating the page costs a 304.
    let again = s
        .client
        .get(&page_url)
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.expect("body").is_empty());

    // Every stylesheet and script the page names is served from here, with its
    // media type and cached for good (its name carries a content hash).
    let base = reqwest::Url::parse(&page_url).expect("page URL");
    let mut referenced: Vec<&str> = attribute_values(&html, "href");
    referenced.extend(attribute_values(&html, "src"));
    let local: Vec<&str> = referenced
        .into_iter()
        .filter(|r| !r.starts_with("data:"))
        .collect();
    assert!(
        local.iter().any(|r| r.ends_with(".js")) && local.iter().any(|r| r.ends_with(".css")),
        "a script and a stylesheet: {local:?}"
    );
    for reference in local {
        let url = base.join(reference).expect("asset URL");
        assert_eq!(
            url.origin(),
            base.origin(),
            "{reference} must come from this server"
        );
        assert!(url.path().starts_with("/playground/assets/"), "{url}");
        let asset = s.client.get(url.clone()).send().await.expect("asset");
        assert_eq!(asset.status(), 200, "{url}");
        let expected = if reference.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(header(&asset, CONTENT_TYPE), expected, "{url}");
        assert_eq!(
            header(&asset, CACHE_CONTROL),
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert_eq!(
            header(&asset, reqwest::header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
        let body = asset.bytes().await.expect("asset body");
        assert!(body.len() > 1000, "{url} has content");
    }

    // HEAD answers like GET, without the body.
    let head = s.client.head(&page_url).send().await.expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, CONTENT_TYPE), "text/html; charset=utf-8");

    s.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn odd_playground_urls() {
    let db = Db::fresh().await;
    let s = Server::start(&db, EXAMPLE_APP).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    // A trailing slash would break the page's relative asset URLs: redirect,
    // keeping a shared `?query=`.
    let slash = no_redirects
        .get(format!("{}/playground/?query=%7Bme%7Bid%7D%7D", s.base))
        .send()
        .await
        .expect("slash");
    assert_eq!(slash.status(), 308);
    let to = reqwest::Url::parse(&format!("{}/playground/", s.base))
        .and_then(|u| u.join(header(&slash, LOCATION)))
        .expect("location");
    assert_eq!(to.path(), "/playground");
    assert_eq!(to.query(), Some("query=%7Bme%7Bid%7D%7D"));

    // Only built files are served (an embedded table: no file system path is ever
    // opened), and a page only at its folder's URL.
    for missing in [
        "/playground/assets/nope.js",
        "/playground/index.html",
        "/playground/assets",
        "/playground/Cargo.toml",
    ] {
        let r = s
            .client
            .get(format!("{}{missing}", s.base))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 404, "{missing}");
    }

    s.stop().await;
    db.drop_db().await;
}
