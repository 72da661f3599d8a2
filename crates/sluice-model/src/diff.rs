//! The sync plan as data: what `sluice diff` prints and `sluice sync` applies.
//!
//! Three steps, as decK takes them (Kong/go-database-reconciler `pkg/file/builder.go`,
//! `pkg/diff`, `pkg/state/types.go`):
//! 1. [`reconcile`] matches the target entities (from the files) to the current ones (from the
//!    store) and gives every matched target entity the current id, so that an entity present
//!    on both sides is updated in place instead of deleted and created again.
//! 2. [`diff`] compares the two sides and returns a [`Plan`]: one [`Change`] per entity to
//!    create, update or delete, in [`DEPENDENCY_ORDER`].
//! 3. [`render`] prints a plan the way decK does.
//!
//! A plan carries whole entities, so `sync` can send it to the control plane in one request
//! and have it applied there; `sync diff` is a plan that is never applied.
//!
//! # Output
//!
//! ```text
//! creating service svc1
//! updating route r1  {
//!    "paths": [
//!      "/one",
//! +    "/two"
//!    ]
//!  }
//!
//! deleting plugin rate-limiting (global)
//! Summary:
//!   Created: 1
//!   Updated: 1
//!   Deleted: 1
//! ```
//!
//! As decK prints it: an update block ends with a blank line (decK `Println`s a diff that
//! already ends in a newline), create and delete lines do not, and `Summary:` follows directly.
//!
//! # Where Sluice differs from decK, on purpose
//! - An update's field diff lists only the fields that changed, not the whole entity: decK
//!   prints every field (tens of lines per plugin), which buries the one that changed. Inside a
//!   changed object only its changed keys are listed; a changed array is listed whole, each
//!   item marked, since an item's place matters. See [`render`].
//! - An entity without a key to match by (an unnamed service or route) is matched by its id:
//!   Sluice generates ids from the file ([`crate::declarative::resolve`]), so an unchanged
//!   unnamed route keeps its id from one sync to the next. decK gives it a random id and
//!   recreates it on every sync.
//! - A target entity that matched nothing but whose generated id belongs to a current entity
//!   (one synced under another name, then renamed) gets a new id, derived deterministically
//!   from the old one, where decK would pick a random one. Either way it is a new entity.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::declarative::{Content, Entities, FPlugin, ID_NAMESPACE};
use crate::entity::{
    Acl, AnyEntity, BasicAuth, Consumer, Entity, EntityKind, ForeignKey, KeyAuth, Plugin, Route,
    Service,
};

/// decK's dependency order, from `pkg/diff/order.go` restricted to Sluice's kinds: level 0
/// consumers; 1 services and the consumers' credentials; 2 routes; 3 plugins. Creates and updates walk it top-down, so a
/// route's service exists before the route; deletes walk it bottom-up, so a plugin goes before
/// the route it is scoped to. Kinds in one level do not depend on each other.
pub const DEPENDENCY_ORDER: &[&[EntityKind]] = &[
    &[EntityKind::Consumer],
    &[
        EntityKind::Service,
        EntityKind::KeyAuth,
        EntityKind::BasicAuth,
        EntityKind::Acl,
    ],
    &[EntityKind::Route],
    &[EntityKind::Plugin],
];

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
/// decK prints its summary in bold green (`color.New(color.FgGreen, color.Bold)`).
const BOLD_GREEN: &str = "\x1b[32;1m";
const RESET: &str = "\x1b[0m";

/// What a change does to its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    Delete,
}

/// One change, holding the typed entities: a create has only `new`, a delete only `old` (a
/// plan the Admin API received carries no `old`: applying a delete needs only the id), an
/// update both (`new` carries the current `created_at`). The store writes `new` as it is;
/// nothing downstream parses JSON again.
///
/// On the wire (`POST /sluice/sync`) a change is `{op, kind, id, label, old, new}` with the
/// entities as their JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub op: Op,
    pub kind: EntityKind,
    pub id: Uuid,
    /// decK's name for the entity: `svc1`, `rate-limiting (global)`,
    /// `key-auth for service svc1 and route r1`. An entity without a name shows its id.
    pub label: String,
    pub old: Option<AnyEntity>,
    pub new: Option<AnyEntity>,
}

/// A change as it is sent: the entities as JSON, read back by the change's `kind`.
#[derive(Deserialize)]
struct ChangeJson {
    op: Op,
    kind: EntityKind,
    id: Uuid,
    label: String,
    #[serde(default)]
    old: Option<Value>,
    #[serde(default)]
    new: Option<Value>,
}

// === impl Change ===

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = ChangeJson::deserialize(deserializer)?;
        let typed = |value: Option<Value>| {
            value
                .map(|v| AnyEntity::from_json(json.kind, v))
                .transpose()
                .map_err(serde::de::Error::custom)
        };
        Ok(Change {
            op: json.op,
            kind: json.kind,
            id: json.id,
            label: json.label,
            old: typed(json.old)?,
            new: typed(json.new)?,
        })
    }
}

/// The changes that turn the current entities into the target ones, in the order they must be
/// applied: creates and updates level by level down [`DEPENDENCY_ORDER`], then deletes level by
/// level up it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

/// How many changes of each op a plan has: decK's `Summary:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
}

/// The ids the files give explicitly, per kind: an explicit id is never rewritten.
#[derive(Default)]
struct ExplicitIds {
    services: HashSet<Uuid>,
    routes: HashSet<Uuid>,
    consumers: HashSet<Uuid>,
    plugins: HashSet<Uuid>,
    credentials: HashSet<Uuid>,
}

/// What entities are called in labels, by id, for naming a plugin's scope.
#[derive(Default)]
struct Names {
    services: HashMap<Uuid, String>,
    routes: HashMap<Uuid, String>,
    consumers: HashMap<Uuid, String>,
}

/// What matching and diffing need from an entity of any kind.
trait Diffable: Entity {
    /// The identities a target entity without an explicit id is matched by, most preferred
    /// first (decK's lookups). Empty when the entity has none (an unnamed service or route).
    fn match_keys(&self) -> Vec<String>;
    fn set_id(&mut self, id: Uuid);
    fn set_created_at(&mut self, created_at: i64);
    /// decK's `Console()` name.
    fn label(&self, names: &Names) -> String;
}

/// One item of a field diff, before it is written.
enum Entry<'a> {
    /// Unchanged; only array items are shown unchanged, as context.
    Same(Option<&'a str>, &'a Value),
    Removed(Option<&'a str>, &'a Value),
    Added(Option<&'a str>, &'a Value),
    /// A key whose value changed and is not an object or array on both sides: the old value
    /// then the new one.
    Modified(&'a str, &'a Value, &'a Value),
    /// A key holding an object on both sides: its changed keys, nested.
    Object(&'a str, &'a Map<String, Value>, &'a Map<String, Value>),
    /// A key holding an array on both sides: every item, marked.
    Array(&'a str, &'a [Value], &'a [Value]),
}

/// The lines of a field diff, in gojsondiff's ASCII format: a marker column (` `, `-`, `+`),
/// two spaces of indent per level, then pretty JSON.
#[derive(Default)]
struct DiffWriter {
    lines: Vec<String>,
}

/// Matches target entities to current ones the way decK does and rewrites the target's ids
/// (and the foreign keys that point at them) to the current ids, so an entity present in both
/// keeps its id.
///
/// `content` tells which file entities carried an explicit id, and its `select_tags` which
/// current entities may be matched at all (decK only sees those). Per kind, in dependency
/// order:
/// - an explicit id wins: it is matched to the current entity with that id, if any, and never
///   rewritten;
/// - otherwise services and routes match by name, consumers by username (else custom_id), and
///   plugins by (name, service, route, consumer) after the service, route and consumer ids have
///   been reconciled, so a plugin nested under a renamed-id service still matches;
/// - an entity with no name to match by matches a current entity with its (generated) id;
/// - a current entity is matched at most once.
///
/// A matched target entity also takes the current `created_at`, so timestamps never show as a
/// change and an update keeps the creation time.
pub fn reconcile(target: &mut Entities, content: &Content, current: &Entities) {
    let explicit = explicit_ids(content);
    let select_tags = &content.select_tags;

    let consumer_ids = assign(
        &mut target.consumers,
        &current.consumers,
        &explicit.consumers,
        select_tags,
    );
    for plugin in &mut target.plugins {
        remap(&mut plugin.consumer, &consumer_ids);
    }
    reconcile_credentials(
        target,
        current,
        &consumer_ids,
        &explicit.credentials,
        select_tags,
    );

    let service_ids = assign(
        &mut target.services,
        &current.services,
        &explicit.services,
        select_tags,
    );
    for route in &mut target.routes {
        remap(&mut route.service, &service_ids);
    }
    for plugin in &mut target.plugins {
        remap(&mut plugin.service, &service_ids);
    }

    let route_ids = assign(
        &mut target.routes,
        &current.routes,
        &explicit.routes,
        select_tags,
    );
    for plugin in &mut target.plugins {
        remap(&mut plugin.route, &route_ids);
    }

    // Last: a plugin's match key holds the ids of its scope, which are final only now.
    assign(
        &mut target.plugins,
        &current.plugins,
        &explicit.plugins,
        select_tags,
    );
}

/// The credentials follow their consumer's final id; then they match by key, username, or
/// (consumer, group). A basic-auth password is hashed with the consumer's id, so it is hashed
/// again once that id is final, unless the file carries the stored hash itself (a dump).
fn reconcile_credentials(
    target: &mut Entities,
    current: &Entities,
    consumer_ids: &HashMap<Uuid, Uuid>,
    explicit: &HashSet<Uuid>,
    select_tags: &[String],
) {
    let remap_owner = |key: &mut ForeignKey| {
        if let Some(id) = consumer_ids.get(&key.id) {
            key.id = *id;
        }
    };
    target
        .keyauth_credentials
        .iter_mut()
        .for_each(|c| remap_owner(&mut c.consumer));
    target
        .basicauth_credentials
        .iter_mut()
        .for_each(|c| remap_owner(&mut c.consumer));
    target
        .acls
        .iter_mut()
        .for_each(|c| remap_owner(&mut c.consumer));
    assign(
        &mut target.keyauth_credentials,
        &current.keyauth_credentials,
        explicit,
        select_tags,
    );
    assign(
        &mut target.basicauth_credentials,
        &current.basicauth_credentials,
        explicit,
        select_tags,
    );
    assign(&mut target.acls, &current.acls, explicit, select_tags);
    let stored: HashMap<Uuid, &BasicAuth> = current
        .basicauth_credentials
        .iter()
        .map(|c| (c.id, c))
        .collect();
    for credential in &mut target.basicauth_credentials {
        let Some(written) = credential.password_as_written.as_deref() else {
            continue;
        };
        let stored = stored.get(&credential.id);
        credential.password = match stored {
            Some(stored)
                if stored.password == written && stored.consumer == credential.consumer =>
            {
                stored.password.clone()
            }
            _ => crate::credentials::hash_password(written, credential.consumer.id),
        };
    }
}

/// The plan that turns `current` into `target` (call [`reconcile`] first, or every entity the
/// files do not give an explicit id is deleted and created again).
///
/// With non-empty `select_tags`, only current entities carrying all of them are candidates for
/// update or delete; the others are left alone, as decK never sees them. An entity is
/// compared on every field except `created_at` and `updated_at`, with `tags` as a set (decK
/// sorts them; an empty list is no tags), so an unchanged entity never shows as "updating".
/// Within a level, changes are ordered by label, then id.
pub fn diff(current: &Entities, target: &Entities, select_tags: &[String]) -> Plan {
    // Creates and updates are labelled with the target's names, deletes with the current ones.
    let target_names = Names::new(current, target);
    let current_names = Names::new(target, current);
    let names = (&target_names, &current_names);
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    compare(
        &current.consumers,
        &target.consumers,
        select_tags,
        names,
        &mut upserts,
        &mut deletes,
    );
    compare(
        &current.services,
        &target.services,
        select_tags,
        names,
        &mut upserts,
        &mut deletes,
    );
    compare(
        &current.routes,
        &target.routes,
        select_tags,
        names,
        &mut upserts,
        &mut deletes,
    );
    compare(
        &current.plugins,
        &target.plugins,
        select_tags,
        names,
        &mut upserts,
        &mut deletes,
    );
    compare(
        &current.keyauth_credentials,
        &target.keyauth_credentials,
        select_tags,
        names,
        &mut upserts,
        &mut deletes,
    );
    compare(
        &current.basicauth_credentials,
        &target.basicauth_credentials,
        select_tags,
        names,
        &mut upserts,
        &mut deletes,
    );
    compare(
        &current.acls,
        &target.acls,
        select_tags,
        names,
        &mut upserts,
        &mut deletes,
    );
    upserts.sort_by(|a, b| {
        (level(a.kind), a.kind, &a.label, a.id).cmp(&(level(b.kind), b.kind, &b.label, b.id))
    });
    deletes.sort_by(|a, b| {
        (Reverse(level(a.kind)), a.kind, &a.label, a.id).cmp(&(
            Reverse(level(b.kind)),
            b.kind,
            &b.label,
            b.id,
        ))
    });
    upserts.extend(deletes);
    Plan { changes: upserts }
}

/// decK's output for a plan (R `pkg/diff/diff.go`, D `cmd/utils.go`):
/// - `creating <kind> <label>` and `deleting <kind> <label>`, one line each;
/// - `updating <kind> <label>  {`, the field diff, ` }` and a blank line;
/// - `Summary:` and the `  Created: N`, `  Updated: N`, `  Deleted: N` counts.
///
/// The field diff is gojsondiff's ASCII format over the entities as JSON, without `created_at`
/// and `updated_at` and with tags sorted: a marker column (` ` unchanged, `-` old, `+` new),
/// two spaces of indent per level, keys sorted, pretty JSON. Unlike decK it lists only what
/// changed: a changed key shows its old value on `-` lines and its new one on `+` lines; a key
/// holding an object on both sides shows its changed keys nested between unchanged braces; a
/// key holding an array on both sides shows every item, unchanged ones as context and the
/// others marked (a longest common subsequence, removals before additions). A line ends with a
/// comma when another item of its object or array follows it; the two lines of a changed value
/// share the comma.
///
/// With `color`, lines are green for creating, yellow for updating (the whole block), red for
/// deleting and bold green for the summary, as decK colors them; each line is colored on its
/// own, so paging or filtering lines keeps the colors.
pub fn render(plan: &Plan, color: bool) -> String {
    let paint = |code: &'static str| color.then_some(code);
    let mut out = String::new();
    for change in &plan.changes {
        let kind = change.kind.singular();
        match change.op {
            Op::Create => push_line(
                &mut out,
                paint(GREEN),
                &format!("creating {kind} {}", change.label),
            ),
            Op::Delete => push_line(
                &mut out,
                paint(RED),
                &format!("deleting {kind} {}", change.label),
            ),
            Op::Update => {
                push_line(
                    &mut out,
                    paint(YELLOW),
                    &format!("updating {kind} {}  {{", change.label),
                );
                let shown = |e: &Option<AnyEntity>| {
                    e.as_ref().map_or(Value::Null, |e| normalized(&to_json(e)))
                };
                let (old, new) = (shown(&change.old), shown(&change.new));
                for line in field_diff(&old, &new) {
                    push_line(&mut out, paint(YELLOW), &line);
                }
                push_line(&mut out, paint(YELLOW), " }");
                out.push('\n');
            }
        }
    }
    let summary = plan.summary();
    push_line(&mut out, paint(BOLD_GREEN), "Summary:");
    push_line(
        &mut out,
        paint(BOLD_GREEN),
        &format!("  Created: {}", summary.created),
    );
    push_line(
        &mut out,
        paint(BOLD_GREEN),
        &format!("  Updated: {}", summary.updated),
    );
    push_line(
        &mut out,
        paint(BOLD_GREEN),
        &format!("  Deleted: {}", summary.deleted),
    );
    out
}

// === impl Plan ===

impl Plan {
    /// True when the current entities already are the target: nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for change in &self.changes {
            match change.op {
                Op::Create => summary.created += 1,
                Op::Update => summary.updated += 1,
                Op::Delete => summary.deleted += 1,
            }
        }
        summary
    }
}

// === impl Diffable ===

impl Diffable for Service {
    fn match_keys(&self) -> Vec<String> {
        self.name
            .iter()
            .map(|name| format!("name:{name}"))
            .collect()
    }

    fn set_id(&mut self, id: Uuid) {
        self.id = id;
    }

    fn set_created_at(&mut self, created_at: i64) {
        self.created_at = created_at;
    }

    fn label(&self, _names: &Names) -> String {
        self.name.clone().unwrap_or_else(|| self.id.to_string())
    }
}

impl Diffable for Route {
    fn match_keys(&self) -> Vec<String> {
        self.name
            .iter()
            .map(|name| format!("name:{name}"))
            .collect()
    }

    fn set_id(&mut self, id: Uuid) {
        self.id = id;
    }

    fn set_created_at(&mut self, created_at: i64) {
        self.created_at = created_at;
    }

    fn label(&self, _names: &Names) -> String {
        self.name.clone().unwrap_or_else(|| self.id.to_string())
    }
}

impl Diffable for Consumer {
    /// decK looks a consumer up by username first, then by custom_id.
    fn match_keys(&self) -> Vec<String> {
        let by_username = self.username.iter().map(|u| format!("username:{u}"));
        let by_custom_id = self.custom_id.iter().map(|c| format!("custom_id:{c}"));
        by_username.chain(by_custom_id).collect()
    }

    fn set_id(&mut self, id: Uuid) {
        self.id = id;
    }

    fn set_created_at(&mut self, created_at: i64) {
        self.created_at = created_at;
    }

    /// go-kong's `FriendlyName`: the username, else the id (not the custom_id).
    fn label(&self, _names: &Names) -> String {
        self.username.clone().unwrap_or_else(|| self.id.to_string())
    }
}

impl Diffable for Plugin {
    /// Kong allows one plugin of a name per scope, so the name and scope identify it.
    fn match_keys(&self) -> Vec<String> {
        let scope = |key: &Option<ForeignKey>| key.map_or_else(String::new, |k| k.id.to_string());
        vec![format!(
            "{}:{}:{}:{}",
            self.name,
            scope(&self.service),
            scope(&self.route),
            scope(&self.consumer)
        )]
    }

    fn set_id(&mut self, id: Uuid) {
        self.id = id;
    }

    fn set_created_at(&mut self, created_at: i64) {
        self.created_at = created_at;
    }

    /// `rate-limiting (global)`, or `key-auth for service svc1 and route r1`.
    fn label(&self, names: &Names) -> String {
        let mut scopes = Vec::new();
        if let Some(service) = self.service {
            scopes.push(format!("service {}", name_of(&names.services, service.id)));
        }
        if let Some(route) = self.route {
            scopes.push(format!("route {}", name_of(&names.routes, route.id)));
        }
        if let Some(consumer) = self.consumer {
            scopes.push(format!(
                "consumer {}",
                name_of(&names.consumers, consumer.id)
            ));
        }
        if scopes.is_empty() {
            format!("{} (global)", self.name)
        } else {
            format!("{} for {}", self.name, scopes.join(" and "))
        }
    }
}

/// A credential's label: what identifies it (the id for a key, which is a secret) and its
/// consumer, as in `admins for consumer alice`.
fn credential_label(what: &str, consumer: Uuid, names: &Names) -> String {
    format!(
        "{what} for consumer {}",
        name_of(&names.consumers, consumer)
    )
}

macro_rules! credential_diffable {
    ($ty:ident, |$c:ident| $keys:expr, |$l:ident| $label:expr) => {
        impl Diffable for $ty {
            fn match_keys(&self) -> Vec<String> {
                let $c = self;
                $keys
            }

            fn set_id(&mut self, id: Uuid) {
                self.id = id;
            }

            fn set_created_at(&mut self, created_at: i64) {
                self.created_at = created_at;
            }

            fn label(&self, names: &Names) -> String {
                let $l = self;
                credential_label(&$label, self.consumer.id, names)
            }
        }
    };
}

credential_diffable!(KeyAuth, |c| vec![format!("key:{}", c.key)], |c| c
    .id
    .to_string());
credential_diffable!(
    BasicAuth,
    |c| vec![format!("username:{}", c.username)],
    |c| c.username.clone()
);
credential_diffable!(
    Acl,
    |c| vec![format!("{}:{}", c.consumer.id, c.group)],
    |c| c.group.clone()
);

// === impl Names ===

impl Names {
    /// The names of `preferred`'s entities, and of `fallback`'s for ids only it has (a created
    /// plugin may be scoped to a route that already exists, a deleted one to a route that is
    /// going away).
    fn new(fallback: &Entities, preferred: &Entities) -> Self {
        let mut names = Self::default();
        for entities in [fallback, preferred] {
            for service in &entities.services {
                let name = service.name.clone();
                names
                    .services
                    .insert(service.id, name.unwrap_or_else(|| service.id.to_string()));
            }
            for route in &entities.routes {
                let name = route.name.clone();
                names
                    .routes
                    .insert(route.id, name.unwrap_or_else(|| route.id.to_string()));
            }
            for consumer in &entities.consumers {
                let name = consumer.username.clone();
                names
                    .consumers
                    .insert(consumer.id, name.unwrap_or_else(|| consumer.id.to_string()));
            }
        }
        names
    }
}

// === impl DiffWriter ===

impl DiffWriter {
    fn line(&mut self, marker: char, depth: usize, text: &str) {
        let mut line = String::with_capacity(1 + 2 * depth + text.len());
        line.push(marker);
        for _ in 0..depth {
            line.push_str("  ");
        }
        line.push_str(text);
        self.lines.push(line);
    }

    /// The changed keys of two objects, as entries at `depth`.
    fn object(&mut self, depth: usize, old: &Map<String, Value>, new: &Map<String, Value>) {
        self.entries(depth, object_entries(old, new));
    }

    fn entries(&mut self, depth: usize, entries: Vec<Entry<'_>>) {
        let count = entries.len();
        for (index, entry) in entries.into_iter().enumerate() {
            self.entry(depth, entry, index + 1 < count);
        }
    }

    fn entry(&mut self, depth: usize, entry: Entry<'_>, comma: bool) {
        let tail = if comma { "," } else { "" };
        match entry {
            Entry::Same(key, value) => self.value(' ', depth, key, value, comma),
            Entry::Removed(key, value) => self.value('-', depth, key, value, comma),
            Entry::Added(key, value) => self.value('+', depth, key, value, comma),
            Entry::Modified(key, old, new) => {
                self.value('-', depth, Some(key), old, comma);
                self.value('+', depth, Some(key), new, comma);
            }
            Entry::Object(key, old, new) => {
                self.line(' ', depth, &format!("{}{{", key_prefix(Some(key))));
                self.object(depth + 1, old, new);
                self.line(' ', depth, &format!("}}{tail}"));
            }
            Entry::Array(key, old, new) => {
                self.line(' ', depth, &format!("{}[", key_prefix(Some(key))));
                self.entries(depth + 1, array_entries(old, new));
                self.line(' ', depth, &format!("]{tail}"));
            }
        }
    }

    /// A whole value, pretty-printed with sorted keys, every line marked with `marker`.
    /// Empty objects and arrays stay on one line (`{}`, `[]`).
    fn value(&mut self, marker: char, depth: usize, key: Option<&str>, value: &Value, comma: bool) {
        let prefix = key_prefix(key);
        let tail = if comma { "," } else { "" };
        match value {
            Value::Object(fields) if !fields.is_empty() => {
                self.line(marker, depth, &format!("{prefix}{{"));
                let mut fields: Vec<(&String, &Value)> = fields.iter().collect();
                fields.sort_by(|a, b| a.0.cmp(b.0));
                let count = fields.len();
                for (index, (name, field)) in fields.into_iter().enumerate() {
                    self.value(
                        marker,
                        depth + 1,
                        Some(name.as_str()),
                        field,
                        index + 1 < count,
                    );
                }
                self.line(marker, depth, &format!("}}{tail}"));
            }
            Value::Array(items) if !items.is_empty() => {
                self.line(marker, depth, &format!("{prefix}["));
                let count = items.len();
                for (index, item) in items.iter().enumerate() {
                    self.value(marker, depth + 1, None, item, index + 1 < count);
                }
                self.line(marker, depth, &format!("]{tail}"));
            }
            // Value's Display is compact JSON: strings quoted and escaped, `{}`, `[]`.
            scalar => self.line(marker, depth, &format!("{prefix}{scalar}{tail}")),
        }
    }
}

// === matching ===

/// Decides the final id of every target entity of one kind (see [`reconcile`]) and returns
/// the ids that changed, original → final, for the foreign keys pointing at them.
fn assign<E: Diffable>(
    targets: &mut [E],
    current: &[E],
    explicit: &HashSet<Uuid>,
    select_tags: &[String],
) -> HashMap<Uuid, Uuid> {
    let managed: Vec<&E> = current
        .iter()
        .filter(|entity| carries_all(entity.tags(), select_tags))
        .collect();
    let by_id: HashMap<Uuid, &E> = managed
        .iter()
        .map(|entity| (entity.id(), *entity))
        .collect();
    let mut by_key: HashMap<String, &E> = HashMap::new();
    for entity in &managed {
        for key in entity.match_keys() {
            by_key.entry(key).or_insert(*entity);
        }
    }

    // The current entity each target entity is matched to, as (id, created_at). Explicit ids
    // first, so that a name cannot claim an entity an explicit id names.
    let mut matched: Vec<Option<(Uuid, i64)>> = vec![None; targets.len()];
    let mut claimed: HashSet<Uuid> = HashSet::new();
    for (slot, entity) in matched.iter_mut().zip(targets.iter()) {
        if !explicit.contains(&entity.id()) {
            continue;
        }
        if let Some(found) = by_id.get(&entity.id()) {
            claimed.insert(found.id());
            *slot = Some((found.id(), found.created_at()));
        }
    }
    for (slot, entity) in matched.iter_mut().zip(targets.iter()) {
        if explicit.contains(&entity.id()) {
            continue;
        }
        let keys = entity.match_keys();
        let found = if keys.is_empty() {
            by_id
                .get(&entity.id())
                .filter(|found| !claimed.contains(&found.id()))
                .copied()
        } else {
            keys.iter().find_map(|key| {
                by_key
                    .get(key)
                    .filter(|found| !claimed.contains(&found.id()))
                    .copied()
            })
        };
        if let Some(found) = found {
            claimed.insert(found.id());
            *slot = Some((found.id(), found.created_at()));
        }
    }

    // Every id of the kind in the store counts as taken, even outside the select tags: an
    // entity matched by nothing must not land on (and overwrite) an existing one.
    let stored: HashSet<Uuid> = current.iter().map(|entity| entity.id()).collect();
    let mut taken: HashSet<Uuid> = claimed;
    taken.extend(
        targets
            .iter()
            .map(|entity| entity.id())
            .filter(|id| explicit.contains(id)),
    );
    let mut changed = HashMap::new();
    for (entity, found) in targets.iter_mut().zip(&matched) {
        let original = entity.id();
        match found {
            Some((id, created_at)) => {
                if original != *id {
                    changed.insert(original, *id);
                    entity.set_id(*id);
                }
                entity.set_created_at(*created_at);
            }
            None if explicit.contains(&original) => {}
            None => {
                if stored.contains(&original) || taken.contains(&original) {
                    let fresh = fresh_id(original, |candidate| {
                        stored.contains(&candidate) || taken.contains(&candidate)
                    });
                    changed.insert(original, fresh);
                    entity.set_id(fresh);
                    taken.insert(fresh);
                } else {
                    taken.insert(original);
                }
            }
        }
    }
    changed
}

/// A new id for an entity whose generated one is taken: derived from it, so diffing the same
/// state twice gives the same plan.
fn fresh_id(id: Uuid, taken: impl Fn(Uuid) -> bool) -> Uuid {
    let mut candidate = id;
    loop {
        candidate = Uuid::new_v5(&ID_NAMESPACE, format!("reassigned:{candidate}").as_bytes());
        if !taken(candidate) {
            return candidate;
        }
    }
}

fn remap(key: &mut Option<ForeignKey>, changed: &HashMap<Uuid, Uuid>) {
    if let Some(key) = key {
        if let Some(id) = changed.get(&key.id) {
            key.id = *id;
        }
    }
}

/// decK's select tags: an entity is managed when it carries every one of them.
fn carries_all(tags: Option<&[String]>, select_tags: &[String]) -> bool {
    select_tags
        .iter()
        .all(|tag| tags.is_some_and(|tags| tags.contains(tag)))
}

fn explicit_ids(content: &Content) -> ExplicitIds {
    let mut ids = ExplicitIds::default();
    for service in &content.services {
        ids.services.extend(explicit_id(&service.fields));
        add_plugin_ids(&mut ids.plugins, &service.plugins);
        for route in &service.routes {
            ids.routes.extend(explicit_id(&route.fields));
            add_plugin_ids(&mut ids.plugins, &route.plugins);
        }
    }
    for route in &content.routes {
        ids.routes.extend(explicit_id(&route.fields));
        add_plugin_ids(&mut ids.plugins, &route.plugins);
    }
    for consumer in &content.consumers {
        ids.consumers.extend(explicit_id(&consumer.fields));
        add_plugin_ids(&mut ids.plugins, &consumer.plugins);
        for credential in &consumer.credentials {
            ids.credentials.extend(explicit_id(&credential.fields));
        }
    }
    add_plugin_ids(&mut ids.plugins, &content.plugins);
    ids
}

fn add_plugin_ids(ids: &mut HashSet<Uuid>, plugins: &[FPlugin]) {
    for plugin in plugins {
        ids.extend(explicit_id(&plugin.fields));
    }
}

/// An `id` written in the file, as the resolver reads it.
fn explicit_id(fields: &Map<String, Value>) -> Option<Uuid> {
    fields
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok())
}

// === comparing ===

/// The changes of one kind: creates and updates into `upserts`, deletes into `deletes`.
/// `names` are (target's, current's).
fn compare<E: Diffable>(
    current: &[E],
    target: &[E],
    select_tags: &[String],
    names: (&Names, &Names),
    upserts: &mut Vec<Change>,
    deletes: &mut Vec<Change>,
) {
    let (target_names, current_names) = names;
    let managed: HashMap<Uuid, &E> = current
        .iter()
        .filter(|entity| carries_all(entity.tags(), select_tags))
        .map(|entity| (entity.id(), entity))
        .collect();
    let mut wanted = HashSet::new();
    for entity in target {
        wanted.insert(entity.id());
        let new = to_json(entity);
        match managed.get(&entity.id()) {
            Some(existing) => {
                let old = to_json(*existing);
                if normalized(&old) != normalized(&new) {
                    upserts.push(Change {
                        op: Op::Update,
                        kind: E::KIND,
                        id: entity.id(),
                        label: entity.label(target_names),
                        old: Some((*existing).clone().into_any()),
                        new: Some(entity.clone().into_any()),
                    });
                }
            }
            None => upserts.push(Change {
                op: Op::Create,
                kind: E::KIND,
                id: entity.id(),
                label: entity.label(target_names),
                old: None,
                new: Some(entity.clone().into_any()),
            }),
        }
    }
    for entity in current {
        if managed.contains_key(&entity.id()) && !wanted.contains(&entity.id()) {
            deletes.push(Change {
                op: Op::Delete,
                kind: E::KIND,
                id: entity.id(),
                label: entity.label(current_names),
                old: Some(entity.clone().into_any()),
                new: None,
            });
        }
    }
}

/// A kind's level in [`DEPENDENCY_ORDER`].
fn level(kind: EntityKind) -> usize {
    DEPENDENCY_ORDER
        .iter()
        .position(|kinds| kinds.contains(&kind))
        .unwrap_or(DEPENDENCY_ORDER.len())
}

fn to_json<E: Serialize>(entity: &E) -> Value {
    // The domain types have only string map keys, so serializing them cannot fail.
    serde_json::to_value(entity).unwrap_or(Value::Null)
}

/// An entity as it is compared and shown: without the timestamps, which every write changes,
/// and with tags as decK compares them, sorted and `null` when empty.
fn normalized(entity: &Value) -> Value {
    let mut entity = entity.clone();
    if let Value::Object(fields) = &mut entity {
        fields.remove("created_at");
        fields.remove("updated_at");
        let no_tags = matches!(fields.get("tags"), Some(Value::Array(tags)) if tags.is_empty());
        if no_tags {
            fields.insert("tags".to_owned(), Value::Null);
        } else if let Some(Value::Array(tags)) = fields.get_mut("tags") {
            tags.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
    }
    entity
}

fn name_of(names: &HashMap<Uuid, String>, id: Uuid) -> String {
    names.get(&id).cloned().unwrap_or_else(|| id.to_string())
}

// === rendering ===

fn push_line(out: &mut String, color: Option<&str>, line: &str) {
    match color {
        Some(code) => {
            out.push_str(code);
            out.push_str(line);
            out.push_str(RESET);
        }
        None => out.push_str(line),
    }
    out.push('\n');
}

/// The lines between `updating ... {` and ` }`.
fn field_diff(old: &Value, new: &Value) -> Vec<String> {
    let mut writer = DiffWriter::default();
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => writer.object(1, old, new),
        // Not entities; shown whole rather than dropped.
        _ => {
            writer.value('-', 1, None, old, false);
            writer.value('+', 1, None, new, false);
        }
    }
    writer.lines
}

/// The keys that differ between two objects, sorted.
fn object_entries<'a>(old: &'a Map<String, Value>, new: &'a Map<String, Value>) -> Vec<Entry<'a>> {
    let keys: BTreeSet<&'a str> = old.keys().chain(new.keys()).map(String::as_str).collect();
    let mut entries = Vec::new();
    for key in keys {
        let entry = match (old.get(key), new.get(key)) {
            (Some(old_value), Some(new_value)) if old_value == new_value => continue,
            (Some(Value::Object(old_fields)), Some(Value::Object(new_fields))) => {
                Entry::Object(key, old_fields, new_fields)
            }
            (Some(Value::Array(old_items)), Some(Value::Array(new_items))) => {
                Entry::Array(key, old_items.as_slice(), new_items.as_slice())
            }
            (Some(old_value), Some(new_value)) => Entry::Modified(key, old_value, new_value),
            (Some(old_value), None) => Entry::Removed(Some(key), old_value),
            (None, Some(new_value)) => Entry::Added(Some(key), new_value),
            (None, None) => continue,
        };
        entries.push(entry);
    }
    entries
}

/// Every item of two arrays, kept, removed or added: a longest common subsequence, so that an
/// item added in the middle shows as one `+` line rather than a rewrite of the tail. On a tie
/// the removal comes first, as a changed value shows `-` before `+`.
fn array_entries<'a>(old: &'a [Value], new: &'a [Value]) -> Vec<Entry<'a>> {
    let (n_old, n_new) = (old.len(), new.len());
    // common[i][j]: the length of a longest common subsequence of old[i..] and new[j..].
    let mut common = vec![vec![0usize; n_new + 1]; n_old + 1];
    for i in (0..n_old).rev() {
        for j in (0..n_new).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let mut entries = Vec::with_capacity(n_old.max(n_new));
    let (mut i, mut j) = (0, 0);
    while i < n_old || j < n_new {
        if i < n_old && j < n_new && old[i] == new[j] {
            entries.push(Entry::Same(None, &old[i]));
            i += 1;
            j += 1;
        } else if i < n_old && (j == n_new || common[i + 1][j] >= common[i][j + 1]) {
            entries.push(Entry::Removed(None, &old[i]));
            i += 1;
        } else {
            entries.push(Entry::Added(None, &new[j]));
            j += 1;
        }
    }
    entries
}

/// `"key": ` for an object member, nothing for an array item.
fn key_prefix(key: Option<&str>) -> String {
    key.map_or_else(String::new, |key| format!("{}: ", Value::from(key)))
}

#[cfg(test)]
mod tests;
