//! Golden sync plans, and the matching rules that the golden cases do not show.
//!
//! Every directory under `tests/fixtures/sync/` (at the repository root) is a case:
//! `current.yaml` stands for the store, `target.yaml` for the files given to `sluice sync`, and
//! `plan.txt` is what `sluice diff` prints for them, without color. The plan.txt files are
//! written by hand from the rules in `diff.rs`; that is their point. To accept the output of a
//! deliberate change instead, run
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p sluice-model diff::tests
//! ```
//!
//! which rewrites every plan.txt, then review the changes with `git diff tests/fixtures/sync`.
//! A new case is a new directory with the two YAML files (and, after the first run, a plan.txt).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::declarative::{self, SourceFile};
use crate::schema::Schemas;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sync");

/// The store's entities are older than the files', so that a `created_at` that leaked into a
/// comparison would show up as a change.
const CURRENT_NOW: i64 = 1_600_000_000;
const TARGET_NOW: i64 = 1_700_000_000;

/// Entities by kind and id, as compared: see [`normalized`].
type State = BTreeMap<(EntityKind, Uuid), Value>;

fn schemas() -> Schemas {
    Schemas::embedded().expect("embedded schemas load")
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// `parse` then `resolve` one file.
fn load_text(schemas: &Schemas, name: &str, text: &str, now: i64) -> (Content, Entities) {
    let files = [SourceFile {
        name: name.to_owned(),
        text: text.to_owned(),
    }];
    let content = declarative::parse(&files, &no_env)
        .unwrap_or_else(|errors| panic!("{name} does not parse: {errors:#?}"));
    let entities = declarative::resolve(&content, schemas, now)
        .unwrap_or_else(|errors| panic!("{name} does not resolve: {errors:#?}"));
    (content, entities)
}

fn load_file(schemas: &Schemas, path: &Path, now: i64) -> (Content, Entities) {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    load_text(schemas, &path.display().to_string(), &text, now)
}

fn cases() -> Vec<PathBuf> {
    let listing =
        fs::read_dir(FIXTURES).unwrap_or_else(|error| panic!("listing {FIXTURES}: {error}"));
    let mut cases: Vec<PathBuf> = listing
        .map(|entry| entry.expect("a fixture directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

/// `reconcile` then `diff`, as `sluice diff` does. Returns the current entities, the
/// reconciled target, the target's select tags and the plan.
fn plan_case(schemas: &Schemas, dir: &Path) -> (Entities, Entities, Vec<String>, Plan) {
    let (_, current) = load_file(schemas, &dir.join("current.yaml"), CURRENT_NOW);
    let (content, mut target) = load_file(schemas, &dir.join("target.yaml"), TARGET_NOW);
    reconcile(&mut target, &content, &current);
    let plan = diff(&current, &target, &content.select_tags);
    (current, target, content.select_tags, plan)
}

fn add_all<E: Entity>(state: &mut State, entities: &[E], keep: &dyn Fn(Option<&[String]>) -> bool) {
    for entity in entities {
        if keep(entity.tags()) {
            state.insert((E::KIND, entity.id()), normalized(&to_json(entity)));
        }
    }
}

fn state_of(entities: &Entities, keep: &dyn Fn(Option<&[String]>) -> bool) -> State {
    let mut state = State::new();
    add_all(&mut state, &entities.consumers, keep);
    add_all(&mut state, &entities.services, keep);
    add_all(&mut state, &entities.routes, keep);
    add_all(&mut state, &entities.plugins, keep);
    state
}

/// A change's `new` as the store's apply will read it.
fn read_back(kind: EntityKind, new: &Value) -> Result<(), serde_json::Error> {
    let new = new.clone();
    match kind {
        EntityKind::Service => serde_json::from_value::<Service>(new).map(drop),
        EntityKind::Route => serde_json::from_value::<Route>(new).map(drop),
        EntityKind::Consumer => serde_json::from_value::<Consumer>(new).map(drop),
        EntityKind::Plugin => serde_json::from_value::<Plugin>(new).map(drop),
        other => AnyEntity::from_json(other, new).map(drop),
    }
}

/// Applying `plan` to `current` in memory must give the target, plus the current entities
/// outside the select tags, which a sync never touches; and every `new` must read back as its
/// domain type. Problems go into `failures`.
fn check_applies(
    case: &str,
    current: &Entities,
    target: &Entities,
    select_tags: &[String],
    plan: &Plan,
    failures: &mut Vec<String>,
) {
    let mut state = state_of(current, &|_| true);
    for change in &plan.changes {
        let key = (change.kind, change.id);
        match (change.op, &change.new) {
            (Op::Delete, _) => {
                if state.remove(&key).is_none() {
                    failures.push(format!("{case}: deletes {key:?}, which is not there"));
                }
            }
            (Op::Create | Op::Update, Some(new)) => {
                let new = to_json(new);
                if let Err(error) = read_back(change.kind, &new) {
                    failures.push(format!("{case}: {key:?} does not read back: {error}"));
                }
                state.insert(key, normalized(&new));
            }
            (Op::Create | Op::Update, None) => {
                failures.push(format!(
                    "{case}: {:?} of {key:?} carries no entity",
                    change.op
                ));
            }
        }
    }
    let mut expected = state_of(target, &|_| true);
    let untouched = state_of(current, &|tags| !carries_all(tags, select_tags));
    for (key, entity) in untouched {
        expected.entry(key).or_insert(entity);
    }
    if state != expected {
        failures.push(format!(
            "{case}: applying the plan gives\n{state:#?}\ninstead of\n{expected:#?}"
        ));
    }
}

#[test]
fn sync_plans_match_golden_files() {
    let schemas = schemas();
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|value| value == "1");
    let cases = cases();
    assert!(!cases.is_empty(), "no sync cases in {FIXTURES}");
    let mut failures = Vec::new();
    for dir in &cases {
        let case = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        let (current, target, select_tags, plan) = plan_case(&schemas, dir);
        check_applies(&case, &current, &target, &select_tags, &plan, &mut failures);
        let rendered = render(&plan, false);
        let golden = dir.join("plan.txt");
        if update {
            fs::write(&golden, &rendered)
                .unwrap_or_else(|error| panic!("writing {}: {error}", golden.display()));
            continue;
        }
        let expected = fs::read_to_string(&golden).unwrap_or_default();
        if rendered != expected {
            failures.push(format!(
                "{case}: the plan differs from plan.txt (UPDATE_GOLDEN=1 rewrites it)\n--- plan.txt\n{expected}--- rendered\n{rendered}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn matched_entities_take_the_current_ids_and_created_at() {
    let schemas = schemas();
    // The store's ids are random (created through the Admin API); the file's are generated.
    let (_, current) = load_text(
        &schemas,
        "current.yaml",
        "_format_version: \"3.0\"
services:
- id: 0b8c2c9e-1d7a-4f3e-9a51-6c2d8e4f7a10
  name: svc1
  host: example.com
  routes:
  - id: 1c9d3dae-2e8b-4a4f-8b62-7d3e9f5a8b21
    name: r1
    paths: [/one]
consumers:
- id: 2dae4ebf-3f9c-4b50-9c73-8e4fa06b9c32
  username: alice
plugins:
- id: 3ebf5fc0-40ad-4c61-8d84-9f50b17cad43
  name: rate-limiting
  route: r1
  consumer: alice
  config: {minute: 5}
",
        CURRENT_NOW,
    );
    let (content, mut target) = load_text(
        &schemas,
        "target.yaml",
        "_format_version: \"3.0\"
services:
- name: svc1
  host: example.com
  routes:
  - name: r1
    paths: [/one]
consumers:
- username: alice
plugins:
- name: rate-limiting
  route: r1
  consumer: alice
  config: {minute: 5}
",
        TARGET_NOW,
    );
    reconcile(&mut target, &content, &current);

    let service = &target.services[0];
    let route = &target.routes[0];
    let plugin = &target.plugins[0];
    assert_eq!(service.id, current.services[0].id);
    assert_eq!(route.id, current.routes[0].id);
    assert_eq!(route.service, Some(ForeignKey { id: service.id }));
    assert_eq!(target.consumers[0].id, current.consumers[0].id);
    assert_eq!(plugin.id, current.plugins[0].id);
    assert_eq!(plugin.route, Some(ForeignKey { id: route.id }));
    assert_eq!(
        plugin.consumer,
        Some(ForeignKey {
            id: current.consumers[0].id
        })
    );
    assert_eq!(
        (service.created_at, service.updated_at),
        (CURRENT_NOW, TARGET_NOW),
        "created_at comes from the store, updated_at is the sync's"
    );
    assert_eq!(plugin.created_at, CURRENT_NOW);
    assert!(diff(&current, &target, &content.select_tags).is_empty());
}

#[test]
fn an_entity_matched_by_nothing_never_takes_a_stored_id() {
    let schemas = schemas();
    // `b` was synced as `a`, then renamed: it still has the id generated for `a`.
    let taken = Uuid::new_v5(&ID_NAMESPACE, b"services:a");
    let current_yaml = format!(
        "_format_version: \"3.0\"\nservices:\n- id: {taken}\n  name: b\n  host: example.com\n"
    );
    let (_, current) = load_text(&schemas, "current.yaml", &current_yaml, CURRENT_NOW);
    let (content, mut target) = load_text(
        &schemas,
        "target.yaml",
        "_format_version: \"3.0\"\nservices:\n- name: a\n  host: example.com\n- name: b\n  host: example.com\n",
        TARGET_NOW,
    );
    reconcile(&mut target, &content, &current);
    assert_eq!(target.services[1].id, taken, "b keeps its stored id");
    assert_ne!(target.services[0].id, taken, "a gets an id of its own");

    let plan = diff(&current, &target, &content.select_tags);
    assert_eq!(
        render(&plan, false),
        "creating service a\nSummary:\n  Created: 1\n  Updated: 0\n  Deleted: 0\n"
    );
    // The new id is derived, not random: the same state gives the same plan.
    let (_, mut again) = load_text(
        &schemas,
        "target.yaml",
        "_format_version: \"3.0\"\nservices:\n- name: a\n  host: example.com\n- name: b\n  host: example.com\n",
        TARGET_NOW,
    );
    reconcile(&mut again, &content, &current);
    assert_eq!(again.services[0].id, target.services[0].id);
}

#[test]
fn a_plan_is_json_with_lowercase_names() {
    let schemas = schemas();
    let (content, mut target) = load_text(
        &schemas,
        "target.yaml",
        "_format_version: \"3.0\"\nservices:\n- name: svc1\n  host: example.com\n",
        TARGET_NOW,
    );
    let current = Entities::default();
    reconcile(&mut target, &content, &current);
    let plan = diff(&current, &target, &[]);
    let json = serde_json::to_value(&plan).expect("a plan serializes");
    assert_eq!(json["changes"][0]["op"], "create");
    assert_eq!(json["changes"][0]["kind"], "service");
    assert_eq!(json["changes"][0]["label"], "svc1");
    let back: Plan = serde_json::from_value(json).expect("a plan deserializes");
    assert_eq!(back, plan);
    assert_eq!(
        plan.summary(),
        Summary {
            created: 1,
            updated: 0,
            deleted: 0
        }
    );
}

#[test]
fn colors_are_decks() {
    let service = |port: u16| {
        let json = serde_json::json!({
            "id": Uuid::nil(), "created_at": 1, "updated_at": 1, "retries": 5,
            "protocol": "http", "host": "example.com", "port": port, "connect_timeout": 60000,
            "write_timeout": 60000, "read_timeout": 60000, "enabled": true,
        });
        Some(AnyEntity::from_json(EntityKind::Service, json).expect("a service"))
    };
    let change = |op: Op, label: &str| Change {
        op,
        kind: EntityKind::Service,
        id: Uuid::nil(),
        label: label.to_owned(),
        old: service(80),
        new: service(8080),
    };
    let plan = Plan {
        changes: vec![
            change(Op::Create, "a"),
            change(Op::Update, "b"),
            change(Op::Delete, "c"),
        ],
    };
    assert_eq!(
        render(&plan, true),
        concat!(
            "\x1b[32mcreating service a\x1b[0m\n",
            "\x1b[33mupdating service b  {\x1b[0m\n",
            "\x1b[33m-  \"port\": 80\x1b[0m\n",
            "\x1b[33m+  \"port\": 8080\x1b[0m\n",
            "\x1b[33m }\x1b[0m\n",
            "\n",
            "\x1b[31mdeleting service c\x1b[0m\n",
            "\x1b[32;1mSummary:\x1b[0m\n",
            "\x1b[32;1m  Created: 1\x1b[0m\n",
            "\x1b[32;1m  Updated: 1\x1b[0m\n",
            "\x1b[32;1m  Deleted: 1\x1b[0m\n",
        )
    );
}

#[test]
fn field_diffs_mark_array_items_and_nested_keys() {
    let old = serde_json::json!({
        "methods": ["GET", "POST"],
        "config": {"a": 1, "b": {"c": true}, "same": 0},
        "gone": "x",
    });
    let new = serde_json::json!({
        "methods": ["GET", "PUT", "POST"],
        "config": {"a": 2, "b": {"c": true}, "same": 0, "new": []},
        "id": 1,
    });
    assert_eq!(
        field_diff(&old, &new),
        [
            "   \"config\": {",
            "-    \"a\": 1,",
            "+    \"a\": 2,",
            "+    \"new\": []",
            "   },",
            "-  \"gone\": \"x\",",
            "+  \"id\": 1,",
            "   \"methods\": [",
            "     \"GET\",",
            "+    \"PUT\",",
            "     \"POST\"",
            "   ]",
        ]
    );
}
