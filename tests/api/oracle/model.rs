//! The scoping oracle's model: the app's collections and access rules written
//! down again from the contract (API.md §1 and §4), the rows the test wrote,
//! and what each viewer may therefore receive. It shares no code with the server.

use std::collections::{HashMap, HashSet};

/// An access level of the app file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lvl {
    Anon,
    User,
    Owner,
    Admin,
    None,
}

/// One collection of the oracle's app file.
pub struct Coll {
    pub key: &'static str,
    pub ty: &'static str,
    pub read: Lvl,
    pub create: Lvl,
    pub update: Lvl,
    pub delete: Lvl,
    pub hints_all: bool,
    /// `ref` fields: (field, index of the target collection).
    pub refs: &'static [(&'static str, usize)],
}

pub const BOARDS: usize = 0;
pub const SECRETS: usize = 2;
pub const AUDITS: usize = 3;
pub const VAULTS: usize = 4;
pub const LINKS: usize = 5;

/// The oracle's collections: every read level, refs from `links` to an
/// anon-readable and to an owner-readable collection.
pub const COLLS: [Coll; 6] = [
    Coll {
        key: "boards",
        ty: "Board",
        read: Lvl::Anon,
        create: Lvl::User,
        update: Lvl::Owner,
        delete: Lvl::Owner,
        hints_all: false,
        refs: &[],
    },
    Coll {
        key: "memos",
        ty: "Memo",
        read: Lvl::User,
        create: Lvl::User,
        update: Lvl::User,
        delete: Lvl::Admin,
        hints_all: true,
        refs: &[],
    },
    Coll {
        key: "secrets",
        ty: "Secret",
        read: Lvl::Owner,
        create: Lvl::User,
        update: Lvl::Owner,
        delete: Lvl::Owner,
        hints_all: true,
        refs: &[],
    },
    Coll {
        key: "audits",
        ty: "Audit",
        read: Lvl::Admin,
        create: Lvl::Admin,
        update: Lvl::Admin,
        delete: Lvl::Admin,
        hints_all: true,
        refs: &[],
    },
    Coll {
        key: "vaults",
        ty: "Vault",
        read: Lvl::None,
        create: Lvl::User,
        update: Lvl::None,
        delete: Lvl::None,
        hints_all: false,
        refs: &[],
    },
    Coll {
        key: "links",
        ty: "Link",
        read: Lvl::Anon,
        create: Lvl::Anon,
        update: Lvl::Anon,
        delete: Lvl::User,
        hints_all: false,
        refs: &[("board", BOARDS), ("secret", SECRETS)],
    },
];

/// The app file the oracle's server runs.
pub fn app_toml() -> String {
    let lvl = |l: Lvl| match l {
        Lvl::Anon => "anon",
        Lvl::User => "user",
        Lvl::Owner => "owner",
        Lvl::Admin => "admin",
        Lvl::None => "none",
    };
    let mut out = String::from(
        "[realtime]\nanonymous = true\nmax_subscriptions_per_connection = 100\nheartbeat_seconds = 30\nhistory_hours = 24\n",
    );
    for c in &COLLS {
        out += &format!(
            "\n[collections.{}]\nread = \"{}\"\ncreate = \"{}\"\nupdate = \"{}\"\ndelete = \"{}\"\nhints = \"{}\"\n\n[collections.{}.fields]\ntitle = {{ type = \"string\", required = true }}\npublished = {{ type = \"bool\", default = false }}\n",
            c.key,
            lvl(c.read),
            lvl(c.create),
            lvl(c.update),
            lvl(c.delete),
            if c.hints_all { "all" } else { "readers" },
            c.key
        );
        for (field, target) in c.refs {
            out += &format!(
                "{field} = {{ type = \"ref\", collection = \"{}\" }}\n",
                COLLS[*target].key
            );
        }
    }
    out + "\n[rooms]\njoin = \"user\"\nsend = \"user\"\n"
}

/// Who is watching or writing.
#[derive(Debug, Clone)]
pub struct Who {
    pub name: String,
    pub account: usize,
    pub account_id: String,
    /// `None`: anonymous.
    pub user_id: Option<String>,
    pub token: Option<String>,
    pub admin: bool,
}

/// A row as the model knows it.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub coll: usize,
    pub account: usize,
    pub owner: Option<String>,
    pub title: String,
    pub published: bool,
    /// One per ref field of the collection.
    pub refs: Vec<Option<String>>,
}

/// A committed change, in commit order.
#[derive(Debug, Clone)]
pub struct Ev {
    pub action: &'static str,
    pub row: Row,
    pub prev: Option<Row>,
    /// The cursor, as the account's tracer saw it (vaults have none).
    pub seq: Option<i64>,
}

/// What a subscription selects.
#[derive(Debug, Clone)]
pub enum Sel {
    Changed {
        coll: usize,
        actions: Option<Vec<&'static str>>,
        filter: Option<Filt>,
    },
    Changes {
        colls: Option<Vec<usize>>,
    },
}

/// The `where` filters the oracle evaluates itself.
#[derive(Debug, Clone)]
pub enum Filt {
    Title(String),
    Published(bool),
}

impl Filt {
    pub fn matches(&self, row: &Row) -> bool {
        match self {
            Filt::Title(t) => &row.title == t,
            Filt::Published(p) => row.published == *p,
        }
    }
}

/// The rows and the log of changes.
#[derive(Default)]
pub struct Model {
    /// Every row ever written, deleted ones included (refs still name them).
    pub rows: HashMap<String, Row>,
    pub deleted: HashSet<String>,
    pub log: Vec<Ev>,
}

/// Whether `who` may read rows at `level` owned by `owner` in `account` (§1).
pub fn may_read(who: &Who, level: Lvl, account: usize, owner: Option<&str>) -> bool {
    if who.account != account {
        return false;
    }
    match (level, &who.user_id) {
        (Lvl::Anon, _) => true,
        (_, None) | (Lvl::None, _) => false,
        (Lvl::User, Some(_)) => true,
        (Lvl::Owner, Some(me)) => who.admin || owner == Some(me.as_str()),
        (Lvl::Admin, Some(_)) => who.admin,
    }
}

pub fn may_read_row(who: &Who, row: &Row) -> bool {
    may_read(who, COLLS[row.coll].read, row.account, row.owner.as_deref())
}

/// The code a create by `who` in `coll` fails with, if any (refs aside).
pub fn create_refused(who: &Who, coll: usize) -> Option<&'static str> {
    let level = COLLS[coll].create;
    match (&who.user_id, level) {
        (_, Lvl::Anon) => None,
        (None, _) => Some("UNAUTHENTICATED"),
        (Some(_), Lvl::User | Lvl::Owner) => None,
        (Some(_), Lvl::Admin) if who.admin => None,
        (Some(_), _) => Some("FORBIDDEN"),
    }
}

/// The code an update or delete (at `level`) of `row` by `who` fails with, if any.
pub fn write_refused(who: &Who, row: &Row, gone: bool, level: Lvl) -> Option<&'static str> {
    let read = COLLS[row.coll].read;
    if who.user_id.is_none() && read != Lvl::Anon {
        return Some("UNAUTHENTICATED");
    }
    if gone || !may_read_row(who, row) {
        return Some("NOT_FOUND");
    }
    match (&who.user_id, level) {
        (_, Lvl::Anon) => None,
        (None, _) => Some("UNAUTHENTICATED"),
        (Some(_), Lvl::User) => None,
        (Some(me), Lvl::Owner) if who.admin || row.owner.as_deref() == Some(me) => None,
        (Some(_), Lvl::Admin) if who.admin => None,
        (Some(_), _) => Some("FORBIDDEN"),
    }
}

impl Model {
    /// Whether `who` should receive `ev` through `sel` (§4).
    pub fn delivers(&self, who: &Who, sel: &Sel, ev: &Ev) -> bool {
        // A delete reaches those who could read the row before it went.
        let readable = may_read_row(who, ev.prev.as_ref().unwrap_or(&ev.row));
        match sel {
            Sel::Changed {
                coll,
                actions,
                filter,
            } => {
                *coll == ev.row.coll
                    && readable
                    && actions.as_ref().is_none_or(|a| a.contains(&ev.action))
                    && filter.as_ref().is_none_or(|f| {
                        f.matches(&ev.row) || ev.prev.as_ref().is_some_and(|p| f.matches(p))
                    })
            }
            Sel::Changes { colls } => {
                colls.as_ref().is_none_or(|c| c.contains(&ev.row.coll))
                    && (readable
                        || (COLLS[ev.row.coll].hints_all
                            && who.user_id.is_some()
                            && who.account == ev.row.account))
            }
        }
    }

    /// How `who` must see ref `target` nested in a record: `null` when it may not
    /// read it, `?` when it may but the target was deleted at some point (whether
    /// it renders depends on timing), else `obj`.
    pub fn nested(&self, who: &Who, target: Option<&str>) -> &'static str {
        let Some(row) = target.and_then(|t| self.rows.get(t)) else {
            return "null";
        };
        if !may_read_row(who, row) {
            "null"
        } else if self.deleted.contains(&row.id) {
            "?"
        } else {
            "obj"
        }
    }

    /// The canonical form of an event the model expects `who` to receive.
    pub fn key(&self, who: &Who, sel: &Sel, ev: &Ev) -> String {
        let c = &COLLS[ev.row.coll];
        match sel {
            Sel::Changes { .. } => format!("hint {} {}", c.key, ev.action),
            Sel::Changed { .. } => {
                let mut k = format!(
                    "{} {} {} title={} published={}",
                    c.key, ev.action, ev.row.id, ev.row.title, ev.row.published
                );
                for (i, (field, _)) in c.refs.iter().enumerate() {
                    let id = ev.row.refs[i].as_deref();
                    k += &format!(" {field}={}:{}", id.unwrap_or("-"), self.nested(who, id));
                }
                k
            }
        }
    }
}
