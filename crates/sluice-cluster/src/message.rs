//! The frames a control plane and a data plane exchange, and the config hash.
//!
//! Every message is one **binary** websocket frame holding `gzip(JSON)`, the JSON being
//! internally tagged by `type` (`{"type":"ping","config_hash":"…"}`), as Kong frames its
//! `reconfigure` payload. Control messages (`ping`, `pong`) are a few dozen bytes; the cost is in
//! `reconfigure`, which carries the whole [`Snapshot`].
//!
//! # Bytes per full snapshot
//! Kong pushes the full config on every change and so do we. The size of one `reconfigure`
//! frame is what every data plane downloads per change; `benches/` in the binary measures it
//! (`encode(...).len()`), and `tests::full_snapshot_size` prints it for 1,000 services + routes.
//! Expect on the order of 100 bytes per service+route pair after gzip: the JSON repeats the
//! same keys for every entity and compresses well, while the random UUIDs (2–3 per entity)
//! do not.
//!
//! After the first push, a change travels as [`Message::Delta`]: the entities that changed and
//! the ids removed, against a base config identified by its hash. For a one-route change at
//! 10,000 services + routes that is ~470 bytes against ~950 KB for the full frame
//! (`tests::delta_is_small_and_exact`). The full push stays the fallback whenever the data
//! plane is not known to serve the delta's base.

use std::io::{self, BufWriter, Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_model::{Acl, BasicAuth, Consumer, KeyAuth, Plugin, Route, Service, Snapshot};

use crate::ClusterError;

/// The config hash of "no config yet" (Kong's `DECLARATIVE_EMPTY_CONFIG_HASH`): what a fresh data
/// plane reports before its first config.
pub const EMPTY_CONFIG_HASH: &str = "00000000000000000000000000000000";

/// The version a node announces in `basic_info` and checks peers against.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// gzip level 1: entity JSON is so repetitive that the fastest level already gets most of the
/// ratio, and the control plane encodes a 100k-route config on every change.
const COMPRESSION_LEVEL: u32 = 1;

/// The largest uncompressed message a data plane accepts: a bound on gzip bombs that still
/// leaves room for several hundred thousand entities.
pub(crate) const MAX_DECODED_BYTES: usize = 1 << 30;

/// One frame of the cluster protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// DP → CP, first frame of every connection.
    BasicInfo {
        node_id: String,
        hostname: String,
        /// The data plane's `CARGO_PKG_VERSION`.
        version: String,
        plugins: Vec<String>,
    },
    /// CP → DP: the full config, on connect and on every change.
    Reconfigure {
        version: u64,
        /// [`config_hash`] of `snapshot`.
        config_hash: String,
        #[serde(with = "wire_snapshot")]
        snapshot: Snapshot,
    },
    /// CP → DP: only what changed since the config whose hash is `base_hash`. Sent to a data
    /// plane known to serve exactly that base; any other gets the full `Reconfigure`.
    Delta {
        version: u64,
        base_hash: String,
        /// [`config_hash`] of the config after the change, which the data plane verifies.
        config_hash: String,
        changes: DeltaChanges,
    },
    /// DP → CP every ping interval, and right after applying a config.
    Ping { config_hash: String },
    /// CP → DP, the answer to every `Ping`.
    Pong,
    /// CP → DP before closing: the data plane may not connect (version incompatible, …).
    Refused { reason: String },
}

/// Why a data plane may not join a control plane.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IncompatibleVersion(pub String);

/// `Reconfigure` serialized from borrows: the control plane encodes the snapshot it shares with
/// the store feed without cloning 100k routes. Same JSON as `Message::Reconfigure`.
#[derive(Serialize)]
#[serde(tag = "type", rename = "reconfigure")]
struct ReconfigureRef<'a> {
    version: u64,
    config_hash: &'a str,
    snapshot: wire_snapshot::SnapshotRef<'a>,
}

/// The hashed form of a snapshot: entities sorted by id and without the version, so the hash
/// names the content (a no-op sync or a store that lists rows in another order hashes the same,
/// and data planes skip the recompile).
#[derive(Serialize)]
struct Canonical<'a> {
    services: Vec<&'a Service>,
    routes: Vec<&'a Route>,
    consumers: Vec<&'a Consumer>,
    plugins: Vec<SortedKeys<'a>>,
    keyauth_credentials: Vec<&'a KeyAuth>,
    basicauth_credentials: Vec<&'a BasicAuth>,
    acls: Vec<&'a Acl>,
}

/// A JSON value written with object keys in sorted order. Plugin configs keep their input key
/// order (`preserve_order`), which must not change the hash.
struct SortedKeys<'a>(&'a Value);

/// Feeds serialized bytes straight into the hasher: no 100 MB intermediate string.
struct HashWriter(Sha256);

/// [`Snapshot`] has no serde derive (the model keeps boundary formats out of the domain type);
/// this is its wire form. It names every field, so a field added to `Snapshot` fails to compile
/// here instead of silently not reaching data planes.
mod wire_snapshot {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use sluice_model::{Acl, BasicAuth, Consumer, KeyAuth, Plugin, Route, Service, Snapshot};

    #[derive(Serialize)]
    pub(super) struct SnapshotRef<'a> {
        version: u64,
        services: &'a [Service],
        routes: &'a [Route],
        consumers: &'a [Consumer],
        plugins: &'a [Plugin],
        keyauth_credentials: &'a [KeyAuth],
        basicauth_credentials: &'a [BasicAuth],
        acls: &'a [Acl],
    }

    /// Credentials default to none: a control plane of an older build sends no such lists.
    #[derive(Deserialize)]
    struct SnapshotOwned {
        version: u64,
        services: Vec<Service>,
        routes: Vec<Route>,
        consumers: Vec<Consumer>,
        plugins: Vec<Plugin>,
        #[serde(default)]
        keyauth_credentials: Vec<KeyAuth>,
        #[serde(default)]
        basicauth_credentials: Vec<BasicAuth>,
        #[serde(default)]
        acls: Vec<Acl>,
    }

    impl<'a> SnapshotRef<'a> {
        pub(super) fn new(snapshot: &'a Snapshot) -> Self {
            SnapshotRef {
                version: snapshot.version,
                services: &snapshot.entities.services,
                routes: &snapshot.entities.routes,
                consumers: &snapshot.entities.consumers,
                plugins: &snapshot.entities.plugins,
                keyauth_credentials: &snapshot.entities.keyauth_credentials,
                basicauth_credentials: &snapshot.entities.basicauth_credentials,
                acls: &snapshot.entities.acls,
            }
        }
    }

    pub(super) fn serialize<S: Serializer>(
        snapshot: &Snapshot,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        SnapshotRef::new(snapshot).serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Snapshot, D::Error> {
        let wire = SnapshotOwned::deserialize(deserializer)?;
        Ok(Snapshot {
            version: wire.version,
            entities: sluice_model::Entities {
                services: wire.services,
                routes: wire.routes,
                consumers: wire.consumers,
                plugins: wire.plugins,
                keyauth_credentials: wire.keyauth_credentials,
                basicauth_credentials: wire.basicauth_credentials,
                acls: wire.acls,
            },
        })
    }
}

/// Encodes one frame: gzip(JSON).
pub fn encode(message: &Message) -> Result<Vec<u8>, ClusterError> {
    gzip_json(message)
}

/// Decodes one frame. Refuses frames that inflate past 1 GiB.
pub fn decode(frame: &[u8]) -> Result<Message, ClusterError> {
    decode_limited(frame, MAX_DECODED_BYTES)
}

/// What changed between two configs: entities added or changed (whole), and ids removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeltaChanges {
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    pub consumers: Vec<Consumer>,
    pub plugins: Vec<Plugin>,
    #[serde(default)]
    pub keyauth_credentials: Vec<KeyAuth>,
    #[serde(default)]
    pub basicauth_credentials: Vec<BasicAuth>,
    #[serde(default)]
    pub acls: Vec<Acl>,
    /// `(kind, id)`; kind is the collection name (`routes`).
    pub deleted: Vec<(String, uuid::Uuid)>,
}

// === impl DeltaChanges ===

impl DeltaChanges {
    /// The changes that turn `old` into `new`.
    pub fn between(old: &Snapshot, new: &Snapshot) -> Self {
        let mut changes = Self::default();
        diff_list(
            &old.entities.services,
            &new.entities.services,
            |e| e.id,
            "services",
            &mut changes.services,
            &mut changes.deleted,
        );
        diff_list(
            &old.entities.routes,
            &new.entities.routes,
            |e| e.id,
            "routes",
            &mut changes.routes,
            &mut changes.deleted,
        );
        diff_list(
            &old.entities.consumers,
            &new.entities.consumers,
            |e| e.id,
            "consumers",
            &mut changes.consumers,
            &mut changes.deleted,
        );
        diff_list(
            &old.entities.plugins,
            &new.entities.plugins,
            |e| e.id,
            "plugins",
            &mut changes.plugins,
            &mut changes.deleted,
        );
        diff_list(
            &old.entities.keyauth_credentials,
            &new.entities.keyauth_credentials,
            |e| e.id,
            "keyauth_credentials",
            &mut changes.keyauth_credentials,
            &mut changes.deleted,
        );
        diff_list(
            &old.entities.basicauth_credentials,
            &new.entities.basicauth_credentials,
            |e| e.id,
            "basicauth_credentials",
            &mut changes.basicauth_credentials,
            &mut changes.deleted,
        );
        diff_list(
            &old.entities.acls,
            &new.entities.acls,
            |e| e.id,
            "acls",
            &mut changes.acls,
            &mut changes.deleted,
        );
        changes
    }

    /// `base` with these changes applied, at `version`. Lists stay sorted by id, as the
    /// store produces them.
    pub fn apply(&self, base: &Snapshot, version: u64) -> Snapshot {
        let deleted = |kind: &str| -> std::collections::HashSet<uuid::Uuid> {
            self.deleted
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, id)| *id)
                .collect()
        };
        let entities = sluice_model::Entities {
            services: patch_list(
                &base.entities.services,
                &self.services,
                &deleted("services"),
                |e| e.id,
            ),
            routes: patch_list(
                &base.entities.routes,
                &self.routes,
                &deleted("routes"),
                |e| e.id,
            ),
            consumers: patch_list(
                &base.entities.consumers,
                &self.consumers,
                &deleted("consumers"),
                |e| e.id,
            ),
            plugins: patch_list(
                &base.entities.plugins,
                &self.plugins,
                &deleted("plugins"),
                |e| e.id,
            ),
            keyauth_credentials: patch_list(
                &base.entities.keyauth_credentials,
                &self.keyauth_credentials,
                &deleted("keyauth_credentials"),
                |e| e.id,
            ),
            basicauth_credentials: patch_list(
                &base.entities.basicauth_credentials,
                &self.basicauth_credentials,
                &deleted("basicauth_credentials"),
                |e| e.id,
            ),
            acls: patch_list(&base.entities.acls, &self.acls, &deleted("acls"), |e| e.id),
        };
        Snapshot { version, entities }
    }

    pub fn len(&self) -> usize {
        self.services.len()
            + self.routes.len()
            + self.consumers.len()
            + self.plugins.len()
            + self.keyauth_credentials.len()
            + self.basicauth_credentials.len()
            + self.acls.len()
            + self.deleted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn diff_list<E: Clone + PartialEq>(
    old: &[E],
    new: &[E],
    id: impl Fn(&E) -> uuid::Uuid,
    kind: &str,
    upserts: &mut Vec<E>,
    deleted: &mut Vec<(String, uuid::Uuid)>,
) {
    let before: std::collections::HashMap<uuid::Uuid, &E> =
        old.iter().map(|e| (id(e), e)).collect();
    let after: std::collections::HashSet<uuid::Uuid> = new.iter().map(&id).collect();
    for entity in new {
        if before
            .get(&id(entity))
            .is_none_or(|previous| *previous != entity)
        {
            upserts.push(entity.clone());
        }
    }
    for entity in old {
        if !after.contains(&id(entity)) {
            deleted.push((kind.to_owned(), id(entity)));
        }
    }
}

fn patch_list<E: Clone>(
    base: &[E],
    upserts: &[E],
    deleted: &std::collections::HashSet<uuid::Uuid>,
    id: impl Fn(&E) -> uuid::Uuid,
) -> Vec<E> {
    let replaced: std::collections::HashMap<uuid::Uuid, &E> =
        upserts.iter().map(|e| (id(e), e)).collect();
    let mut out: Vec<E> = base
        .iter()
        .filter(|e| !deleted.contains(&id(e)) && !replaced.contains_key(&id(e)))
        .cloned()
        .collect();
    out.extend(upserts.iter().cloned());
    out.sort_by_key(|e| id(e));
    out
}

/// The `Reconfigure` frame for `snapshot`, encoded from borrows (see [`ReconfigureRef`]).
pub(crate) fn encode_reconfigure(
    snapshot: &Snapshot,
    config_hash: &str,
) -> Result<Vec<u8>, ClusterError> {
    gzip_json(&ReconfigureRef {
        version: snapshot.version,
        config_hash,
        snapshot: wire_snapshot::SnapshotRef::new(snapshot),
    })
}

/// [`decode`] with a caller-chosen bound on the inflated size (the control plane only expects
/// small frames from data planes).
pub(crate) fn decode_limited(frame: &[u8], limit: usize) -> Result<Message, ClusterError> {
    let json = gunzip(frame, limit)?;
    serde_json::from_slice(&json)
        .map_err(|error| ClusterError::Decode(format!("invalid JSON: {error}")))
}

/// The identity of a config's content: sha256 of its canonical JSON (entities sorted by id,
/// object keys sorted, version left out), first 32 hex characters (the length of Kong's md5
/// hashes, so the `/clustering/data-planes` column looks the same).
pub fn config_hash(snapshot: &Snapshot) -> String {
    let mut services: Vec<&Service> = snapshot.entities.services.iter().collect();
    services.sort_by_key(|service| service.id);
    let mut routes: Vec<&Route> = snapshot.entities.routes.iter().collect();
    routes.sort_by_key(|route| route.id);
    let mut consumers: Vec<&Consumer> = snapshot.entities.consumers.iter().collect();
    consumers.sort_by_key(|consumer| consumer.id);
    let mut plugins: Vec<&Plugin> = snapshot.entities.plugins.iter().collect();
    plugins.sort_by_key(|plugin| plugin.id);
    // Whole plugins go through `Value` (not just `config`) so a field added to `Plugin` is hashed
    // without this code knowing about it.
    let plugin_values: Vec<Value> = plugins
        .iter()
        .map(|plugin| {
            serde_json::to_value(plugin).expect("a plugin is plain data with string keys")
        })
        .collect();
    let e = &snapshot.entities;
    let canonical = Canonical {
        services,
        routes,
        consumers,
        plugins: plugin_values.iter().map(SortedKeys).collect(),
        keyauth_credentials: by_id(&e.keyauth_credentials, |c| c.id),
        basicauth_credentials: by_id(&e.basicauth_credentials, |c| c.id),
        acls: by_id(&e.acls, |c| c.id),
    };
    let mut hasher = HashWriter(Sha256::new());
    // Cannot fail: the writer never errors and every map key is a string.
    serde_json::to_writer(&mut hasher, &canonical)
        .expect("entity JSON serialization is infallible");
    let digest = hasher.0.finalize();
    hex(&digest[..16])
}

fn by_id<E>(list: &[E], id: impl Fn(&E) -> uuid::Uuid) -> Vec<&E> {
    let mut sorted: Vec<&E> = list.iter().collect();
    sorted.sort_by_key(|e| id(e));
    sorted
}

/// Kong's rule (`control_plane.lua`): same major, and a data plane may not be newer than its
/// control plane (its minor ≤ ours). Patch versions never matter.
pub fn check_version_compat(
    control_plane: &str,
    data_plane: &str,
) -> Result<(), IncompatibleVersion> {
    let Some((cp_major, cp_minor)) = major_minor(control_plane) else {
        return Err(IncompatibleVersion(format!(
            "control plane version {control_plane:?} is not a valid version"
        )));
    };
    let Some((dp_major, dp_minor)) = major_minor(data_plane) else {
        return Err(IncompatibleVersion(format!(
            "data plane version {data_plane:?} is not a valid version"
        )));
    };
    if dp_major != cp_major {
        return Err(IncompatibleVersion(format!(
            "data plane version {data_plane} is incompatible with control plane version \
             {control_plane} (major versions differ; only {cp_major}.x data planes can connect)"
        )));
    }
    if dp_minor > cp_minor {
        return Err(IncompatibleVersion(format!(
            "data plane version {data_plane} is incompatible with older control plane version \
             {control_plane} (upgrade the control plane before its data planes)"
        )));
    }
    Ok(())
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// Full sha256 of `bytes` as hex (the cache checksum).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn gzip_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ClusterError> {
    // serde_json issues many tiny writes; batching them keeps the compressor fed in big chunks.
    let mut writer = BufWriter::with_capacity(
        64 * 1024,
        GzEncoder::new(Vec::new(), Compression::new(COMPRESSION_LEVEL)),
    );
    serde_json::to_writer(&mut writer, value).map_err(ClusterError::Encode)?;
    let encoder = writer
        .into_inner()
        .map_err(|error| ClusterError::Encode(serde_json::Error::io(error.into_error())))?;
    encoder
        .finish()
        .map_err(|error| ClusterError::Encode(serde_json::Error::io(error)))
}

fn gunzip(frame: &[u8], limit: usize) -> Result<Vec<u8>, ClusterError> {
    let mut json = Vec::with_capacity(frame.len().saturating_mul(4).min(limit));
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    let limit_plus_one = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    GzDecoder::new(frame)
        .take(limit_plus_one)
        .read_to_end(&mut json)
        .map_err(|error| ClusterError::Decode(format!("invalid gzip: {error}")))?;
    if json.len() > limit {
        return Err(ClusterError::Decode(format!(
            "message inflates past {limit} bytes"
        )));
    }
    Ok(json)
}

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

// === impl Message ===

impl Message {
    /// The `type` tag, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::BasicInfo { .. } => "basic_info",
            Message::Reconfigure { .. } => "reconfigure",
            Message::Delta { .. } => "delta",
            Message::Ping { .. } => "ping",
            Message::Pong => "pong",
            Message::Refused { .. } => "refused",
        }
    }
}

// === impl SortedKeys ===

impl Serialize for SortedKeys<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &SortedKeys(value))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&SortedKeys(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

// === impl HashWriter ===

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
