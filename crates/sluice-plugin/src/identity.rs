//! Who is calling: the consumers and credentials of one config version, indexed for the
//! request path, and what authenticating a request does to it.
//!
//! Built once per snapshot ([`Identities::new`]); an auth plugin's lookup is one hash-map hit,
//! never a database read.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use sluice_model::Entities;
use uuid::Uuid;

use crate::{ProxyRequest, RequestCtx};

/// A consumer as the request path needs it. The upstream headers it gives a request are
/// built once per config version, so authenticating a request allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub id: Uuid,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    /// Its ACL groups, oldest first (by name within one second).
    pub groups: Vec<String>,
    /// `X-Consumer-ID`, `X-Consumer-Username`, `X-Consumer-Custom-ID` (`None` for a field
    /// that is unset or not a valid header value), and `X-Consumer-Groups` (`a, b`).
    pub id_header: HeaderValue,
    pub username_header: Option<HeaderValue>,
    pub custom_id_header: Option<HeaderValue>,
    pub groups_header: Option<HeaderValue>,
}

/// A key-auth key.
#[derive(Debug, Clone)]
pub struct KeyCredential {
    /// Its id, as `X-Credential-Identifier` sends it.
    pub identifier: HeaderValue,
    pub consumer: Arc<ConsumerInfo>,
    /// Unix seconds after which the key no longer authenticates (`created_at + ttl`).
    pub expires_at: Option<i64>,
}

/// A basic-auth credential: the stored hash and its consumer.
#[derive(Debug, Clone)]
pub struct BasicCredential {
    /// Its username, as `X-Credential-Identifier` sends it.
    pub identifier: Option<HeaderValue>,
    pub password_hash: String,
    pub consumer: Arc<ConsumerInfo>,
}

/// The consumers and credentials of one config version.
#[derive(Debug, Default)]
pub struct Identities {
    consumers: HashMap<Uuid, Arc<ConsumerInfo>>,
    by_username: HashMap<String, Arc<ConsumerInfo>>,
    keys: HashMap<String, KeyCredential>,
    basic: HashMap<String, BasicCredential>,
}

/// The consumer a request was authenticated as (Kong's `authenticated_consumer` and
/// `authenticated_credential`).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub consumer: Arc<ConsumerInfo>,
    /// Whether a credential authenticated it (`false` for the anonymous consumer).
    pub credential: bool,
}

static X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
static X_CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
static X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
static X_CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
static X_ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");

// === impl Identities ===

impl Identities {
    pub fn new(entities: &Entities) -> Self {
        let mut groups: HashMap<Uuid, Vec<(i64, &str)>> = HashMap::new();
        for acl in &entities.acls {
            groups
                .entry(acl.consumer.id)
                .or_default()
                .push((acl.created_at, &acl.group));
        }
        let mut consumers = HashMap::with_capacity(entities.consumers.len());
        let mut by_username = HashMap::new();
        for consumer in &entities.consumers {
            let mut mine = groups.remove(&consumer.id).unwrap_or_default();
            mine.sort();
            let groups: Vec<String> = mine.into_iter().map(|(_, g)| g.to_owned()).collect();
            let info = Arc::new(ConsumerInfo {
                id: consumer.id,
                username: consumer.username.clone(),
                custom_id: consumer.custom_id.clone(),
                id_header: uuid_header(consumer.id),
                username_header: header(consumer.username.as_deref()),
                custom_id_header: header(consumer.custom_id.as_deref()),
                groups_header: header(Some(groups.join(", ").as_str()).filter(|g| !g.is_empty())),
                groups,
            });
            if let Some(username) = &consumer.username {
                by_username.insert(username.clone(), info.clone());
            }
            consumers.insert(consumer.id, info);
        }
        let mut keys = HashMap::with_capacity(entities.keyauth_credentials.len());
        for credential in &entities.keyauth_credentials {
            let Some(consumer) = consumers.get(&credential.consumer.id) else {
                continue; // the store's foreign key makes this unreachable
            };
            keys.insert(
                credential.key.clone(),
                KeyCredential {
                    identifier: uuid_header(credential.id),
                    consumer: consumer.clone(),
                    expires_at: credential
                        .ttl
                        .map(|ttl| credential.created_at + i64::from(ttl)),
                },
            );
        }
        let mut basic = HashMap::with_capacity(entities.basicauth_credentials.len());
        for credential in &entities.basicauth_credentials {
            let Some(consumer) = consumers.get(&credential.consumer.id) else {
                continue;
            };
            basic.insert(
                credential.username.clone(),
                BasicCredential {
                    identifier: header(Some(&credential.username)),
                    password_hash: credential.password.clone(),
                    consumer: consumer.clone(),
                },
            );
        }
        Self {
            consumers,
            by_username,
            keys,
            basic,
        }
    }

    /// The consumer an `anonymous` setting names: an id, else a username (Kong's
    /// `load_consumer(anonymous, true)`).
    pub fn consumer(&self, id_or_username: &str) -> Option<&Arc<ConsumerInfo>> {
        match Uuid::parse_str(id_or_username) {
            Ok(id) => self.consumers.get(&id),
            Err(_) => self.by_username.get(id_or_username),
        }
    }

    pub fn consumer_by_id(&self, id: Uuid) -> Option<&Arc<ConsumerInfo>> {
        self.consumers.get(&id)
    }

    /// The key-auth credential of `key`, if it exists and has not expired (the clock is read
    /// only for a key with a `ttl`).
    pub fn key(&self, key: &str) -> Option<&KeyCredential> {
        self.keys.get(key).filter(|credential| {
            credential.expires_at.is_none_or(|at| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                now < at
            })
        })
    }

    pub fn basic(&self, username: &str) -> Option<&BasicCredential> {
        self.basic.get(username)
    }
}

/// A header value, when `text` is set and can be one.
fn header(text: Option<&str>) -> Option<HeaderValue> {
    text.and_then(|t| HeaderValue::from_str(t).ok())
}

fn uuid_header(id: Uuid) -> HeaderValue {
    let mut buffer = Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer))
        .expect("a hyphenated UUID is a valid header value")
}

/// How a request was authenticated.
pub enum Via {
    /// A credential, with its `X-Credential-Identifier` (`None` when it cannot be a header).
    Credential(Option<HeaderValue>),
    /// The plugin's `anonymous` consumer.
    Anonymous,
}

/// Marks the request as coming from `consumer` and sets Kong's upstream headers, as its auth
/// plugins' `set_consumer` does: `X-Consumer-*` from the consumer, `X-Credential-Identifier`
/// for a credential, `X-Anonymous-Consumer: true` for the anonymous consumer; a header with
/// nothing to say is removed, so a client cannot send its own.
pub fn authenticate(
    request: &mut ProxyRequest,
    ctx: &mut RequestCtx,
    consumer: Arc<ConsumerInfo>,
    via: Via,
) {
    let headers = &mut request.parts.headers;
    let mut set = |name: &HeaderName, value: Option<HeaderValue>| {
        match value {
            Some(value) => headers.insert(name.clone(), value),
            None => headers.remove(name),
        };
    };
    set(&X_CONSUMER_ID, Some(consumer.id_header.clone()));
    set(&X_CONSUMER_CUSTOM_ID, consumer.custom_id_header.clone());
    set(&X_CONSUMER_USERNAME, consumer.username_header.clone());
    let (identifier, anonymous) = match via {
        Via::Credential(identifier) => (identifier, false),
        Via::Anonymous => (None, true),
    };
    set(&X_CREDENTIAL_IDENTIFIER, identifier);
    set(
        &X_ANONYMOUS_CONSUMER,
        anonymous.then(|| HeaderValue::from_static("true")),
    );
    ctx.consumer_id = Some(consumer.id);
    ctx.consumer = Some(Authenticated {
        consumer,
        credential: !anonymous,
    });
}
