//! The JSON bodies of Sluice's own endpoints beyond Kong's API (`GET /sluice/snapshot`,
//! `POST /sluice/sync`), shared by the Admin API that serves them and the CLI that calls
//! them, so the two cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::diff::{Op, Plan};
use crate::entity::{
    Acl, BasicAuth, Consumer, Entities, EntityKind, KeyAuth, Plugin, Route, Service, Snapshot,
};

/// `GET /sluice/snapshot`: every entity at one version. Flat (not an `Entities` inside), as
/// the endpoint has always answered; serde's `flatten` would buffer the whole body on read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotBody {
    pub version: u64,
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
}

/// `POST /sluice/sync` as the CLI sends it: the plan it computed and the config version it
/// computed it against.
#[derive(Debug, Serialize)]
pub struct SyncRequest<'a> {
    pub expected_version: u64,
    pub plan: &'a Plan,
}

/// `POST /sluice/sync` as the Admin API reads it. The control plane never trusts a client's
/// validation, so entities arrive as plain JSON objects and are validated into typed ones
/// there; `old` is ignored (a delete needs only the id).
#[derive(Debug, Deserialize)]
pub struct SyncInput {
    pub expected_version: u64,
    pub plan: PlanInput,
}

#[derive(Debug, Deserialize)]
pub struct PlanInput {
    pub changes: Vec<ChangeInput>,
}

#[derive(Debug, Deserialize)]
pub struct ChangeInput {
    pub op: Op,
    pub kind: EntityKind,
    pub id: Uuid,
    pub label: String,
    #[serde(default)]
    pub new: Option<Map<String, Value>>,
}

/// What `POST /sluice/sync` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The config version after the sync.
    pub version: u64,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
}

// === impl SnapshotBody ===

impl From<Snapshot> for SnapshotBody {
    fn from(snapshot: Snapshot) -> Self {
        let Entities {
            services,
            routes,
            consumers,
            plugins,
            keyauth_credentials,
            basicauth_credentials,
            acls,
        } = snapshot.entities;
        Self {
            version: snapshot.version,
            services,
            routes,
            consumers,
            plugins,
            keyauth_credentials,
            basicauth_credentials,
            acls,
        }
    }
}

impl From<SnapshotBody> for Snapshot {
    fn from(body: SnapshotBody) -> Self {
        Snapshot {
            version: body.version,
            entities: Entities {
                services: body.services,
                routes: body.routes,
                consumers: body.consumers,
                plugins: body.plugins,
                keyauth_credentials: body.keyauth_credentials,
                basicauth_credentials: body.basicauth_credentials,
                acls: body.acls,
            },
        }
    }
}
