//! GraphQL type definitions: the shared scalars, enums and filter inputs, and per
//! collection its object type, create/update inputs, `where` input, field enum and
//! order input.

use async_graphql::Value;
use async_graphql::dynamic::{
    Enum, EnumItem, Field, FieldFuture, InputObject, InputValue, Object, Scalar, SchemaBuilder,
    TypeRef,
};

use super::errors::{failed, resolve};
use crate::access::may_read_row;
use crate::catalog::{Catalog, Collection, FieldKind};
use crate::store::{Scope, User};
use crate::values::{Row, format_datetime};

pub const DATETIME: &str = "DateTime";
pub const JSON: &str = "JSON";

/// The GraphQL output type name of a field kind (refs: the id).
pub fn scalar_type(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::String | FieldKind::Text => TypeRef::STRING,
        FieldKind::Int => TypeRef::INT,
        FieldKind::Float => TypeRef::FLOAT,
        FieldKind::Bool => TypeRef::BOOLEAN,
        FieldKind::DateTime => DATETIME,
        FieldKind::Json => JSON,
        FieldKind::Ref => TypeRef::ID,
    }
}

/// The filter input type for a field kind; JSON fields are not filterable.
pub fn filter_type(kind: FieldKind) -> Option<&'static str> {
    match kind {
        FieldKind::String | FieldKind::Text => Some("StringFilter"),
        FieldKind::Int => Some("IntFilter"),
        FieldKind::Float => Some("FloatFilter"),
        FieldKind::Bool => Some("BooleanFilter"),
        FieldKind::DateTime => Some("DateTimeFilter"),
        FieldKind::Ref => Some("IDFilter"),
        FieldKind::Json => None,
    }
}

fn filter_input(name: &str, of: &str, ops: &[&str], description: &str) -> InputObject {
    let mut obj = InputObject::new(name).description(description);
    for op in ops {
        let ty = match *op {
            "in" | "notIn" => TypeRef::named_nn_list(of),
            "isNull" => TypeRef::named(TypeRef::BOOLEAN),
            "contains" | "startsWith" | "endsWith" => TypeRef::named(TypeRef::STRING),
            _ => TypeRef::named(of),
        };
        let doc = match *op {
            "eq" => "Equal to.",
            "ne" => "Not equal to (rows where the value is null do not match).",
            "in" => "Equal to one of.",
            "notIn" => "Equal to none of (rows where the value is null do not match).",
            "lt" => "Less than.",
            "lte" => "Less than or equal to.",
            "gt" => "Greater than.",
            "gte" => "Greater than or equal to.",
            "contains" => "Contains this text (case-sensitive).",
            "startsWith" => "Starts with this text (case-sensitive).",
            "endsWith" => "Ends with this text (case-sensitive).",
            _ => "true: the value is null; false: it is not.",
        };
        obj = obj.field(InputValue::new(*op, ty).description(doc));
    }
    obj
}

const ORDERED: &[&str] = &[
    "eq", "ne", "in", "notIn", "lt", "lte", "gt", "gte", "isNull",
];

/// Scalars, enums, filters and `User`, shared by every collection.
pub fn register_shared(builder: SchemaBuilder) -> SchemaBuilder {
    let datetime = Scalar::new(DATETIME)
        .description("An RFC 3339 date-time, e.g. `2026-01-31T12:00:00.000000Z`; read back in UTC with microseconds.")
        .specified_by_url("https://datatracker.ietf.org/doc/html/rfc3339")
        .validator(|v| matches!(v, Value::String(_)));
    let json = Scalar::new(JSON).description("Any JSON value.");
    let string_ops = [
        "eq",
        "ne",
        "in",
        "notIn",
        "lt",
        "lte",
        "gt",
        "gte",
        "contains",
        "startsWith",
        "endsWith",
        "isNull",
    ];
    builder
        .register(datetime)
        .register(json)
        .register(
            Enum::new("ChangeAction")
                .description("What a change did to a row.")
                .item(EnumItem::new("CREATE").description("The row was created."))
                .item(EnumItem::new("UPDATE").description("The row was changed."))
                .item(EnumItem::new("DELETE").description("The row was deleted.")),
        )
        .register(
            Enum::new("SortDirection")
                .description("Sort order.")
                .item(EnumItem::new("ASC").description("Smallest first; nulls last."))
                .item(EnumItem::new("DESC").description("Largest first; nulls first.")),
        )
        .register(
            Enum::new("Role")
                .description("A user's role in its account.")
                .item(EnumItem::new("USER").description("A member of the account."))
                .item(
                    EnumItem::new("ADMIN").description(
                        "Administers the account: may read and write every row in it.",
                    ),
                ),
        )
        .register(filter_input(
            "StringFilter",
            TypeRef::STRING,
            &string_ops,
            "Conditions on a text value; all given must hold.",
        ))
        .register(filter_input(
            "IntFilter",
            TypeRef::INT,
            ORDERED,
            "Conditions on an integer; all given must hold.",
        ))
        .register(filter_input(
            "FloatFilter",
            TypeRef::FLOAT,
            ORDERED,
            "Conditions on a number; all given must hold.",
        ))
        .register(filter_input(
            "DateTimeFilter",
            DATETIME,
            ORDERED,
            "Conditions on a date-time; all given must hold.",
        ))
        .register(filter_input(
            "BooleanFilter",
            TypeRef::BOOLEAN,
            &["eq", "ne", "isNull"],
            "Conditions on a boolean; all given must hold.",
        ))
        .register(filter_input(
            "IDFilter",
            TypeRef::ID,
            &["eq", "ne", "in", "notIn", "isNull"],
            "Conditions on an id; all given must hold.",
        ))
        .register(user_type())
}

fn user_type() -> Object {
    let field = |name: &'static str, ty: TypeRef, doc: &'static str, get: fn(&User) -> Value| {
        Field::new(name, ty, move |ctx| {
            match ctx.parent_value.try_downcast_ref::<User>() {
                Ok(user) => FieldFuture::from_value(Some(get(user))),
                Err(e) => failed(e, ctx.path_node),
            }
        })
        .description(doc)
    };
    Object::new("User")
        .description("A user of this deployment.")
        .field(field(
            "id",
            TypeRef::named_nn(TypeRef::ID),
            "The user's id.",
            |u| Value::from(u.id.clone()),
        ))
        .field(field(
            "email",
            TypeRef::named_nn(TypeRef::STRING),
            "The user's email address, normalised.",
            |u| Value::from(u.email.clone()),
        ))
        .field(field(
            "role",
            TypeRef::named_nn("Role"),
            "The user's role in its account.",
            |u| Value::Enum(async_graphql::Name::new(&u.role)),
        ))
        .field(field(
            "accountId",
            TypeRef::named_nn(TypeRef::ID),
            "The account (tenant) the user belongs to.",
            |u| Value::from(u.account_id.clone()),
        ))
}

/// A stored JSON value as a GraphQL value, without a round trip through serde.
pub(crate) fn json_value(j: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.clone()),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::List(items.iter().map(json_value).collect()),
        Json::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (async_graphql::Name::new(k), json_value(v)))
                .collect(),
        ),
    }
}

fn row_field(
    name: &str,
    ty: TypeRef,
    doc: &str,
    get: impl Fn(&Row) -> Value + Send + Sync + 'static,
) -> Field {
    Field::new(name, ty, move |ctx| {
        // Null is "no value" (None): dynamic scalars would run their validator on a
        // Some(Null) and reject it.
        match ctx.parent_value.try_downcast_ref::<Row>() {
            Ok(row) => FieldFuture::from_value(Some(get(row)).filter(|v| *v != Value::Null)),
            Err(e) => failed(e, ctx.path_node),
        }
    })
    .description(doc)
}

/// The object type, inputs and enums of one collection.
pub fn register_collection(
    builder: SchemaBuilder,
    catalog: &Catalog,
    c: &Collection,
) -> SchemaBuilder {
    let n = &c.names;
    let mut obj = Object::new(&n.type_name)
        .description(&c.description)
        .field(row_field(
            "id",
            TypeRef::named_nn(TypeRef::ID),
            "Unique id (UUID v7, time-ordered).",
            |r| Value::from(r.id.clone()),
        ))
        .field(row_field(
            "ownerId",
            TypeRef::named(TypeRef::ID),
            "The user who created the row.",
            |r| r.owner_id.clone().map(Value::from).unwrap_or(Value::Null),
        ))
        .field(row_field(
            "accountId",
            TypeRef::named_nn(TypeRef::ID),
            "The account (tenant) the row belongs to.",
            |r| Value::from(r.account_id.clone()),
        ))
        .field(row_field(
            "createdAt",
            TypeRef::named_nn(DATETIME),
            "When the row was created.",
            |r| Value::from(format_datetime(&r.created_at)),
        ))
        .field(row_field(
            "updatedAt",
            TypeRef::named_nn(DATETIME),
            "When the row was last changed.",
            |r| Value::from(format_datetime(&r.updated_at)),
        ));
    let mut create = InputObject::new(&n.create_input)
        .description(format!("Values for a new {} row.", n.type_name));
    let mut update = InputObject::new(&n.update_input).description(format!(
        "Changes to a {} row: only the fields given are changed; null clears a field.",
        n.type_name
    ));
    let mut filter = InputObject::new(&n.where_input)
        .description(format!(
            "Conditions on {} rows; all given must hold.",
            n.type_name
        ))
        .field(
            InputValue::new("and", TypeRef::named_nn_list(&n.where_input))
                .description("All of these hold."),
        )
        .field(
            InputValue::new("or", TypeRef::named_nn_list(&n.where_input))
                .description("At least one of these holds."),
        )
        .field(
            InputValue::new("not", TypeRef::named(&n.where_input))
                .description("This does not hold."),
        )
        .field(
            InputValue::new("id", TypeRef::named("IDFilter")).description("Conditions on the id."),
        )
        .field(
            InputValue::new("ownerId", TypeRef::named("IDFilter"))
                .description("Conditions on the owner's id."),
        )
        .field(
            InputValue::new("createdAt", TypeRef::named("DateTimeFilter"))
                .description("Conditions on the creation time."),
        )
        .field(
            InputValue::new("updatedAt", TypeRef::named("DateTimeFilter"))
                .description("Conditions on the time of the last change."),
        );
    let mut fields_enum = Enum::new(&n.field_enum)
        .description(format!("Fields {} rows can be ordered by.", n.type_name))
        .item(EnumItem::new("ID").description("Order by id (creation order)."))
        .item(EnumItem::new("OWNER_ID").description("Order by the owner's id."))
        .item(EnumItem::new("CREATED_AT").description("Order by creation time."))
        .item(EnumItem::new("UPDATED_AT").description("Order by the time of the last change."));
    for f in &c.fields {
        let ty = scalar_type(f.kind);
        let out_ty = if f.non_null() {
            TypeRef::named_nn(ty)
        } else {
            TypeRef::named(ty)
        };
        let key = f.key.clone();
        obj = obj.field(row_field(&f.gql_name, out_ty, &f.description, move |r| {
            r.data.get(&key).map_or(Value::Null, json_value)
        }));
        if let (Some(object_name), Some(target)) = (&f.object_name, &f.target) {
            obj = obj.field(ref_object_field(catalog, object_name, &f.key, target));
        }
        let create_ty = if f.required && f.default.is_none() {
            TypeRef::named_nn(ty)
        } else {
            TypeRef::named(ty)
        };
        let mut doc = f.description.clone();
        if let Some(d) = &f.default {
            doc = format!("{doc} Default: {d}.");
        }
        create = create.field(InputValue::new(&f.gql_name, create_ty).description(&doc));
        update = update
            .field(InputValue::new(&f.gql_name, TypeRef::named(ty)).description(&f.description));
        if let Some(ft) = filter_type(f.kind) {
            filter = filter.field(
                InputValue::new(&f.gql_name, TypeRef::named(ft))
                    .description(format!("Conditions on `{}`.", f.gql_name)),
            );
            fields_enum = fields_enum.item(
                EnumItem::new(&f.enum_name).description(format!("Order by `{}`.", f.gql_name)),
            );
        }
    }
    let order = InputObject::new(&n.order_input)
        .description(format!("A sort key for {} rows.", n.type_name))
        .field(
            InputValue::new("field", TypeRef::named_nn(&n.field_enum))
                .description("What to sort by."),
        )
        .field(
            InputValue::new("direction", TypeRef::named_nn("SortDirection"))
                .default_value(Value::Enum(async_graphql::Name::new("ASC")))
                .description("Which way."),
        );
    builder
        .register(obj)
        .register(create)
        .register(update)
        .register(filter)
        .register(fields_enum)
        .register(order)
}

/// `author: User` / `post: Post`: the referenced row, or null when it is missing or
/// the viewer may not read it (never an error, so one hidden row spoils no list).
fn ref_object_field(catalog: &Catalog, name: &str, key: &str, target: &str) -> Field {
    let key = key.to_string();
    let target_coll = catalog.collection(target).cloned();
    let ty = match &target_coll {
        Some(t) => t.names.type_name.clone(),
        None => "User".to_string(),
    };
    let doc = format!("The referenced {ty}, or null when it is gone or hidden from you.");
    Field::new(name, TypeRef::named(&ty), move |ctx| {
        let key = key.clone();
        let target_coll = target_coll.clone();
        resolve(ctx.path_node, async move {
            let rc = super::request_ctx(&ctx)?;
            let row = ctx.parent_value.try_downcast_ref::<Row>()?;
            let Some(id) = row.data.get(&key).and_then(|v| v.as_str()) else {
                return Ok(None);
            };
            let account = rc.viewer.account_id.as_str();
            match target_coll {
                Some(t) => {
                    let scope = Scope {
                        account_id: account,
                        owner_id: None,
                    };
                    rc.read(&t.key);
                    let found = rc.store.get(&t, &scope, id).await?;
                    Ok(found
                        .filter(|r| may_read_row(&rc.viewer, t.read, r.owner_id.as_deref()))
                        .map(async_graphql::dynamic::FieldValue::owned_any))
                }
                None => {
                    let found = rc.store.user_by_id(id).await?;
                    Ok(found
                        .filter(|u| u.account_id == account && rc.viewer.user_id.is_some())
                        .map(async_graphql::dynamic::FieldValue::owned_any))
                }
            }
        })
    })
    .description(doc)
}
