//! The one reader of the `Accept` header, for every transport: GraphQL over HTTP
//! picks its JSON media type from it, `/graphql` decides between a JSON answer and
//! an event stream with it, and the graphql-sse reservation endpoints check it.
//!
//! Matching follows RFC 9110 §12.5.1: a media range's `q` applies to the types it
//! covers, and the most specific range that covers a type decides its `q`
//! (`text/event-stream;q=0, */*` refuses event streams). Substring checks are not
//! negotiation: `text/event-stream;q=0` *names* event streams to refuse them.

use axum::http::{HeaderMap, header};

/// One `Accept` header's media ranges, lowercased, with their q-values.
#[derive(Debug, Default)]
pub(crate) struct Accept {
    ranges: Vec<(String, f32)>,
}

/// The event-stream media type of SSE.
pub(crate) const EVENT_STREAM: &str = "text/event-stream";
/// The GraphQL-over-HTTP response media type.
pub(crate) const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
/// Plain JSON.
pub(crate) const JSON: &str = "application/json";

impl Accept {
    /// The request's `Accept` (every such header, as one list); `None` when absent.
    pub(crate) fn of(headers: &HeaderMap) -> Option<Accept> {
        let mut values = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .peekable();
        values.peek()?;
        let ranges = values
            .flat_map(|v| v.split(','))
            .filter_map(|item| {
                let mut parts = item.split(';').map(str::trim);
                let mime = parts.next()?.to_ascii_lowercase();
                if mime.is_empty() {
                    return None;
                }
                let q = parts
                    .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                    .find_map(|v| v.trim().parse::<f32>().ok())
                    .filter(|q| q.is_finite())
                    .map_or(1.0, |q| q.clamp(0.0, 1.0));
                Some((mime, q))
            })
            .collect();
        Some(Accept { ranges })
    }

    /// The q-value of `mime` when named exactly (the highest, if named twice).
    pub(crate) fn exact(&self, mime: &str) -> Option<f32> {
        self.best(|range| range == mime)
    }

    /// The q-value that a wildcard (`type/*` or `*/*`) gives `mime`'s type.
    pub(crate) fn wildcard(&self, mime: &str) -> Option<f32> {
        let ty = mime.split('/').next().unwrap_or_default();
        self.best(|range| range == "*/*" || range.strip_suffix("/*") == Some(ty))
    }

    /// How acceptable `mime` is: the q-value of the most specific range that
    /// covers it (exact, then `type/*`, then `*/*`); 0 when none does.
    pub(crate) fn quality(&self, mime: &str) -> f32 {
        let ty = mime.split('/').next().unwrap_or_default();
        self.exact(mime)
            .or_else(|| self.best(|range| range.strip_suffix("/*") == Some(ty)))
            .or_else(|| self.best(|range| range == "*/*"))
            .unwrap_or(0.0)
    }

    fn best(&self, matches: impl Fn(&str) -> bool) -> Option<f32> {
        self.ranges
            .iter()
            .filter(|(range, _)| matches(range))
            .map(|&(_, q)| q)
            .reduce(f32::max)
    }
}

/// Whether the client accepts `mime` (no `Accept` header: anything).
pub(crate) fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    Accept::of(headers).is_none_or(|a| a.quality(mime) > 0.0)
}

/// Whether the client asks for an event stream rather than a JSON answer:
/// `text/event-stream` is named with a q above 0 and no JSON type is preferred
/// to it. Only an explicit name counts: `*/*` alone gets JSON, as every plain
/// GraphQL client expects; on a tie the stream wins, since naming it says more
/// than a list of everything the client could parse.
pub(crate) fn prefers_event_stream(headers: &HeaderMap) -> bool {
    let Some(accept) = Accept::of(headers) else {
        return false;
    };
    let Some(stream) = accept.exact(EVENT_STREAM).filter(|q| *q > 0.0) else {
        return false;
    };
    let json = accept
        .quality(GRAPHQL_RESPONSE_JSON)
        .max(accept.quality(JSON));
    stream >= json
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_str(accept).expect("value"),
        );
        h
    }

    #[test]
    fn event_streams_only_when_named_and_preferred() {
        let sse = |a: &str| prefers_event_stream(&headers(a));
        assert!(sse("text/event-stream"));
        assert!(sse("Text/Event-Stream"));
        assert!(sse("text/event-stream, application/json"), "a tie");
        assert!(sse("application/json;q=0.5, text/event-stream"));
        assert!(sse("text/event-stream, */*;q=0.1"));
        assert!(!sse("text/event-stream;q=0, application/json"));
        assert!(!sse("text/event-stream;q=0"));
        assert!(!sse("text/event-stream;q=0.5, application/json"));
        assert!(!sse("text/event-stream;q=0.5, */*"));
        assert!(!sse("*/*"), "a wildcard alone is a JSON client");
        assert!(!sse("text/*"));
        assert!(!sse("application/json"));
        assert!(!prefers_event_stream(&HeaderMap::new()));
        let mut two = headers("application/json;q=0.2");
        two.append(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        assert!(prefers_event_stream(&two), "every Accept header counts");
    }

    #[test]
    fn the_most_specific_range_decides() {
        let a = Accept::of(&headers("text/*;q=0.3, text/plain;q=0, */*;q=0.1")).expect("parsed");
        assert_eq!(a.quality("text/plain"), 0.0);
        assert_eq!(a.quality("text/html"), 0.3);
        assert_eq!(a.quality("image/png"), 0.1);
        assert!(!accepts(&headers("text/plain;q=0"), "text/plain"));
        assert!(accepts(&headers("text/*"), "text/plain"));
        assert!(accepts(&HeaderMap::new(), "text/plain"));
        assert!(!accepts(&headers("application/json"), "text/plain"));
        assert_eq!(
            Accept::of(&headers("a/b;q=7, c/d;q=x")).map(|a| (a.exact("a/b"), a.exact("c/d"))),
            Some((Some(1.0), Some(1.0))),
            "out-of-range q is clamped, an unreadable one ignored"
        );
    }
}
