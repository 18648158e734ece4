//! Filters and ordering as a small dialect-neutral tree, built by the GraphQL layer
//! from `<Type>Where` / `<Type>Order` and turned into sea-query conditions here.
//! Columns are catalog-checked names; values are always bound parameters.

use sea_orm::sea_query::{Condition, Expr, ExprTrait, LikeExpr};

use serde_json::Value as Json;

use super::rows::db_value;
use crate::catalog::{Collection, FieldKind};
use crate::values::{Row, Scalar, format_datetime, parse_datetime};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// A substring test on text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeKind {
    Contains,
    StartsWith,
    EndsWith,
}

/// A row filter. `column` is always a name taken from the catalog (or a system column).
#[derive(Debug, Clone)]
pub enum Filter {
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
    Cmp {
        column: String,
        kind: FieldKind,
        op: CmpOp,
        value: Scalar,
    },
    In {
        column: String,
        kind: FieldKind,
        values: Vec<Scalar>,
        negated: bool,
    },
    IsNull {
        column: String,
        is_null: bool,
    },
    Like {
        column: String,
        like: LikeKind,
        text: String,
    },
}

/// One sort key; `id` is always appended last so paging is stable.
#[derive(Debug, Clone)]
pub struct Order {
    pub column: String,
    pub descending: bool,
}

/// Escapes LIKE wildcards so user text matches literally (escape character `\`).
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

impl Filter {
    /// The sea-query condition for this filter.
    pub fn condition(&self) -> Condition {
        match self {
            Filter::All(parts) => parts
                .iter()
                .fold(Condition::all(), |c, f| c.add(f.condition())),
            Filter::Any(parts) => parts
                .iter()
                .fold(Condition::any(), |c, f| c.add(f.condition())),
            Filter::Not(inner) => inner.condition().not(),
            Filter::Cmp {
                column,
                kind,
                op,
                value,
            } => {
                let col = Expr::col(column.clone());
                let v = db_value(*kind, Some(value));
                let e = match op {
                    CmpOp::Eq => col.eq(v),
                    CmpOp::Ne => col.ne(v),
                    CmpOp::Lt => col.lt(v),
                    CmpOp::Lte => col.lte(v),
                    CmpOp::Gt => col.gt(v),
                    CmpOp::Gte => col.gte(v),
                };
                Condition::all().add(e)
            }
            Filter::In {
                column,
                kind,
                values,
                negated,
            } => {
                let vals: Vec<_> = values.iter().map(|v| db_value(*kind, Some(v))).collect();
                // `x IN ()` is not valid SQL everywhere: an empty list matches nothing.
                if vals.is_empty() {
                    let always = Expr::val(1).eq(Expr::val(if *negated { 1 } else { 0 }));
                    return Condition::all().add(always);
                }
                let col = Expr::col(column.clone());
                Condition::all().add(if *negated {
                    col.is_not_in(vals)
                } else {
                    col.is_in(vals)
                })
            }
            Filter::IsNull { column, is_null } => {
                let col = Expr::col(column.clone());
                Condition::all().add(if *is_null {
                    col.is_null()
                } else {
                    col.is_not_null()
                })
            }
            Filter::Like { column, like, text } => {
                let t = escape_like(text);
                let pattern = match like {
                    LikeKind::Contains => format!("%{t}%"),
                    LikeKind::StartsWith => format!("{t}%"),
                    LikeKind::EndsWith => format!("%{t}"),
                };
                Condition::all()
                    .add(Expr::col(column.clone()).like(LikeExpr::new(pattern).escape('\\')))
            }
        }
    }
}

impl Filter {
    /// Whether `row` of collection `c` matches, with SQL's semantics (three-valued
    /// logic around NULL, code-point string order, case-sensitive LIKE), so that a
    /// subscription's `where` selects exactly what the same `where` would query.
    pub fn matches(&self, c: &Collection, row: &Row) -> bool {
        self.eval(c, row) == Some(true)
    }

    fn eval(&self, c: &Collection, row: &Row) -> Option<bool> {
        match self {
            Filter::All(parts) => {
                let mut unknown = false;
                for p in parts {
                    match p.eval(c, row) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                if unknown { None } else { Some(true) }
            }
            Filter::Any(parts) => {
                let mut unknown = false;
                for p in parts {
                    match p.eval(c, row) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if unknown { None } else { Some(false) }
            }
            Filter::Not(inner) => inner.eval(c, row).map(|b| !b),
            Filter::IsNull { column, is_null } => {
                Some(value_of(c, row, column).is_none() == *is_null)
            }
            Filter::Cmp {
                column, op, value, ..
            } => {
                let ord = compare(&value_of(c, row, column)?, value)?;
                Some(match op {
                    CmpOp::Eq => ord.is_eq(),
                    CmpOp::Ne => ord.is_ne(),
                    CmpOp::Lt => ord.is_lt(),
                    CmpOp::Lte => ord.is_le(),
                    CmpOp::Gt => ord.is_gt(),
                    CmpOp::Gte => ord.is_ge(),
                })
            }
            Filter::In {
                column,
                values,
                negated,
                ..
            } => {
                if values.is_empty() {
                    return Some(*negated);
                }
                let v = value_of(c, row, column)?;
                let mut unknown = false;
                for candidate in values {
                    match compare(&v, candidate) {
                        Some(o) if o.is_eq() => return Some(!negated),
                        None => unknown = true,
                        _ => {}
                    }
                }
                if unknown { None } else { Some(*negated) }
            }
            Filter::Like { column, like, text } => {
                let Json::String(s) = value_of(c, row, column)? else {
                    return None;
                };
                Some(match like {
                    LikeKind::Contains => s.contains(text.as_str()),
                    LikeKind::StartsWith => s.starts_with(text.as_str()),
                    LikeKind::EndsWith => s.ends_with(text.as_str()),
                })
            }
        }
    }
}

/// The value of `column` in `row` (`None` for NULL).
fn value_of(c: &Collection, row: &Row, column: &str) -> Option<Json> {
    let v = match column {
        "id" => Json::String(row.id.clone()),
        "owner_id" => Json::String(row.owner_id.clone()?),
        "account_id" => Json::String(row.account_id.clone()),
        "created_at" => Json::String(format_datetime(&row.created_at)),
        "updated_at" => Json::String(format_datetime(&row.updated_at)),
        _ => {
            let f = c.fields.iter().find(|f| f.column == column)?;
            row.data.get(&f.key)?.clone()
        }
    };
    (!Json::is_null(&v)).then_some(v)
}

fn compare(v: &Json, s: &Scalar) -> Option<std::cmp::Ordering> {
    match (v, s) {
        (Json::String(a), Scalar::DateTime(b)) => Some(parse_datetime(a).ok()?.cmp(b)),
        (Json::String(a), Scalar::Str(b)) => Some(a.as_str().cmp(b.as_str())),
        (Json::Number(a), Scalar::Int(b)) => Some(a.as_i64()?.cmp(b)),
        (Json::Number(a), Scalar::Float(b)) => a.as_f64()?.partial_cmp(b),
        (Json::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_wildcards() {
        assert_eq!(super::escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }
}
