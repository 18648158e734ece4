//! Identity: JWT access tokens (minted for built-in accounts, or issued by an
//! outside identity provider), passwords, sessions, and turning a request's
//! credentials into a [`Viewer`](crate::access::Viewer).
//!
//! Verification keeps one `jsonwebtoken::Validation` per accepted algorithm and
//! picks it by the token's header, so a token can never choose how it is checked
//! (no `alg: none`, no HS256 signed with an RSA public key). "No token" is an
//! anonymous viewer; a bad token is always an error, never anonymous.

mod password;
mod sessions;
mod tokens;
mod viewer;

pub use password::{Busy, HASH_WAIT, Hasher, check_password, normalize_email};
pub use sessions::{
    REVOCATIONS_BUFFER, SIGN_UPS_PER_ADDRESS_PER_MINUTE, Session, SessionError, SignIn,
};
pub use tokens::{AuthConfig, Claims, DEFAULT_HASH_QUEUE, Identity, Tokens};
pub use viewer::{Credentials, resolve_viewer};

/// Why a credential was refused. The message is safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token's signature is invalid")]
    BadSignature,
    #[error("the access token's issuer is not accepted")]
    WrongIssuer,
    #[error("the access token's audience is not accepted")]
    WrongAudience,
    #[error("access tokens signed with {0} are not accepted")]
    Algorithm(String),
    #[error("the access token is malformed: {0}")]
    Malformed(String),
    #[error("unknown account \"{0}\"")]
    UnknownAccount(String),
    #[error("this session was signed out")]
    SignedOut,
    #[error("send the token as `Authorization: Bearer <token>`")]
    Scheme,
}
