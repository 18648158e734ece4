//! API errors with the stable `extensions.code` values of API.md §5. Converting an
//! error to its GraphQL form has no side effects; internal detail is logged where
//! the error is created ([`ApiError::internal`]) and never reaches the client.

use async_graphql::dynamic::{FieldFuture, FieldValue};
use async_graphql::{ErrorExtensions, PathSegment, QueryPathNode, ServerError};
use serde_json::Value as Json;

use crate::access::Denied;
use crate::store::StoreError;

/// An error a client may see.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    /// A bad argument value; `field` names the input field when there is one.
    BadUserInput {
        message: String,
        field: Option<String>,
    },
    Conflict(String),
    RateLimited(String),
    CursorExpired,
    TooManySubscriptions(u32),
    /// The operation cannot go on now (e.g. a subscriber that fell behind).
    Unavailable(String),
    Internal,
}

impl ApiError {
    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::BadUserInput { .. } => "BAD_USER_INPUT",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::CursorExpired => "CURSOR_EXPIRED",
            ApiError::TooManySubscriptions(_) => "TOO_MANY_SUBSCRIPTIONS",
            ApiError::Unavailable(_) => "INTERNAL",
            ApiError::Internal => "INTERNAL",
        }
    }

    /// The message a client sees.
    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::RateLimited(m)
            | ApiError::Unavailable(m) => m.clone(),
            ApiError::CursorExpired => "the cursor is older than the kept history; re-fetch, then subscribe without `after`".to_string(),
            ApiError::TooManySubscriptions(n) => format!("at most {n} subscriptions per connection"),
            ApiError::BadUserInput { message, .. } => message.clone(),
            ApiError::Internal => "internal error".to_string(),
        }
    }

    /// The GraphQL error, with `extensions.code` (and `extensions.field`).
    pub fn into_gql(self) -> async_graphql::Error {
        let field = match &self {
            ApiError::BadUserInput { field, .. } => field.clone(),
            _ => None,
        };
        let code = self.code();
        async_graphql::Error::new(self.message()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(field) = &field {
                ext.set("field", field.as_str());
            }
        })
    }

    /// A bad value for input field `field` (its GraphQL name).
    pub fn bad_field(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::BadUserInput {
            message: format!("{field}: {message}"),
            field: Some(field.to_string()),
        }
    }

    /// A bad argument not tied to one input field.
    pub fn bad_input(message: impl Into<String>) -> ApiError {
        ApiError::BadUserInput {
            message: message.into(),
            field: None,
        }
    }

    /// Logs `detail` and returns the opaque internal error.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::Internal
    }

    /// `NOT_FOUND` for a row, worded the same whether it is missing or unreadable.
    pub fn row_not_found(type_name: &str, id: &str) -> ApiError {
        ApiError::NotFound(format!("{type_name} \"{id}\" not found"))
    }

    /// The error for a denied action on collection `what`.
    pub fn denied(denied: Denied, what: &str) -> ApiError {
        match denied {
            Denied::Unauthenticated => ApiError::Unauthenticated(format!("sign in to {what}")),
            Denied::Forbidden => ApiError::Forbidden(format!("you may not {what}")),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            StoreError::TooLarge { size, limit } => ApiError::bad_input(format!(
                "the record would be {size} bytes as JSON, more than the {limit} bytes this server takes (--max-record-bytes / LIVEGATE_MAX_RECORD_BYTES); store large content elsewhere and keep a reference"
            )),
            other => ApiError::internal(other),
        }
    }
}

/// async-graphql's own errors inside a resolver (a missing argument, a failed
/// downcast) mean the schema and the resolver disagree: a bug, not bad input.
impl From<async_graphql::Error> for ApiError {
    fn from(e: async_graphql::Error) -> Self {
        ApiError::internal(e.message)
    }
}

/// Wraps a resolver body: errors become GraphQL errors with their codes and
/// the field's path (`at`: the resolver context's `path_node`).
pub fn resolve<'a, T, F>(at: Option<QueryPathNode<'a>>, fut: F) -> FieldFuture<'a>
where
    T: Into<FieldValue<'a>> + Send,
    F: Future<Output = Result<Option<T>, ApiError>> + Send + 'a,
{
    FieldFuture::new(async move { fut.await.map_err(|e| with_path(e.into_gql(), at)) })
}

/// The error extension a resolver's error carries its path in until
/// [`take_paths`] moves it to `path`. async-graphql's dynamic executor gives a
/// resolver's error no path, and a resolve extension that adds one costs a
/// boxed future per field of every response (about a tenth of a small
/// request's CPU), so the path is written only when there is an error.
const PATH_KEY: &str = "livegate.path";

/// `e` with the path of the field `at`, for [`take_paths`].
pub fn with_path(
    mut e: async_graphql::Error,
    at: Option<QueryPathNode<'_>>,
) -> async_graphql::Error {
    if let Some(node) = at {
        let path: Vec<async_graphql::Value> = node
            .to_string_vec()
            .into_iter()
            .map(|s| match s.parse::<u64>() {
                // Field names and aliases never start with a digit: a number is an index.
                Ok(i) => async_graphql::Value::from(i),
                Err(_) => async_graphql::Value::from(s),
            })
            .collect();
        e.extensions
            .get_or_insert_with(Default::default)
            .set(PATH_KEY, path);
    }
    e
}

/// A resolver's failure with its path (see [`with_path`]).
pub fn failed<'a>(e: async_graphql::Error, at: Option<QueryPathNode<'a>>) -> FieldFuture<'a> {
    let e = with_path(e, at);
    FieldFuture::new(async move { Err::<Option<async_graphql::Value>, _>(e) })
}

/// A field whose value is at hand: no future to box and await; an error gets
/// its path.
pub fn ready<'a, T: Into<FieldValue<'a>>>(
    at: Option<QueryPathNode<'a>>,
    value: Result<T, async_graphql::Error>,
) -> FieldFuture<'a> {
    match value {
        Ok(v) => FieldFuture::Value(Some(v.into())),
        Err(e) => failed(e, at),
    }
}

/// Moves every error's path out of the extension [`with_path`] put it in;
/// runs on every executed response before anything looks at its errors.
pub fn take_paths(errors: &mut [ServerError]) {
    for e in errors {
        let Some(ext) = e.extensions.as_mut() else {
            continue;
        };
        let Some(async_graphql::Value::List(path)) = ext.get(PATH_KEY).cloned() else {
            continue;
        };
        ext.unset(PATH_KEY);
        if e.path.is_empty() {
            e.path = path
                .into_iter()
                .filter_map(|seg| match seg {
                    async_graphql::Value::Number(n) => n
                        .as_u64()
                        .and_then(|i| usize::try_from(i).ok())
                        .map(PathSegment::Index),
                    async_graphql::Value::String(s) => Some(PathSegment::Field(s)),
                    _ => None,
                })
                .collect();
        }
    }
}

pub fn set_code(e: &mut ServerError, code: &str) {
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
}

pub(crate) fn has_code(e: &ServerError) -> bool {
    e.extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
}

/// Gives every error an `extensions.code`: before execution, a bad variable value
/// is `BAD_USER_INPUT` and anything else `GRAPHQL_VALIDATION_FAILED` (Apollo's
/// split); during execution an uncoded error is a bug, logged and shown as
/// `INTERNAL` without its detail.
pub fn give_codes(errors: &mut [ServerError], query: &str, is_request_error: bool) {
    for e in errors {
        if has_code(e) {
            continue;
        }
        if is_request_error {
            let by_variable = at_variable(e, query)
                || e.message.contains("variable")
                || e.message.contains("Variable");
            set_code(
                e,
                if by_variable {
                    "BAD_USER_INPUT"
                } else {
                    "GRAPHQL_VALIDATION_FAILED"
                },
            );
        } else {
            tracing::error!(error = %e.message, path = ?e.path, "uncoded resolver error");
            e.message = "internal error".into();
            set_code(e, "INTERNAL");
        }
    }
}

/// [`give_codes`], returning the errors as JSON (for the realtime transports).
pub fn coded_errors(errors: &[ServerError], query: &str, is_request_error: bool) -> Vec<Json> {
    let mut errors = errors.to_vec();
    give_codes(&mut errors, query, is_request_error);
    errors
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect()
}

/// Whether the error's first location points at an argument whose value is a
/// `$variable` (`input: $i`): then the value that failed was the client's input.
fn at_variable(e: &ServerError, query: &str) -> bool {
    let Some(pos) = e.locations.first() else {
        return false;
    };
    let line = query
        .lines()
        .nth(pos.line.saturating_sub(1))
        .unwrap_or_default();
    let mut rest = line
        .chars()
        .skip(pos.column.saturating_sub(1))
        .skip_while(|c| c.is_alphanumeric() || *c == '_');
    rest.find(|c| !c.is_whitespace() && *c != ':') == Some('$')
}

#[cfg(test)]
mod tests {
    use async_graphql::dynamic::{Field, Object, Schema, TypeRef};

    use super::*;

    /// A schema whose `items` list holds three objects; `bad` fails on the second
    /// (through `resolve`), `broken` on every one (through `ready`).
    fn schema() -> Schema {
        let item = Object::new("Item")
            .field(Field::new("bad", TypeRef::named(TypeRef::INT), |ctx| {
                let i = ctx.parent_value.try_downcast_ref::<i32>().copied();
                resolve(ctx.path_node, async move {
                    match i? {
                        1 => Err(ApiError::Forbidden("not this one".into())),
                        n => Ok(Some(async_graphql::Value::from(n))),
                    }
                })
            }))
            .field(Field::new("broken", TypeRef::named(TypeRef::INT), |ctx| {
                ready(
                    ctx.path_node,
                    ctx.parent_value
                        .try_downcast_ref::<String>()
                        .map(|s| async_graphql::Value::from(s.clone())),
                )
            }));
        let query =
            Object::new("Query").field(Field::new("items", TypeRef::named_list("Item"), |_| {
                FieldFuture::Value(Some(FieldValue::list((0..3i32).map(FieldValue::owned_any))))
            }));
        Schema::build("Query", None, None)
            .register(item)
            .register(query)
            .finish()
            .expect("schema")
    }

    #[tokio::test]
    async fn resolver_errors_get_their_path_with_list_indices() {
        let mut response = schema().execute("{ items { bad } }").await;
        take_paths(&mut response.errors);
        assert_eq!(response.errors.len(), 1, "{:?}", response.errors);
        let e = &response.errors[0];
        assert_eq!(
            e.path,
            vec![
                PathSegment::Field("items".into()),
                PathSegment::Index(1),
                PathSegment::Field("bad".into()),
            ]
        );
        assert_eq!(e.message, "not this one");
        // The carrier is gone; the code is still there.
        let ext = e.extensions.as_ref().expect("extensions");
        assert!(ext.get(PATH_KEY).is_none());
        assert_eq!(
            ext.get("code"),
            Some(&async_graphql::Value::from("FORBIDDEN"))
        );

        let mut response = schema().execute("{ items { x: broken } }").await;
        take_paths(&mut response.errors);
        assert!(!response.errors.is_empty());
        assert_eq!(
            response.errors[0].path,
            vec![
                PathSegment::Field("items".into()),
                PathSegment::Index(0),
                PathSegment::Field("x".into()),
            ]
        );
    }
}
