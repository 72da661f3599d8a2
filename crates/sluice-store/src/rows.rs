//! How each entity maps onto its table: the indexed columns beside the JSON body.

use serde_json::{json, Value};
use sluice_model::{
    Acl, BasicAuth, Consumer, Entity, EntityKind, ForeignKey, KeyAuth, Plugin, Route, Service,
};
use uuid::Uuid;

/// A column that references another table.
pub struct ForeignColumn {
    pub column: &'static str,
    /// The entity field it comes from (`service`), for error messages.
    pub field: &'static str,
    pub target: EntityKind,
    pub value: Option<Uuid>,
}

/// An entity the store can persist.
pub trait Stored: Entity {
    /// Plain indexed columns with their values (excluding id, tags, body).
    fn columns(&self) -> Vec<(&'static str, Option<String>)>;
    /// The subset of `columns` that is unique.
    const UNIQUE: &'static [&'static str];
    fn foreign(&self) -> Vec<ForeignColumn>;
    /// Kong's rendering of a unique violation on `column`: (`{name="x"}`, fields object).
    fn unique_violation(&self, column: &str) -> (String, Value) {
        let value = self
            .columns()
            .into_iter()
            .find(|(c, _)| *c == column)
            .and_then(|(_, v)| v)
            .unwrap_or_default();
        (
            format!("{{{column}=\"{value}\"}}"),
            json!({ column: value }),
        )
    }
}

/// [`Stored::UNIQUE`] by kind, for code that has a kind and no type.
pub(crate) fn unique_columns(kind: sluice_model::EntityKind) -> &'static [&'static str] {
    use sluice_model::{
        Acl, BasicAuth, Consumer, EntityKind as K, KeyAuth, Plugin, Route, Service,
    };
    match kind {
        K::Service => Service::UNIQUE,
        K::Route => Route::UNIQUE,
        K::Consumer => Consumer::UNIQUE,
        K::Plugin => Plugin::UNIQUE,
        K::KeyAuth => KeyAuth::UNIQUE,
        K::BasicAuth => BasicAuth::UNIQUE,
        K::Acl => Acl::UNIQUE,
    }
}

fn fk(k: &Option<ForeignKey>) -> Option<Uuid> {
    k.map(|k| k.id)
}

// === impl Stored ===

impl Stored for Service {
    const UNIQUE: &'static [&'static str] = &["name"];
    fn columns(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("name", self.name.clone())]
    }
    fn foreign(&self) -> Vec<ForeignColumn> {
        Vec::new()
    }
}

impl Stored for Route {
    const UNIQUE: &'static [&'static str] = &["name"];
    fn columns(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("name", self.name.clone())]
    }
    fn foreign(&self) -> Vec<ForeignColumn> {
        vec![ForeignColumn {
            column: "service_id",
            field: "service",
            target: EntityKind::Service,
            value: fk(&self.service),
        }]
    }
}

impl Stored for Consumer {
    const UNIQUE: &'static [&'static str] = &["username", "custom_id"];
    fn columns(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("username", self.username.clone()),
            ("custom_id", self.custom_id.clone()),
        ]
    }
    fn foreign(&self) -> Vec<ForeignColumn> {
        Vec::new()
    }
}

impl Stored for Plugin {
    const UNIQUE: &'static [&'static str] = &["instance_name", "cache_key"];
    fn columns(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("name", Some(self.name.clone())),
            ("instance_name", self.instance_name.clone()),
            ("cache_key", Some(self.cache_key())),
        ]
    }
    fn foreign(&self) -> Vec<ForeignColumn> {
        vec![
            ForeignColumn {
                column: "service_id",
                field: "service",
                target: EntityKind::Service,
                value: fk(&self.service),
            },
            ForeignColumn {
                column: "route_id",
                field: "route",
                target: EntityKind::Route,
                value: fk(&self.route),
            },
            ForeignColumn {
                column: "consumer_id",
                field: "consumer",
                target: EntityKind::Consumer,
                value: fk(&self.consumer),
            },
        ]
    }
    fn unique_violation(&self, column: &str) -> (String, Value) {
        if column == "cache_key" {
            let fk = |k: &Option<ForeignKey>| k.map(|k| json!({"id": k.id})).unwrap_or(Value::Null);
            let fields = json!({
                "consumer": fk(&self.consumer),
                "name": self.name,
                "route": fk(&self.route),
                "service": fk(&self.service),
            });
            return (self.cache_key(), fields);
        }
        let value = self.instance_name.clone().unwrap_or_default();
        (
            format!("{{instance_name=\"{value}\"}}"),
            json!({ "instance_name": value }),
        )
    }
}

fn owner(consumer: &ForeignKey) -> Vec<ForeignColumn> {
    vec![ForeignColumn {
        column: "consumer_id",
        field: "consumer",
        target: EntityKind::Consumer,
        value: Some(consumer.id),
    }]
}

impl Stored for KeyAuth {
    const UNIQUE: &'static [&'static str] = &["key"];
    fn columns(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("key", Some(self.key.clone()))]
    }
    fn foreign(&self) -> Vec<ForeignColumn> {
        owner(&self.consumer)
    }
}

impl Stored for BasicAuth {
    const UNIQUE: &'static [&'static str] = &["username"];
    fn columns(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("username", Some(self.username.clone()))]
    }
    fn foreign(&self) -> Vec<ForeignColumn> {
        owner(&self.consumer)
    }
}

impl Stored for Acl {
    const UNIQUE: &'static [&'static str] = &["cache_key"];
    /// `group` is an SQL keyword, so its column name is written quoted.
    fn columns(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("\"group\"", Some(self.group.clone())),
            ("cache_key", Some(self.cache_key())),
        ]
    }
    fn foreign(&self) -> Vec<ForeignColumn> {
        owner(&self.consumer)
    }
    fn unique_violation(&self, _column: &str) -> (String, Value) {
        let fields = json!({"consumer": {"id": self.consumer.id}, "group": self.group});
        (self.cache_key(), fields)
    }
}
