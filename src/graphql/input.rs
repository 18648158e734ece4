//! Argument parsing: `where` trees into store filters, `orderBy` into sort keys, and
//! create/update inputs into validated values. Every rejection is a
//! `BAD_USER_INPUT` that names the offending input field.

use async_graphql::dynamic::{ObjectAccessor, ValueAccessor};
use serde_json::{Map, Value as Json};

use super::errors::ApiError;
use crate::catalog::{Collection, Field, FieldKind};
use crate::store::{CmpOp, Filter, LikeKind, Order};
use crate::values::{Scalar, format_datetime, parse_datetime};

/// Most `in` / `notIn` values a `where` may list, all its lists together: each is
/// a bound parameter in SQL and a comparison per event for subscriptions.
const MAX_IN_LIST: usize = 1_000;

/// Deepest nesting of `and` / `or` / `not` in a `where` accepted. The tree is
/// parsed, turned into SQL and matched against rows by recursion, so its depth
/// is bounded before any of that runs (deep trees once overflowed the stack).
pub const MAX_WHERE_DEPTH: usize = 16;

/// Most terms (`and`/`or`/`not` nodes and field comparisons) a `where` may hold:
/// each becomes SQL to build and to run, and a test per event for subscriptions.
pub const MAX_WHERE_TERMS: usize = 256;

/// Most sort keys an `orderBy` may list.
const MAX_ORDER_KEYS: usize = 16;

/// A filterable column: its name in the table and its value kind.
struct Col<'a> {
    gql: &'a str,
    column: &'a str,
    kind: FieldKind,
}

fn system_col(name: &str) -> Option<Col<'static>> {
    Some(match name {
        "id" => Col {
            gql: "id",
            column: "id",
            kind: FieldKind::Ref,
        },
        "ownerId" => Col {
            gql: "ownerId",
            column: "owner_id",
            kind: FieldKind::Ref,
        },
        "createdAt" => Col {
            gql: "createdAt",
            column: "created_at",
            kind: FieldKind::DateTime,
        },
        "updatedAt" => Col {
            gql: "updatedAt",
            column: "updated_at",
            kind: FieldKind::DateTime,
        },
        _ => return None,
    })
}

/// Parses a `<Type>Where` object, refusing trees deeper than
/// [`MAX_WHERE_DEPTH`] or larger than [`MAX_WHERE_TERMS`].
pub fn parse_where(c: &Collection, obj: &ObjectAccessor<'_>) -> Result<Filter, ApiError> {
    let mut budget = Budget::default();
    parse_where_at(c, obj, 1, &mut budget)
}

/// What a `where` has used of its limits so far.
#[derive(Default)]
struct Budget {
    terms: usize,
    in_values: usize,
}

fn parse_where_at(
    c: &Collection,
    obj: &ObjectAccessor<'_>,
    depth: usize,
    budget: &mut Budget,
) -> Result<Filter, ApiError> {
    if depth > MAX_WHERE_DEPTH {
        return Err(ApiError::bad_field(
            "where",
            format!("`and`, `or` and `not` may nest at most {MAX_WHERE_DEPTH} deep"),
        ));
    }
    let mut all = Vec::new();
    for (name, value) in obj.iter() {
        let name = name.as_str();
        if value.is_null() {
            continue;
        }
        budget.terms += match value.list() {
            Ok(list) => list.len().max(1),
            Err(_) => 1,
        };
        if budget.terms > MAX_WHERE_TERMS {
            return Err(ApiError::bad_field(
                "where",
                format!("a filter may hold at most {MAX_WHERE_TERMS} terms"),
            ));
        }
        match name {
            "and" | "or" => {
                let list = value
                    .list()
                    .map_err(|_| ApiError::bad_field(name, "expected a list"))?;
                let parts = list
                    .iter()
                    .map(|v| {
                        parse_where_at(
                            c,
                            &v.object()
                                .map_err(|_| ApiError::bad_field(name, "expected objects"))?,
                            depth + 1,
                            budget,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if name == "and" {
                    Filter::All(parts)
                } else {
                    Filter::Any(parts)
                });
            }
            "not" => {
                let inner = value
                    .object()
                    .map_err(|_| ApiError::bad_field(name, "expected an object"))?;
                all.push(Filter::Not(Box::new(parse_where_at(
                    c,
                    &inner,
                    depth + 1,
                    budget,
                )?)));
            }
            _ => {
                let col = match system_col(name) {
                    Some(col) => col,
                    None => {
                        let f = c
                            .fields
                            .iter()
                            .find(|f| f.gql_name == name)
                            .ok_or_else(|| ApiError::bad_field(name, "unknown field"))?;
                        Col {
                            gql: &f.gql_name,
                            column: &f.column,
                            kind: f.kind,
                        }
                    }
                };
                let ops = value
                    .object()
                    .map_err(|_| ApiError::bad_field(name, "expected a filter object"))?;
                parse_ops(&col, &ops, &mut all, &mut budget.in_values)?;
            }
        }
    }
    Ok(Filter::All(all))
}

fn parse_ops(
    col: &Col,
    ops: &ObjectAccessor<'_>,
    out: &mut Vec<Filter>,
    in_values: &mut usize,
) -> Result<(), ApiError> {
    for (op, value) in ops.iter() {
        let op = op.as_str();
        let at = format!("{}.{op}", col.gql);
        if op == "isNull" {
            if !value.is_null() {
                let is_null = value
                    .boolean()
                    .map_err(|_| ApiError::bad_field(&at, "expected true or false"))?;
                out.push(Filter::IsNull {
                    column: col.column.to_string(),
                    is_null,
                });
            }
            continue;
        }
        if value.is_null() {
            return Err(ApiError::bad_field(
                &at,
                "null is not a value to compare with; use isNull",
            ));
        }
        let column = col.column.to_string();
        let kind = col.kind;
        let cmp = |op: CmpOp| -> Result<Filter, ApiError> {
            Ok(Filter::Cmp {
                column: column.clone(),
                kind,
                op,
                value: scalar(kind, &value, &at)?,
            })
        };
        let filter = match op {
            "eq" => cmp(CmpOp::Eq)?,
            "ne" => cmp(CmpOp::Ne)?,
            "lt" => cmp(CmpOp::Lt)?,
            "lte" => cmp(CmpOp::Lte)?,
            "gt" => cmp(CmpOp::Gt)?,
            "gte" => cmp(CmpOp::Gte)?,
            "in" | "notIn" => {
                let list = value
                    .list()
                    .map_err(|_| ApiError::bad_field(&at, "expected a list"))?;
                *in_values += list.len();
                if *in_values > MAX_IN_LIST {
                    return Err(ApiError::bad_field(
                        &at,
                        format!(
                            "at most {MAX_IN_LIST} values in all `in` and `notIn` lists together"
                        ),
                    ));
                }
                let values = list
                    .iter()
                    .map(|v| scalar(kind, &v, &at))
                    .collect::<Result<Vec<_>, _>>()?;
                Filter::In {
                    column: column.clone(),
                    kind,
                    values,
                    negated: op == "notIn",
                }
            }
            "contains" | "startsWith" | "endsWith" => {
                let text = value
                    .string()
                    .map_err(|_| ApiError::bad_field(&at, "expected a string"))?
                    .to_string();
                let like = match op {
                    "contains" => LikeKind::Contains,
                    "startsWith" => LikeKind::StartsWith,
                    _ => LikeKind::EndsWith,
                };
                Filter::Like {
                    column: column.clone(),
                    like,
                    text,
                }
            }
            _ => return Err(ApiError::bad_field(&at, "unknown operator")),
        };
        out.push(filter);
    }
    Ok(())
}

/// A non-null GraphQL input value as a typed scalar for `kind`.
fn scalar(kind: FieldKind, v: &ValueAccessor<'_>, at: &str) -> Result<Scalar, ApiError> {
    let bad = |what: &str| ApiError::bad_field(at, format!("expected {what}"));
    Ok(match kind {
        FieldKind::String | FieldKind::Text | FieldKind::Ref => {
            Scalar::Str(v.string().map_err(|_| bad("a string"))?.to_string())
        }
        FieldKind::Int => Scalar::Int(v.i64().map_err(|_| bad("an integer"))?),
        FieldKind::Float => Scalar::Float(v.f64().map_err(|_| bad("a number"))?),
        FieldKind::Bool => Scalar::Bool(v.boolean().map_err(|_| bad("true or false"))?),
        FieldKind::DateTime => {
            let s = v
                .string()
                .map_err(|_| bad("an RFC 3339 date-time string"))?;
            Scalar::DateTime(parse_datetime(s).map_err(|_| {
                ApiError::bad_field(
                    at,
                    format!("\"{s}\" is not an RFC 3339 date-time (e.g. 2026-01-31T12:00:00Z)"),
                )
            })?)
        }
        FieldKind::Json => Scalar::Json(v.as_value().clone().into_json().map_err(|_| bad("JSON"))?),
    })
}

/// Parses `orderBy: [<Type>Order!]`.
pub fn parse_order(
    c: &Collection,
    list: Option<ValueAccessor<'_>>,
) -> Result<Vec<Order>, ApiError> {
    let Some(list) = list.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list
        .list()
        .map_err(|_| ApiError::bad_field("orderBy", "expected a list"))?;
    if list.len() > MAX_ORDER_KEYS {
        return Err(ApiError::bad_field(
            "orderBy",
            format!("at most {MAX_ORDER_KEYS} sort keys"),
        ));
    }
    let mut out = Vec::new();
    for item in list.iter() {
        let obj = item
            .object()
            .map_err(|_| ApiError::bad_field("orderBy", "expected objects"))?;
        let field = obj
            .try_get("field")
            .and_then(|f| f.enum_name().map(str::to_string))
            .map_err(|_| ApiError::bad_field("orderBy.field", "expected a field name"))?;
        let column = match field.as_str() {
            "ID" => "id".to_string(),
            "OWNER_ID" => "owner_id".to_string(),
            "CREATED_AT" => "created_at".to_string(),
            "UPDATED_AT" => "updated_at".to_string(),
            other => c
                .fields
                .iter()
                .find(|f| f.enum_name == other)
                .map(|f| f.column.clone())
                .ok_or_else(|| {
                    ApiError::bad_field("orderBy.field", format!("cannot order by {other}"))
                })?,
        };
        let descending = matches!(obj.get("direction").map(|d| d.enum_name().map(str::to_string)), Some(Ok(d)) if d == "DESC");
        out.push(Order { column, descending });
    }
    Ok(out)
}

/// A field value that passed validation, plus any ref it must still point at.
pub struct Checked {
    pub values: Map<String, Json>,
    /// (input field name, target collection key, id) to check for existence.
    pub refs: Vec<(String, String, String)>,
}

/// Validates a create (`creating`) or update input: types, `required`,
/// `max_length`; fills defaults on create. Refs are returned for the caller to
/// check against the store.
pub fn check_input(
    c: &Collection,
    obj: &ObjectAccessor<'_>,
    creating: bool,
) -> Result<Checked, ApiError> {
    let mut values = Map::new();
    let mut refs = Vec::new();
    for f in &c.fields {
        let given = obj.get(&f.gql_name);
        let value = match &given {
            Some(v) if !v.is_null() => Some(checked_value(f, v)?),
            Some(_) => None,
            None if creating => f.default.clone(),
            None => continue,
        };
        match value {
            None if f.required => {
                return Err(ApiError::bad_field(
                    &f.gql_name,
                    "is required and cannot be null",
                ));
            }
            None => {
                values.insert(f.key.clone(), Json::Null);
            }
            Some(v) => {
                if let (Some(target), Json::String(id)) = (&f.target, &v) {
                    refs.push((f.gql_name.clone(), target.clone(), id.clone()));
                }
                values.insert(f.key.clone(), v);
            }
        }
    }
    Ok(Checked { values, refs })
}

fn checked_value(f: &Field, v: &ValueAccessor<'_>) -> Result<Json, ApiError> {
    let s = scalar(f.kind, v, &f.gql_name)?;
    if let (Some(max), Scalar::Str(text)) = (f.max_length, &s) {
        let len = text.chars().count();
        if len > max as usize {
            return Err(ApiError::bad_field(
                &f.gql_name,
                format!("must be at most {max} characters (got {len})"),
            ));
        }
    }
    if let Scalar::Float(x) = s
        && !x.is_finite()
    {
        return Err(ApiError::bad_field(&f.gql_name, "must be a finite number"));
    }
    if let (FieldKind::Int, Scalar::Int(i)) = (f.kind, &s)
        && i32::try_from(*i).is_err()
    {
        return Err(ApiError::bad_field(
            &f.gql_name,
            "must fit in a 32-bit integer",
        ));
    }
    Ok(match s {
        Scalar::DateTime(d) => Json::String(format_datetime(&d)),
        other => other.to_json(),
    })
}
