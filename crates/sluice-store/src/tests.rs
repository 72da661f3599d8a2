//! The store's rules, against a real SQLite file: every committed write bumps the version
//! and nothing else does; a service that routes use cannot be deleted, by any path; a sync
//! plan is applied whole or not at all, guarded by its version.

use serde_json::json;
use sluice_model::diff::{Change, Op, Plan};
use sluice_model::{AnyEntity, Entity, Route, Schemas, Service};
use uuid::Uuid;

use crate::{ListQuery, Store, StoreError};

/// A store on a fresh file; the directory goes when the guard drops.
struct Temp {
    store: Store,
    dir: std::path::PathBuf,
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn store() -> Temp {
    let dir = std::env::temp_dir().join(format!("sluice-store-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("store.db").display());
    let store = Store::open(&url).await.expect("the store opens");
    Temp { store, dir }
}

fn schemas() -> Schemas {
    Schemas::embedded().expect("embedded schemas load")
}

fn service(name: &str) -> Service {
    schemas()
        .build(entity(
            json!({"name": name, "host": format!("{name}.internal")}),
        ))
        .expect("a valid service")
}

fn route(name: &str, service: &Service) -> Route {
    schemas()
        .build(entity(json!({"name": name, "paths": [format!("/{name}")],
            "service": {"id": service.id}})))
        .expect("a valid route")
}

/// Input with the id and timestamps a caller mints.
fn entity(mut fields: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    let object = fields.as_object_mut().unwrap();
    object.insert("id".into(), json!(Uuid::new_v4()));
    object.insert("created_at".into(), json!(1_700_000_000));
    object.insert("updated_at".into(), json!(1_700_000_000));
    object.clone()
}

fn change<E: Entity>(op: Op, entity: &E) -> Change {
    let any = entity.clone().into_any();
    Change {
        op,
        kind: E::KIND,
        id: entity.id(),
        label: entity.endpoint_key().unwrap_or_default().to_owned(),
        old: None,
        new: (op != Op::Delete).then_some(any),
    }
}

#[tokio::test]
async fn every_committed_write_bumps_the_version_and_a_refused_one_does_not() {
    let temp = store().await;
    let store = &temp.store;
    let mut versions = store.subscribe();
    assert_eq!(store.version(), 0);
    let billing = service("billing");
    assert_eq!(store.insert(&billing).await.unwrap(), 1);
    assert!(versions.has_changed().unwrap(), "subscribers learn of it");
    assert_eq!(*versions.borrow_and_update(), 1);

    // A duplicate name is refused in Kong's words, and nothing moves.
    let mut twin = service("other");
    twin.name = Some("billing".into());
    let error = store.insert(&twin).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Unique { rendered, .. } if rendered == "{name=\"billing\"}"),
        "{error}"
    );
    // A route to a service that does not exist names the foreign key.
    let ghost = route("ghost", &service("never-stored"));
    let error = store.insert(&ghost).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::ForeignKey {
                field: "service",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(store.version(), 1);
    assert!(!versions.has_changed().unwrap());

    // Deleting what is not there is no write.
    assert!(!store.delete::<Service>(Uuid::new_v4()).await.unwrap());
    assert_eq!(store.version(), 1);
}

#[tokio::test]
async fn a_service_that_routes_use_cannot_be_deleted_by_any_path() {
    let temp = store().await;
    let store = &temp.store;
    let billing = service("billing");
    let api = route("api", &billing);
    store.insert(&billing).await.unwrap();
    store.insert(&api).await.unwrap();
    let version = store.version();

    // A single delete.
    let error = store.delete::<Service>(billing.id).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Referenced {
                referenced_by: "routes",
                ..
            }
        ),
        "{error}"
    );
    // A plan: the batched path refuses it, then the row-by-row path names the change.
    let plan = Plan {
        changes: vec![change(Op::Delete, &billing)],
    };
    let error = store.apply_plan(&plan, version).await.unwrap_err();
    match error {
        StoreError::PlanFailed { index, source, .. } => {
            assert_eq!(index, 0);
            assert!(matches!(*source, StoreError::Referenced { .. }), "{source}");
        }
        other => panic!("expected a failed plan, got {other}"),
    }
    assert_eq!(store.version(), version, "nothing was written");

    // With its route deleted first (the plan's bottom-up order), the service goes.
    let plan = Plan {
        changes: vec![change(Op::Delete, &api), change(Op::Delete, &billing)],
    };
    assert_eq!(store.apply_plan(&plan, version).await.unwrap(), version + 1);
    assert!(store.snapshot().await.unwrap().entities.services.is_empty());
}

#[tokio::test]
async fn a_plan_applies_whole_or_not_at_all_and_only_at_its_version() {
    let temp = store().await;
    let store = &temp.store;
    let a = service("a");
    let b = service("b");
    let plan = Plan {
        changes: vec![
            change(Op::Create, &a),
            change(Op::Create, &b),
            change(Op::Create, &route("r", &a)),
        ],
    };
    // Against the wrong version: refused, nothing written.
    let error = store.apply_plan(&plan, 7).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::VersionConflict {
                expected: 7,
                actual: 0
            }
        ),
        "{error}"
    );
    assert_eq!(store.version(), 0);

    // At its version: one transaction, one version.
    assert_eq!(store.apply_plan(&plan, 0).await.unwrap(), 1);
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.version, 1);
    assert_eq!(snapshot.entities.services.len(), 2);
    assert_eq!(snapshot.entities.routes.len(), 1);
    let stored: Vec<_> = snapshot
        .entities
        .services
        .iter()
        .map(|s| s.clone().into_any())
        .collect();
    assert!(
        stored.contains(&AnyEntity::Service(a.clone())),
        "stored as given"
    );

    // A plan whose last change fails (a duplicate name) leaves everything as it was.
    let mut clash = service("c");
    clash.name = Some("a".into());
    let plan = Plan {
        changes: vec![
            change(Op::Create, &service("d")),
            change(Op::Create, &clash),
        ],
    };
    let error = store.apply_plan(&plan, 1).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::PlanFailed { index: 1, kind, .. } if kind == "service"),
        "{error}"
    );
    assert_eq!(store.version(), 1);
    let page = store
        .list::<Service>(&ListQuery {
            size: 100,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.data.len(), 2, "d was not written either");

    // An empty plan is a no-op that still checks the version.
    assert_eq!(store.apply_plan(&Plan::default(), 1).await.unwrap(), 1);
    assert!(store.apply_plan(&Plan::default(), 0).await.is_err());
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_and_its_wal_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let temp = store().await;
    temp.store.insert(&service("secret-holder")).await.unwrap();
    for name in ["store.db", "store.db-wal", "store.db-shm"] {
        let path = temp.dir.join(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} is {:o}", mode & 0o777);
    }
}
