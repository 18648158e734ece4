//! API errors with the stable `extensions.code` values of API.md §5. Converting an
//! error to its GraphQL form has no side effects; internal detail is logged where
//! the error is created ([`ApiError::internal`]) and never reaches the client.

use async_graphql::ErrorExtensions;
use async_graphql::dynamic::{FieldFuture, FieldValue};

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

/// Wraps a resolver body: errors become GraphQL errors with their codes.
pub fn resolve<'a, T, F>(fut: F) -> FieldFuture<'a>
where
    T: Into<FieldValue<'a>> + Send,
    F: Future<Output = Result<Option<T>, ApiError>> + Send + 'a,
{
    FieldFuture::new(async move { fut.await.map_err(ApiError::into_gql) })
}
