//! Entities back to a decK file, shaped the way people write them: routes inside their
//! service, single-scope plugins inside their service or route, the rest top-level with
//! references by name.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::Entities;
use crate::entity::{Consumer, Entity, Plugin, Route, Service};

/// Renders `entities`; see [`super::render`].
pub(super) fn render(entities: &Entities, select_tags: &[String]) -> String {
    let writer = Writer::new(entities, select_tags);
    let mut doc = Map::new();
    doc.insert("_format_version".to_owned(), Value::from("3.0"));
    if !select_tags.is_empty() {
        doc.insert("_info".to_owned(), json!({ "select_tags": select_tags }));
    }
    let sections = [
        ("services", writer.services()),
        ("routes", writer.top_routes()),
        ("consumers", writer.consumers()),
        ("plugins", writer.top_plugins()),
    ];
    for (key, items) in sections {
        if !items.is_empty() {
            doc.insert(key.to_owned(), Value::Array(items));
        }
    }
    serde_yaml::to_string(&Value::Object(doc))
        .unwrap_or_else(|error| format!("# the config could not be rendered: {error}\n"))
}

/// The entities, indexed for nesting and for naming references.
struct Writer<'a> {
    entities: &'a Entities,
    select_tags: &'a [String],
    service_names: HashMap<Uuid, &'a str>,
    route_names: HashMap<Uuid, &'a str>,
    consumer_names: HashMap<Uuid, &'a str>,
    routes_of: HashMap<Uuid, Vec<&'a Route>>,
    top_routes: Vec<&'a Route>,
    plugins_of_service: HashMap<Uuid, Vec<&'a Plugin>>,
    plugins_of_route: HashMap<Uuid, Vec<&'a Plugin>>,
    top_plugins: Vec<&'a Plugin>,
}

// === impl Writer ===

impl<'a> Writer<'a> {
    fn new(entities: &'a Entities, select_tags: &'a [String]) -> Self {
        let service_ids: HashSet<Uuid> = entities.services.iter().map(|s| s.id).collect();
        let route_ids: HashSet<Uuid> = entities.routes.iter().map(|r| r.id).collect();
        let mut routes_of: HashMap<Uuid, Vec<&Route>> = HashMap::new();
        let mut top_routes = Vec::new();
        for route in &entities.routes {
            match route.service {
                Some(service) if service_ids.contains(&service.id) => {
                    routes_of.entry(service.id).or_default().push(route);
                }
                _ => top_routes.push(route),
            }
        }
        let mut plugins_of_service: HashMap<Uuid, Vec<&Plugin>> = HashMap::new();
        let mut plugins_of_route: HashMap<Uuid, Vec<&Plugin>> = HashMap::new();
        let mut top_plugins = Vec::new();
        for plugin in &entities.plugins {
            match (plugin.service, plugin.route, plugin.consumer) {
                (Some(service), None, None) if service_ids.contains(&service.id) => {
                    plugins_of_service
                        .entry(service.id)
                        .or_default()
                        .push(plugin);
                }
                (None, Some(route), None) if route_ids.contains(&route.id) => {
                    plugins_of_route.entry(route.id).or_default().push(plugin);
                }
                _ => top_plugins.push(plugin),
            }
        }
        Self {
            entities,
            select_tags,
            service_names: entities
                .services
                .iter()
                .filter_map(|s| Some((s.id, s.name.as_deref()?)))
                .collect(),
            route_names: entities
                .routes
                .iter()
                .filter_map(|r| Some((r.id, r.name.as_deref()?)))
                .collect(),
            consumer_names: entities
                .consumers
                .iter()
                .filter_map(|c| Some((c.id, c.username.as_deref()?)))
                .collect(),
            routes_of,
            top_routes,
            plugins_of_service,
            plugins_of_route,
            top_plugins,
        }
    }

    fn services(&self) -> Vec<Value> {
        let mut services: Vec<&Service> = self.entities.services.iter().collect();
        services.sort_by(|a, b| by_name(a.name.as_deref(), a.id, b.name.as_deref(), b.id));
        services
            .into_iter()
            .map(|service| {
                let mut fields = self.fields(service, &[], &["name", "id"]);
                let routes: Vec<Value> = self
                    .routes_of
                    .get(&service.id)
                    .map(|routes| self.routes(routes, &["service"]))
                    .unwrap_or_default();
                if !routes.is_empty() {
                    fields.insert("routes".to_owned(), Value::Array(routes));
                }
                let plugins = self.nested_plugins(
                    self.plugins_of_service.get(&service.id).map(Vec::as_slice),
                    "service",
                );
                if !plugins.is_empty() {
                    fields.insert("plugins".to_owned(), Value::Array(plugins));
                }
                Value::Object(fields)
            })
            .collect()
    }

    fn top_routes(&self) -> Vec<Value> {
        self.routes(&self.top_routes, &[])
    }

    /// Routes sorted, each with its nested plugins. `skip` drops the parent reference.
    fn routes(&self, routes: &[&Route], skip: &[&str]) -> Vec<Value> {
        let mut routes = routes.to_vec();
        routes.sort_by(|a, b| by_name(a.name.as_deref(), a.id, b.name.as_deref(), b.id));
        routes
            .into_iter()
            .map(|route| {
                let mut fields = self.fields(route, skip, &["name", "id"]);
                if let Some(service) = route.service.filter(|_| !skip.contains(&"service")) {
                    let reference = match self.service_names.get(&service.id) {
                        Some(name) => json!({ "name": name }),
                        None => json!({ "id": service.id.to_string() }),
                    };
                    fields.insert("service".to_owned(), reference);
                }
                let plugins = self.nested_plugins(
                    self.plugins_of_route.get(&route.id).map(Vec::as_slice),
                    "route",
                );
                if !plugins.is_empty() {
                    fields.insert("plugins".to_owned(), Value::Array(plugins));
                }
                Value::Object(fields)
            })
            .collect()
    }

    fn consumers(&self) -> Vec<Value> {
        let mut consumers: Vec<&Consumer> = self.entities.consumers.iter().collect();
        consumers.sort_by(|a, b| {
            let a_name = a.username.as_deref().or(a.custom_id.as_deref());
            let b_name = b.username.as_deref().or(b.custom_id.as_deref());
            by_name(a_name, a.id, b_name, b.id)
        });
        consumers
            .into_iter()
            .map(|consumer| {
                let mut fields = self.fields(consumer, &[], &["username", "custom_id", "id"]);
                let mine = |owner: Uuid| owner == consumer.id;
                let credentials = [
                    (
                        "keyauth_credentials",
                        self.credentials(&self.entities.keyauth_credentials, mine, |c| &c.key),
                    ),
                    (
                        "basicauth_credentials",
                        self.credentials(&self.entities.basicauth_credentials, mine, |c| {
                            &c.username
                        }),
                    ),
                    (
                        "acls",
                        self.credentials(&self.entities.acls, mine, |c| &c.group),
                    ),
                ];
                for (key, list) in credentials {
                    if !list.is_empty() {
                        fields.insert(key.to_owned(), Value::Array(list));
                    }
                }
                Value::Object(fields)
            })
            .collect()
    }

    /// A consumer's credentials of one kind, nested (the consumer is implied), sorted by what
    /// identifies them. A basic-auth password is written as the hash stored: the clear
    /// password is never kept, and a sync of the dump matches the stored hash.
    fn credentials<C: Entity>(
        &self,
        all: &[C],
        mine: impl Fn(Uuid) -> bool,
        name: impl Fn(&C) -> &String,
    ) -> Vec<Value> {
        let mut list: Vec<&C> = all
            .iter()
            .filter(|c| c.owner().is_some_and(&mine))
            .collect();
        list.sort_by(|a, b| name(a).cmp(name(b)).then_with(|| a.id().cmp(&b.id())));
        list.into_iter()
            .map(|c| {
                Value::Object(self.fields(c, &["consumer"], &["key", "username", "group", "id"]))
            })
            .collect()
    }

    /// Plugins nested in a service or route: the parent reference is implied.
    fn nested_plugins(&self, plugins: Option<&[&'a Plugin]>, parent: &str) -> Vec<Value> {
        let mut plugins: Vec<&Plugin> = plugins.map(|plugins| plugins.to_vec()).unwrap_or_default();
        plugins.sort_by(|a, b| by_name(Some(a.name.as_str()), a.id, Some(b.name.as_str()), b.id));
        plugins
            .into_iter()
            .map(|plugin| {
                Value::Object(self.fields(plugin, &[parent], &["name", "instance_name", "id"]))
            })
            .collect()
    }

    /// Global plugins and plugins scoped to a consumer or to several entities, referring to
    /// their scope by name (by id when the entity has no name).
    fn top_plugins(&self) -> Vec<Value> {
        let mut plugins = self.top_plugins.clone();
        plugins.sort_by(|a, b| by_name(Some(a.name.as_str()), a.id, Some(b.name.as_str()), b.id));
        plugins
            .into_iter()
            .map(|plugin| {
                let mut fields = self.fields(plugin, &[], &["name", "instance_name", "id"]);
                let scopes = [
                    ("service", plugin.service, &self.service_names),
                    ("route", plugin.route, &self.route_names),
                    ("consumer", plugin.consumer, &self.consumer_names),
                ];
                for (field, foreign, names) in scopes {
                    if let Some(foreign) = foreign {
                        let reference = names
                            .get(&foreign.id)
                            .map_or_else(|| foreign.id.to_string(), |name| (*name).to_owned());
                        fields.insert(field.to_owned(), Value::String(reference));
                    }
                }
                Value::Object(fields)
            })
            .collect()
    }

    /// An entity's fields as decK writes them: no timestamps, no nulls, no select tags, the
    /// identifying fields first and the rest sorted.
    fn fields<T: Serialize>(
        &self,
        entity: &T,
        skip: &[&str],
        first: &[&str],
    ) -> Map<String, Value> {
        let Ok(Value::Object(mut fields)) = serde_json::to_value(entity) else {
            return Map::new();
        };
        fields.retain(|key, value| {
            !value.is_null()
                && key != "created_at"
                && key != "updated_at"
                && !skip.contains(&key.as_str())
        });
        let emptied = match fields.get_mut("tags") {
            Some(Value::Array(tags)) if !self.select_tags.is_empty() => {
                tags.retain(|tag| {
                    !self
                        .select_tags
                        .iter()
                        .any(|selected| tag.as_str() == Some(selected.as_str()))
                });
                tags.is_empty()
            }
            _ => false,
        };
        if emptied {
            fields.remove("tags");
        }
        let mut entries: Vec<(String, Value)> = fields.into_iter().collect();
        let rank = |key: &str| first.iter().position(|f| *f == key).unwrap_or(first.len());
        entries.sort_by(|(a, _), (b, _)| {
            rank(a.as_str())
                .cmp(&rank(b.as_str()))
                .then_with(|| a.cmp(b))
        });
        entries.into_iter().collect()
    }
}

/// Sorts by name (unnamed first), then id.
fn by_name(a_name: Option<&str>, a_id: Uuid, b_name: Option<&str>, b_id: Uuid) -> Ordering {
    a_name
        .unwrap_or_default()
        .cmp(b_name.unwrap_or_default())
        .then_with(|| a_id.cmp(&b_id))
}
