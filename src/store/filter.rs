//! Filters and ordering as a small dialect-neutral tree, built by the GraphQL layer
//! from `<Type>Where` / `<Type>Order` and turned into sea-query conditions here.
//! Columns are catalog-checked names; values are always bound parameters.

use sea_orm::sea_query::{Condition, Expr, ExprTrait, LikeExpr};

use super::rows::db_value;
use crate::catalog::FieldKind;
use crate::values::Scalar;

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

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_wildcards() {
        assert_eq!(super::escape_like(r"50%_a\b"), r"50\%\_a\\b");
    }
}
