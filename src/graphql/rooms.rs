//! Rooms in the schema: the `room(name)` subscription (joining is subscribing),
//! `sendToRoom`, `roomMembers`, and the `RoomMember` / `RoomEvent` types. Access
//! follows `[rooms]` and `[rooms.match."pattern"]` (see [`crate::access`]); the
//! hub itself is [`crate::realtime::rooms`].

use std::sync::Arc;

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldValue, InputValue, Object, ResolverContext, SubscriptionField,
    SubscriptionFieldFuture, TypeRef,
};
use futures_util::StreamExt;

use super::errors::{ApiError, ready, resolve};
use super::types::{DATETIME, JSON};
use super::{Feed, Pinned, request_ctx};
use crate::access::may_use_room;
use crate::catalog::{Catalog, RoomRule};
use crate::realtime::rooms::{Member, RoomEvent, Rooms};
use crate::values::format_datetime;

/// Longest room name, in characters.
const MAX_NAME: usize = 200;
/// Longest message kind, in characters.
const MAX_KIND: usize = 100;

fn rooms<'a>(ctx: &ResolverContext<'a>) -> Result<&'a Arc<Rooms>, ApiError> {
    ctx.data::<Arc<Rooms>>()
        .map_err(|_| ApiError::internal("rooms missing from the schema data"))
}

/// The room name argument, checked.
fn room_name(ctx: &ResolverContext<'_>, arg: &str) -> Result<String, ApiError> {
    let name = ctx
        .args
        .try_get(arg)
        .and_then(|v| v.string().map(str::to_string))
        .map_err(|_| ApiError::bad_field(arg, "expected a string"))?;
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_field(
            arg,
            format!("a room name is 1 to {MAX_NAME} characters, without control characters"),
        ));
    }
    Ok(name)
}

/// The rule of room `name`, after checking that the viewer may `join`/`send`.
fn allowed<'c>(
    catalog: &'c Catalog,
    ctx: &ResolverContext<'_>,
    name: &str,
    send: bool,
) -> Result<&'c RoomRule, ApiError> {
    let rc = request_ctx(ctx)?;
    let rule = catalog.rooms.rule_for(name);
    let (level, what) = if send {
        (rule.send, format!("send to room \"{name}\""))
    } else {
        (rule.join, format!("join room \"{name}\""))
    };
    may_use_room(&rc.viewer, level).map_err(|d| ApiError::denied(d, &what))?;
    Ok(rule)
}

fn member_value(m: &Member) -> FieldValue<'static> {
    FieldValue::owned_any(m.clone())
}

/// `RoomMember` and `RoomEvent`.
pub fn types() -> Vec<Object> {
    let member_field =
        |name: &'static str, ty: TypeRef, doc: &'static str, get: fn(&Member) -> Value| {
            Field::new(name, ty, move |ctx| {
                ready(
                    ctx.path_node,
                    ctx.parent_value.try_downcast_ref::<Member>().map(get),
                )
            })
            .description(doc)
        };
    let member = Object::new("RoomMember")
        .description("One member of a room: one subscription to `room`, so one user may be several members (tabs).")
        .field(member_field("peerId", TypeRef::named_nn(TypeRef::ID), "This membership's id; a message sent over the socket that holds it comes `from` it.", |m| Value::from(m.peer_id.clone())))
        .field(member_field("userId", TypeRef::named(TypeRef::ID), "The member's user; null for an anonymous member.", |m| m.user_id.clone().map(Value::from).unwrap_or(Value::Null)))
        .field(member_field("email", TypeRef::named(TypeRef::STRING), "The member's email, as its token says; null for an anonymous member.", |m| m.email.clone().map(Value::from).unwrap_or(Value::Null)));
    let event_field =
        |name: &'static str, ty: TypeRef, doc: &'static str, get: fn(&RoomEvent) -> Value| {
            Field::new(name, ty, move |ctx| {
                ready(
                    ctx.path_node,
                    ctx.parent_value
                        .try_downcast_ref::<Arc<RoomEvent>>()
                        .map(|e| get(e)),
                )
            })
            .description(doc)
        };
    let event = Object::new("RoomEvent")
        .description("A message relayed to the members of a room, or a `presence` event: `{\"event\":\"sync\",\"members\":[…]}` first, then `{\"event\":\"join\"|\"leave\",\"member\":{…}}`.")
        .field(event_field("room", TypeRef::named_nn(TypeRef::STRING), "The room's name.", |e| Value::from(e.room.clone())))
        .field(event_field("kind", TypeRef::named_nn(TypeRef::STRING), "`presence`, or the kind its sender gave.", |e| Value::from(e.kind.clone())))
        .field(event_field("payload", TypeRef::named(JSON), "What the sender sent (for presence: the roster or the member who came or went).", |e| {
            e.payload.as_ref().map_or(Value::Null, super::types::json_value)
        }))
        .field(
            Field::new("from", TypeRef::named_nn("RoomMember"), |ctx| {
                ready(
                    ctx.path_node,
                    ctx.parent_value
                        .try_downcast_ref::<Arc<RoomEvent>>()
                        .map(|e| member_value(&e.from)),
                )
            })
            .description("Who sent it (for presence: who joined or left; for `sync`: you)."),
        )
        .field(event_field("at", TypeRef::named_nn(DATETIME), "When the server relayed it.", |e| Value::from(format_datetime(&e.at))));
    vec![member, event]
}

/// `roomMembers(room)`.
pub fn members_field(catalog: &Arc<Catalog>) -> Field {
    let catalog = catalog.clone();
    Field::new(
        "roomMembers",
        TypeRef::named_nn_list_nn("RoomMember"),
        move |ctx| {
            let catalog = catalog.clone();
            resolve(ctx.path_node, async move {
                let name = room_name(&ctx, "room")?;
                allowed(&catalog, &ctx, &name, false)?;
                let rc = request_ctx(&ctx)?;
                let members = rooms(&ctx)?.members(&rc.viewer.account_id, &name).await?;
                Ok(Some(FieldValue::list(members.iter().map(member_value))))
            })
        },
    )
    .description("Who is in a room now (you may see the roster of a room you may join).")
    .argument(
        InputValue::new("room", TypeRef::named_nn(TypeRef::STRING)).description("The room's name."),
    )
}

/// `sendToRoom(room, kind, payload)`.
pub fn send_field(catalog: &Arc<Catalog>) -> Field {
    let catalog = catalog.clone();
    Field::new("sendToRoom", TypeRef::named_nn(TypeRef::BOOLEAN), move |ctx| {
        let catalog = catalog.clone();
        resolve(ctx.path_node, async move {
            let name = room_name(&ctx, "room")?;
            let rule = allowed(&catalog, &ctx, &name, true)?;
            let rc = request_ctx(&ctx)?;
            let kind = ctx
                .args
                .try_get("kind")
                .and_then(|v| v.string().map(str::to_string))
                .map_err(|_| ApiError::bad_field("kind", "expected a string"))?;
            if kind.is_empty() || kind.chars().count() > MAX_KIND {
                return Err(ApiError::bad_field("kind", format!("a kind is 1 to {MAX_KIND} characters")));
            }
            if kind == "presence" {
                return Err(ApiError::bad_field("kind", "`presence` is the server's own kind"));
            }
            let payload = match ctx.args.get("payload").filter(|v| !v.is_null()) {
                Some(v) => Some(
                    v.as_value()
                        .clone()
                        .into_json()
                        .map_err(|_| ApiError::bad_field("payload", "expected JSON"))?,
                ),
                None => None,
            };
            let size = payload.as_ref().map(|p| p.to_string().len()).unwrap_or(0);
            if size > rule.max_payload_bytes as usize {
                return Err(ApiError::bad_field(
                    "payload",
                    format!("{size} bytes is more than this room's {} bytes", rule.max_payload_bytes),
                ));
            }
            let viewer = &rc.viewer;
            // Over the socket (or stream) that holds a membership of this room,
            // the message comes from that member; otherwise from a one-off peer.
            let from = rc
                .peers
                .as_ref()
                .and_then(|p| p.member_in(&viewer.account_id, &name))
                .unwrap_or_else(|| Member::new(viewer.user_id.clone(), viewer.email.clone()));
            let sender = match (&viewer.user_id, rc.client_ip) {
                _ if rc.peers.as_ref().is_some_and(|p| p.member_in(&viewer.account_id, &name).is_some()) => format!("peer:{}", from.peer_id),
                (Some(user), _) => format!("user:{user}"),
                (None, Some(ip)) => format!("ip:{ip}"),
                (None, None) => "anonymous".to_string(),
            };
            let rooms = rooms(&ctx)?;
            if !rooms.allow_message(rule.messages_per_second, format!("{}|{name}|{sender}", viewer.account_id)) {
                return Err(ApiError::RateLimited(format!(
                    "at most {} messages per second per member in this room: try again in a moment",
                    rule.messages_per_second
                )));
            }
            let delivered = rooms.send(&viewer.account_id, &name, &kind, payload, from).await?;
            Ok(Some(FieldValue::value(delivered)))
        })
    })
    .description("Relays `{kind, payload}` to every member of the room, you included, in the order sent. True when someone was there to receive it. Over the socket that holds your membership of the room, it comes `from` that member.")
    .argument(InputValue::new("room", TypeRef::named_nn(TypeRef::STRING)).description("The room's name."))
    .argument(InputValue::new("kind", TypeRef::named_nn(TypeRef::STRING)).description("What the message is (`chat`, `typing`, `cursor`, …); `presence` is reserved."))
    .argument(InputValue::new("payload", TypeRef::named(JSON)).description("Any JSON, up to the room's `max_payload_bytes`."))
}

/// `room(name)`: joins for as long as the subscription runs.
pub fn subscription_field(catalog: &Arc<Catalog>) -> SubscriptionField {
    let catalog = catalog.clone();
    SubscriptionField::new("room", TypeRef::named_nn("RoomEvent"), move |ctx| {
        let catalog = catalog.clone();
        let joined = (|| {
            let name = room_name(&ctx, "name")?;
            allowed(&catalog, &ctx, &name, false)?;
            let rc = request_ctx(&ctx)?;
            if let Some(pinned) = &rc.pinned {
                return Ok(super::pinned_once(pinned));
            }
            let member = Member::new(rc.viewer.user_id.clone(), rc.viewer.email.clone());
            let (membership, events) = rooms(&ctx)?.join(
                &rc.viewer.account_id,
                &name,
                member,
                rc.overflow.clone(),
                rc.peers.clone(),
            );
            let left = rc.store.emit_span(
                &rc.viewer.account_id,
                rc.viewer.user_id.as_deref(),
                "room.join",
                "room.leave",
                serde_json::json!({ "room": name }),
            );
            // The membership lives as long as the stream does (and its end
            // is told as `room.leave`).
            let events = events.map(move |event| {
                let _held = (&membership, &left);
                event
            });
            // On a streaming transport, each event is rendered once for every
            // member with the same selection (a presence storm in a big room
            // would otherwise cost members × events executions).
            if let Some(handoff) = &rc.handoff {
                handoff.put(Feed {
                    stream: events.map(Pinned::Room).boxed(),
                    viewer_dependent: false,
                    live: None,
                });
                return Ok(futures_util::stream::empty().boxed());
            }
            Ok(events.map(|event| Ok(FieldValue::owned_any(event))).boxed())
        })();
        SubscriptionFieldFuture::new(async move { joined.map_err(ApiError::into_gql) })
    })
    .description("Joins a room for as long as the subscription runs: first a `presence` `sync` with the roster (you included), then every message sent to the room and every join and leave.")
    .argument(InputValue::new("name", TypeRef::named_nn(TypeRef::STRING)).description("The room's name; rooms are per account."))
}
