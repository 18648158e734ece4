//! Root query and mutation fields of a collection: list, get, count, create,
//! update, delete, and `me`. Each asks the access policy first, then the store.

use std::sync::Arc;

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldValue, InputValue, ResolverContext, TypeRef};

use super::errors::{ApiError, resolve};
use super::input::{check_input, parse_order, parse_where};
use super::{Limits, RequestCtx, request_ctx};
use crate::access::{ReadScope, Viewer, may_create, may_write_row, read_scope};
use crate::catalog::{Catalog, Collection, USERS};
use crate::store::{Filter, Scope};
use crate::values::{Row, new_id, now};

/// The store scope for reading `c`, or `None` when the viewer may read nothing.
fn read_scope_of<'v>(
    viewer: &'v Viewer,
    c: &Collection,
    owned: &'v mut String,
) -> Result<Option<Scope<'v>>, ApiError> {
    let what = format!("read {}", c.key);
    match read_scope(viewer, c.read).map_err(|d| ApiError::denied(d, &what))? {
        ReadScope::Nothing => Ok(None),
        ReadScope::Account => Ok(Some(Scope {
            account_id: &viewer.account_id,
            owner_id: None,
        })),
        ReadScope::Owned(user) => {
            *owned = user;
            Ok(Some(Scope {
                account_id: &viewer.account_id,
                owner_id: Some(owned.as_str()),
            }))
        }
    }
}

fn where_arg(c: &Collection, ctx: &ResolverContext<'_>) -> Result<Option<Filter>, ApiError> {
    match ctx.args.get("where").filter(|v| !v.is_null()) {
        Some(v) => Ok(Some(parse_where(
            c,
            &v.object()
                .map_err(|_| ApiError::bad_field("where", "expected an object"))?,
        )?)),
        None => Ok(None),
    }
}

/// The `id` argument: an ID arrives as a string, or as an integer (GraphQL
/// coerces both).
fn id_arg(ctx: &ResolverContext<'_>) -> Result<String, ApiError> {
    let v = ctx
        .args
        .get("id")
        .ok_or_else(|| ApiError::bad_field("id", "is required"))?;
    if let Ok(s) = v.string() {
        return Ok(s.to_string());
    }
    v.i64()
        .map(|n| n.to_string())
        .map_err(|_| ApiError::bad_field("id", "expected an ID"))
}

/// The `input` argument, which must be an input object.
fn input_arg<'a>(
    ctx: &'a ResolverContext<'_>,
) -> Result<async_graphql::dynamic::ObjectAccessor<'a>, ApiError> {
    ctx.args
        .get("input")
        .ok_or_else(|| ApiError::bad_field("input", "is required"))?
        .object()
        .map_err(|_| ApiError::bad_field("input", "expected an input object"))
}

fn int_arg(ctx: &ResolverContext<'_>, name: &str, default: i64) -> Result<u64, ApiError> {
    let v = match ctx.args.get(name).filter(|v| !v.is_null()) {
        Some(v) => v
            .i64()
            .map_err(|_| ApiError::bad_field(name, "expected an integer"))?,
        None => default,
    };
    u64::try_from(v).map_err(|_| ApiError::bad_field(name, "must not be negative"))
}

/// `posts`, `post`, `postsCount`.
pub fn query_fields(_catalog: &Arc<Catalog>, c: &Collection, limits: Limits) -> Vec<Field> {
    let n = &c.names;
    let coll = Arc::new(c.clone());
    let list = {
        let coll = coll.clone();
        Field::new(
            &n.list,
            TypeRef::named_nn_list_nn(&n.type_name),
            move |ctx| {
                let c = coll.clone();
                resolve(ctx.path_node, async move {
                    let rc = request_ctx(&ctx)?;
                    let filter = where_arg(&c, &ctx)?;
                    let order = parse_order(&c, ctx.args.get("orderBy"))?;
                    let limit = int_arg(&ctx, "limit", 50)?.min(limits.max_list);
                    let offset = int_arg(&ctx, "offset", 0)?;
                    let mut owned = String::new();
                    let rows = match read_scope_of(&rc.viewer, &c, &mut owned)? {
                        Some(scope) => {
                            rc.read(&c.key);
                            rc.store
                                .list(&c, &scope, filter.as_ref(), &order, limit, offset)
                                .await?
                        }
                        None => Vec::new(),
                    };
                    Ok(Some(FieldValue::list(
                        rows.into_iter().map(FieldValue::owned_any),
                    )))
                })
            },
        )
        .description(format!(
            "{} rows you may read, filtered, ordered and paged (limit is capped at {}).",
            n.type_name, limits.max_list
        ))
        .argument(
            InputValue::new("where", TypeRef::named(&n.where_input))
                .description("Only rows matching this."),
        )
        .argument(
            InputValue::new("orderBy", TypeRef::named_nn_list(&n.order_input))
                .description("Sort keys, most significant first; ties are broken by id."),
        )
        .argument(
            InputValue::new("limit", TypeRef::named(TypeRef::INT))
                .default_value(50)
                .description("At most this many rows."),
        )
        .argument(
            InputValue::new("offset", TypeRef::named(TypeRef::INT))
                .default_value(0)
                .description("Skip this many rows first."),
        )
    };
    let get = {
        let coll = coll.clone();
        Field::new(&n.single, TypeRef::named(&n.type_name), move |ctx| {
            let c = coll.clone();
            resolve(ctx.path_node, async move {
                let rc = request_ctx(&ctx)?;
                let id = id_arg(&ctx)?;
                let mut owned = String::new();
                let found = match read_scope_of(&rc.viewer, &c, &mut owned)? {
                    Some(scope) => {
                        rc.read(&c.key);
                        rc.store.get(&c, &scope, &id).await?
                    }
                    None => None,
                };
                let row = found.ok_or_else(|| ApiError::row_not_found(&c.names.type_name, &id))?;
                Ok(Some(FieldValue::owned_any(row)))
            })
        })
        .description(format!(
            "One {} by id; NOT_FOUND when it does not exist or you may not read it.",
            n.type_name
        ))
        .argument(
            InputValue::new("id", TypeRef::named_nn(TypeRef::ID)).description("The row's id."),
        )
    };
    let count = {
        let coll = coll.clone();
        Field::new(&n.count, TypeRef::named_nn(TypeRef::INT), move |ctx| {
            let c = coll.clone();
            resolve(ctx.path_node, async move {
                let rc = request_ctx(&ctx)?;
                let filter = where_arg(&c, &ctx)?;
                let mut owned = String::new();
                let n = match read_scope_of(&rc.viewer, &c, &mut owned)? {
                    Some(scope) => {
                        rc.read(&c.key);
                        rc.store.count(&c, &scope, filter.as_ref()).await?
                    }
                    None => 0,
                };
                Ok(Some(FieldValue::value(Value::from(
                    i32::try_from(n).unwrap_or(i32::MAX),
                ))))
            })
        })
        .description(format!(
            "How many {} rows you may read match `where`.",
            n.type_name
        ))
        .argument(
            InputValue::new("where", TypeRef::named(&n.where_input))
                .description("Only rows matching this."),
        )
    };
    vec![list, get, count]
}

/// Fails with `BAD_USER_INPUT` when a ref points at no row the viewer may read.
async fn check_refs(
    rc: &RequestCtx,
    catalog: &Catalog,
    refs: &[(String, String, String)],
) -> Result<(), ApiError> {
    for (field, target, id) in refs {
        let visible = if target == USERS {
            rc.store
                .exists("livegate_users", &rc.viewer.account_id, id)
                .await?
        } else {
            let t = catalog
                .collection(target)
                .ok_or_else(|| ApiError::internal(format!("unknown ref target {target}")))?;
            let mut owned = String::new();
            match read_scope_of(&rc.viewer, t, &mut owned) {
                Ok(Some(scope)) => rc.store.get(t, &scope, id).await?.is_some(),
                _ => false,
            }
        };
        if !visible {
            return Err(ApiError::bad_field(
                field,
                format!("no {target} row with id \"{id}\""),
            ));
        }
    }
    Ok(())
}

/// Runs a write on a task of its own and waits for it. A request can be
/// dropped at any await (a client disconnects, a graphql-ws `complete`);
/// dropped halfway through a transaction, a write would leave the database
/// driver to roll back a transaction that may already be committing, and the
/// writer could never know. On its own task the write always finishes (commits
/// or rolls back) whatever becomes of the request; its event reaches the log
/// and then every subscriber all the same.
/// At most [`crate::store::WRITES_IN_FLIGHT`] run at once: a client that sends
/// writes and disconnects, over and over, cannot pile up tasks.
async fn to_the_end<T: Send + 'static>(
    store: &crate::store::Store,
    write: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = store.write_permit().await;
    tokio::spawn(async move {
        let _permit = permit;
        write.await
    })
    .await
    .map_err(|e| ApiError::internal(format!("a write task failed: {e}")))?
}

/// `createPost`, `updatePost`, `deletePost`.
pub fn mutation_fields(catalog: &Arc<Catalog>, c: &Collection) -> Vec<Field> {
    let n = &c.names;
    let coll = Arc::new(c.clone());
    let create = {
        let (coll, catalog) = (coll.clone(), catalog.clone());
        Field::new(&n.create, TypeRef::named_nn(&n.type_name), move |ctx| {
            let (c, catalog) = (coll.clone(), catalog.clone());
            resolve(ctx.path_node, async move {
                let rc = request_ctx(&ctx)?;
                may_create(&rc.viewer, c.create)
                    .map_err(|d| ApiError::denied(d, &format!("create rows in {}", c.key)))?;
                let input = input_arg(&ctx)?;
                let checked = check_input(&c, &input, true)?;
                check_refs(rc, &catalog, &checked.refs).await?;
                let at = now();
                let row = Row {
                    id: new_id(),
                    owner_id: rc.viewer.user_id.clone(),
                    account_id: rc.viewer.account_id.clone(),
                    created_at: at,
                    updated_at: at,
                    data: checked.values,
                };
                let (store, c) = (rc.store.clone(), c.clone());
                let change =
                    to_the_end(&rc.store, async move { Ok(store.insert(&c, row).await?) }).await?;
                Ok(Some(FieldValue::owned_any(change.record)))
            })
        })
        .description(format!("Creates a {}; you become its owner.", n.type_name))
        .argument(
            InputValue::new("input", TypeRef::named_nn(&n.create_input))
                .description("The new row's values."),
        )
    };
    let update = {
        let (coll, catalog) = (coll.clone(), catalog.clone());
        Field::new(&n.update, TypeRef::named_nn(&n.type_name), move |ctx| {
            let (c, catalog) = (coll.clone(), catalog.clone());
            resolve(ctx.path_node, async move {
                let rc = request_ctx(&ctx)?;
                let id = id_arg(&ctx)?;
                let mut owned = String::new();
                read_scope_of(&rc.viewer, &c, &mut owned)?
                    .ok_or_else(|| ApiError::row_not_found(&c.names.type_name, &id))?;
                let input = input_arg(&ctx)?;
                let checked = check_input(&c, &input, false)?;
                check_refs(rc, &catalog, &checked.refs).await?;
                let (store, viewer) = (rc.store.clone(), rc.viewer.clone());
                let change = to_the_end(&rc.store, async move {
                    let mut owned = String::new();
                    let scope = read_scope_of(&viewer, &c, &mut owned)?
                        .ok_or_else(|| ApiError::row_not_found(&c.names.type_name, &id))?;
                    let what = format!("update this {}", c.names.type_name);
                    let (who, rule) = (viewer.clone(), c.update);
                    store
                        .update(&c, &scope, &id, checked.values, move |row| {
                            may_write_row(&who, rule, row.owner_id.as_deref())
                                .map_err(|d| ApiError::denied(d, &what))
                        })
                        .await?
                        .ok_or_else(|| ApiError::row_not_found(&c.names.type_name, &id))
                })
                .await?;
                Ok(Some(FieldValue::owned_any(change.record)))
            })
        })
        .description(format!(
            "Changes the fields given of a {}; returns the row after the change.",
            n.type_name
        ))
        .argument(
            InputValue::new("id", TypeRef::named_nn(TypeRef::ID)).description("The row's id."),
        )
        .argument(
            InputValue::new("input", TypeRef::named_nn(&n.update_input))
                .description("The fields to change."),
        )
    };
    let delete = {
        let coll = coll.clone();
        Field::new(&n.delete, TypeRef::named_nn(&n.type_name), move |ctx| {
            let c = coll.clone();
            resolve(ctx.path_node, async move {
                let rc = request_ctx(&ctx)?;
                let id = id_arg(&ctx)?;
                let (store, viewer) = (rc.store.clone(), rc.viewer.clone());
                let change = to_the_end(&rc.store, async move {
                    let mut owned = String::new();
                    let scope = read_scope_of(&viewer, &c, &mut owned)?
                        .ok_or_else(|| ApiError::row_not_found(&c.names.type_name, &id))?;
                    let what = format!("delete this {}", c.names.type_name);
                    let (who, rule) = (viewer.clone(), c.delete);
                    store
                        .delete(&c, &scope, &id, move |row| {
                            may_write_row(&who, rule, row.owner_id.as_deref())
                                .map_err(|d| ApiError::denied(d, &what))
                        })
                        .await?
                        .ok_or_else(|| ApiError::row_not_found(&c.names.type_name, &id))
                })
                .await?;
                Ok(Some(FieldValue::owned_any(change.record)))
            })
        })
        .description(format!(
            "Deletes a {}; returns the row as it was.",
            n.type_name
        ))
        .argument(
            InputValue::new("id", TypeRef::named_nn(TypeRef::ID)).description("The row's id."),
        )
    };
    vec![create, update, delete]
}
