//! Layering: the workspace's dependency arrows point the way `ARCHITECTURE.md` and
//! `shared/DESIGN.md` ("Suggested crates": keep the dependency direction) say they do.
//!
//! What it guards, as data in [`RULES`]:
//! - `sluice-model`, `sluice-router` and `sluice-plugin` (the plugin contract) do no IO: none
//!   of them reaches a runtime, socket, HTTP stack, database or file watcher ([`IO_CRATES`]).
//! - The data plane (`sluice-proxy`) and the plugins (`sluice-plugins`, `sluice-ai`) never
//!   reach the control plane (`sluice-store`, `sluice-admin`), and plugins never reach the
//!   proxy.
//! - Every library crate depends only on the workspace crates the design table gives it
//!   (`sluice-cluster` only on `sluice-model`, `sluice-router` on none, ...).
//! - `anyhow` is for binaries: `sluice`, and the mock provider's benchmark binary (its library
//!   returns `io::Error`); no other crate names it.
//!
//! How: the test runs `cargo metadata` (it resolves, it does not build) and walks the
//! `resolve` graph. Only normal dependencies count: dev- and build-dependencies never end up
//! in a crate's library, so they cannot break its layering. The walk is transitive, because
//! an arrow through a third crate still hands the crate what the rule keeps from it
//! (`sluice-plugin -> sluice-model -> tokio` puts a runtime under the plugin contract). The
//! `resolve` graph covers every target platform and unifies features across the workspace,
//! so the check may over-report (an edge that only another platform or a sibling crate's
//! feature enables) but never misses one.
//!
//! Each broken arrow is reported once, at the first forbidden crate on its path
//! (`sluice-model -> tokio`, not also `-> mio` behind it), with the path and every rule it
//! breaks. A rule that names a crate which is no longer in the workspace is reported too, so
//! a rename cannot turn a rule into one that silently holds.
//!
//! The second test shows the checker can fail: it takes the real metadata, injects forbidden
//! edges into the `resolve` graph (`sluice-proxy -> sluice-store`, `sluice-model -> tokio`)
//! plus a dev-only edge that must be ignored, and asserts that exactly the expected arrows
//! appear on top of whatever today's graph already reports.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

// === The rules ===

/// Which workspace crates a rule binds.
#[derive(Clone, Copy)]
enum Who {
    /// One workspace crate, by package name.
    Crate(&'static str),
    /// Every workspace crate but these, so that a crate added later is bound as well.
    AllExcept(&'static [&'static str]),
}

/// What a bound crate must not depend on.
#[derive(Clone, Copy)]
enum Forbidden {
    /// One workspace crate.
    Member(&'static str),
    /// Every workspace crate other than the bound crate itself and these: its allowed set.
    MembersExcept(&'static [&'static str]),
    /// One third-party crate.
    Extern(&'static str),
    /// Any crate that does IO: see [`is_io`].
    Io,
}

/// How far a rule looks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// The crate's own `[dependencies]` only: "uses `anyhow`" means naming it, not having some
    /// third-party crate below that does.
    Direct,
    /// The whole normal-dependency closure.
    Transitive,
}

struct Rule {
    who: Who,
    forbidden: Forbidden,
    reach: Reach,
    /// Where the rule is written down, and why it holds; printed with every arrow it breaks.
    reason: &'static str,
}

/// Crates that open sockets or files, run a reactor, or drive a connection. Types-only crates
/// stay allowed under the IO-free crates: `http`, `bytes`, `http-body`, `http-body-util`,
/// `futures-*` (traits and combinators, no reactor), `async-trait`, `tracing` (a facade; the
/// subscriber that writes lives in the binary). `rustls` and `ring` are left out on purpose:
/// rustls is a TLS state machine that does no network IO itself; the crates that put it on a
/// socket (`tokio-rustls`, `hyper-rustls`) are listed. `libc` is left out because `uuid`
/// reaches it through `getrandom` for its random ids.
const IO_CRATES: &[&str] = &[
    // Runtimes and reactors.
    "tokio",
    "tokio-util",
    "tokio-stream",
    "mio",
    "socket2",
    "async-std",
    "async-io",
    "polling",
    "smol",
    // HTTP and WebSocket stacks, clients and servers.
    "hyper",
    "hyper-util",
    "hyper-rustls",
    "h2",
    "reqwest",
    "axum",
    "tungstenite",
    "tokio-tungstenite",
    "tokio-rustls",
    // Databases (plus every `sqlx-*`, see `is_io`) and the file watcher.
    "sqlx",
    "libsqlite3-sys",
    "notify",
];

fn is_io(name: &str) -> bool {
    IO_CRATES.contains(&name) || name.starts_with("sqlx-")
}

const MODEL_NO_IO: &str = "ARCHITECTURE.md, sluice-model: \"Architecture Invariant: no IO\" \
     (the schemas are compiled into the binary)";
const ROUTER_NO_IO: &str = "ARCHITECTURE.md, sluice-router: \"Architecture Invariant: this \
     crate never does IO and never awaits\"; DESIGN.md: \"pure matcher ... no IO, no async\"";
const PLUGIN_NO_IO: &str = "layering issue: sluice-plugin is the plugin contract and does no \
     IO; the data plane owns sockets and runtimes, a plugin sees requests and bodies as data \
     (types-only crates such as http, bytes and http-body are fine)";
const DATA_PLANE_NOT_CONTROL_PLANE: &str = "layering issue: the data plane (the proxy and the \
     plugins it runs) never reaches the control plane's store or Admin API; it is handed \
     snapshots, the binary wires the store to it, and a hybrid data plane has no database";
const PLUGINS_NOT_PROXY: &str = "layering issue: plugins are written against the sluice-plugin \
     contract only; the proxy runs them through it and the binary registers them, so a plugin \
     never reaches into the proxy";
const ONLY_BINARY_USES_ANYHOW: &str = "ARCHITECTURE.md (Dependency rules; Errors): anyhow is \
     for binaries (sluice, and sluice-mock-llm's benchmark binary); libraries return thiserror \
     types named for what failed";

/// The rules, one row per (crate, what it must not reach). Rows may overlap (the design
/// table's allowed sets cover rules 2 and 3): an arrow that breaks several is reported once,
/// with every reason.
const RULES: &[Rule] = &[
    // 1. No IO in the model, the router and the plugin contract.
    Rule {
        who: Who::Crate("sluice-model"),
        forbidden: Forbidden::Io,
        reach: Reach::Transitive,
        reason: MODEL_NO_IO,
    },
    Rule {
        who: Who::Crate("sluice-router"),
        forbidden: Forbidden::Io,
        reach: Reach::Transitive,
        reason: ROUTER_NO_IO,
    },
    Rule {
        who: Who::Crate("sluice-plugin"),
        forbidden: Forbidden::Io,
        reach: Reach::Transitive,
        reason: PLUGIN_NO_IO,
    },
    // 2. The data plane never reaches the control plane.
    Rule {
        who: Who::Crate("sluice-proxy"),
        forbidden: Forbidden::Member("sluice-store"),
        reach: Reach::Transitive,
        reason: DATA_PLANE_NOT_CONTROL_PLANE,
    },
    Rule {
        who: Who::Crate("sluice-proxy"),
        forbidden: Forbidden::Member("sluice-admin"),
        reach: Reach::Transitive,
        reason: DATA_PLANE_NOT_CONTROL_PLANE,
    },
    Rule {
        who: Who::Crate("sluice-plugins"),
        forbidden: Forbidden::Member("sluice-store"),
        reach: Reach::Transitive,
        reason: DATA_PLANE_NOT_CONTROL_PLANE,
    },
    Rule {
        who: Who::Crate("sluice-plugins"),
        forbidden: Forbidden::Member("sluice-admin"),
        reach: Reach::Transitive,
        reason: DATA_PLANE_NOT_CONTROL_PLANE,
    },
    Rule {
        who: Who::Crate("sluice-ai"),
        forbidden: Forbidden::Member("sluice-store"),
        reach: Reach::Transitive,
        reason: DATA_PLANE_NOT_CONTROL_PLANE,
    },
    Rule {
        who: Who::Crate("sluice-ai"),
        forbidden: Forbidden::Member("sluice-admin"),
        reach: Reach::Transitive,
        reason: DATA_PLANE_NOT_CONTROL_PLANE,
    },
    // 3. Plugins never reach the proxy.
    Rule {
        who: Who::Crate("sluice-plugins"),
        forbidden: Forbidden::Member("sluice-proxy"),
        reach: Reach::Transitive,
        reason: PLUGINS_NOT_PROXY,
    },
    Rule {
        who: Who::Crate("sluice-ai"),
        forbidden: Forbidden::Member("sluice-proxy"),
        reach: Reach::Transitive,
        reason: PLUGINS_NOT_PROXY,
    },
    // 4. Each library's allowed workspace crates: DESIGN.md's "Suggested crates" table ("keep
    //    the dependency direction"), and ARCHITECTURE.md where it says so too. A crate also
    //    reached through an allowed one is listed (sluice-ai reaches sluice-model through
    //    sluice-plugin).
    Rule {
        who: Who::Crate("sluice-model"),
        forbidden: Forbidden::MembersExcept(&[]),
        reach: Reach::Transitive,
        reason: "DESIGN.md, Suggested crates: sluice-model depends on serde and jsonschema, no \
                 workspace crate; it is the bottom layer every other crate builds on",
    },
    Rule {
        who: Who::Crate("sluice-router"),
        forbidden: Forbidden::MembersExcept(&[]),
        reach: Reach::Transitive,
        reason: "DESIGN.md, Suggested crates: sluice-router depends on http and regex, no \
                 workspace crate (a pure, generic matcher)",
    },
    Rule {
        who: Who::Crate("sluice-store"),
        forbidden: Forbidden::MembersExcept(&["sluice-model"]),
        reach: Reach::Transitive,
        reason: "DESIGN.md, Suggested crates: sluice-store depends on model and sqlx",
    },
    Rule {
        who: Who::Crate("sluice-admin"),
        forbidden: Forbidden::MembersExcept(&["sluice-model", "sluice-store"]),
        reach: Reach::Transitive,
        reason: "DESIGN.md, Suggested crates: sluice-admin depends on model and store",
    },
    Rule {
        who: Who::Crate("sluice-plugin"),
        forbidden: Forbidden::MembersExcept(&["sluice-model"]),
        reach: Reach::Transitive,
        reason: "DESIGN.md, Suggested crates: sluice-plugin (the contract) depends on model",
    },
    Rule {
        who: Who::Crate("sluice-plugins"),
        forbidden: Forbidden::MembersExcept(&["sluice-plugin", "sluice-model", "sluice-metrics"]),
        reach: Reach::Transitive,
        reason: "DESIGN.md, Suggested crates: sluice-plugins depends on plugin (and on \
                 sluice-metrics, which prometheus records into)",
    },
    Rule {
        who: Who::Crate("sluice-ai"),
        forbidden: Forbidden::MembersExcept(&["sluice-plugin", "sluice-model"]),
        reach: Reach::Transitive,
        reason: "DESIGN.md, Suggested crates: sluice-ai depends on plugin",
    },
    Rule {
        who: Who::Crate("sluice-proxy"),
        forbidden: Forbidden::MembersExcept(&["sluice-model", "sluice-router", "sluice-plugin"]),
        reach: Reach::Transitive,
        reason: "DESIGN.md, Suggested crates: sluice-proxy depends on model, router and plugin",
    },
    Rule {
        who: Who::Crate("sluice-cluster"),
        forbidden: Forbidden::MembersExcept(&["sluice-model"]),
        reach: Reach::Transitive,
        reason: "ARCHITECTURE.md, sluice-cluster: \"depends only on sluice-model; the binary \
                 wires it to the store and the proxy\"",
    },
    Rule {
        who: Who::Crate("sluice-mock-llm"),
        forbidden: Forbidden::MembersExcept(&[]),
        reach: Reach::Transitive,
        reason: "DESIGN.md, Suggested crates: sluice-mock-llm depends on no workspace crate; \
                 the test double speaks the wire format on its own, so a bug in our wire types \
                 cannot hide in it",
    },
    Rule {
        who: Who::Crate("sluice-metrics"),
        forbidden: Forbidden::MembersExcept(&[]),
        reach: Reach::Transitive,
        reason: "ARCHITECTURE.md, sluice-metrics: depends on no workspace crate; the plugin \
                 that records and the endpoints that expose are wired by the binary",
    },
    Rule {
        who: Who::Crate("sluice-metrics"),
        forbidden: Forbidden::Io,
        reach: Reach::Transitive,
        reason: "ARCHITECTURE.md, sluice-metrics: per-worker tables and an encoder; no IO",
    },
    // The edge of the error-handling layering.
    Rule {
        who: Who::AllExcept(&["sluice", "sluice-mock-llm"]),
        forbidden: Forbidden::Extern("anyhow"),
        reach: Reach::Direct,
        reason: ONLY_BINARY_USES_ANYHOW,
    },
];

// === impl Rule ===

impl Who {
    fn binds(self, krate: &str) -> bool {
        match self {
            Who::Crate(name) => name == krate,
            Who::AllExcept(names) => !names.contains(&krate),
        }
    }
}

impl Forbidden {
    fn forbids(self, krate: &str, dep: &str, graph: &Graph<'_>) -> bool {
        match self {
            Forbidden::Member(name) | Forbidden::Extern(name) => dep == name,
            Forbidden::MembersExcept(allowed) => {
                dep != krate && graph.is_member(dep) && !allowed.contains(&dep)
            }
            Forbidden::Io => is_io(dep),
        }
    }
}

impl Rule {
    /// Whether this rule forbids `krate -> dep`; `direct` says whether `dep` is one of
    /// `krate`'s own `[dependencies]`.
    fn applies(&self, krate: &str, dep: &str, graph: &Graph<'_>, direct: bool) -> bool {
        self.who.binds(krate)
            && (self.reach == Reach::Transitive || direct)
            && self.forbidden.forbids(krate, dep, graph)
    }

    /// The workspace crates this rule names; each must exist, or the rule checks nothing.
    fn named_members(&self) -> Vec<&'static str> {
        let mut names = match self.who {
            Who::Crate(name) => vec![name],
            Who::AllExcept(names) => names.to_vec(),
        };
        match self.forbidden {
            Forbidden::Member(name) => names.push(name),
            Forbidden::MembersExcept(allowed) => names.extend_from_slice(allowed),
            Forbidden::Extern(_) | Forbidden::Io => {}
        }
        names
    }
}

// === The graph ===

/// The normal-dependency graph of `cargo metadata`'s `resolve` section.
struct Graph<'a> {
    /// Package id to package name.
    names: HashMap<&'a str, &'a str>,
    /// Package id to the ids of its normal dependencies, sorted by name so paths are stable.
    normal_deps: HashMap<&'a str, Vec<&'a str>>,
    /// Workspace crates: package name to package id, in name order.
    members: BTreeMap<&'a str, &'a str>,
}

fn lookup<'a>(names: &HashMap<&'a str, &'a str>, id: &str) -> &'a str {
    names
        .get(id)
        .copied()
        .unwrap_or_else(|| panic!("`{id}` is in the graph but not in `packages`"))
}

/// A dependency is normal when one of its kinds is `null`; `"dev"` and `"build"` are not.
fn is_normal(dep: &Value) -> bool {
    dep["dep_kinds"]
        .as_array()
        .expect("resolve deps carry `dep_kinds` (cargo 1.41 or later)")
        .iter()
        .any(|kind| kind["kind"].is_null())
}

impl<'a> Graph<'a> {
    fn from_metadata(metadata: &'a Value) -> Self {
        let mut names = HashMap::new();
        for package in metadata["packages"]
            .as_array()
            .expect("cargo metadata lists `packages`")
        {
            let id = package["id"].as_str().expect("every package has an `id`");
            let name = package["name"]
                .as_str()
                .expect("every package has a `name`");
            names.insert(id, name);
        }

        let members: BTreeMap<&'a str, &'a str> = metadata["workspace_members"]
            .as_array()
            .expect("cargo metadata lists `workspace_members`")
            .iter()
            .map(|id| {
                let id = id.as_str().expect("a workspace member is a package id");
                (lookup(&names, id), id)
            })
            .collect();

        let mut normal_deps = HashMap::new();
        for node in metadata["resolve"]["nodes"]
            .as_array()
            .expect("cargo metadata has `resolve.nodes` (it must run without --no-deps)")
        {
            let id = node["id"].as_str().expect("every resolve node has an `id`");
            let mut deps: Vec<&'a str> = node["deps"]
                .as_array()
                .expect("every resolve node has `deps`")
                .iter()
                .filter(|dep| is_normal(dep))
                .map(|dep| {
                    dep["pkg"]
                        .as_str()
                        .expect("every resolve dep names its `pkg`")
                })
                .collect();
            deps.sort_by_key(|dep| (lookup(&names, dep), *dep));
            deps.dedup();
            normal_deps.insert(id, deps);
        }

        Graph {
            names,
            normal_deps,
            members,
        }
    }

    fn name(&self, id: &str) -> &'a str {
        lookup(&self.names, id)
    }

    fn deps(&self, id: &str) -> &[&'a str] {
        self.normal_deps
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn is_member(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// The paths (as crate names, from `start`) to the first crate on each path that
    /// `forbidden` refuses. The walk does not go through a refused crate: what lies behind it
    /// is a consequence of that arrow, and fixing it fixes them.
    fn frontier(&self, start: &'a str, forbidden: impl Fn(&str) -> bool) -> Vec<Vec<&'a str>> {
        let mut parent: HashMap<&'a str, &'a str> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut hits = Vec::new();
        while let Some(id) = queue.pop_front() {
            for &dep in self.deps(id) {
                if dep == start || parent.contains_key(dep) {
                    continue;
                }
                parent.insert(dep, id);
                if forbidden(self.name(dep)) {
                    let mut path = vec![self.name(dep)];
                    let mut at = dep;
                    while let Some(&up) = parent.get(at) {
                        path.push(self.name(up));
                        at = up;
                    }
                    path.reverse();
                    hits.push(path);
                } else {
                    queue.push_back(dep);
                }
            }
        }
        hits
    }
}

// === The checker ===

/// One broken arrow: `from` reaches `to` although a rule forbids it.
struct Arrow {
    from: String,
    to: String,
    /// The shortest path that shows it, `from` first.
    path: Vec<String>,
    reasons: BTreeSet<&'static str>,
}

impl fmt::Display for Arrow {
    /// Starts with `from -> to`, which the second test reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}   (via {})",
            self.from,
            self.to,
            self.path.join(" -> ")
        )?;
        for reason in &self.reasons {
            write!(f, "\n    - {reason}")?;
        }
        Ok(())
    }
}

fn broken_arrows(graph: &Graph<'_>) -> Vec<Arrow> {
    let mut arrows: BTreeMap<(String, String), Arrow> = BTreeMap::new();
    for (&krate, &id) in &graph.members {
        let mut found = graph.frontier(id, |dep: &str| {
            RULES.iter().any(|rule| {
                rule.reach == Reach::Transitive && rule.applies(krate, dep, graph, false)
            })
        });
        // Direct rules look one step only.
        for &dep in graph.deps(id) {
            let name = graph.name(dep);
            if RULES
                .iter()
                .any(|rule| rule.reach == Reach::Direct && rule.applies(krate, name, graph, true))
            {
                found.push(vec![krate, name]);
            }
        }
        for path in found {
            let to = *path.last().expect("a path holds at least its start");
            let direct = path.len() == 2;
            let reasons = RULES
                .iter()
                .filter(|rule| rule.applies(krate, to, graph, direct))
                .map(|rule| rule.reason);
            arrows
                .entry((krate.to_owned(), to.to_owned()))
                .or_insert_with(|| Arrow {
                    from: krate.to_owned(),
                    to: to.to_owned(),
                    path: path.iter().map(|name| (*name).to_owned()).collect(),
                    reasons: BTreeSet::new(),
                })
                .reasons
                .extend(reasons);
        }
    }
    arrows.into_values().collect()
}

/// Rules that name a crate the workspace no longer has (DESIGN.md allows renames).
fn stale_rules(graph: &Graph<'_>) -> Vec<String> {
    let mut stale = BTreeSet::new();
    for rule in RULES {
        for name in rule.named_members() {
            if !graph.is_member(name) {
                stale.insert(format!(
                    "rule names `{name}`, which is not a workspace crate (renamed or removed? \
                     update RULES in tests/layering.rs); the rule: {}",
                    rule.reason
                ));
            }
        }
    }
    stale.into_iter().collect()
}

/// Every way `metadata` (the JSON of `cargo metadata --format-version 1`) breaks [`RULES`],
/// one message per broken arrow (or stale rule), in a stable order. Empty when the layering
/// holds.
fn violations(metadata: &Value) -> Vec<String> {
    let graph = Graph::from_metadata(metadata);
    let mut messages = stale_rules(&graph);
    messages.extend(broken_arrows(&graph).iter().map(Arrow::to_string));
    messages
}

// === Test helpers ===

/// `cargo metadata` for the whole workspace, run once per test binary. It resolves the graph
/// (and may fetch manifests it has not seen) but compiles nothing.
fn cargo_metadata() -> &'static Value {
    static METADATA: OnceLock<Value> = OnceLock::new();
    METADATA.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let output = Command::new(&cargo)
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(&manifest)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{} metadata`: {e}", cargo.to_string_lossy()));
        assert!(
            output.status.success(),
            "`cargo metadata --manifest-path {}` failed ({}):\n{}",
            manifest.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("`cargo metadata` prints JSON")
    })
}

fn package_id(metadata: &Value, name: &str) -> String {
    metadata["packages"]
        .as_array()
        .expect("cargo metadata lists `packages`")
        .iter()
        .find(|package| package["name"].as_str() == Some(name))
        .and_then(|package| package["id"].as_str())
        .unwrap_or_else(|| panic!("no package named `{name}` in the graph"))
        .to_owned()
}

/// Adds `from -> to` to the `resolve` graph as cargo would write it; `kind` is `null` for a
/// normal dependency, `"dev"` or `"build"` otherwise.
fn add_edge(metadata: &mut Value, from: &str, to: &str, kind: Value) {
    let from_id = package_id(metadata, from);
    let to_id = package_id(metadata, to);
    let node = metadata["resolve"]["nodes"]
        .as_array_mut()
        .expect("cargo metadata has `resolve.nodes`")
        .iter_mut()
        .find(|node| node["id"].as_str() == Some(from_id.as_str()))
        .unwrap_or_else(|| panic!("no resolve node for `{from}`"));
    node["deps"]
        .as_array_mut()
        .expect("a resolve node has `deps`")
        .push(json!({
            "name": to.replace('-', "_"),
            "pkg": to_id.as_str(),
            "dep_kinds": [{ "kind": kind, "target": null }]
        }));
    node["dependencies"]
        .as_array_mut()
        .expect("a resolve node has `dependencies`")
        .push(json!(to_id.as_str()));
}

/// The `(from, to)` of every arrow message; stale-rule messages have no arrow.
fn arrows(messages: &[String]) -> BTreeSet<(String, String)> {
    messages
        .iter()
        .filter_map(|message| {
            let mut words = message.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(from), Some("->"), Some(to)) => Some((from.to_owned(), to.to_owned())),
                _ => None,
            }
        })
        .collect()
}

// === Tests ===

#[test]
fn the_dependency_graph_keeps_the_layering() {
    let broken = violations(cargo_metadata());
    assert!(
        broken.is_empty(),
        "the workspace's dependency graph breaks {} layering rule(s) \
         (rules in tests/layering.rs, from ARCHITECTURE.md and shared/DESIGN.md):\n\n{}\n",
        broken.len(),
        broken.join("\n\n")
    );
}

/// Without this, a checker that never reports anything (a wrong field name, a kind filter
/// that drops every edge) would pass the test above forever.
#[test]
fn the_checker_reports_injected_forbidden_edges() {
    let real = cargo_metadata();
    let mut tampered = real.clone();
    // The data plane reaching the store: rule 2, and outside the proxy's allowed set.
    add_edge(&mut tampered, "sluice-proxy", "sluice-store", Value::Null);
    // A runtime under the model: rule 1. sluice-plugin depends on sluice-model, so it reaches
    // tokio too, which shows the closure is transitive.
    add_edge(&mut tampered, "sluice-model", "tokio", Value::Null);
    // A dev-only edge that would break the router's rules if it were normal: it must be ignored.
    add_edge(&mut tampered, "sluice-router", "sluice-store", json!("dev"));

    let expected: BTreeSet<(String, String)> = [
        ("sluice-model", "tokio"),
        ("sluice-plugin", "tokio"),
        ("sluice-proxy", "sluice-store"),
    ]
    .into_iter()
    .map(|(from, to)| (from.to_owned(), to.to_owned()))
    .collect();

    // Compared with today's report, so this test holds whether or not the first one passes.
    let before_messages = violations(real);
    let after_messages = violations(&tampered);
    let before = arrows(&before_messages);
    let after = arrows(&after_messages);
    assert!(
        before.is_disjoint(&expected),
        "today's graph already breaks an arrow this test injects, so it proves nothing: {:?}",
        before.intersection(&expected).collect::<Vec<_>>()
    );
    assert!(
        before.is_subset(&after),
        "adding edges made reported arrows disappear: {:?}",
        before.difference(&after).collect::<Vec<_>>()
    );
    let added: BTreeSet<(String, String)> = after.difference(&before).cloned().collect();
    assert_eq!(
        added,
        expected,
        "the injected edges were not reported exactly; the report was:\n\n{}\n",
        after_messages.join("\n\n")
    );
}
