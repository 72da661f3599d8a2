//! Data-driven checks of the decK reader: small files and what loading them gives, a render
//! round trip, and every file of the shared decK corpus processed as its INDEX.md says.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::ForeignKey;

const NOW: i64 = 1_700_000_000;

fn schemas() -> Schemas {
    Schemas::embedded().expect("embedded schemas load")
}

/// A file from its lines, so that line numbers in expectations are easy to count.
fn yaml(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn file(lines: &[&str]) -> SourceFile {
    SourceFile {
        name: "kong.yaml".to_owned(),
        text: yaml(lines),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn shown(errors: Vec<DeclarativeError>) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// `parse` then `resolve`, with errors in their Display form.
fn load_with(
    files: &[SourceFile],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Entities, Vec<String>> {
    let content = parse(files, env).map_err(shown)?;
    resolve(&content, &schemas(), NOW).map_err(shown)
}

fn load(lines: &[&str]) -> Result<Entities, Vec<String>> {
    load_with(&[file(lines)], &no_env)
}

fn loaded(lines: &[&str]) -> Entities {
    load(lines).unwrap_or_else(|errors| panic!("expected {lines:#?} to load, got {errors:#?}"))
}

/// Entities in id order, to compare loads whose entity order differs.
fn sorted(mut entities: Entities) -> Entities {
    entities.services.sort_by_key(|s| s.id);
    entities.routes.sort_by_key(|r| r.id);
    entities.consumers.sort_by_key(|c| c.id);
    entities.plugins.sort_by_key(|p| p.id);
    entities
}

fn generated_id(name: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

const V3: &str = "_format_version: \"3.0\"";

/// `(file lines, every error in Display form, in order)`.
const ERRORS: &[(&[&str], &[&str])] = &[
    // The format gate, as decK applies it for Kong 3.x.
    (
        &["_format_version: \"1.1\"", "services: []"],
        &["kong.yaml:1:1: _format_version: cannot apply '1.1' config format version to Kong version 3.0 or above."],
    ),
    (
        &["services: []"],
        &["kong.yaml: _format_version: required field missing (decK reads a file without it as '1.1': cannot apply '1.1' config format version to Kong version 3.0 or above.)"],
    ),
    // YAML syntax, at libyaml's position.
    (
        &[V3, "services: @x"],
        &["kong.yaml:2:11: found character that cannot start any token, while scanning for the next token"],
    ),
    (
        &[" _format_version: \"3.0\""],
        &["kong.yaml:1:1: file must not begin with a whitespace"],
    ),
    // Environment substitution, at the `${{`.
    (
        &[V3, "services:", "- name: a", "  host: ${{ env \"DECK_HOST\" }}"],
        &["kong.yaml:4:9: environment variable 'DECK_HOST' present in state file but not set"],
    ),
    (
        &[V3, "services:", "- name: a", "  host: ${{ env \"HOST\" }}"],
        &["kong.yaml:4:9: environment variables in the state file must be prefixed with 'DECK_', found: 'HOST'"],
    ),
    // What Sluice does not have is refused by name, never dropped.
    (
        &[V3, "upstreams:", "- name: u"],
        &["kong.yaml:2:1: upstreams: 'upstreams' is not supported by Sluice yet"],
    ),
    (
        &[V3, "consumers:", "- username: alice", "  jwt_secrets:", "  - key: secret"],
        &["kong.yaml:4:3: consumers[0].jwt_secrets: 'jwt_secrets' is not supported by Sluice yet (consumer credentials)"],
    ),
    (
        &[V3, "consumers:", "- username: alice", "  keyauth_credentials:", "  - ttl: 5"],
        &["kong.yaml:5:5: consumers[0].keyauth_credentials[0].key: required field missing (a declarative config must give each key: a generated one would change on every sync)"],
    ),
    (
        &[V3, "consumers:", "- username: alice", "  acls:", "  - group: a", "  - group: a"],
        &["kong.yaml:6:5: consumers[0].acls[1].group: acl group 'a' is given twice for this consumer (also by consumers[0].acls[0] at kong.yaml:5)"],
    ),
    (
        &[V3, "service:", "- name: a"],
        &["kong.yaml:2:1: service: unknown field"],
    ),
    // Schema violations: one error per field, at the field's own line.
    (
        &[
            V3,
            "services:",
            "- name: a",
            "  host: example.com",
            "  routes:",
            "  - name: r",
            "    paths:",
            "    - /ok",
            "    - bad",
        ],
        &["kong.yaml:9:7: services[0].routes[0].paths[1]: should start with: / (fixed path) or ~/ (regex path)"],
    ),
    (
        &[V3, "services:", "- name: a", "  host: example.com", "  colour: blue"],
        &["kong.yaml:5:3: services[0].colour: unknown field"],
    ),
    (
        &[V3, "services:", "- name: a"],
        &["kong.yaml:3:3: services[0].host: required field missing"],
    ),
    (
        &[V3, "services:", "- host: a:1", "routes:", "- paths: [x]"],
        &[
            "kong.yaml:3:3: services[0].host: must not have a port",
            "kong.yaml:5:11: routes[0].paths[0]: should start with: / (fixed path) or ~/ (regex path)",
        ],
    ),
    (
        &[V3, "routes:", "- name: r"],
        &["kong.yaml:3:3: routes[0]: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'"],
    ),
    (
        &[V3, "plugins:", "- name: bot-detection"],
        &["kong.yaml:3:3: plugins[0].name: plugin 'bot-detection' not enabled; Sluice has: acl, ai-proxy, ai-proxy-advanced, ai-rate-limiting-advanced, basic-auth, cors, file-log, http-log, key-auth, prometheus, rate-limiting, request-transformer"],
    ),
    (
        &[V3, "plugins:", "- name: rate-limiting", "  config:", "    minute: 0"],
        &["kong.yaml:5:5: plugins[0].config.minute: value must be greater than 0"],
    ),
    // References must point into the files.
    (
        &[V3, "routes:", "- name: r", "  service: nope", "  paths: [/a]"],
        &["kong.yaml:4:3: routes[0].service: service 'nope' not found in the declarative config"],
    ),
    (
        &[V3, "plugins:", "- name: rate-limiting", "  consumer: bob", "  config: {minute: 1}"],
        &["kong.yaml:4:3: plugins[0].consumer: consumer 'bob' not found in the declarative config"],
    ),
    (
        &[V3, "plugins:", "- name: rate-limiting", "  _config: shared", "  config: {minute: 1}"],
        &["kong.yaml:4:3: plugins[0]._config: _plugin_config \"shared\" not found"],
    ),
    // Uniqueness and scopes.
    (
        &[V3, "services:", "- name: a", "  host: one.example", "- name: a", "  host: two.example"],
        &["kong.yaml:5:3: services[1].name: service name 'a' is used twice (also by services[0] at kong.yaml:3)"],
    ),
    (
        &[
            V3,
            "plugins:",
            "- name: rate-limiting",
            "  config: {minute: 1}",
            "- name: rate-limiting",
            "  config: {minute: 2}",
        ],
        &["kong.yaml:5:3: plugins[1]: UNIQUE violation detected on '{consumer=null,name=\"rate-limiting\",route=null,service=null}' (also configured by plugins[0] at kong.yaml:3)"],
    ),
    (
        &[
            V3,
            "consumers:",
            "- username: foo",
            "  plugins:",
            "  - name: rate-limiting",
            "    consumer: foo",
            "    config: {minute: 1}",
        ],
        &["kong.yaml:6:5: consumers[0].plugins[0].consumer: nesting consumer (foo) under consumer-scoped plugin (rate-limiting) is not allowed"],
    ),
];

#[test]
fn errors_are_located_and_all_reported() {
    for (lines, expected) in ERRORS {
        match load(lines) {
            Ok(entities) => panic!("expected {expected:#?} for {lines:#?}, got {entities:#?}"),
            Err(errors) => assert_eq!(errors, *expected, "for {lines:#?}"),
        }
    }
}

/// `(file lines, [services, routes, consumers, plugins])` for files that load.
const COUNTS: &[(&[&str], [usize; 4])] = &[
    (&[V3], [0, 0, 0, 0]),
    // Meta keys decK accepts, and empty lists of entities Sluice lacks (they declare nothing).
    (
        &[
            V3,
            "_transform: true",
            "_workspace: default",
            "_konnect: {control_plane_name: cp}",
            "_info:",
            "  select_tags: [a]",
            "  default_lookup_tags: {services: [shared]}",
            "upstreams: []",
            "certificates:",
        ],
        [0, 0, 0, 0],
    ),
    // JSON is YAML.
    (
        &["{\"_format_version\": \"3.0\", \"services\": [{\"name\": \"a\", \"host\": \"example.com\"}]}"],
        [1, 0, 0, 0],
    ),
    (
        &[
            V3,
            "services:",
            "- name: svc",
            "  url: http://example.com",
            "  routes:",
            "  - name: r1",
            "    paths: [/one]",
            "    plugins:",
            "    - name: cors",
            "  - paths: [/two]",
            "  plugins:",
            "  - name: rate-limiting",
            "    config: {minute: 5}",
            "routes:",
            "- hosts: [other.example.com]",
            "consumers:",
            "- username: alice",
            "  plugins:",
            "  - name: rate-limiting",
            "    config: {second: 1}",
            "- custom_id: bob",
            "plugins:",
            "- name: key-auth",
        ],
        [1, 3, 2, 4],
    ),
];

#[test]
fn valid_files_load_every_entity() {
    for (lines, [services, routes, consumers, plugins]) in COUNTS {
        let entities = loaded(lines);
        assert_eq!(
            [
                entities.services.len(),
                entities.routes.len(),
                entities.consumers.len(),
                entities.plugins.len()
            ],
            [*services, *routes, *consumers, *plugins],
            "for {lines:#?}"
        );
    }
}

#[test]
fn error_display_leaves_out_unknown_parts() {
    let error = |file: &str, line: Option<usize>, column: Option<usize>, path: &str| {
        DeclarativeError {
            file: file.to_owned(),
            line,
            column,
            path: path.to_owned(),
            message: "boom".to_owned(),
        }
        .to_string()
    };
    assert_eq!(
        error("k.yaml", Some(3), Some(5), "services[0]"),
        "k.yaml:3:5: services[0]: boom"
    );
    assert_eq!(error("k.yaml", Some(3), None, ""), "k.yaml:3: boom");
    assert_eq!(
        error("k.yaml", None, None, "routes[1].paths[0]"),
        "k.yaml: routes[1].paths[0]: boom"
    );
    assert_eq!(error("", None, None, ""), "boom");
}

#[test]
fn nested_and_top_level_forms_give_equal_entities() {
    let nested = loaded(&[
        V3,
        "services:",
        "- name: svc",
        "  host: example.com",
        "  routes:",
        "  - name: r1",
        "    paths: [/a]",
        "    plugins:",
        "    - name: cors",
        "  plugins:",
        "  - name: rate-limiting",
        "    config: {minute: 5}",
        "consumers:",
        "- username: alice",
        "  plugins:",
        "  - name: rate-limiting",
        "    config: {minute: 1}",
    ]);
    let top_level = loaded(&[
        V3,
        "services:",
        "- name: svc",
        "  host: example.com",
        "routes:",
        "- name: r1",
        "  service: svc",
        "  paths: [/a]",
        "consumers:",
        "- username: alice",
        "plugins:",
        "- name: cors",
        "  route: r1",
        "- name: rate-limiting",
        "  service: {name: svc}",
        "  config: {minute: 5}",
        "- name: rate-limiting",
        "  consumer: alice",
        "  config: {minute: 1}",
    ]);
    assert_eq!(sorted(nested.clone()), sorted(top_level));
    let service = ForeignKey {
        id: nested.services[0].id,
    };
    assert_eq!(nested.routes[0].service, Some(service));
    let cors = nested
        .plugins
        .iter()
        .find(|p| p.name == "cors")
        .expect("cors");
    assert_eq!(
        (cors.service, cors.route),
        (
            None,
            Some(ForeignKey {
                id: nested.routes[0].id
            })
        )
    );
}

#[test]
fn ids_are_deterministic_and_explicit_ids_are_kept() {
    let lines = [
        V3,
        "services:",
        "- name: svc",
        "  host: example.com",
        "  routes:",
        "  - paths: [/a]",
        "    plugins:",
        "    - name: cors",
        "- id: 0e6f9a4c-3c3c-4f49-9a39-0a8f1f2b7c11",
        "  host: example.org",
        "consumers:",
        "- custom_id: c-1",
    ];
    let first = loaded(&lines);
    assert_eq!(
        first,
        loaded(&lines),
        "loading twice gives the same entities"
    );
    assert_eq!(first.services[0].id, generated_id("services:svc"));
    assert_eq!(
        first.services[1].id.to_string(),
        "0e6f9a4c-3c3c-4f49-9a39-0a8f1f2b7c11"
    );
    assert_eq!(first.routes[0].id, generated_id("routes:svc:0"));
    assert_eq!(
        first.consumers[0].id,
        generated_id("consumers:custom_id:c-1")
    );
    let route_id = first.routes[0].id;
    assert_eq!(
        first.plugins[0].id,
        generated_id(&format!("plugins:cors::{route_id}:"))
    );
    assert_eq!(
        (first.services[0].created_at, first.services[0].updated_at),
        (NOW, NOW)
    );
}

#[test]
fn select_tags_are_added_to_every_entity() {
    let entities = loaded(&[
        V3,
        "_info:",
        "  select_tags: [team-a, prod]",
        "services:",
        "- name: svc",
        "  host: example.com",
        "  tags: [blue, prod]",
        "  routes:",
        "  - paths: [/a]",
        "plugins:",
        "- name: key-auth",
    ]);
    let tags = |tags: &Option<Vec<String>>| tags.clone().unwrap_or_default();
    assert_eq!(tags(&entities.services[0].tags), ["blue", "prod", "team-a"]);
    assert_eq!(tags(&entities.routes[0].tags), ["team-a", "prod"]);
    assert_eq!(tags(&entities.plugins[0].tags), ["team-a", "prod"]);
}

#[test]
fn environment_variables_are_substituted() {
    let env = |name: &str| match name {
        "DECK_HOST" => Some("api.example.com".to_owned()),
        "DECK_PORT" => Some("8443".to_owned()),
        "DECK_TLS" => Some("1".to_owned()),
        _ => None,
    };
    let files = [file(&[
        V3,
        "services:",
        "- name: a",
        "  host: ${{ env \"DECK_HOST\" }}",
        "  port: ${{ env \"DECK_PORT\" | toInt }}",
        "  protocol: https",
        "  tls_verify: ${{ env \"DECK_TLS\" | toBool }}",
    ])];
    let entities = load_with(&files, &env).unwrap_or_else(|errors| panic!("{errors:#?}"));
    let service = &entities.services[0];
    assert_eq!(
        (service.host.as_str(), service.port, service.tls_verify),
        ("api.example.com", 8443, Some(true))
    );
}

#[test]
fn files_merge_and_names_are_unique_across_them() {
    let services = SourceFile {
        name: "services.yaml".to_owned(),
        text: yaml(&[V3, "services:", "- name: svc", "  host: example.com"]),
    };
    let routes = SourceFile {
        name: "routes.yaml".to_owned(),
        text: yaml(&[
            "routes:",
            "- name: r",
            "  service: {name: svc}",
            "  paths: [/a]",
        ]),
    };
    let entities = load_with(&[services.clone(), routes], &no_env)
        .unwrap_or_else(|errors| panic!("{errors:#?}"));
    assert_eq!(
        entities.routes[0].service,
        Some(ForeignKey {
            id: entities.services[0].id
        })
    );

    let again = SourceFile {
        name: "again.yaml".to_owned(),
        text: yaml(&[V3, "services:", "- name: svc", "  host: other.example"]),
    };
    assert_eq!(
        load_with(&[services, again], &no_env),
        Err(vec![
            "again.yaml:3:3: services[0].name: service name 'svc' is used twice (also by services[0] at services.yaml:3)".to_owned()
        ])
    );
}

#[test]
fn info_defaults_and_plugin_configs_apply() {
    let entities = loaded(&[
        V3,
        "_info:",
        "  defaults:",
        "    service:",
        "      read_timeout: 1234",
        "_plugin_configs:",
        "  strict:",
        "    minute: 10",
        "    policy: local",
        "services:",
        "- name: svc",
        "  host: example.com",
        "- name: slow",
        "  host: example.org",
        "  read_timeout: 99",
        "plugins:",
        "- name: rate-limiting",
        "  _config: strict",
        "  config:",
        "    minute: 5",
    ]);
    let timeouts: Vec<u32> = entities.services.iter().map(|s| s.read_timeout).collect();
    assert_eq!(timeouts, [1234, 99]);
    let config = &entities.plugins[0].config;
    assert_eq!(
        (&config["minute"], &config["policy"]),
        (&json!(5), &json!("local"))
    );
}

#[test]
fn render_then_load_gives_the_same_entities() {
    let entities = loaded(&[
        V3,
        "_info:",
        "  select_tags: [team-a]",
        "services:",
        "- name: svc",
        "  url: https://api.example.com:8443/v1",
        "  tags: [blue]",
        "  routes:",
        "  - name: chat",
        "    paths: [/chat]",
        "    methods: [POST]",
        "    headers:",
        "      x-version: [\"2\"]",
        "    plugins:",
        "    - name: cors",
        "      config:",
        "        origins: [https://app.example.com]",
        "  - paths: [/unnamed]",
        "  plugins:",
        "  - name: rate-limiting",
        "    config: {minute: 5, policy: local}",
        "routes:",
        "- name: orphan",
        "  hosts: [orphan.example.com]",
        "consumers:",
        "- username: alice",
        "- custom_id: bob-1",
        "plugins:",
        "- name: key-auth",
        "- name: rate-limiting",
        "  consumer: alice",
        "  config: {second: 1}",
        "- name: rate-limiting",
        "  service: svc",
        "  route: chat",
        "  config: {hour: 100}",
    ]);
    let select_tags = ["team-a".to_owned()];
    let text = render(&entities, &select_tags);
    for absent in ["created_at", "updated_at", "\n  tls_verify: null"] {
        assert!(!text.contains(absent), "`{absent}` in\n{text}");
    }
    let dump = SourceFile {
        name: "dump.yaml".to_owned(),
        text: text.clone(),
    };
    let again = load_with(&[dump], &no_env)
        .unwrap_or_else(|errors| panic!("the rendered file must load: {errors:#?}\n{text}"));
    assert_eq!(sorted(again.clone()), sorted(entities), "\n{text}");
    assert_eq!(render(&again, &select_tags), text, "rendering is stable");
}

// === the decK corpus ===

/// How the corpus turns a file into what `deck gateway apply` would read (INDEX.md,
/// "Conventions").
#[derive(Debug)]
enum Prep {
    AsIs,
    /// A file without `_format_version` that decK accepts once it is added.
    AddFormatVersion,
    /// A docs plugin example: its `config` becomes a global plugin of that name.
    PluginExample(String),
    /// A docs how-to page: each `entity_examples` block is one file.
    HowTo,
}

/// One file of INDEX.md and decK's verdict on it.
#[derive(Debug)]
struct Row {
    file: String,
    prep: Prep,
    deck_accepts: bool,
}

/// What Sluice does beyond decK's verdict.
#[derive(Debug, Clone, Copy)]
enum Sluice {
    /// decK accepts the file but Sluice lacks something in it: every error must name one of
    /// these (a plugin or entity key).
    Refused(&'static [&'static str]),
    /// decK rejects the file: some error must say this.
    Rejected(&'static str),
}

const SLUICE: &[(&str, Sluice)] = &[
    (
        "deck__tests__integration__testdata__sync__001-create-a-service__kong.yaml",
        Sluice::Rejected("cannot apply '1.1' config format version to Kong version 3.0 or above."),
    ),
    (
        "deck__tests__integration__testdata__sync__041-plugins-nested-foreign-keys__kong3x-services-not-in-state-or-dump.yaml",
        Sluice::Rejected("service '8ca63651-4068-4baa-b2b9-08dc99c29666' not found"),
    ),
    (
        "deck__tests__integration__testdata__diff__006-plugin-update__initial-request-transformer-reorder-array.yaml",
        Sluice::Refused(&["request-transformer"]),
    ),
    (
        "go-database-reconciler__pkg__file__testdata__badyamlwithspace__bar.yml",
        Sluice::Rejected("file must not begin with a whitespace"),
    ),
    (
        "go-database-reconciler__pkg__file__testdata__bad-env-var__file.yaml",
        Sluice::Rejected("must be prefixed with 'DECK_', found: 'SVC2_HOST'"),
    ),
    (
        "go-database-reconciler__tests__integration__testdata__sync__036-scoped-plugins-validation__3x__service-plugins.yaml",
        Sluice::Rejected("nesting service (example-service) under service-scoped plugin (request-transformer) is not allowed"),
    ),
    (
        "go-database-reconciler__tests__integration__testdata__sync__036-scoped-plugins-validation__3x__consumer-plugins.yaml",
        Sluice::Rejected("nesting consumer (foo) under consumer-scoped plugin (request-transformer) is not allowed"),
    ),
    (
        "developer.konghq.com__app___kong_plugins__ai-proxy__examples__llama2-chat-route.yaml",
        Sluice::Refused(&["llama2"]),
    ),
    (
        "developer.konghq.com__app___kong_plugins__ai-proxy-advanced__examples__round-robin.yaml",
        Sluice::Refused(&["ai-proxy-advanced"]),
    ),
];

/// The table rows of INDEX.md: `| # | folder | <repo> · `<path>` · <commit> | what | expected | plugins |`.
fn corpus_rows(index: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for line in index.lines() {
        let cells: Vec<&str> = line.split('|').collect();
        if !line.starts_with("| ") || !line.contains(" · `") || cells.len() < 7 {
            continue;
        }
        let (origin, what, expected) = (cells[3], cells[4], cells[5]);
        let repo = match origin.split(" · ").next().unwrap_or_default().trim() {
            "GDR" => "go-database-reconciler",
            "dev" => "developer.konghq.com",
            other => other,
        };
        let path = origin.split('`').nth(1).unwrap_or_default();
        let deck_accepts = !expected.contains("INVALID") && !expected.contains("CONDITIONAL");
        let prep = if path.ends_with(".md") {
            Prep::HowTo
        } else if let Some(rest) = path.split("_kong_plugins/").nth(1) {
            Prep::PluginExample(rest.split('/').next().unwrap_or_default().to_owned())
        } else if deck_accepts && what.contains("NOFV") {
            Prep::AddFormatVersion
        } else {
            Prep::AsIs
        };
        rows.push(Row {
            file: format!("{repo}__{}", path.replace('/', "__")),
            prep,
            deck_accepts,
        });
    }
    rows
}

/// The docs site's decK rendering: `_format_version: "3.0"`, the entities, and each `${var}`
/// as `${{ env "DECK_<its value without $>" }}`.
fn deck_file(entities: &serde_yaml::Value, variables: Option<&serde_yaml::Value>) -> String {
    let body = serde_yaml::to_string(entities).expect("entities render as YAML");
    let mut text = format!("{V3}\n{body}");
    if let Some(serde_yaml::Value::Mapping(variables)) = variables {
        for (name, spec) in variables {
            let value = spec.get("value").and_then(serde_yaml::Value::as_str);
            let (Some(name), Some(value)) = (name.as_str(), value) else {
                continue;
            };
            let env_name = format!("DECK_{}", value.trim_start_matches('$'));
            text = text.replace(
                &format!("${{{name}}}"),
                &format!("${{{{ env \"{env_name}\" }}}}"),
            );
        }
    }
    text
}

fn prepare(row: &Row, text: &str) -> Vec<SourceFile> {
    let source = |name: String, text: String| SourceFile { name, text };
    match &row.prep {
        Prep::AsIs => vec![source(row.file.clone(), text.to_owned())],
        Prep::AddFormatVersion => vec![source(row.file.clone(), format!("{V3}\n{text}"))],
        Prep::PluginExample(plugin) => {
            let example: serde_yaml::Value =
                serde_yaml::from_str(text).expect("a plugin example is YAML");
            let mut entry = serde_yaml::Mapping::new();
            entry.insert("name".into(), plugin.as_str().into());
            entry.insert(
                "config".into(),
                example.get("config").cloned().unwrap_or_default(),
            );
            let mut entities = serde_yaml::Mapping::new();
            entities.insert(
                "plugins".into(),
                serde_yaml::Value::Sequence(vec![serde_yaml::Value::Mapping(entry)]),
            );
            let entities = serde_yaml::Value::Mapping(entities);
            vec![source(
                row.file.clone(),
                deck_file(&entities, example.get("variables")),
            )]
        }
        Prep::HowTo => text
            .split("{% entity_examples %}")
            .skip(1)
            .enumerate()
            .map(|(index, block)| {
                let block = block
                    .split("{% endentity_examples %}")
                    .next()
                    .unwrap_or_default();
                let example: serde_yaml::Value =
                    serde_yaml::from_str(block).expect("an entity_examples block is YAML");
                let entities = example.get("entities").cloned().unwrap_or_default();
                let name = format!("{}#{}", row.file, index + 1);
                source(name, deck_file(&entities, example.get("variables")))
            })
            .collect(),
    }
}

fn corpus_env(name: &str) -> Option<String> {
    (name == "DECK_OPENAI_API_KEY").then(|| "sk-test".to_owned())
}

#[test]
fn deck_corpus_is_processed_as_its_index_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/deck-corpus");
    let Ok(index) = std::fs::read_to_string(dir.join("INDEX.md")) else {
        println!("skipped: no decK corpus at {}", dir.display());
        return;
    };
    let rows = corpus_rows(&index);
    assert!(!rows.is_empty(), "INDEX.md lists no files");
    for (file, _) in SLUICE {
        assert!(
            rows.iter().any(|row| row.file == *file),
            "{file} is in SLUICE but not in INDEX.md"
        );
    }
    let listing = std::fs::read_dir(&dir).expect("the corpus directory lists");
    for entry in listing {
        let name = entry.expect("a corpus entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            name == "INDEX.md" || rows.iter().any(|row| row.file == name),
            "{name} is in the corpus but not in INDEX.md"
        );
    }

    let mut failures = Vec::new();
    for row in &rows {
        let text = std::fs::read_to_string(dir.join(&row.file))
            .unwrap_or_else(|error| panic!("reading {}: {error}", row.file));
        let outcome = load_with(&prepare(row, &text), &corpus_env);
        let sluice = SLUICE
            .iter()
            .find(|(file, _)| *file == row.file)
            .map(|(_, sluice)| *sluice);
        let problem = match (&outcome, row.deck_accepts) {
            (Ok(_), true) => None,
            (Ok(_), false) => Some("decK rejects it, Sluice accepted it".to_owned()),
            (Err(errors), true) => match sluice {
                Some(Sluice::Refused(names)) => errors
                    .iter()
                    .find(|error| !names.iter().any(|name| error.contains(*name)))
                    .map(|error| format!("refused for a reason naming none of {names:?}: {error}")),
                _ => Some(format!("decK accepts it, Sluice refused it: {errors:#?}")),
            },
            (Err(errors), false) => match sluice {
                Some(Sluice::Rejected(reason)) if !errors.iter().any(|e| e.contains(reason)) => {
                    Some(format!("rejected, but not with `{reason}`: {errors:#?}"))
                }
                _ => None,
            },
        };
        if let Some(problem) = problem {
            failures.push(format!("{} ({:?}): {problem}", row.file, row.prep));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
