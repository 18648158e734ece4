//! `systemEvents(kinds)` (API.md §9): what happens around the data, live, for
//! the admins of the account (see `store::system` for why these do not go
//! through the event log).

use std::sync::Arc;

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldValue, InputValue, Object, SubscriptionField, SubscriptionFieldFuture, TypeRef,
};
use futures_util::StreamExt;

use super::errors::{ApiError, ready};
use super::request_ctx;
use super::types::{DATETIME, JSON};
use crate::store::SystemEvent;
use crate::values::format_datetime;

/// Every kind a system event may have.
pub const KINDS: &[&str] = &[
    "auth.sign_up",
    "auth.sign_in",
    "auth.sign_out",
    "auth.refresh_reuse",
    "realtime.connect",
    "realtime.disconnect",
    "room.join",
    "room.leave",
    "trigger.failed",
];

/// `SystemEvent`.
pub fn event_type() -> Object {
    let field =
        |name: &'static str, ty: TypeRef, doc: &'static str, get: fn(&SystemEvent) -> Value| {
            Field::new(name, ty, move |ctx| {
                ready(
                    ctx.path_node,
                    ctx.parent_value
                        .try_downcast_ref::<Arc<SystemEvent>>()
                        .map(|e| get(e)),
                )
            })
            .description(doc)
        };
    Object::new("SystemEvent")
        .description("Something that happened around the data of your account (never a token or a password).")
        .field(field("kind", TypeRef::named_nn(TypeRef::STRING), "auth.sign_up, auth.sign_in, auth.sign_out, auth.refresh_reuse, realtime.connect, realtime.disconnect, room.join, room.leave or trigger.failed.", |e| Value::from(e.kind.clone())))
        .field(field("at", TypeRef::named_nn(DATETIME), "When it happened.", |e| Value::from(format_datetime(&e.at))))
        .field(field("userId", TypeRef::named(TypeRef::ID), "Whose doing it was; null for an anonymous connection or a trigger.", |e| {
            e.user_id.clone().map_or(Value::Null, Value::from)
        }))
        .field(field("detail", TypeRef::named(JSON), "What else is known: an email, a session id, a protocol, a room, a trigger's delivery.", |e| {
            super::types::json_value(&e.detail)
        }))
}

/// `systemEvents(kinds)`.
pub fn subscription_field() -> SubscriptionField {
    SubscriptionField::new("systemEvents", TypeRef::named_nn("SystemEvent"), |ctx| {
        let started = (|| {
            let rc = request_ctx(&ctx)?;
            if rc.viewer.user_id.is_none() {
                return Err(ApiError::Unauthenticated(
                    "sign in as an admin to follow system events".into(),
                ));
            }
            if !rc.viewer.is_admin() {
                return Err(ApiError::Forbidden(
                    "only admins follow their account's system events".into(),
                ));
            }
            let kinds = match ctx.args.get("kinds").filter(|v| !v.is_null()) {
                Some(list) => {
                    let list = list
                        .list()
                        .map_err(|_| ApiError::bad_field("kinds", "expected a list of kinds"))?;
                    let mut kinds = Vec::new();
                    for k in list.iter() {
                        let k = k
                            .string()
                            .map_err(|_| ApiError::bad_field("kinds", "expected strings"))?;
                        if !KINDS.contains(&k) {
                            return Err(ApiError::bad_field(
                                "kinds",
                                format!("unknown kind \"{k}\"; the kinds are {}", KINDS.join(", ")),
                            ));
                        }
                        kinds.push(k.to_string());
                    }
                    Some(kinds)
                }
                None => None,
            };
            let account = rc.viewer.account_id.clone();
            let mut events = rc.store.system_events(&account);
            let stream = async_stream::stream! {
                loop {
                    match events.recv().await {
                        // Its account's bus; the check stays, cheap and final.
                        Ok(e) if e.account_id == account
                            && kinds.as_ref().is_none_or(|k| k.contains(&e.kind)) =>
                        {
                            yield Ok(FieldValue::owned_any(e));
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            yield Err(ApiError::Unavailable(
                                "this subscriber fell behind the system events; subscribe again".into(),
                            )
                            .into_gql());
                            break;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            };
            Ok(stream.boxed())
        })();
        SubscriptionFieldFuture::new(async move { started.map_err(ApiError::into_gql) })
    })
    .description("Admins: what happens around your account's data, live (sign-ups, sign-ins, sign-outs, refresh-token reuse, realtime connections, room joins and leaves, failed trigger deliveries). Not replayed: only events from the moment you subscribe.")
    .argument(
        InputValue::new("kinds", TypeRef::named_nn_list(TypeRef::STRING))
            .description("Only these kinds (default: all)."),
    )
}
