//! From the boundary types to validated entities. Ids come first, so that references can be
//! checked whatever order the files list entities in; then scopes and uniqueness; then every
//! entity goes through `Schemas::build` and its violations are mapped back to the file.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::position::Seg;
use super::{Content, DeclarativeError, Entities, FPlugin, FRoute, Source, ID_NAMESPACE};
use crate::entity::{
    Acl, BasicAuth, Consumer, Entity, EntityKind, KeyAuth, Plugin, Route, Service,
};
use crate::relations;
use crate::schema::Schemas;
use crate::violation::SchemaViolation;

/// The entities of one kind: which ids exist, and which id each name refers to.
struct Registry<'a> {
    /// `service`, `route`, ... as used in messages.
    kind: &'static str,
    /// The field a reference by name matches (`name`, `username`).
    key: &'static str,
    ids: HashMap<Uuid, &'a Source>,
    names: HashMap<String, Uuid>,
    unique: HashMap<(&'static str, String), &'a Source>,
}

/// The scope a plugin gets from the entity it is nested in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    Service,
    Route,
    Consumer,
}

struct RouteItem<'a> {
    route: &'a FRoute,
    id: Uuid,
    service: Option<Uuid>,
}

struct PluginItem<'a> {
    plugin: &'a FPlugin,
    id: Uuid,
    /// Service, route and consumer ids, indexed by `Relation as usize`.
    scope: [Option<Uuid>; 3],
}

/// A plugin's identity in Kong: one plugin of a name per (service, route, consumer).
type ScopeKey = (String, Option<Uuid>, Option<Uuid>, Option<Uuid>);

/// The fields every entity gets from the loader rather than from the file.
struct Meta<'a> {
    now: i64,
    select_tags: &'a [String],
}

pub(super) fn resolve(
    content: &Content,
    schemas: &Schemas,
    now: i64,
) -> Result<Entities, Vec<DeclarativeError>> {
    let mut errors = Vec::new();

    let mut consumers = Registry::new("consumer", "username");
    let mut consumer_ids = Vec::with_capacity(content.consumers.len());
    for (index, consumer) in content.consumers.iter().enumerate() {
        let fields = &consumer.fields;
        let id = explicit_id(fields).unwrap_or_else(|| {
            match (text(fields, "username"), text(fields, "custom_id")) {
                (Some(username), _) => generated(&format!("consumers:{username}")),
                (None, Some(custom_id)) => generated(&format!("consumers:custom_id:{custom_id}")),
                (None, None) => generated(&format!("consumers::{index}")),
            }
        });
        consumers.register(
            id,
            &consumer.source,
            fields,
            &["username", "custom_id"],
            &mut errors,
        );
        consumer_ids.push(id);
    }

    let mut services = Registry::new("service", "name");
    let mut service_ids = Vec::with_capacity(content.services.len());
    // What unnamed routes of a service are counted under: its name, or its id.
    let mut service_keys = HashMap::new();
    for (index, service) in content.services.iter().enumerate() {
        let fields = &service.fields;
        let name = text(fields, "name");
        let id = explicit_id(fields).unwrap_or_else(|| match name {
            Some(name) => generated(&format!("services:{name}")),
            None => generated(&format!("services::{index}")),
        });
        services.register(id, &service.source, fields, &["name"], &mut errors);
        service_keys.insert(id, name.map_or_else(|| id.to_string(), str::to_owned));
        service_ids.push(id);
    }

    // Nested routes belong to their service; top-level ones name theirs.
    let mut pending: Vec<(&FRoute, Option<Uuid>)> = Vec::new();
    for (service, service_id) in content.services.iter().zip(&service_ids) {
        for route in &service.routes {
            check_parent_service(route, *service_id, &services, &mut errors);
            pending.push((route, Some(*service_id)));
        }
    }
    for route in &content.routes {
        let service_id = route
            .fields
            .get("service")
            .filter(|value| !value.is_null())
            .and_then(|value| {
                lookup(
                    value,
                    Relation::Service,
                    &services,
                    &route.source,
                    &mut errors,
                )
            });
        pending.push((route, service_id));
    }
    let mut routes = Registry::new("route", "name");
    let mut unnamed_routes: HashMap<String, usize> = HashMap::new();
    let mut route_items = Vec::with_capacity(pending.len());
    for (route, service_id) in pending {
        let fields = &route.fields;
        let id = explicit_id(fields).unwrap_or_else(|| match text(fields, "name") {
            Some(name) => generated(&format!("routes:{name}")),
            None => {
                let service_key = service_id
                    .and_then(|id| service_keys.get(&id).cloned())
                    .unwrap_or_default();
                let count = unnamed_routes.entry(service_key.clone()).or_default();
                let id = generated(&format!("routes:{service_key}:{count}"));
                *count += 1;
                id
            }
        });
        routes.register(id, &route.source, fields, &["name"], &mut errors);
        route_items.push(RouteItem {
            route,
            id,
            service: service_id,
        });
    }

    let mut nested: Vec<(&FPlugin, Option<(Relation, Uuid)>)> = Vec::new();
    for (service, id) in content.services.iter().zip(&service_ids) {
        for plugin in &service.plugins {
            nested.push((plugin, Some((Relation::Service, *id))));
        }
    }
    for item in &route_items {
        for plugin in &item.route.plugins {
            nested.push((plugin, Some((Relation::Route, item.id))));
        }
    }
    for (consumer, id) in content.consumers.iter().zip(&consumer_ids) {
        for plugin in &consumer.plugins {
            nested.push((plugin, Some((Relation::Consumer, *id))));
        }
    }
    for plugin in &content.plugins {
        nested.push((plugin, None));
    }
    let registries = [&services, &routes, &consumers];
    let mut plugins = Registry::new("plugin", "instance_name");
    let mut scopes: HashMap<ScopeKey, &Source> = HashMap::new();
    let mut plugin_items = Vec::with_capacity(nested.len());
    for (plugin, parent) in nested {
        let name = text(&plugin.fields, "name").unwrap_or_default();
        let mut scope = [None; 3];
        for relation in Relation::ALL {
            let field = relation.field();
            let value = plugin.fields.get(field).filter(|value| !value.is_null());
            match parent {
                Some((parent_relation, parent_id)) if parent_relation == relation => {
                    if let Some(value) = value {
                        errors.push(plugin.source.error_at(
                            &[key(field)],
                            format!(
                                "nesting {field} ({}) under {field}-scoped plugin ({name}) is not allowed",
                                reference_text(value)
                            ),
                        ));
                    }
                    scope[relation as usize] = Some(parent_id);
                }
                _ => {
                    scope[relation as usize] = value.and_then(|value| {
                        lookup(
                            value,
                            relation,
                            registries[relation as usize],
                            &plugin.source,
                            &mut errors,
                        )
                    });
                }
            }
        }
        let [service_id, route_id, consumer_id] = scope;
        let id = explicit_id(&plugin.fields).unwrap_or_else(|| {
            generated(&format!(
                "plugins:{name}:{}:{}:{}",
                id_text(service_id),
                id_text(route_id),
                id_text(consumer_id)
            ))
        });
        plugins.register(
            id,
            &plugin.source,
            &plugin.fields,
            &["instance_name"],
            &mut errors,
        );
        match scopes.entry((name.to_owned(), service_id, route_id, consumer_id)) {
            Entry::Occupied(first) => errors.push(plugin.source.error(format!(
                "UNIQUE violation detected on '{}' (also configured by {})",
                cache_key(name, service_id, route_id, consumer_id),
                place(first.get())
            ))),
            Entry::Vacant(slot) => {
                slot.insert(&plugin.source);
            }
        }
        plugin_items.push(PluginItem { plugin, id, scope });
    }

    let meta = Meta {
        now,
        select_tags: &content.select_tags,
    };
    let mut entities = Entities::default();
    for (service, id) in content.services.iter().zip(&service_ids) {
        let input = meta.input(&service.fields, &[], *id);
        if let Some(built) = build::<Service>(schemas, &service.source, input, &mut errors) {
            entities.services.push(built);
        }
    }
    for item in &route_items {
        let mut input = meta.input(&item.route.fields, &["service"], item.id);
        if let Some(service_id) = item.service {
            input.insert("service".to_owned(), foreign(service_id));
        }
        if let Some(built) = build::<Route>(schemas, &item.route.source, input, &mut errors) {
            entities.routes.push(built);
        }
    }
    for (consumer, id) in content.consumers.iter().zip(&consumer_ids) {
        let input = meta.input(&consumer.fields, &[], *id);
        if let Some(built) = build::<Consumer>(schemas, &consumer.source, input, &mut errors) {
            entities.consumers.push(built);
        }
    }
    credentials(
        content,
        &consumer_ids,
        schemas,
        &meta,
        &mut entities,
        &mut errors,
    );
    for item in &plugin_items {
        let mut input = meta.input(
            &item.plugin.fields,
            &["service", "route", "consumer"],
            item.id,
        );
        for relation in Relation::ALL {
            if let Some(id) = item.scope[relation as usize] {
                input.insert(relation.field().to_owned(), foreign(id));
            }
        }
        if let Some(built) = build::<Plugin>(schemas, &item.plugin.source, input, &mut errors) {
            entities.plugins.push(built);
        }
    }

    if errors.is_empty() {
        check_relations(&entities, &route_items, &plugin_items, &mut errors);
    }
    if errors.is_empty() {
        Ok(entities)
    } else {
        Err(errors)
    }
}

/// The rules between a route and its service, and a plugin and its scope
/// ([`crate::relations`]), over the file's own entities.
fn check_relations(
    entities: &Entities,
    route_items: &[RouteItem<'_>],
    plugin_items: &[PluginItem<'_>],
    errors: &mut Vec<DeclarativeError>,
) {
    let services: HashMap<Uuid, &Service> = entities.services.iter().map(|s| (s.id, s)).collect();
    let routes: HashMap<Uuid, &Route> = entities.routes.iter().map(|r| (r.id, r)).collect();
    for (item, route) in route_items.iter().zip(&entities.routes) {
        let mut violation = SchemaViolation::default();
        let service = route.service.and_then(|s| services.get(&s.id).copied());
        relations::route_service(route, service, &mut violation);
        let shape = Value::Object(item.route.fields.clone());
        report(&item.route.source, &shape, &violation, errors);
    }
    for (item, plugin) in plugin_items.iter().zip(&entities.plugins) {
        if !relations::plugin_needs_scope(plugin) {
            continue;
        }
        let route = plugin.route.and_then(|r| routes.get(&r.id).copied());
        let service = plugin.service.and_then(|s| services.get(&s.id).copied());
        let mut violation = SchemaViolation::default();
        relations::plugin_scope(plugin, route, service, &mut violation);
        let shape = Value::Object(item.plugin.fields.clone());
        report(&item.plugin.source, &shape, &violation, errors);
    }
}

/// The credentials nested in consumers. Ids not in the file derive from what identifies the
/// credential in Kong (the key, the username, the consumer and group), so an unchanged file
/// keeps them; a key must be written out, since a generated one would change on every load.
fn credentials(
    content: &Content,
    consumer_ids: &[Uuid],
    schemas: &Schemas,
    meta: &Meta<'_>,
    entities: &mut Entities,
    errors: &mut Vec<DeclarativeError>,
) {
    let mut registries: HashMap<EntityKind, Registry<'_>> = HashMap::new();
    // One group per consumer, as Kong's ACL cache key allows.
    let mut groups: HashMap<(Uuid, &str), &Source> = HashMap::new();
    for (consumer, consumer_id) in content.consumers.iter().zip(consumer_ids) {
        for credential in &consumer.credentials {
            let fields = &credential.fields;
            if let (EntityKind::Acl, Some(group)) = (credential.kind, text(fields, "group")) {
                match groups.entry((*consumer_id, group)) {
                    Entry::Occupied(first) => errors.push(credential.source.error_at(
                        &[key("group")],
                        format!(
                            "acl group '{group}' is given twice for this consumer (also by {})",
                            place(first.get())
                        ),
                    )),
                    Entry::Vacant(slot) => {
                        slot.insert(&credential.source);
                    }
                }
            }
            if credential.kind == EntityKind::KeyAuth && text(fields, "key").is_none() {
                errors.push(credential.source.error_at(
                    &[key("key")],
                    "required field missing (a declarative config must give each key: a generated one would change on every sync)",
                ));
                continue;
            }
            if let Some(value) = fields.get("consumer").filter(|value| !value.is_null()) {
                let matches = reference(value, "username").is_ok_and(|r| {
                    r == consumer_id.to_string()
                        || Some(r.as_str()) == text(&consumer.fields, "username")
                });
                if !matches {
                    errors.push(credential.source.error_at(
                        &[key("consumer")],
                        format!(
                            "a credential nested in a consumer cannot reference another consumer ('{}')",
                            reference_text(value)
                        ),
                    ));
                }
            }
            let (unique, generated_name): (&[&'static str], String) = match credential.kind {
                EntityKind::KeyAuth => (
                    &["key"],
                    format!(
                        "keyauth_credentials:{}",
                        text(fields, "key").unwrap_or_default()
                    ),
                ),
                EntityKind::BasicAuth => (
                    &["username"],
                    format!(
                        "basicauth_credentials:{}",
                        text(fields, "username").unwrap_or_default()
                    ),
                ),
                _ => (
                    &[],
                    format!(
                        "acls:{consumer_id}:{}",
                        text(fields, "group").unwrap_or_default()
                    ),
                ),
            };
            let id = explicit_id(fields).unwrap_or_else(|| generated(&generated_name));
            let registry = registries.entry(credential.kind).or_insert_with(|| {
                Registry::new(credential.kind.singular(), credential.kind.endpoint_key())
            });
            registry.register(id, &credential.source, fields, unique, errors);
            let mut input = meta.input(fields, &["consumer"], id);
            input.remove("updated_at");
            input.insert("consumer".to_owned(), foreign(*consumer_id));
            let source = &credential.source;
            match credential.kind {
                EntityKind::KeyAuth => entities
                    .keyauth_credentials
                    .extend(build::<KeyAuth>(schemas, source, input, errors)),
                EntityKind::BasicAuth => entities
                    .basicauth_credentials
                    .extend(build::<BasicAuth>(schemas, source, input, errors)),
                _ => entities
                    .acls
                    .extend(build::<Acl>(schemas, source, input, errors)),
            }
        }
    }
}

/// A route nested in a service may repeat its parent, but not name another service.
fn check_parent_service(
    route: &FRoute,
    parent: Uuid,
    services: &Registry<'_>,
    errors: &mut Vec<DeclarativeError>,
) {
    let Some(value) = route.fields.get("service").filter(|value| !value.is_null()) else {
        return;
    };
    let node = [key("service")];
    match reference(value, "name") {
        Ok(reference) if services.find(&reference) == Some(parent) => {}
        Ok(reference) => errors.push(route.source.error_at(
            &node,
            format!("a route nested in a service cannot reference another service ('{reference}')"),
        )),
        Err(message) => errors.push(route.source.error_at(&node, message)),
    }
}

/// Resolves a reference field (`service: name`, `consumer: {id: ...}`), reporting why it does
/// not resolve.
fn lookup(
    value: &Value,
    relation: Relation,
    registry: &Registry<'_>,
    source: &Source,
    errors: &mut Vec<DeclarativeError>,
) -> Option<Uuid> {
    let field = relation.field();
    let node = [key(field)];
    match reference(value, relation.key()) {
        Ok(reference) => {
            let found = registry.find(&reference);
            if found.is_none() {
                errors.push(source.error_at(
                    &node,
                    format!("{field} '{reference}' not found in the declarative config"),
                ));
            }
            found
        }
        Err(message) => {
            errors.push(source.error_at(&node, message));
            None
        }
    }
}

/// A reference as decK writes it: a name or id, or `{id: ...}` / `{<key>: ...}`.
fn reference(value: &Value, key: &str) -> Result<String, String> {
    match value {
        Value::String(reference) => Ok(reference.clone()),
        Value::Object(object) => object
            .get("id")
            .or_else(|| object.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("expected {{id: ...}} or {{{key}: ...}}")),
        _ => Err(format!("expected a {key} or an id")),
    }
}

/// How a reference reads in a message: the name or id it gives.
fn reference_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Object(object) => ["id", "name", "username"]
            .iter()
            .find_map(|key| object.get(*key).and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned(),
        other => other.to_string(),
    }
}

/// Validates one entity. Violations are reported at the fields they name.
fn build<E: Entity>(
    schemas: &Schemas,
    source: &Source,
    input: Map<String, Value>,
    errors: &mut Vec<DeclarativeError>,
) -> Option<E> {
    let shape = Value::Object(input.clone());
    match schemas.build::<E>(input) {
        Ok(entity) => Some(entity),
        Err(violation) => {
            report(source, &shape, &violation, errors);
            None
        }
    }
}

fn report(
    source: &Source,
    shape: &Value,
    violation: &SchemaViolation,
    errors: &mut Vec<DeclarativeError>,
) {
    for message in &violation.entity {
        errors.push(source.error(message.clone()));
    }
    for (path, message) in &violation.fields {
        errors.push(source.error_at(&segments(shape, path), message.clone()));
    }
}

/// A violation's field path (`["paths", "1"]`) as segments of the entity, telling indexes
/// from keys by the input's shape. Kong's `@entity` marks an error about the record itself.
fn segments(shape: &Value, path: &[String]) -> Vec<Seg> {
    let mut node = Some(shape);
    let mut segments = Vec::with_capacity(path.len());
    for part in path {
        if part == "@entity" {
            break;
        }
        match (node, part.parse::<usize>()) {
            (Some(Value::Array(items)), Ok(index)) => {
                segments.push(Seg::Index(index));
                node = items.get(index);
            }
            _ => {
                segments.push(Seg::Key(part.clone()));
                node = node.and_then(|value| value.get(part.as_str()));
            }
        }
    }
    segments
}

/// An explicit `id` that is a valid UUID. An invalid one is left for the schema to report.
fn explicit_id(fields: &Map<String, Value>) -> Option<Uuid> {
    fields
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok())
}

fn generated(name: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// A non-empty string field.
fn text<'a>(fields: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    fields
        .get(field)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

fn key(field: &str) -> Seg {
    Seg::Key(field.to_owned())
}

fn foreign(id: Uuid) -> Value {
    json!({ "id": id.to_string() })
}

fn id_text(id: Option<Uuid>) -> String {
    id.map_or_else(String::new, |id| id.to_string())
}

/// Kong's plugin cache key, as it prints it in a unique violation.
fn cache_key(
    name: &str,
    service: Option<Uuid>,
    route: Option<Uuid>,
    consumer: Option<Uuid>,
) -> String {
    let fk =
        |id: Option<Uuid>| id.map_or_else(|| "null".to_owned(), |id| format!("{{id=\"{id}\"}}"));
    format!(
        "{{consumer={},name=\"{name}\",route={},service={}}}",
        fk(consumer),
        fk(route),
        fk(service)
    )
}

/// Where an entity was written, for messages about two entities: `services[0] at kong.yaml:3`.
fn place(source: &Source) -> String {
    match source.line {
        Some(line) => format!("{} at {}:{line}", source.path, source.file),
        None => format!("{} in {}", source.path, source.file),
    }
}

/// Adds the select tags an entity does not already carry.
fn merge_tags(input: &mut Map<String, Value>, select_tags: &[String]) {
    if select_tags.is_empty() {
        return;
    }
    match input.get_mut("tags") {
        Some(Value::Array(tags)) => {
            for tag in select_tags {
                if !tags.iter().any(|t| t.as_str() == Some(tag.as_str())) {
                    tags.push(Value::String(tag.clone()));
                }
            }
        }
        Some(_) => {} // not a list: the schema reports it
        None => {
            let tags = select_tags.iter().cloned().map(Value::String).collect();
            input.insert("tags".to_owned(), Value::Array(tags));
        }
    }
}

// === impl Registry ===

impl<'a> Registry<'a> {
    fn new(kind: &'static str, key: &'static str) -> Self {
        Self {
            kind,
            key,
            ids: HashMap::new(),
            names: HashMap::new(),
            unique: HashMap::new(),
        }
    }

    /// Records an entity, reporting an explicit id or a unique field that another entity of
    /// the kind already has. (Two generated ids only collide when names do, which is
    /// reported once, as the name.)
    fn register(
        &mut self,
        id: Uuid,
        source: &'a Source,
        fields: &Map<String, Value>,
        unique: &[&'static str],
        errors: &mut Vec<DeclarativeError>,
    ) {
        match self.ids.entry(id) {
            Entry::Occupied(first) => {
                if fields.contains_key("id") {
                    errors.push(source.error_at(
                        &[key("id")],
                        format!(
                            "{} id '{id}' is used twice (also by {})",
                            self.kind,
                            place(first.get())
                        ),
                    ));
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(source);
            }
        }
        for field in unique {
            let Some(value) = text(fields, field) else {
                continue;
            };
            match self.unique.entry((*field, value.to_owned())) {
                Entry::Occupied(first) => errors.push(source.error_at(
                    &[key(field)],
                    format!(
                        "{} {field} '{value}' is used twice (also by {})",
                        self.kind,
                        place(first.get())
                    ),
                )),
                Entry::Vacant(slot) => {
                    slot.insert(source);
                }
            }
        }
        if let Some(name) = text(fields, self.key) {
            self.names.entry(name.to_owned()).or_insert(id);
        }
    }

    /// The id a reference names: an id of this kind, else a name.
    fn find(&self, reference: &str) -> Option<Uuid> {
        match reference.parse::<Uuid>() {
            Ok(id) if self.ids.contains_key(&id) => Some(id),
            _ => self.names.get(reference).copied(),
        }
    }
}

// === impl Relation ===

impl Relation {
    const ALL: [Relation; 3] = [Relation::Service, Relation::Route, Relation::Consumer];

    /// The plugin field holding this scope.
    fn field(self) -> &'static str {
        match self {
            Relation::Service => "service",
            Relation::Route => "route",
            Relation::Consumer => "consumer",
        }
    }

    /// The field a reference by name matches.
    fn key(self) -> &'static str {
        match self {
            Relation::Consumer => "username",
            Relation::Service | Relation::Route => "name",
        }
    }
}

// === impl Meta ===

impl Meta<'_> {
    /// The input `Schemas::build` gets: the fields as written, without nulls (decK reads a
    /// null as unset, so the default applies) or the references the resolver replaces, plus
    /// the id, timestamps and select tags.
    fn input(&self, fields: &Map<String, Value>, skip: &[&str], id: Uuid) -> Map<String, Value> {
        let mut input: Map<String, Value> = fields
            .iter()
            .filter(|(field, value)| !value.is_null() && !skip.contains(&field.as_str()))
            .map(|(field, value)| (field.clone(), value.clone()))
            .collect();
        input
            .entry("id")
            .or_insert_with(|| Value::String(id.to_string()));
        input.insert("created_at".to_owned(), Value::from(self.now));
        input.insert("updated_at".to_owned(), Value::from(self.now));
        merge_tags(&mut input, self.select_tags);
        input
    }
}
