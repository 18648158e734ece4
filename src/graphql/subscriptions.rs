//! The `Subscription` root: `<type>Changed` per collection and the detail-free
//! `changes` feed, with their `<Type>Change` and `Change` types. Each field checks
//! access once at subscribe time; every event is then filtered by
//! [`crate::realtime::visible`].

use std::sync::Arc;

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldValue, InputValue, Object, ResolverContext, Subscription, SubscriptionField,
    SubscriptionFieldFuture, TypeRef,
};
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};

use super::errors::{ApiError, ready};
use super::input::parse_where;
use super::types::DATETIME;
use super::{Feed, Live, Pinned, request_ctx};
use crate::access::read_scope;
use crate::catalog::{Catalog, Collection};
use crate::realtime::{FeedError, Selection, feed, parse_cursor};
use crate::store::{Action, Change};
use crate::values::format_datetime;

impl From<FeedError> for ApiError {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::CursorExpired => ApiError::CursorExpired,
            FeedError::BadCursor(m) => ApiError::bad_field("after", m),
            FeedError::Overflow => ApiError::Unavailable(
                "this subscriber fell behind; reconnect and resume with `after`".into(),
            ),
            FeedError::Internal => ApiError::Internal,
        }
    }
}

fn action_value(a: Action) -> Value {
    Value::Enum(async_graphql::Name::new(match a {
        Action::Create => "CREATE",
        Action::Update => "UPDATE",
        Action::Delete => "DELETE",
    }))
}

fn change_field(name: &str, ty: TypeRef, doc: &str, get: fn(&Change) -> Value) -> Field {
    Field::new(name, ty, move |ctx| {
        ready(
            ctx.path_node,
            ctx.parent_value
                .try_downcast_ref::<Arc<Change>>()
                .map(|v| get(v)),
        )
    })
    .description(doc)
}

/// `<Type>Change` for one collection.
fn change_type(c: &Collection) -> Object {
    let obj = Object::new(&c.names.change_type)
        .description(format!(
            "A committed change to a {} row.",
            c.names.type_name
        ))
        .field(action_field())
        .field(change_field(
            "id",
            TypeRef::named_nn(TypeRef::ID),
            "The id of the changed row.",
            |ch| Value::from(ch.record.id.clone()),
        ))
        .field(
            Field::new("record", TypeRef::named(&c.names.type_name), |ctx| {
                ready(
                    ctx.path_node,
                    ctx.parent_value
                        .try_downcast_ref::<Arc<Change>>()
                        .map(|ch| FieldValue::owned_any(ch.record.clone())),
                )
            })
            .description("The row after the change; for DELETE, the row as it was."),
        );
    with_cursor_and_at(obj)
}

/// The shared `Change` type of the `changes` feed.
pub fn hint_type() -> Object {
    let obj = Object::new("Change")
        .description(
            "A detail-free hint that a collection changed: re-fetch what you show from it.",
        )
        .field(change_field(
            "collection",
            TypeRef::named_nn(TypeRef::STRING),
            "The collection's key, as in the app file.",
            |ch| Value::from(ch.collection.clone()),
        ))
        .field(action_field());
    with_cursor_and_at(obj)
}

fn action_field() -> Field {
    change_field(
        "action",
        TypeRef::named_nn("ChangeAction"),
        "What the change did.",
        |ch| action_value(ch.action),
    )
}

/// The `cursor` and `at` fields every change type ends with.
fn with_cursor_and_at(obj: Object) -> Object {
    obj.field(change_field(
        "cursor",
        TypeRef::named_nn(TypeRef::STRING),
        "Opaque; pass as `after` to resume after this change.",
        |ch| Value::from(ch.seq.to_string()),
    ))
    .field(change_field(
        "at",
        TypeRef::named_nn(DATETIME),
        "When the change was committed.",
        |ch| Value::from(format_datetime(&ch.at)),
    ))
}

/// How long `Query.cursor` waits for the follower to publish what the log
/// already holds.
const CURSOR_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// `Query.cursor`: where the change feeds stand now. It is a position the
/// follower has published (see `Store::published_seq`): everything at or below
/// it is settled, so a subscription with `after` set to it misses nothing. On
/// PostgreSQL the follower publishes a moment after a write commits, so it
/// first waits (briefly) until it has published every change the log held
/// when asked: a write that finished before the question is then behind the
/// cursor, not replayed after it. (Should the follower lag longer, the cursor
/// is older: changes may come twice, never go missing.)
pub fn cursor_field() -> Field {
    Field::new("cursor", TypeRef::named_nn(TypeRef::STRING), |ctx| {
        super::errors::resolve(ctx.path_node, async move {
            let rc = request_ctx(&ctx)?;
            let newest = rc.store.log_bounds().await?.newest;
            let deadline = tokio::time::Instant::now() + CURSOR_CATCH_UP;
            while rc.store.published_seq() < newest && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Ok(Some(FieldValue::value(Value::from(
                rc.store.published_seq().to_string(),
            ))))
        })
    })
    .description(
        "Where the change feeds stand now. Read it before you subscribe and pass it as `after`: you receive every change from this moment on, even when the connection drops before the first one arrives.",
    )
}

fn after_arg(ctx: &ResolverContext<'_>) -> Result<Option<i64>, ApiError> {
    match ctx.args.get("after").filter(|v| !v.is_null()) {
        Some(v) => {
            Ok(Some(parse_cursor(v.string().map_err(|_| {
                ApiError::bad_field("after", "expected a string")
            })?)?))
        }
        None => Ok(None),
    }
}

/// Starts the feed for `selection` for the request's viewer: streamed through
/// the executor, or handed to a streaming transport (see [`Handoff`]). When the
/// operation is executed to render one event, yields just that event.
///
/// [`Handoff`]: super::Handoff
fn start<'a>(
    ctx: &ResolverContext<'_>,
    catalog: &Arc<Catalog>,
    selection: Selection,
) -> Result<BoxStream<'a, async_graphql::Result<FieldValue<'a>>>, ApiError> {
    let rc = request_ctx(ctx)?;
    if let Some(pinned) = &rc.pinned {
        return Ok(super::pinned_once(pinned));
    }
    let after = match rc.resume_after {
        Some(cursor) => Some(cursor),
        None => after_arg(ctx)?,
    };
    if let Some(handoff) = rc.handoff.as_ref().filter(|h| h.direct) {
        // The transport delivers from its group's bus receiver: no feed here.
        handoff.put(Feed {
            live: Some(Live {
                selection,
                viewer: rc.viewer.clone(),
                after,
            }),
            stream: stream::empty().boxed(),
            viewer_dependent: viewer_dependent(ctx),
        });
        return Ok(stream::empty().boxed());
    }
    let feed = feed(
        rc.store.clone(),
        catalog.clone(),
        rc.viewer.clone(),
        selection,
        after,
        rc.overflow.clone(),
    );
    if let Some(handoff) = &rc.handoff {
        handoff.put(Feed {
            live: None,
            stream: feed
                .map(|item| match item {
                    Ok(change) => Pinned::Change(change),
                    Err(e) => Pinned::Error(e),
                })
                .boxed(),
            viewer_dependent: viewer_dependent(ctx),
        });
        return Ok(stream::empty().boxed());
    }
    Ok(feed
        .map(|item| {
            item.map(FieldValue::owned_any)
                .map_err(|e| ApiError::from(e).into_gql())
        })
        .boxed())
}

/// Whether what the subscription selects depends on the viewer: only `ref`
/// objects do (each is access-checked for the viewer), and they are the only
/// fields with selections of their own below the change's fields.
fn viewer_dependent(ctx: &ResolverContext<'_>) -> bool {
    ctx.field().selection_set().any(|top| {
        top.selection_set()
            .any(|f| f.selection_set().next().is_some())
    })
}

fn subscribe<'a, S>(result: Result<S, ApiError>) -> SubscriptionFieldFuture<'a>
where
    S: futures_util::Stream<Item = async_graphql::Result<FieldValue<'a>>> + Send + 'a,
{
    SubscriptionFieldFuture::new(async move { result.map_err(ApiError::into_gql) })
}

/// The `Subscription` root type, and the change types it returns.
pub fn build(catalog: &Arc<Catalog>) -> (Subscription, Vec<Object>) {
    let mut root =
        Subscription::new("Subscription").description("Live changes, as they are committed.");
    let mut types = vec![hint_type()];
    for c in catalog.collections.values() {
        types.push(change_type(c));
        let coll = Arc::new(c.clone());
        let cat = catalog.clone();
        root = root.field(
            SubscriptionField::new(&c.names.changed, TypeRef::named_nn(&c.names.change_type), move |ctx| {
                let (c, cat) = (coll.clone(), cat.clone());
                subscribe((|| {
                    let rc = request_ctx(&ctx)?;
                    read_scope(&rc.viewer, c.read).map_err(|d| ApiError::denied(d, &format!("read {}", c.key)))?;
                    let actions = match ctx.args.get("actions").filter(|v| !v.is_null()) {
                        Some(list) => Some(
                            list.list()
                                .map_err(|_| ApiError::bad_field("actions", "expected a list"))?
                                .iter()
                                .map(|a| match a.enum_name() {
                                    Ok("CREATE") => Ok(Action::Create),
                                    Ok("UPDATE") => Ok(Action::Update),
                                    Ok("DELETE") => Ok(Action::Delete),
                                    _ => Err(ApiError::bad_field("actions", "expected CREATE, UPDATE or DELETE")),
                                })
                                .collect::<Result<Vec<_>, _>>()?,
                        ),
                        None => None,
                    };
                    let filter = match ctx.args.get("where").filter(|v| !v.is_null()) {
                        Some(v) => Some(parse_where(&c, &v.object().map_err(|_| ApiError::bad_field("where", "expected an object"))?)?),
                        None => None,
                    };
                    start(&ctx, &cat, Selection::Changed { collection: c.clone(), actions, filter })
                })())
            })
            .description(format!(
                "Committed changes to {} rows you may read (a delete: rows you could read). `where` matches the row before or after the change; `after` first replays every change after that cursor, then goes on live.",
                c.names.type_name
            ))
            .argument(InputValue::new("actions", TypeRef::named_nn_list("ChangeAction")).description("Only these actions (default: all)."))
            .argument(InputValue::new("where", TypeRef::named(&c.names.where_input)).description("Only rows matching this, before or after the change."))
            .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)).description("A cursor: replay every change after it first.")),
        );
    }
    let cat = catalog.clone();
    root = root.field(
        SubscriptionField::new("changes", TypeRef::named_nn("Change"), move |ctx| {
            let cat = cat.clone();
            subscribe((|| {
                let collections = match ctx.args.get("collections").filter(|v| !v.is_null()) {
                    Some(list) => {
                        let keys = list
                            .list()
                            .map_err(|_| ApiError::bad_field("collections", "expected a list"))?
                            .iter()
                            .map(|k| k.string().map(str::to_string).map_err(|_| ApiError::bad_field("collections", "expected strings")))
                            .collect::<Result<Vec<_>, _>>()?;
                        if let Some(unknown) = keys.iter().find(|k| cat.collection(k).is_none()) {
                            return Err(ApiError::bad_field("collections", format!("unknown collection \"{unknown}\"")));
                        }
                        Some(keys)
                    }
                    None => None,
                };
                start(&ctx, &cat, Selection::Changes { collections })
            })())
        })
        .description("A hint each time a collection you may read changes (never row data): re-fetch on it. `after` first replays every hint after that cursor.")
        .argument(InputValue::new("collections", TypeRef::named_nn_list(TypeRef::STRING)).description("Collection keys as in the app file (default: all)."))
        .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)).description("A cursor: replay every hint after it first.")),
    );
    (root, types)
}
