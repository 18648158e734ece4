//! The admin API of webhook triggers: `triggerDeliveries` and `redeliver`
//! (API.md §9). Admins of an account see and replay its deliveries only.

use async_graphql::Value;
use async_graphql::dynamic::{Enum, EnumItem, Field, FieldValue, InputValue, Object, TypeRef};

use super::errors::{ApiError, ready, resolve};
use super::request_ctx;
use super::types::DATETIME;
use crate::store::{Delivery, DeliveryStatus, Redelivered};
use crate::values::format_datetime;

/// Most deliveries one `triggerDeliveries` returns.
const MAX_LIMIT: i64 = 500;

/// Unix milliseconds as a `DateTime` value.
fn ms_time(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or(Value::Null, |t| Value::from(format_datetime(&t)))
}

/// `DeliveryStatus` and `TriggerDelivery`.
pub fn types() -> (Enum, Object) {
    let status = Enum::new("DeliveryStatus")
        .description("Where a trigger's delivery stands.")
        .item(
            EnumItem::new("PENDING")
                .description("Not delivered yet: an attempt is due, running, or waiting to retry."),
        )
        .item(EnumItem::new("DELIVERED").description("The endpoint answered 2xx."))
        .item(
            EnumItem::new("FAILED").description("Every attempt failed; `redeliver` tries again."),
        );
    let field =
        |name: &'static str, ty: TypeRef, doc: &'static str, get: fn(&Delivery) -> Value| {
            Field::new(name, ty, move |ctx| {
                ready(
                    ctx.path_node,
                    ctx.parent_value.try_downcast_ref::<Delivery>().map(get),
                )
            })
            .description(doc)
        };
    let delivery = Object::new("TriggerDelivery")
        .description("One change a trigger matched, and how its webhook calls went.")
        .field(field("id", TypeRef::named_nn(TypeRef::ID), "The delivery's id (for `redeliver`).", |d| Value::from(d.id.clone())))
        .field(field("trigger", TypeRef::named_nn(TypeRef::STRING), "The trigger's name in the app file.", |d| Value::from(d.trigger.clone())))
        .field(field("collection", TypeRef::named_nn(TypeRef::STRING), "The collection of the changed row.", |d| Value::from(d.collection.clone())))
        .field(field("action", TypeRef::named_nn("ChangeAction"), "What the change did.", |d| {
            Value::Enum(async_graphql::Name::new(d.action.to_ascii_uppercase()))
        }))
        .field(field("cursor", TypeRef::named_nn(TypeRef::STRING), "The change's cursor (as subscriptions give it).", |d| Value::from(d.seq.to_string())))
        .field(field("status", TypeRef::named_nn("DeliveryStatus"), "Where the delivery stands.", |d| {
            Value::Enum(async_graphql::Name::new(d.status.as_str()))
        }))
        .field(field("attempts", TypeRef::named_nn(TypeRef::INT), "Attempts made (counted as each begins).", |d| Value::from(d.attempts)))
        .field(field("lastStatusCode", TypeRef::named(TypeRef::INT), "The HTTP status of the last answer; null when there was none (timeout, refused connection).", |d| {
            d.last_status.map_or(Value::Null, Value::from)
        }))
        .field(field("lastError", TypeRef::named(TypeRef::STRING), "Why the last attempt failed; null once delivered.", |d| {
            d.last_error.clone().map_or(Value::Null, Value::from)
        }))
        .field(field("nextAttemptAt", TypeRef::named(DATETIME), "When the next attempt is due; null unless PENDING.", |d| {
            if d.status == DeliveryStatus::Pending {
                ms_time(d.next_attempt_ms)
            } else {
                Value::Null
            }
        }))
        .field(field("createdAt", TypeRef::named_nn(DATETIME), "When the change was enqueued for this trigger.", |d| {
            ms_time(d.created_ms)
        }))
        .field(field("updatedAt", TypeRef::named_nn(DATETIME), "When the delivery last changed.", |d| {
            ms_time(d.updated_ms)
        }));
    (status, delivery)
}

/// Admins only, of the viewer's own account.
fn admin(rc: &super::RequestCtx) -> Result<(), ApiError> {
    if rc.viewer.user_id.is_none() {
        return Err(ApiError::Unauthenticated(
            "sign in as an admin to see trigger deliveries".into(),
        ));
    }
    if !rc.viewer.is_admin() {
        return Err(ApiError::Forbidden(
            "only admins see and replay trigger deliveries".into(),
        ));
    }
    Ok(())
}

/// `triggerDeliveries(trigger, status, limit)`.
pub fn deliveries_field() -> Field {
    Field::new(
        "triggerDeliveries",
        TypeRef::named_nn_list_nn("TriggerDelivery"),
        |ctx| {
            resolve(ctx.path_node, async move {
                let rc = request_ctx(&ctx)?;
                admin(rc)?;
                let trigger = match ctx.args.get("trigger").filter(|v| !v.is_null()) {
                    Some(v) => Some(
                        v.string()
                            .map_err(|_| ApiError::bad_field("trigger", "expected a string"))?
                            .to_string(),
                    ),
                    None => None,
                };
                let status = match ctx.args.get("status").filter(|v| !v.is_null()) {
                    Some(v) => Some(
                        v.enum_name()
                            .ok()
                            .and_then(DeliveryStatus::parse)
                            .ok_or_else(|| {
                                ApiError::bad_field(
                                    "status",
                                    "expected PENDING, DELIVERED or FAILED",
                                )
                            })?,
                    ),
                    None => None,
                };
                let limit = match ctx.args.get("limit").filter(|v| !v.is_null()) {
                    Some(v) => v
                        .i64()
                        .map_err(|_| ApiError::bad_field("limit", "expected an integer"))?,
                    None => 50,
                };
                if !(1..=MAX_LIMIT).contains(&limit) {
                    return Err(ApiError::bad_field(
                        "limit",
                        format!("must be between 1 and {MAX_LIMIT}"),
                    ));
                }
                let list = rc
                    .store
                    .deliveries(
                        &rc.viewer.account_id,
                        trigger.as_deref(),
                        status,
                        limit as u64,
                    )
                    .await?;
                Ok(Some(FieldValue::list(
                    list.into_iter().map(FieldValue::owned_any),
                )))
            })
        },
    )
    .description("Admins: this account's webhook deliveries, newest first.")
    .argument(
        InputValue::new("trigger", TypeRef::named(TypeRef::STRING))
            .description("Only this trigger's."),
    )
    .argument(
        InputValue::new("status", TypeRef::named("DeliveryStatus"))
            .description("Only those with this status."),
    )
    .argument(
        InputValue::new("limit", TypeRef::named(TypeRef::INT))
            .default_value(50)
            .description("At most this many (1 to 500)."),
    )
}

/// `redeliver(id)`.
pub fn redeliver_field() -> Field {
    Field::new("redeliver", TypeRef::named_nn(TypeRef::BOOLEAN), |ctx| {
        resolve(ctx.path_node, async move {
            let rc = request_ctx(&ctx)?;
            admin(rc)?;
            let id = ctx
                .args
                .try_get("id")
                .and_then(|v| v.string().map(str::to_string))
                .map_err(|_| ApiError::bad_field("id", "expected an id"))?;
            match rc.store.redeliver(&rc.viewer.account_id, &id).await? {
                Redelivered::Due => Ok(Some(Value::Boolean(true))),
                Redelivered::NotFound => Err(ApiError::NotFound(format!("no delivery {id} in this account"))),
                Redelivered::InFlight => Err(ApiError::Conflict(
                    "an attempt of this delivery is running now; try again once it ended".into(),
                )),
                Redelivered::Undeclared(t) => Err(ApiError::bad_input(format!(
                    "trigger {t} is no longer in the app file: nothing would send this delivery"
                ))),
            }
        })
    })
    .description("Admins: makes a delivery PENDING again, due now, with all its attempts back (CONFLICT while an attempt of it is running).")
    .argument(
        InputValue::new("id", TypeRef::named_nn(TypeRef::ID)).description("The delivery's id."),
    )
}
