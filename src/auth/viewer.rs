//! From a request's credentials to a viewer: no token is an anonymous viewer of
//! the default account (or the one it names); a token is verified, its account
//! must exist, and a built-in token's session must not be signed out.

use axum::http::{HeaderMap, header};

use super::{AuthError, Identity, Tokens};
use crate::access::Viewer;
use crate::store::Store;

/// What a request presented.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The bearer token, if any.
    pub token: Option<String>,
    /// The account an anonymous viewer asks to browse (id or slug).
    pub account: Option<String>,
}

impl Credentials {
    /// From `Authorization: Bearer` (or `?access_token=`) and `X-Account` (or
    /// `?account=`). Another authorization scheme is an error, not anonymity.
    pub fn from_http(headers: &HeaderMap, query: Option<&str>) -> Result<Credentials, AuthError> {
        let mut creds = Credentials::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match key.as_ref() {
                "access_token" => creds.token = Some(value.into_owned()),
                "account" => creds.account = Some(value.into_owned()),
                _ => {}
            }
        }
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            let auth = auth.to_str().map_err(|_| AuthError::Scheme)?.trim();
            let (scheme, token) = auth.split_once(' ').ok_or(AuthError::Scheme)?;
            if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                return Err(AuthError::Scheme);
            }
            creds.token = Some(token.trim().to_string());
        }
        if let Some(account) = headers.get("x-account").and_then(|v| v.to_str().ok()) {
            creds.account = Some(account.trim().to_string());
        }
        Ok(creds)
    }
}

/// What a viewer is resolved for: its session is checked in the database for
/// a connection (which outlives the request), and may come from the cache of
/// live sessions for a plain request (see `store::SessionCache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasting {
    Request,
    Connection,
}

/// The viewer these credentials stand for, with the verified identity if any.
pub async fn resolve_viewer(
    tokens: &Tokens,
    store: &Store,
    default_account_id: &str,
    creds: &Credentials,
    lasting: Lasting,
) -> Result<(Viewer, Option<Identity>), AuthError> {
    let Some(token) = &creds.token else {
        let named = creds.account.as_deref().filter(|a| !a.is_empty());
        let account_id = account_id(store, named, default_account_id).await?;
        return Ok((Viewer::anonymous(account_id), None));
    };
    let identity = tokens.verify(token).await?;
    let account_id = account_id(store, identity.account.as_deref(), default_account_id).await?;
    if let Some(session) = &identity.session_id {
        let revoked = match lasting {
            Lasting::Request => store.session_revoked(session).await,
            Lasting::Connection => store.session_revoked_now(session).await,
        };
        if revoked.map_err(|_| AuthError::SignedOut)? != Some(false) {
            return Err(AuthError::SignedOut);
        }
    }
    let viewer = Viewer {
        account_id,
        user_id: Some(identity.user_id.clone()),
        role: identity.role,
        email: identity.email.clone(),
    };
    Ok((viewer, Some(identity)))
}

/// The id of the account `key` names (by id or slug), or the default one.
async fn account_id(
    store: &Store,
    key: Option<&str>,
    default_account_id: &str,
) -> Result<String, AuthError> {
    let Some(key) = key else {
        return Ok(default_account_id.to_string());
    };
    let unknown = || AuthError::UnknownAccount(key.to_string());
    Ok(store
        .find_account(key)
        .await
        .map_err(|_| unknown())?
        .ok_or_else(unknown)?
        .id)
}
