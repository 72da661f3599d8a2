//! Domain types for the Kong entities Sluice stores: the four core entities and the consumer
//! credentials of the auth plugins (key-auth keys, basic-auth passwords, ACL groups).
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
    #[serde(rename = "key-auth")]
    KeyAuth,
    #[serde(rename = "basic-auth")]
    BasicAuth,
    Acl,
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
    /// WebSocket (Kong Enterprise's): a route that takes only WebSocket handshakes, a
    /// service reached with one.
    Ws,
    Wss,
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

/// A key-auth credential (Kong's `keyauth_credentials`): one API key of a consumer. Kong keeps
/// keys in clear (they are looked up on every request); so does Sluice, in a file only its
/// owner can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyAuth {
    pub id: Uuid,
    pub created_at: i64,
    pub consumer: ForeignKey,
    pub key: String,
    /// Seconds after `created_at` when the key stops authenticating.
    pub ttl: Option<u32>,
    pub tags: Option<Vec<String>>,
}

/// A basic-auth credential (Kong's `basicauth_credentials`). `password` is the hash Kong
/// stores ([`crate::credentials::hash_password`]), never the password.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BasicAuth {
    pub id: Uuid,
    pub created_at: i64,
    pub consumer: ForeignKey,
    pub username: String,
    pub password: String,
    pub tags: Option<Vec<String>>,
    /// The password as the input gave it, before hashing (never serialized): lets a sync of a
    /// dumped file, which carries the stored hash, match the stored credential.
    #[serde(skip)]
    pub password_as_written: Option<String>,
}

/// An ACL group membership of a consumer (Kong's `acls`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acl {
    pub id: Uuid,
    pub created_at: i64,
    pub consumer: ForeignKey,
    pub group: String,
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
    KeyAuth(KeyAuth),
    BasicAuth(BasicAuth),
    Acl(Acl),
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
    /// The consumer a credential belongs to (`None` for the core entities).
    fn owner(&self) -> Option<Uuid> {
        None
    }
    /// After an update built from a stored entity: keeps what the update did not give again
    /// and cannot be read back (a basic-auth password hash, which hashing again would break).
    fn keep_secrets_of(
        &mut self,
        _stored: &Self,
        _input: &serde_json::Map<String, serde_json::Value>,
    ) {
    }
}

// === impl EntityKind ===

impl EntityKind {
    pub const ALL: [EntityKind; 7] = [
        EntityKind::Consumer,
        EntityKind::Service,
        EntityKind::Route,
        EntityKind::Plugin,
        EntityKind::KeyAuth,
        EntityKind::BasicAuth,
        EntityKind::Acl,
    ];

    /// The consumer credentials, which live under a consumer.
    pub const CREDENTIALS: [EntityKind; 3] =
        [EntityKind::KeyAuth, EntityKind::BasicAuth, EntityKind::Acl];

    /// The table name, which is also Kong's DAO name and decK's key (`keyauth_credentials`).
    pub fn collection(self) -> &'static str {
        match self {
            EntityKind::Service => "services",
            EntityKind::Route => "routes",
            EntityKind::Consumer => "consumers",
            EntityKind::Plugin => "plugins",
            EntityKind::KeyAuth => "keyauth_credentials",
            EntityKind::BasicAuth => "basicauth_credentials",
            EntityKind::Acl => "acls",
        }
    }

    /// The Admin API's top-level collection (`/key-auths`).
    pub fn endpoint(self) -> &'static str {
        match self {
            EntityKind::KeyAuth => "key-auths",
            EntityKind::BasicAuth => "basic-auths",
            other => other.collection(),
        }
    }

    /// The collection under a consumer (`/consumers/{c}/key-auth`), as Kong names it.
    pub fn nested_endpoint(self) -> &'static str {
        match self {
            EntityKind::KeyAuth => "key-auth",
            EntityKind::BasicAuth => "basic-auth",
            other => other.collection(),
        }
    }

    /// The singular name decK prints (`creating service x`).
    pub fn singular(self) -> &'static str {
        match self {
            EntityKind::Service => "service",
            EntityKind::Route => "route",
            EntityKind::Consumer => "consumer",
            EntityKind::Plugin => "plugin",
            EntityKind::KeyAuth => "key-auth",
            EntityKind::BasicAuth => "basic-auth",
            EntityKind::Acl => "acl-group",
        }
    }

    /// The field a non-UUID key in a URL is looked up by.
    pub fn endpoint_key(self) -> &'static str {
        match self {
            EntityKind::Service | EntityKind::Route => "name",
            EntityKind::Consumer | EntityKind::BasicAuth => "username",
            EntityKind::Plugin => "instance_name",
            EntityKind::KeyAuth => "key",
            EntityKind::Acl => "group",
        }
    }

    /// Whether the entity has `updated_at` (Kong's credentials do not).
    pub fn has_updated_at(self) -> bool {
        !self.is_credential()
    }

    pub fn is_credential(self) -> bool {
        Self::CREDENTIALS.contains(&self)
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
            Protocol::Ws => "ws",
            Protocol::Wss => "wss",
        }
    }
}

// === impl Entity ===

/// `impl Entity`: the endpoint key as an expression of the entity, then any methods the kind
/// overrides. A credential (`credential Kind, ...`) also names its consumer as its owner.
macro_rules! entity_impl {
    ($ty:ident, $kind:expr, |$e:ident| $key:expr $(, $extra:item)*) => {
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
                let $e = self;
                $key
            }
            fn into_any(self) -> AnyEntity {
                AnyEntity::$ty(self)
            }
            $($extra)*
        }
    };
    (credential $ty:ident, $kind:expr, |$e:ident| $key:expr $(, $extra:item)*) => {
        entity_impl!($ty, $kind, |$e| $key,
            fn owner(&self) -> Option<Uuid> {
                Some(self.consumer.id)
            }
            $(, $extra)*
        );
    };
}

entity_impl!(Service, EntityKind::Service, |e| e.name.as_deref());
entity_impl!(Route, EntityKind::Route, |e| e.name.as_deref());
entity_impl!(Consumer, EntityKind::Consumer, |e| e.username.as_deref());
entity_impl!(Plugin, EntityKind::Plugin, |e| e.instance_name.as_deref());
entity_impl!(credential KeyAuth, EntityKind::KeyAuth, |e| Some(&e.key));
entity_impl!(credential Acl, EntityKind::Acl, |e| Some(&e.group));
entity_impl!(
    credential BasicAuth,
    EntityKind::BasicAuth,
    |e| Some(&e.username),
    /// An update that does not give the password again keeps the stored hash (hashing the
    /// hash would lock the consumer out), unless the credential moved to another consumer,
    /// whose id salts the hash.
    fn keep_secrets_of(&mut self, stored: &Self, input: &serde_json::Map<String, serde_json::Value>) {
        if !input.contains_key("password") && self.consumer == stored.consumer {
            self.password = stored.password.clone();
        }
    }
);

/// Two basic-auth credentials are the same when their stored fields are (the password as
/// written is only input).
impl PartialEq for BasicAuth {
    fn eq(&self, other: &Self) -> bool {
        (
            self.id,
            self.created_at,
            self.consumer,
            &self.username,
            &self.password,
            &self.tags,
        ) == (
            other.id,
            other.created_at,
            other.consumer,
            &other.username,
            &other.password,
            &other.tags,
        )
    }
}

// === impl AnyEntity ===

impl AnyEntity {
    pub fn kind(&self) -> EntityKind {
        match self {
            AnyEntity::Service(_) => EntityKind::Service,
            AnyEntity::Route(_) => EntityKind::Route,
            AnyEntity::Consumer(_) => EntityKind::Consumer,
            AnyEntity::Plugin(_) => EntityKind::Plugin,
            AnyEntity::KeyAuth(_) => EntityKind::KeyAuth,
            AnyEntity::BasicAuth(_) => EntityKind::BasicAuth,
            AnyEntity::Acl(_) => EntityKind::Acl,
        }
    }

    pub fn id(&self) -> Uuid {
        match self {
            AnyEntity::Service(e) => e.id,
            AnyEntity::Route(e) => e.id,
            AnyEntity::Consumer(e) => e.id,
            AnyEntity::Plugin(e) => e.id,
            AnyEntity::KeyAuth(e) => e.id,
            AnyEntity::BasicAuth(e) => e.id,
            AnyEntity::Acl(e) => e.id,
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
            EntityKind::KeyAuth => AnyEntity::KeyAuth(serde_json::from_value(value)?),
            EntityKind::BasicAuth => AnyEntity::BasicAuth(serde_json::from_value(value)?),
            EntityKind::Acl => AnyEntity::Acl(serde_json::from_value(value)?),
        })
    }
}

// === impl Acl ===

impl Acl {
    /// Kong's cache key of an ACL: one row per (consumer, group).
    pub fn cache_key(&self) -> String {
        format!(
            "{{consumer={{id=\"{}\"}},group=\"{}\"}}",
            self.consumer.id, self.group
        )
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
    /// Credentials; absent in a snapshot from a build before they existed.
    #[serde(default)]
    pub keyauth_credentials: Vec<KeyAuth>,
    #[serde(default)]
    pub basicauth_credentials: Vec<BasicAuth>,
    #[serde(default)]
    pub acls: Vec<Acl>,
}

/// Everything in a config at one version: what a data plane compiles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version: u64,
    pub entities: Entities,
}
