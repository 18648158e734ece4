//! The one access policy, as pure functions of a viewer and a level (and, for row
//! decisions, the row's owner). CRUD resolvers, subscriptions and rooms all ask
//! here, so HTTP, WebSocket and SSE cannot disagree. Tenancy is not decided here:
//! every query is confined to the viewer's account by the store's [`Scope`].
//!
//! [`Scope`]: crate::store::Scope

use crate::catalog::Level;

/// A viewer's role within its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    /// As stored and as the GraphQL `Role` enum spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Admin => "ADMIN",
        }
    }

    /// Parses `USER` / `ADMIN` (any case).
    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_uppercase().as_str() {
            "USER" => Some(Role::User),
            "ADMIN" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who is asking: always inside exactly one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub account_id: String,
    /// `None` for an anonymous viewer.
    pub user_id: Option<String>,
    pub role: Role,
    /// The email the viewer's token carries, if any (for `me`).
    pub email: Option<String>,
}

impl Viewer {
    /// An anonymous viewer browsing `account_id`.
    pub fn anonymous(account_id: String) -> Viewer {
        Viewer {
            account_id,
            user_id: None,
            role: Role::User,
            email: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user_id.is_some() && self.role == Role::Admin
    }
}

/// Why something was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// A token is needed and there is none.
    Unauthenticated,
    /// The viewer is known and may not do this.
    Forbidden,
}

/// Which rows of a collection a viewer may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadScope {
    /// Every row of the viewer's account.
    Account,
    /// Only rows owned by this user.
    Owned(String),
    /// None at all (lists are empty, fetches are NOT_FOUND).
    Nothing,
}

/// The rows `viewer` may read in a collection whose read level is `level`.
pub fn read_scope(viewer: &Viewer, level: Level) -> Result<ReadScope, Denied> {
    let Some(user) = &viewer.user_id else {
        return if level == Level::Anon {
            Ok(ReadScope::Account)
        } else {
            Err(Denied::Unauthenticated)
        };
    };
    Ok(match level {
        Level::Anon | Level::User => ReadScope::Account,
        Level::Owner if viewer.is_admin() => ReadScope::Account,
        Level::Owner => ReadScope::Owned(user.clone()),
        Level::Admin if viewer.is_admin() => ReadScope::Account,
        Level::Admin | Level::Nobody => ReadScope::Nothing,
    })
}

/// Whether `viewer` may read one row owned by `owner` (same account assumed).
pub fn may_read_row(viewer: &Viewer, level: Level, owner: Option<&str>) -> bool {
    match read_scope(viewer, level) {
        Ok(ReadScope::Account) => true,
        Ok(ReadScope::Owned(me)) => owner == Some(me.as_str()),
        Ok(ReadScope::Nothing) | Err(_) => false,
    }
}

/// Whether `viewer` may create a row in a collection whose create level is `level`.
pub fn may_create(viewer: &Viewer, level: Level) -> Result<(), Denied> {
    if viewer.user_id.is_none() {
        return if level == Level::Anon {
            Ok(())
        } else {
            Err(Denied::Unauthenticated)
        };
    }
    match level {
        Level::Anon | Level::User | Level::Owner => Ok(()),
        Level::Admin if viewer.is_admin() => Ok(()),
        Level::Admin | Level::Nobody => Err(Denied::Forbidden),
    }
}

/// Whether `viewer` may join (or send to) a room whose level for that is `level`
/// (rooms have no owner: `anon`, `user`, `admin` or `none`).
pub fn may_use_room(viewer: &Viewer, level: Level) -> Result<(), Denied> {
    may_create(viewer, level)
}

/// Whether `viewer` may update or delete a row owned by `owner` when the
/// collection's level for that action is `level`.
pub fn may_write_row(viewer: &Viewer, level: Level, owner: Option<&str>) -> Result<(), Denied> {
    let Some(user) = &viewer.user_id else {
        return if level == Level::Anon {
            Ok(())
        } else {
            Err(Denied::Unauthenticated)
        };
    };
    match level {
        Level::Anon | Level::User => Ok(()),
        Level::Owner if viewer.is_admin() || owner == Some(user.as_str()) => Ok(()),
        Level::Admin if viewer.is_admin() => Ok(()),
        Level::Owner | Level::Admin | Level::Nobody => Err(Denied::Forbidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, role: Role) -> Viewer {
        Viewer {
            account_id: "a".into(),
            user_id: Some(id.into()),
            role,
            email: None,
        }
    }

    #[test]
    fn owner_scope() {
        let anon = Viewer::anonymous("a".into());
        assert_eq!(
            read_scope(&anon, Level::Owner),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            read_scope(&user("u", Role::User), Level::Owner),
            Ok(ReadScope::Owned("u".into()))
        );
        assert_eq!(
            read_scope(&user("x", Role::Admin), Level::Owner),
            Ok(ReadScope::Account)
        );
        assert!(may_read_row(
            &user("u", Role::User),
            Level::Owner,
            Some("u")
        ));
        assert!(!may_read_row(
            &user("v", Role::User),
            Level::Owner,
            Some("u")
        ));
        assert_eq!(
            may_write_row(&user("v", Role::User), Level::Owner, Some("u")),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            may_write_row(&user("u", Role::User), Level::Owner, Some("u")),
            Ok(())
        );
    }

    #[test]
    fn levels() {
        let anon = Viewer::anonymous("a".into());
        assert_eq!(read_scope(&anon, Level::Anon), Ok(ReadScope::Account));
        assert_eq!(
            read_scope(&user("u", Role::User), Level::Admin),
            Ok(ReadScope::Nothing)
        );
        assert_eq!(
            read_scope(&user("u", Role::Admin), Level::Nobody),
            Ok(ReadScope::Nothing)
        );
        assert_eq!(may_create(&anon, Level::User), Err(Denied::Unauthenticated));
        assert_eq!(
            may_create(&user("u", Role::User), Level::Admin),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            may_create(&user("u", Role::Admin), Level::Nobody),
            Err(Denied::Forbidden)
        );
    }
}
