//! `signUp`, `signIn`, `refreshSession`, `signOut`, the `Session` type, and `me`
//! (which reflects the token's claims: they are authoritative for a request).

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldValue, InputValue, Object, ResolverContext, TypeRef};

use super::errors::{ApiError, ready, resolve};
use super::request_ctx;
use crate::auth::{Session, SessionError};
use crate::store::User;
use crate::values::format_datetime;

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::BadInput { field, message } => ApiError::BadUserInput {
                message,
                field: Some(field.to_string()),
            },
            SessionError::Conflict(m) => ApiError::Conflict(m),
            SessionError::Unauthenticated(m) => ApiError::Unauthenticated(m),
            SessionError::RateLimited(m) => ApiError::RateLimited(m),
            SessionError::Internal(detail) => ApiError::internal(detail),
        }
    }
}

fn arg(ctx: &ResolverContext<'_>, name: &str) -> Result<String, ApiError> {
    Ok(ctx.args.try_get(name)?.string()?.to_string())
}

/// The `Session` object type.
pub fn session_type() -> Object {
    let field = |name: &'static str, ty: TypeRef, doc: &'static str, get: fn(&Session) -> Value| {
        Field::new(name, ty, move |ctx| {
            ready(
                ctx.path_node,
                ctx.parent_value.try_downcast_ref::<Session>().map(get),
            )
        })
        .description(doc)
    };
    Object::new("Session")
        .description(
            "A signed-in session: a short-lived access token and the refresh token that renews it.",
        )
        .field(field(
            "accessToken",
            TypeRef::named_nn(TypeRef::STRING),
            "Send as `Authorization: Bearer <accessToken>`.",
            |s| Value::from(s.access_token.clone()),
        ))
        .field(field(
            "refreshToken",
            TypeRef::named_nn(TypeRef::STRING),
            "Exchange with `refreshSession` for a new pair; each can be used once.",
            |s| Value::from(s.refresh_token.clone()),
        ))
        .field(field(
            "expiresAt",
            TypeRef::named_nn(super::types::DATETIME),
            "When the access token expires.",
            |s| Value::from(format_datetime(&s.expires_at)),
        ))
        .field(
            Field::new("user", TypeRef::named_nn("User"), |ctx| {
                ready(
                    ctx.path_node,
                    ctx.parent_value
                        .try_downcast_ref::<Session>()
                        .map(|s| FieldValue::owned_any(s.user.clone())),
                )
            })
            .description("Who signed in."),
        )
}

/// The auth mutations.
pub fn mutation_fields() -> Vec<Field> {
    let sign_up = Field::new("signUp", TypeRef::named_nn("Session"), |ctx| {
        resolve(ctx.path_node, async move {
            let rc = request_ctx(&ctx)?;
            let new_account = match ctx.args.get("newAccount").filter(|v| !v.is_null()) {
                Some(v) => Some(v.string()?.to_string()),
                None => None,
            };
            let s = rc.auth.sign_up(&rc.store, &arg(&ctx, "email")?, &arg(&ctx, "password")?, new_account.as_deref(), rc.client_ip).await?;
            rc.store.emit(&s.user.account_id, "auth.sign_up", Some(&s.user.id), serde_json::json!({ "email": s.user.email, "newAccount": new_account.is_some() }));
            Ok(Some(FieldValue::owned_any(s)))
        })
    })
    .description("Creates a user with a password and signs it in. With `newAccount`, also creates that account (tenant) and makes the user its ADMIN; otherwise the user joins the default account. Rate-limited per client address (RATE_LIMITED).")
    .argument(InputValue::new("email", TypeRef::named_nn(TypeRef::STRING)).description("The new user's email address; case and surrounding spaces are ignored."))
    .argument(InputValue::new("password", TypeRef::named_nn(TypeRef::STRING)).description("At least 8 characters."))
    .argument(InputValue::new("newAccount", TypeRef::named(TypeRef::STRING)).description("Slug of a new account: lowercase letters, digits, dashes."));
    let sign_in = Field::new("signIn", TypeRef::named_nn("Session"), |ctx| {
        resolve(ctx.path_node, async move {
            let rc = request_ctx(&ctx)?;
            let s = rc.auth.sign_in(&rc.store, &arg(&ctx, "email")?, &arg(&ctx, "password")?, rc.client_ip).await?;
            rc.store.emit(&s.user.account_id, "auth.sign_in", Some(&s.user.id), serde_json::json!({ "email": s.user.email }));
            Ok(Some(FieldValue::owned_any(s)))
        })
    })
    .description("Signs in with email and password. Rate-limited per email and per client address (RATE_LIMITED).")
    .argument(InputValue::new("email", TypeRef::named_nn(TypeRef::STRING)).description("The email address signed up with."))
    .argument(InputValue::new("password", TypeRef::named_nn(TypeRef::STRING)).description("The user's password."));
    let refresh = Field::new("refreshSession", TypeRef::named_nn("Session"), |ctx| {
        resolve(ctx.path_node, async move {
            let rc = request_ctx(&ctx)?;
            let s = rc.auth.refresh(&rc.store, &arg(&ctx, "refreshToken")?).await?;
            Ok(Some(FieldValue::owned_any(s)))
        })
    })
    .description("Exchanges a refresh token for a new access token and a new refresh token (the old one stops working). Presenting an already-used refresh token revokes the whole session.")
    .argument(InputValue::new("refreshToken", TypeRef::named_nn(TypeRef::STRING)).description("The `refreshToken` of the latest Session."));
    let sign_out = Field::new("signOut", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
        resolve(ctx.path_node, async move {
            let rc = request_ctx(&ctx)?;
            let done = rc.auth.sign_out(&rc.store, &arg(&ctx, "refreshToken")?).await?;
            Ok(Some(FieldValue::value(done)))
        })
    })
    .description("Revokes the session of this refresh token: its refresh tokens and access tokens stop working. False when the token names no session.")
    .argument(InputValue::new("refreshToken", TypeRef::named_nn(TypeRef::STRING)).description("A refresh token of the session to end."));
    vec![sign_up, sign_in, refresh, sign_out]
}

/// `me`: the signed-in viewer as its token describes it, or null when anonymous.
pub fn me_field() -> Field {
    Field::new("me", TypeRef::named("User"), |ctx| {
        resolve(ctx.path_node, async move {
            let rc = request_ctx(&ctx)?;
            let v = &rc.viewer;
            Ok(v.user_id.as_ref().map(|id| {
                FieldValue::owned_any(User {
                    id: id.clone(),
                    account_id: v.account_id.clone(),
                    email: v.email.clone().unwrap_or_default(),
                    role: v.role.as_str().to_string(),
                })
            }))
        })
    })
    .description(
        "The signed-in user, as the access token describes it; null when you are anonymous.",
    )
}
