//! Identity: JWT access tokens (minted for built-in accounts, or issued by an
//! outside identity provider), passwords, sessions, and turning a request's
//! credentials into a [`Viewer`](crate::access::Viewer).
//!
//! Verification keeps one `jsonwebtoken::Validation` per accepted algorithm and
//! picks it by the token's header, so a token can never choose how it is checked
//! (no `alg: none`, no HS256 signed with an RSA public key). "No token" is an
//! anonymous viewer; a bad token is always an error, never anonymous.

mod jwks;
mod password;
mod sessions;
mod tokens;
mod viewer;

pub use password::{Busy, HASH_WAIT, Hasher, check_password, normalize_email};
pub use sessions::{
    REVOCATIONS_BUFFER, SIGN_UPS_PER_ADDRESS_PER_MINUTE, Session, SessionError, SignIn,
};
pub use tokens::{AuthConfig, Claims, DEFAULT_HASH_QUEUE, Identity, Tokens};
pub use viewer::{Credentials, Lasting, resolve_viewer};

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
    #[error(
        "the access token's signing key (its `kid`) is not one of the identity provider's keys"
    )]
    UnknownKey,
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

/// The key per-address limits count a client under: an IPv4 address as it is
/// (an IPv4-mapped IPv6 one as its IPv4 address), an IPv6 address by its /64.
/// One IPv6 host is usually handed a whole /64 and can rotate through it at
/// will, so counting full addresses would let it walk past every limit.
pub fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::address_key;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let key = |s: &str| address_key(s.parse().expect("address"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::");
        assert_eq!(key("::ffff:10.0.0.1").to_string(), "10.0.0.1");
        assert_eq!(key("127.0.0.2").to_string(), "127.0.0.2");
    }
}
