//! Domain types for the four Kong core entities Sluice stores.
//!
//! These are the canonical, validated form: every field Kong has, defaults filled, unset
//! optional fields as `None` (rendered as JSON `null`, as Kong renders them). They are produced
//! only by [`crate::Schemas::build`], so holding one means it passed the schema and entity checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The entity kinds of the control plane, in dependency order (a kind may only reference kinds
/// before it... except plugins, which reference all three). Serialized as the singular name
/// decK prints (`service`), as in a sync plan sent to the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Consumer,
    Service,
    Route,
    Plugin,
}

/// A foreign key as Kong renders it: `{"id": "<uuid>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ForeignKey {
    pub id: Uuid,
}

/// A protocol of a service, route or plugin (Kong's `protocols` typedef), serialized as Kong
/// spells it (`tls_passthrough`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Grpc,
    Grpcs,
    Http,
    Https,
    Tcp,
    Tls,
    TlsPassthrough,
    Udp,
}

/// How a route joins the service path and the request path (Kong's `path_handling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathHandling {
    V0,
    V1,
}

/// A stream route source or destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CidrPort {
    pub ip: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: Uuid,
    pub created_at: i64,
    pub updated_at: i64,
    pub name: Option<String>,
    pub retries: u16,
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub connect_timeout: u32,
    pub write_timeout: u32,
    pub read_timeout: u32,
    pub tags: Option<Vec<String>>,
    pub client_certificate: Option<ForeignKey>,
    pub tls_verify: Option<bool>,
    pub tls_verify_depth: Option<u8>,
    pub ca_certificates: Option<Vec<Uuid>>,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub id: Uuid,
    pub created_at: i64,
    pub updated_at: i64,
    pub name: Option<String>,
    pub protocols: Vec<Protocol>,
    pub methods: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    pub https_redirect_status_code: u16,
    pub regex_priority: i64,
    pub strip_path: bool,
    pub path_handling: PathHandling,
    pub preserve_host: bool,
    pub request_buffering: bool,
    pub response_buffering: bool,
    pub snis: Option<Vec<String>>,
    pub sources: Option<Vec<CidrPort>>,
    pub destinations: Option<Vec<CidrPort>>,
    pub tags: Option<Vec<String>>,
    pub service: Option<ForeignKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consumer {
    pub id: Uuid,
    pub created_at: i64,
    pub updated_at: i64,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// A plugin instance. `config` stays JSON here: its shape belongs to the plugin, and the data
/// plane deserializes it into the plugin's own typed config when a snapshot compiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plugin {
    pub id: Uuid,
    pub created_at: i64,
    pub updated_at: i64,
    pub name: String,
    pub instance_name: Option<String>,
    pub route: Option<ForeignKey>,
    pub service: Option<ForeignKey>,
    pub consumer: Option<ForeignKey>,
    pub config: serde_json::Value,
    pub protocols: Vec<Protocol>,
    pub enabled: bool,
    pub tags: Option<Vec<String>>,
}

/// One entity of any kind, as a sync plan's change carries it. Serialized as the entity
/// alone (its kind travels beside it, in the change).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnyEntity {
    Service(Service),
    Route(Route),
    Consumer(Consumer),
    Plugin(Plugin),
}

/// What every stored entity offers to generic code (store, Admin API).
pub trait Entity: Serialize + for<'de> Deserialize<'de> + Clone + Send + Sync + 'static {
    const KIND: EntityKind;
    fn id(&self) -> Uuid;
    fn created_at(&self) -> i64;
    fn tags(&self) -> Option<&[String]>;
    /// The value of the entity's endpoint key (name, username, instance_name), if set.
    fn endpoint_key(&self) -> Option<&str>;
    fn into_any(self) -> AnyEntity;
}

// === impl EntityKind ===

impl EntityKind {
    pub const ALL: [EntityKind; 4] = [
        EntityKind::Consumer,
        EntityKind::Service,
        EntityKind::Route,
        EntityKind::Plugin,
    ];

    /// The Admin API collection and table name (`services`, ...).
    pub fn collection(self) -> &'static str {
        match self {
            EntityKind::Service => "services",
            EntityKind::Route => "routes",
            EntityKind::Consumer => "consumers",
            EntityKind::Plugin => "plugins",
        }
    }

    /// The singular name decK prints (`creating service x`).
    pub fn singular(self) -> &'static str {
        match self {
            EntityKind::Service => "service",
            EntityKind::Route => "route",
            EntityKind::Consumer => "consumer",
            EntityKind::Plugin => "plugin",
        }
    }

    /// The field a non-UUID key in a URL is looked up by.
    pub fn endpoint_key(self) -> &'static str {
        match self {
            EntityKind::Service | EntityKind::Route => "name",
            EntityKind::Consumer => "username",
            EntityKind::Plugin => "instance_name",
        }
    }

    pub fn from_collection(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.collection() == name)
    }
}

// === impl Protocol ===

impl Protocol {
    /// Kong's spelling, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Grpcs => "grpcs",
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::TlsPassthrough => "tls_passthrough",
            Protocol::Udp => "udp",
        }
    }
}

// === impl Entity ===

macro_rules! entity_impl {
    ($ty:ident, $kind:expr, $key:ident) => {
        impl Entity for $ty {
            const KIND: EntityKind = $kind;
            fn id(&self) -> Uuid {
                self.id
            }
            fn created_at(&self) -> i64 {
                self.created_at
            }
            fn tags(&self) -> Option<&[String]> {
                self.tags.as_deref()
            }
            fn endpoint_key(&self) -> Option<&str> {
                self.$key.as_deref()
            }
            fn into_any(self) -> AnyEntity {
                AnyEntity::$ty(self)
            }
        }
    };
}

entity_impl!(Service, EntityKind::Service, name);
entity_impl!(Route, EntityKind::Route, name);
entity_impl!(Consumer, EntityKind::Consumer, username);
entity_impl!(Plugin, EntityKind::Plugin, instance_name);

// === impl AnyEntity ===

impl AnyEntity {
    pub fn kind(&self) -> EntityKind {
        match self {
            AnyEntity::Service(_) => EntityKind::Service,
            AnyEntity::Route(_) => EntityKind::Route,
            AnyEntity::Consumer(_) => EntityKind::Consumer,
            AnyEntity::Plugin(_) => EntityKind::Plugin,
        }
    }

    pub fn id(&self) -> Uuid {
        match self {
            AnyEntity::Service(e) => e.id,
            AnyEntity::Route(e) => e.id,
            AnyEntity::Consumer(e) => e.id,
            AnyEntity::Plugin(e) => e.id,
        }
    }

    /// Reads an entity of `kind` from its JSON (already validated: a plan the CLI computed,
    /// or a change the Admin API validated).
    pub fn from_json(kind: EntityKind, value: serde_json::Value) -> serde_json::Result<Self> {
        Ok(match kind {
            EntityKind::Service => AnyEntity::Service(serde_json::from_value(value)?),
            EntityKind::Route => AnyEntity::Route(serde_json::from_value(value)?),
            EntityKind::Consumer => AnyEntity::Consumer(serde_json::from_value(value)?),
            EntityKind::Plugin => AnyEntity::Plugin(serde_json::from_value(value)?),
        })
    }
}

// === impl Plugin ===

impl Plugin {
    /// Kong's plugin cache key: one plugin of a name per (route, service, consumer) scope.
    /// Rendered the way Kong prints it in a unique violation.
    pub fn cache_key(&self) -> String {
        fn fk(k: &Option<ForeignKey>) -> String {
            match k {
                Some(k) => format!("{{id=\"{}\"}}", k.id),
                None => "null".to_owned(),
            }
        }
        format!(
            "{{consumer={},name=\"{}\",route={},service={}}}",
            fk(&self.consumer),
            self.name,
            fk(&self.route),
            fk(&self.service)
        )
    }
}

/// The validated entities of a config, in Kong's domain types: what a decK file resolves
/// to, what a snapshot holds, what the snapshot endpoint sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entities {
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    pub consumers: Vec<Consumer>,
    pub plugins: Vec<Plugin>,
}

/// Everything in a config at one version: what a data plane compiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version: u64,
    pub entities: Entities,
}
