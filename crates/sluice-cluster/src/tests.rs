//! Unit tests of the frames, the hash, the cache and the version rule, and end-to-end runs of a
//! control plane and data planes on real sockets (loopback, real mTLS).

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sluice_model::{Consumer, Entities, ForeignKey, Plugin, Route, Service, Snapshot};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::data_plane::Backoff;
use crate::message::{decode_limited, encode_reconfigure};
use crate::tls::civil_from_days;
use crate::{
    check_version_compat, config_hash, decode, encode, gen_cert, load_cache, run_data_plane,
    serve_control_plane, write_cache, CacheError, ClusterError, DataPlaneOptions, Message,
    Registry, TlsFiles, VERSION,
};

const CREATED: i64 = 1_700_000_000;

/// A running `serve_control_plane` on 127.0.0.1.
struct ControlPlane {
    address: SocketAddr,
    snapshots: watch::Sender<Arc<Snapshot>>,
    registry: Registry,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ClusterError>>,
}

/// A running `run_data_plane` that records the version of every config it applies.
struct DataPlane {
    applied: Arc<Mutex<Vec<u64>>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ClusterError>>,
}

// --- frames ---

#[test]
fn every_message_round_trips() {
    let snapshot = snapshot(7, 2);
    let messages = [
        Message::BasicInfo {
            node_id: "dp-1".to_owned(),
            hostname: "edge-01".to_owned(),
            version: VERSION.to_owned(),
            plugins: vec!["key-auth".to_owned(), "ai-proxy".to_owned()],
        },
        Message::Reconfigure {
            version: 7,
            config_hash: config_hash(&snapshot),
            snapshot,
        },
        Message::Ping {
            config_hash: "0123456789abcdef0123456789abcdef".to_owned(),
        },
        Message::Pong,
        Message::Refused {
            reason: "too new".to_owned(),
        },
    ];
    for message in messages {
        let frame = encode(&message).unwrap();
        assert_eq!(frame[..2], [0x1f, 0x8b], "{}: not gzip", message.kind());
        assert_eq!(json_of(&frame)["type"], message.kind());
        assert_eq!(decode(&frame).unwrap(), message);
    }
}

#[test]
fn reconfigure_encoded_from_borrows_decodes_as_the_enum() {
    let snapshot = snapshot(3, 2);
    let hash = config_hash(&snapshot);
    let frame = encode_reconfigure(&snapshot, &hash).unwrap();
    assert_eq!(
        decode(&frame).unwrap(),
        Message::Reconfigure {
            version: 3,
            config_hash: hash,
            snapshot,
        }
    );
}

#[test]
fn decode_rejects_garbage_and_oversized_frames() {
    assert!(matches!(
        decode(b"not gzip at all"),
        Err(ClusterError::Decode(_))
    ));
    let frame = encode(&Message::Refused {
        reason: "x".repeat(10_000),
    })
    .unwrap();
    assert!(matches!(
        decode_limited(&frame, 1_000),
        Err(ClusterError::Decode(_))
    ));
    assert!(decode_limited(&frame, 1 << 20).is_ok());
}

/// Prints the bytes one full push costs per data plane (`cargo test full_snapshot_size --
/// --nocapture`); the benchmark in the binary measures the same with real configs.
#[test]
fn full_snapshot_size() {
    let services: Vec<Service> = (0..1_000).map(|i| service(&format!("svc-{i}"))).collect();
    let routes: Vec<Route> = services
        .iter()
        .enumerate()
        .map(|(i, service)| route(&format!("route-{i}"), service))
        .collect();
    let snapshot = Snapshot {
        version: 1,
        entities: Entities {
            services,
            routes,
            ..Entities::default()
        },
    };
    let frame = encode_reconfigure(&snapshot, &config_hash(&snapshot)).unwrap();
    eprintln!(
        "reconfigure frame for 1,000 services + 1,000 routes: {} bytes",
        frame.len()
    );
    assert!(frame.len() < 1_000_000, "{} bytes", frame.len());
}

/// The delta protocol: a one-route change at 10,000 services + 10,000 routes is a tiny frame
/// next to the full config, and applying it reproduces the new config exactly.
/// `cargo test -p sluice-cluster delta_is_small_and_exact -- --nocapture` prints the sizes.
#[test]
fn delta_is_small_and_exact() {
    let services: Vec<Service> = (0..10_000)
        .map(|i| service(&format!("svc-{i:05}")))
        .collect();
    let mut routes: Vec<Route> = services
        .iter()
        .enumerate()
        .map(|(i, service)| route(&format!("route-{i:05}"), service))
        .collect();
    routes.sort_by_key(|r| r.id);
    let mut services = services;
    services.sort_by_key(|s| s.id);
    let old = Snapshot {
        version: 1,
        entities: Entities {
            services,
            routes,
            ..Entities::default()
        },
    };
    let mut new = old.clone();
    new.version = 2;
    new.entities.routes[5_000].paths = Some(vec!["/changed".to_owned()]);
    let removed = new.entities.routes.remove(7_000).id;
    let changes = crate::message::DeltaChanges::between(&old, &new);
    assert_eq!(changes.routes.len(), 1);
    assert_eq!(changes.deleted, vec![("routes".to_owned(), removed)]);
    let patched = changes.apply(&old, 2);
    assert_eq!(patched, new);
    assert_eq!(config_hash(&patched), config_hash(&new));

    let full = encode_reconfigure(&new, &config_hash(&new)).unwrap();
    let delta = encode(&Message::Delta {
        version: 2,
        base_hash: config_hash(&old),
        config_hash: config_hash(&new),
        changes,
    })
    .unwrap();
    eprintln!(
        "10,000 services + routes: full reconfigure {} bytes, one-route delta {} bytes",
        full.len(),
        delta.len()
    );
    assert!(
        delta.len() * 100 < full.len(),
        "delta {} vs full {}",
        delta.len(),
        full.len()
    );
    match decode(&delta).unwrap() {
        Message::Delta { changes, .. } => assert_eq!(changes.apply(&old, 2), new),
        other => panic!("decoded {}", other.kind()),
    }
}

// --- config hash ---

#[test]
fn config_hash_names_the_content_only() {
    let original = snapshot(1, 3);
    let hash = config_hash(&original);
    assert_eq!(hash.len(), 32);
    assert!(hash
        .bytes()
        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)));
    assert_eq!(config_hash(&original), hash, "stable");

    let mut bumped = original.clone();
    bumped.version = 99;
    assert_eq!(config_hash(&bumped), hash, "the version is not content");

    let mut reordered = original.clone();
    reordered.entities.services.reverse();
    reordered.entities.routes.reverse();
    reordered.entities.consumers.reverse();
    reordered.entities.plugins.reverse();
    assert_eq!(config_hash(&reordered), hash, "entity order is not content");

    let mut keys_reordered = original.clone();
    keys_reordered.entities.plugins[0].config =
        json!({"policy": "local", "second": 2, "minute": 10});
    assert_eq!(
        config_hash(&keys_reordered),
        hash,
        "plugin config key order is not content"
    );

    let mut new_path = original.clone();
    new_path.entities.routes[0].paths = Some(vec!["/elsewhere".to_owned()]);
    assert_ne!(config_hash(&new_path), hash);

    let mut new_limit = original.clone();
    new_limit.entities.plugins[0].config = json!({"minute": 11, "second": 2, "policy": "local"});
    assert_ne!(config_hash(&new_limit), hash);

    let mut fewer = original;
    fewer.entities.consumers.pop();
    assert_ne!(config_hash(&fewer), hash);
}

// --- version rule ---

#[test]
fn version_compatibility_follows_kong() {
    // (control plane, data plane, compatible)
    let cases = [
        ("0.1.0", "0.1.0", true),
        ("0.1.0", "0.1.7", true),
        ("0.1.3", "0.0.9", true),
        ("0.1.0", "0.1.0-dev", true),
        ("1.2.0", "1.1.5", true),
        ("0.1.0", "0.2.0", false),
        ("0.1.0", "1.0.0", false),
        ("1.2.0", "1.3.0", false),
        ("1.2.0", "0.9.0", false),
        ("0.1.0", "garbage", false),
        ("0.1.0", "", false),
    ];
    for (control_plane, data_plane, compatible) in cases {
        assert_eq!(
            check_version_compat(control_plane, data_plane).is_ok(),
            compatible,
            "CP {control_plane} / DP {data_plane}"
        );
    }
    let newer = check_version_compat("0.1.0", "0.2.0").unwrap_err();
    assert!(newer.to_string().contains("older control plane"), "{newer}");
    let other_major = check_version_compat("0.1.0", "1.0.0").unwrap_err();
    assert!(other_major.to_string().contains("major"), "{other_major}");
}

// --- cache ---

#[test]
fn cache_round_trips_and_replaces_atomically() {
    let dir = temp_dir("cache");
    let path = dir.join("nested").join("config.cache");
    assert!(load_cache(&path).unwrap().is_none(), "absent is Ok(None)");

    let first = snapshot(5, 3);
    let first_hash = config_hash(&first);
    write_cache(&path, &first, &first_hash).unwrap();
    assert_eq!(load_cache(&path).unwrap(), Some((first, first_hash)));

    let second = snapshot(6, 1);
    let second_hash = config_hash(&second);
    write_cache(&path, &second, &second_hash).unwrap();
    assert_eq!(load_cache(&path).unwrap(), Some((second, second_hash)));

    let entries: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["config.cache"], "no temp file left behind");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = path.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "plugin configs may hold credentials");
    }
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_or_altered_cache_is_corrupt() {
    let dir = temp_dir("corrupt");
    let path = dir.join("config.cache");
    let config = snapshot(2, 2);
    write_cache(&path, &config, &config_hash(&config)).unwrap();
    let good = fs::read(&path).unwrap();

    fs::write(&path, &good[..good.len() - 10]).unwrap();
    assert_corrupt(&path, "truncated");

    let mut flipped = good.clone();
    let body_byte = good.len() - good.len() / 3;
    flipped[body_byte] ^= 0x01;
    fs::write(&path, flipped).unwrap();
    assert_corrupt(&path, "a flipped byte in the body");

    let mut header_flipped = good.clone();
    header_flipped[3] ^= 0x20;
    fs::write(&path, header_flipped).unwrap();
    assert_corrupt(&path, "a flipped byte in the header");

    fs::write(&path, b"hello\n").unwrap();
    assert_corrupt(&path, "another file");

    fs::write(&path, b"").unwrap();
    assert_corrupt(&path, "an empty file");

    fs::write(&path, good).unwrap();
    assert!(
        load_cache(&path).unwrap().is_some(),
        "the intact file loads"
    );
    fs::remove_dir_all(dir).unwrap();
}

// --- certificates and helpers ---

#[test]
fn gen_cert_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = temp_dir("gen-cert");
    let files = tls_files(&dir.join("certs"));
    let cert = fs::read_to_string(&files.cert).unwrap();
    let key = fs::read_to_string(&files.key).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(key.contains("PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = files.key.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let loaded = crate::tls::load(&files).unwrap();
    assert_eq!(loaded.certs.len(), 1);
    assert!(matches!(
        gen_cert(&files.cert, &files.key),
        Err(ClusterError::CertExists(_))
    ));
    assert_eq!(fs::read_to_string(&files.cert).unwrap(), cert, "untouched");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn civil_dates_from_epoch_days() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
}

#[test]
fn backoff_doubles_to_thirty_seconds_with_jitter() {
    let mut backoff = Backoff::new(42);
    for base in [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0] {
        let delay = backoff.next_delay().as_secs_f64();
        assert!(
            (base * 0.8 - 1e-6..=base * 1.2 + 1e-6).contains(&delay),
            "{delay} s is not {base} s ± 20 %"
        );
    }
    backoff.reset();
    assert!((0.8..=1.2).contains(&backoff.next_delay().as_secs_f64()));
    assert_ne!(
        Backoff::new(1).next_delay(),
        Backoff::new(2).next_delay(),
        "different seeds spread reconnects"
    );
}

// --- end to end ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_follows_the_control_plane_over_mtls() {
    let dir = temp_dir("e2e-tls");
    let files = tls_files(&dir.join("certs"));
    let first = snapshot(1, 2);
    let control_plane = start_control_plane(Some(files.clone()), first).await;
    let cache_path = dir.join("dp").join("config.cache");
    let data_plane = start_data_plane(
        control_plane.address,
        Some(files),
        cache_path.clone(),
        "dp-1",
    );

    wait_until("the first config is applied", || {
        data_plane.applied.lock().unwrap().contains(&1)
    })
    .await;
    let second = snapshot(2, 3);
    let second_hash = config_hash(&second);
    control_plane
        .snapshots
        .send(Arc::new(second.clone()))
        .unwrap();
    wait_until("the second config is applied", || {
        data_plane.applied.lock().unwrap().contains(&2)
    })
    .await;
    wait_until("the registry shows the new hash", || {
        control_plane
            .registry
            .list()
            .iter()
            .any(|node| node.id == "dp-1" && node.config_hash == second_hash)
    })
    .await;

    assert_eq!(*data_plane.applied.lock().unwrap(), [1, 2]);
    let nodes = control_plane.registry.list();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0].ip, "127.0.0.1");
    assert_eq!(nodes[0].version, VERSION);
    assert_eq!(nodes[0].sync_status, "normal");
    assert!(!nodes[0].hostname.is_empty());
    assert_eq!(
        load_cache(&cache_path).unwrap(),
        Some((second, second_hash)),
        "the data plane cached what it applied"
    );

    // A data plane holding another cluster's certificate gets nothing.
    let intruder_cache = dir.join("intruder").join("config.cache");
    let intruder = start_data_plane(
        control_plane.address,
        Some(tls_files(&dir.join("other-certs"))),
        intruder_cache.clone(),
        "dp-intruder",
    );
    // The control plane refusing its handshake is the signal: after it, nothing can arrive.
    wait_until("the intruder's handshake is refused", || {
        control_plane.registry.refused_handshakes() > 0
    })
    .await;
    assert!(intruder.applied.lock().unwrap().is_empty());
    assert!(!intruder_cache.exists());
    assert!(control_plane
        .registry
        .list()
        .iter()
        .all(|node| node.id != "dp-intruder"));

    stop_data_plane(intruder).await;
    stop_data_plane(data_plane).await;
    stop_control_plane(control_plane).await;
    fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_follows_the_control_plane_without_tls() {
    let dir = temp_dir("e2e-plain");
    let control_plane = start_control_plane(None, snapshot(1, 1)).await;
    let data_plane = start_data_plane(
        control_plane.address,
        None,
        dir.join("config.cache"),
        "dp-plain",
    );
    wait_until("the first config is applied", || {
        data_plane.applied.lock().unwrap().contains(&1)
    })
    .await;
    control_plane
        .snapshots
        .send(Arc::new(snapshot(2, 2)))
        .unwrap();
    wait_until("the second config is applied", || {
        data_plane.applied.lock().unwrap().contains(&2)
    })
    .await;
    stop_data_plane(data_plane).await;
    stop_control_plane(control_plane).await;
    fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_serves_its_cache_while_the_control_plane_is_away() {
    let dir = temp_dir("e2e-cache");
    let cache_path = dir.join("config.cache");
    let cached = snapshot(9, 2);
    write_cache(&cache_path, &cached, &config_hash(&cached)).unwrap();
    // A port nobody listens on.
    let address = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let data_plane = start_data_plane(address, None, cache_path, "dp-offline");
    wait_until("the cached config is applied", || {
        data_plane.applied.lock().unwrap().contains(&9)
    })
    .await;
    stop_data_plane(data_plane).await;
    fs::remove_dir_all(dir).unwrap();
}

// --- helpers ---

async fn start_control_plane(tls: Option<TlsFiles>, first: Snapshot) -> ControlPlane {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (snapshots, feed) = watch::channel(Arc::new(first));
    let registry = Registry::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_control_plane(
        listener,
        tls,
        feed,
        registry.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    ControlPlane {
        address,
        snapshots,
        registry,
        stop,
        task,
    }
}

fn start_data_plane(
    control_plane: SocketAddr,
    tls: Option<TlsFiles>,
    cache_path: PathBuf,
    node_id: &str,
) -> DataPlane {
    let applied = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&applied);
    let options = DataPlaneOptions {
        control_plane: control_plane.to_string(),
        tls,
        cache_path,
        node_id: node_id.to_owned(),
        ping_interval: Duration::from_millis(200),
        connected: Default::default(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_data_plane(
        options,
        move |snapshot: &Snapshot| {
            sink.lock().unwrap().push(snapshot.version);
            Ok(())
        },
        async move {
            let _ = stopped.await;
        },
    ));
    DataPlane {
        applied,
        stop,
        task,
    }
}

async fn stop_data_plane(data_plane: DataPlane) {
    let _ = data_plane.stop.send(());
    data_plane.task.await.unwrap().unwrap();
}

async fn stop_control_plane(control_plane: ControlPlane) {
    let _ = control_plane.stop.send(());
    control_plane.task.await.unwrap().unwrap();
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_corrupt(path: &Path, what: &str) {
    match load_cache(path) {
        Err(ClusterError::Cache(CacheError::Corrupt(reason))) => {
            assert!(!reason.is_empty(), "{what}");
        }
        other => panic!("{what}: expected a corrupt cache, got {other:?}"),
    }
}

/// A fresh certificate pair under `dir`.
fn tls_files(dir: &Path) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cluster.crt"),
        key: dir.join("cluster.key"),
    };
    gen_cert(&files.cert, &files.key).unwrap();
    files
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-cluster-{name}-{}", Uuid::new_v4()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn json_of(frame: &[u8]) -> Value {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(frame)
        .read_to_end(&mut json)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

/// `n` of each entity kind; plugin 0's config is `{"minute": 10, "second": 2, "policy": "local"}`
/// in that key order.
fn snapshot(version: u64, n: usize) -> Snapshot {
    let services: Vec<Service> = (0..n).map(|i| service(&format!("svc-{i}"))).collect();
    let routes = services
        .iter()
        .enumerate()
        .map(|(i, service)| route(&format!("route-{i}"), service))
        .collect();
    let consumers = (0..n).map(|i| consumer(&format!("user-{i}"))).collect();
    let plugins = (0..n)
        .map(|i| plugin(json!({"minute": 10 + i, "second": 2, "policy": "local"})))
        .collect();
    Snapshot {
        version,
        entities: Entities {
            services,
            routes,
            consumers,
            plugins,
            ..Entities::default()
        },
    }
}

fn service(name: &str) -> Service {
    Service {
        id: Uuid::new_v4(),
        created_at: CREATED,
        updated_at: CREATED,
        name: Some(name.to_owned()),
        retries: 5,
        protocol: sluice_model::Protocol::Http,
        host: format!("{name}.upstream.internal"),
        port: 80,
        path: None,
        connect_timeout: 60_000,
        write_timeout: 60_000,
        read_timeout: 60_000,
        tags: None,
        client_certificate: None,
        tls_verify: None,
        tls_verify_depth: None,
        ca_certificates: None,
        enabled: true,
    }
}

fn route(name: &str, service: &Service) -> Route {
    Route {
        id: Uuid::new_v4(),
        created_at: CREATED,
        updated_at: CREATED,
        name: Some(name.to_owned()),
        protocols: vec![sluice_model::Protocol::Http, sluice_model::Protocol::Https],
        methods: None,
        hosts: None,
        paths: Some(vec![format!("/{name}")]),
        headers: None,
        https_redirect_status_code: 426,
        regex_priority: 0,
        strip_path: true,
        path_handling: sluice_model::PathHandling::V0,
        preserve_host: false,
        request_buffering: true,
        response_buffering: true,
        snis: None,
        sources: None,
        destinations: None,
        tags: None,
        service: Some(ForeignKey { id: service.id }),
    }
}

fn consumer(username: &str) -> Consumer {
    Consumer {
        id: Uuid::new_v4(),
        created_at: CREATED,
        updated_at: CREATED,
        username: Some(username.to_owned()),
        custom_id: None,
        tags: None,
    }
}

fn plugin(config: Value) -> Plugin {
    Plugin {
        id: Uuid::new_v4(),
        created_at: CREATED,
        updated_at: CREATED,
        name: "rate-limiting".to_owned(),
        instance_name: None,
        route: None,
        service: None,
        consumer: None,
        config,
        protocols: vec![sluice_model::Protocol::Http, sluice_model::Protocol::Https],
        enabled: true,
        tags: None,
    }
}

/// Credentials reach data planes like every other entity: in the full push, in a delta, and
/// in the config hash (a changed key changes what the data plane must serve).
#[test]
fn credentials_travel_in_pushes_deltas_and_the_hash() {
    let alice = consumer("alice");
    let owner = ForeignKey { id: alice.id };
    let key = sluice_model::KeyAuth {
        id: Uuid::new_v4(),
        created_at: CREATED,
        consumer: owner,
        key: "alice-key".to_owned(),
        ttl: None,
        tags: None,
    };
    let password = sluice_model::BasicAuth {
        id: Uuid::new_v4(),
        created_at: CREATED,
        consumer: owner,
        username: "alice".to_owned(),
        password: sluice_model::credentials::hash_password("pw", alice.id),
        tags: None,
        password_as_written: None,
    };
    let group = sluice_model::Acl {
        id: Uuid::new_v4(),
        created_at: CREATED,
        consumer: owner,
        group: "admins".to_owned(),
        tags: None,
    };
    let old = Snapshot {
        version: 1,
        entities: Entities {
            consumers: vec![alice],
            keyauth_credentials: vec![key.clone()],
            basicauth_credentials: vec![password],
            acls: vec![group.clone()],
            ..Entities::default()
        },
    };
    let frame = encode_reconfigure(&old, &config_hash(&old)).unwrap();
    match decode(&frame).unwrap() {
        Message::Reconfigure { snapshot, .. } => assert_eq!(snapshot, old),
        other => panic!("expected a reconfigure, got {other:?}"),
    }

    let mut new = old.clone();
    new.version = 2;
    new.entities.keyauth_credentials[0].key = "rotated".to_owned();
    new.entities.acls.clear();
    assert_ne!(
        config_hash(&old),
        config_hash(&new),
        "a rotated key is a new config"
    );
    let changes = crate::message::DeltaChanges::between(&old, &new);
    assert_eq!(changes.keyauth_credentials.len(), 1);
    assert_eq!(changes.deleted, vec![("acls".to_owned(), group.id)]);
    let frame = encode(&Message::Delta {
        version: 2,
        base_hash: config_hash(&old),
        config_hash: config_hash(&new),
        changes,
    })
    .unwrap();
    let Message::Delta { changes, .. } = decode(&frame).unwrap() else {
        panic!("expected a delta");
    };
    let patched = changes.apply(&old, 2);
    assert_eq!(patched, new);
    assert_eq!(config_hash(&patched), config_hash(&new));
}
