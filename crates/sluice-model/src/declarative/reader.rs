//! Reading decK files into the boundary types: template substitution, YAML, the meta keys and
//! the nesting of entities. Whatever needs every file at once (references, unique names,
//! schemas) waits for the resolver.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::position::{self, PosNode, Seg};
use super::template;
use super::{
    Content, DeclarativeError, FConsumer, FCredential, FPlugin, FRoute, FService, Source,
    SourceFile,
};
use crate::entity::EntityKind;

/// The only `_format_version` decK accepts for Kong 3.x.
const FORMAT_VERSION: &str = "3.0";

/// decK treats a file without `_format_version` as "1.1", which it refuses for Kong 3.x.
const MISSING_FORMAT_VERSION: &str = "required field missing (decK reads a file without it as '1.1': cannot apply '1.1' config format version to Kong version 3.0 or above.)";

/// Top-level keys decK knows but Sluice has no entities for. They are refused when non-empty
/// rather than dropped, so a file never silently means less than it says.
const UNSUPPORTED_TOP_LEVEL: &[&str] = &[
    "upstreams",
    "targets",
    "certificates",
    "snis",
    "ca_certificates",
    "vaults",
    "consumer_groups",
    "keys",
    "key_sets",
    "partials",
    "filter_chains",
    "rbac_roles",
    "service_packages",
    "licenses",
    "custom_entities",
    "degraphql_routes",
];

/// Credentials a consumer may carry in decK that Sluice does not store.
const CONSUMER_CREDENTIALS: &[&str] = &[
    "hmacauth_credentials",
    "jwt_secrets",
    "oauth2_credentials",
    "mtls_auth_credentials",
];

/// What the files say about the config as a whole, gathered file by file.
#[derive(Default)]
struct Merged {
    content: Content,
    /// Some file set `_format_version` (a wrong one is reported where it is written).
    format_seen: bool,
    /// Some file could not be read at all; its meta keys are unknown.
    unreadable: bool,
    select_tags: Option<Setting<Vec<String>>>,
    defaults: Option<Setting<Map<String, Value>>>,
    plugin_configs: Map<String, Value>,
}

/// A file-wide setting (`_info.select_tags`, ...) and the file that set it first.
struct Setting<T> {
    value: T,
    file: String,
}

/// Reads one file's values, reporting problems at their position in it.
struct FileReader<'a> {
    name: &'a str,
    positions: Option<Arc<PosNode>>,
    errors: &'a mut Vec<DeclarativeError>,
}

pub(super) fn read(
    files: &[SourceFile],
    env: template::EnvSource<'_>,
) -> Result<Content, Vec<DeclarativeError>> {
    let Some(first) = files.first() else {
        return Err(vec![DeclarativeError {
            file: String::new(),
            line: None,
            column: None,
            path: String::new(),
            message: "no declarative config file given".to_owned(),
        }]);
    };
    let mut errors = Vec::new();
    let mut merged = Merged::default();
    for file in files {
        read_file(file, env, &mut merged, &mut errors);
    }
    let content = finish(merged, &first.name, &mut errors);
    if errors.is_empty() {
        Ok(content)
    } else {
        Err(errors)
    }
}

fn read_file(
    file: &SourceFile,
    env: template::EnvSource<'_>,
    merged: &mut Merged,
    errors: &mut Vec<DeclarativeError>,
) {
    let located = |line: Option<usize>, column: Option<usize>, message: String| DeclarativeError {
        file: file.name.clone(),
        line,
        column,
        path: String::new(),
        message,
    };
    let (text, template_errors) = template::substitute(&file.text, env);
    if !template_errors.is_empty() {
        merged.unreadable = true;
        errors.extend(
            template_errors
                .into_iter()
                .map(|e| located(Some(e.line), Some(e.column), e.message)),
        );
        return;
    }
    // decK's own rule: its YAML library misreads such files (Kong/deck#578).
    if text.starts_with(' ') {
        merged.unreadable = true;
        errors.push(located(
            Some(1),
            Some(1),
            "file must not begin with a whitespace".to_owned(),
        ));
        return;
    }
    let yaml = serde_yaml::from_str::<serde_yaml::Value>(&text).and_then(|mut yaml| {
        yaml.apply_merge()?;
        Ok(yaml)
    });
    let yaml = match yaml {
        Ok(yaml) => yaml,
        Err(error) => {
            merged.unreadable = true;
            let location = error.location();
            let line = location.as_ref().map(|l| l.line());
            let column = location.as_ref().map(|l| l.column());
            // The position goes in front, as for every other error.
            let mut message = error.to_string();
            if let (Some(line), Some(column)) = (line, column) {
                message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
            }
            errors.push(located(line, column, message));
            return;
        }
    };
    let root = match to_json(&yaml) {
        Ok(root) => root,
        Err(message) => {
            merged.unreadable = true;
            errors.push(located(None, None, message));
            return;
        }
    };
    let mut reader = FileReader {
        name: &file.name,
        positions: position::positions(&text).map(Arc::new),
        errors,
    };
    reader.root(root, merged);
}

/// Applies what needs all files: the format version check, `_info.defaults` and
/// `_plugin_configs`.
fn finish(merged: Merged, first_file: &str, errors: &mut Vec<DeclarativeError>) -> Content {
    let Merged {
        mut content,
        format_seen,
        unreadable,
        select_tags,
        defaults,
        plugin_configs,
    } = merged;
    if !format_seen && !unreadable {
        errors.push(DeclarativeError {
            file: first_file.to_owned(),
            line: None,
            column: None,
            path: "_format_version".to_owned(),
            message: MISSING_FORMAT_VERSION.to_owned(),
        });
    }
    content.format_version = FORMAT_VERSION.to_owned();
    content.select_tags = select_tags.map(|s| s.value).unwrap_or_default();
    if let Some(defaults) = defaults {
        apply_defaults(&mut content, &defaults.value);
    }
    let plugins = content
        .plugins
        .iter_mut()
        .chain(content.services.iter_mut().flat_map(|service| {
            service.plugins.iter_mut().chain(
                service
                    .routes
                    .iter_mut()
                    .flat_map(|route| route.plugins.iter_mut()),
            )
        }))
        .chain(
            content
                .routes
                .iter_mut()
                .flat_map(|route| route.plugins.iter_mut()),
        )
        .chain(
            content
                .consumers
                .iter_mut()
                .flat_map(|consumer| consumer.plugins.iter_mut()),
        );
    for plugin in plugins {
        apply_plugin_config(plugin, &plugin_configs, errors);
    }
    content
}

/// `_info.defaults`: fields a service or route does not set take these values (decK's
/// defaulter does the same before diffing).
fn apply_defaults(content: &mut Content, defaults: &Map<String, Value>) {
    let service_defaults = defaults.get("service").and_then(Value::as_object);
    let route_defaults = defaults.get("route").and_then(Value::as_object);
    for service in &mut content.services {
        if let Some(defaults) = service_defaults {
            fill(&mut service.fields, defaults);
        }
        if let Some(defaults) = route_defaults {
            for route in &mut service.routes {
                fill(&mut route.fields, defaults);
            }
        }
    }
    if let Some(defaults) = route_defaults {
        for route in &mut content.routes {
            fill(&mut route.fields, defaults);
        }
    }
}

fn fill(fields: &mut Map<String, Value>, defaults: &Map<String, Value>) {
    for (key, value) in defaults {
        fields.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

/// A plugin's `_config: <name>` takes the config of `_plugin_configs.<name>` for every key
/// its own `config` does not set.
fn apply_plugin_config(
    plugin: &mut FPlugin,
    configs: &Map<String, Value>,
    errors: &mut Vec<DeclarativeError>,
) {
    let Some(reference) = plugin.fields.remove("_config") else {
        return;
    };
    let node = [Seg::Key("_config".to_owned())];
    let Some(name) = reference.as_str() else {
        errors.push(
            plugin
                .source
                .error_at(&node, "expected the name of a _plugin_configs entry"),
        );
        return;
    };
    let Some(Value::Object(shared)) = configs.get(name) else {
        errors.push(
            plugin
                .source
                .error_at(&node, format!("_plugin_config \"{name}\" not found")),
        );
        return;
    };
    let config = plugin
        .fields
        .entry("config")
        .or_insert_with(|| Value::Object(Map::new()));
    if config.is_null() {
        *config = Value::Object(Map::new());
    }
    if let Value::Object(config) = config {
        for (key, value) in shared {
            config.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
}

/// serde_yaml's value as JSON, which is what the schemas validate. Scalar keys become strings
/// (`200:` is the key `"200"`), tags are dropped.
fn to_json(value: &serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Yaml;
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("the number {n} has no JSON representation"))?
            }
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                object.insert(key_text(key)?, to_json(value)?);
            }
            Value::Object(object)
        }
        Yaml::Tagged(tagged) => to_json(&tagged.value)?,
    })
}

fn key_text(key: &serde_yaml::Value) -> Result<String, String> {
    use serde_yaml::Value as Yaml;
    match key {
        Yaml::String(s) => Ok(s.clone()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Tagged(tagged) => key_text(&tagged.value),
        _ => Err("mapping keys must be strings".to_owned()),
    }
}

/// `null`, `[]` and `{}` declare nothing.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(object) => object.is_empty(),
        _ => false,
    }
}

fn child(node: &[Seg], key: &str) -> Vec<Seg> {
    let mut child = node.to_vec();
    child.push(Seg::Key(key.to_owned()));
    child
}

// === impl FileReader ===

impl FileReader<'_> {
    fn source(&self, node: &[Seg]) -> Source {
        let pos = self.positions.as_ref().map(|root| root.locate(node));
        Source {
            file: self.name.to_owned(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            path: position::render_path("", node),
            positions: self.positions.clone(),
            node: node.to_vec(),
        }
    }

    fn error(&mut self, node: &[Seg], message: impl Into<String>) {
        let error = self.source(node).error(message);
        self.errors.push(error);
    }

    fn root(&mut self, root: Value, merged: &mut Merged) {
        let root = match root {
            Value::Object(root) => root,
            Value::Null => Map::new(),
            _ => {
                self.error(
                    &[],
                    "expected a mapping of decK keys (_format_version, services, routes, consumers, plugins)",
                );
                return;
            }
        };
        for (key, value) in root {
            let node = [Seg::Key(key.clone())];
            match key.as_str() {
                "_format_version" => {
                    merged.format_seen = true;
                    self.format_version(&value, &node);
                }
                "_transform" => {
                    if !matches!(value, Value::Bool(_) | Value::Null) {
                        self.error(&node, "expected a boolean");
                    }
                }
                "_info" => self.info(value, &node, merged),
                // Kong OSS has one workspace, and Konnect settings do not apply: both are
                // accepted and ignored, as decK does when they do not apply.
                "_workspace" => {
                    if !matches!(value, Value::String(_) | Value::Null) {
                        self.error(&node, "expected a string");
                    }
                }
                "_konnect" => {
                    if !matches!(value, Value::Object(_) | Value::Null) {
                        self.error(&node, "expected a mapping");
                    }
                }
                "_plugin_configs" => self.plugin_configs(value, &node, merged),
                "services" => {
                    for (item, fields) in self.items(value, &node) {
                        let service = self.service(&item, fields);
                        merged.content.services.push(service);
                    }
                }
                "routes" => {
                    for (item, fields) in self.items(value, &node) {
                        let route = self.route(&item, fields);
                        merged.content.routes.push(route);
                    }
                }
                "consumers" => {
                    for (item, fields) in self.items(value, &node) {
                        let consumer = self.consumer(&item, fields);
                        merged.content.consumers.push(consumer);
                    }
                }
                "plugins" => {
                    for (item, fields) in self.items(value, &node) {
                        let plugin = self.plugin(&item, fields);
                        merged.content.plugins.push(plugin);
                    }
                }
                other if UNSUPPORTED_TOP_LEVEL.contains(&other) => {
                    if !is_empty(&value) {
                        self.error(&node, format!("'{other}' is not supported by Sluice yet"));
                    }
                }
                _ => self.error(&node, "unknown field"),
            }
        }
    }

    fn format_version(&mut self, value: &Value, node: &[Seg]) {
        // An unquoted `3.0` is a YAML number; decK users write it quoted, but the intent is
        // the same.
        let version = match value {
            Value::String(version) => version.clone(),
            Value::Number(version) => version.to_string(),
            _ => {
                self.error(node, "expected a string such as \"3.0\"");
                return;
            }
        };
        if version != FORMAT_VERSION {
            self.error(
                node,
                format!(
                    "cannot apply '{version}' config format version to Kong version 3.0 or above."
                ),
            );
        }
    }

    fn info(&mut self, value: Value, node: &[Seg], merged: &mut Merged) {
        let info = match value {
            Value::Object(info) => info,
            Value::Null => return,
            _ => {
                self.error(node, "expected a mapping");
                return;
            }
        };
        for (key, value) in info {
            let key_node = child(node, &key);
            match key.as_str() {
                "select_tags" => {
                    if let Some(tags) = self.strings(value, &key_node) {
                        self.setting(
                            &mut merged.select_tags,
                            tags,
                            &key_node,
                            "_info.select_tags",
                        );
                    }
                }
                "defaults" => match value {
                    Value::Object(defaults) => {
                        self.check_defaults(&defaults, &key_node);
                        self.setting(&mut merged.defaults, defaults, &key_node, "_info.defaults");
                    }
                    Value::Null => {}
                    _ => self.error(&key_node, "expected a mapping"),
                },
                // Sluice resolves references within the files only, so there is nothing to
                // look up by these tags.
                "default_lookup_tags" => {
                    if !matches!(value, Value::Object(_) | Value::Null) {
                        self.error(&key_node, "expected a mapping");
                    }
                }
                _ => self.error(&key_node, "unknown field"),
            }
        }
    }

    fn check_defaults(&mut self, defaults: &Map<String, Value>, node: &[Seg]) {
        for (key, value) in defaults {
            let key_node = child(node, key);
            match key.as_str() {
                "service" | "route" | "upstream" | "target" => {
                    if !matches!(value, Value::Object(_) | Value::Null) {
                        self.error(&key_node, "expected a mapping");
                    }
                }
                _ => self.error(&key_node, "unknown field"),
            }
        }
    }

    /// Records a setting several files may repeat, but not contradict.
    fn setting<T: PartialEq>(
        &mut self,
        slot: &mut Option<Setting<T>>,
        value: T,
        node: &[Seg],
        what: &str,
    ) {
        match slot {
            Some(first) if first.value != value => {
                let message = format!(
                    "{what} differs from the one in {}; all files must agree",
                    first.file
                );
                self.error(node, message);
            }
            Some(_) => {}
            None => {
                *slot = Some(Setting {
                    value,
                    file: self.name.to_owned(),
                });
            }
        }
    }

    fn strings(&mut self, value: Value, node: &[Seg]) -> Option<Vec<String>> {
        let items = match value {
            Value::Null => return None,
            Value::Array(items) => items,
            _ => {
                self.error(node, "expected a list of strings");
                return None;
            }
        };
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Value::String(text) => strings.push(text),
                _ => {
                    let mut item_node = node.to_vec();
                    item_node.push(Seg::Index(index));
                    self.error(&item_node, "expected a string");
                    return None;
                }
            }
        }
        Some(strings)
    }

    fn plugin_configs(&mut self, value: Value, node: &[Seg], merged: &mut Merged) {
        let configs = match value {
            Value::Object(configs) => configs,
            Value::Null => return,
            _ => {
                self.error(node, "expected a mapping of names to plugin configs");
                return;
            }
        };
        for (name, config) in configs {
            let name_node = child(node, &name);
            if !config.is_object() {
                self.error(&name_node, "expected a mapping (a plugin config)");
                continue;
            }
            match merged.plugin_configs.get(&name) {
                Some(first) if *first != config => {
                    let message = format!("_plugin_configs '{name}' is defined twice, differently");
                    self.error(&name_node, message);
                }
                Some(_) => {}
                None => {
                    merged.plugin_configs.insert(name, config);
                }
            }
        }
    }

    /// The entities of a list, each with its path; anything else is reported.
    fn items(&mut self, value: Value, node: &[Seg]) -> Vec<(Vec<Seg>, Map<String, Value>)> {
        let items = match value {
            Value::Null => return Vec::new(),
            Value::Array(items) => items,
            _ => {
                self.error(node, "expected a list");
                return Vec::new();
            }
        };
        let mut entities = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let mut item_node = node.to_vec();
            item_node.push(Seg::Index(index));
            match item {
                Value::Object(fields) => entities.push((item_node, fields)),
                _ => self.error(&item_node, "expected a mapping (one entity)"),
            }
        }
        entities
    }

    /// Removes keys Sluice cannot honour, reporting those that declare something.
    fn refuse(&mut self, fields: &mut Map<String, Value>, node: &[Seg], keys: &[&str], what: &str) {
        for key in keys {
            if fields.remove(*key).is_some_and(|value| !is_empty(&value)) {
                self.error(
                    &child(node, key),
                    format!("'{key}' is not supported by Sluice yet ({what})"),
                );
            }
        }
    }

    /// Takes a nested list (`routes`, `plugins`) out of `fields`.
    fn nested(
        &mut self,
        fields: &mut Map<String, Value>,
        node: &[Seg],
        key: &str,
    ) -> Vec<(Vec<Seg>, Map<String, Value>)> {
        match fields.remove(key) {
            Some(value) => self.items(value, &child(node, key)),
            None => Vec::new(),
        }
    }

    fn service(&mut self, node: &[Seg], mut fields: Map<String, Value>) -> FService {
        let mut routes = Vec::new();
        for (item, route_fields) in self.nested(&mut fields, node, "routes") {
            routes.push(self.route(&item, route_fields));
        }
        let plugins = self.plugins(&mut fields, node);
        self.refuse(
            &mut fields,
            node,
            &["filter_chains"],
            "WebAssembly filter chains",
        );
        FService {
            fields,
            routes,
            plugins,
            source: self.source(node),
        }
    }

    fn route(&mut self, node: &[Seg], mut fields: Map<String, Value>) -> FRoute {
        let plugins = self.plugins(&mut fields, node);
        self.refuse(
            &mut fields,
            node,
            &["filter_chains"],
            "WebAssembly filter chains",
        );
        FRoute {
            fields,
            plugins,
            source: self.source(node),
        }
    }

    fn consumer(&mut self, node: &[Seg], mut fields: Map<String, Value>) -> FConsumer {
        let plugins = self.plugins(&mut fields, node);
        let mut credentials = Vec::new();
        for kind in EntityKind::CREDENTIALS {
            for (item, credential_fields) in self.nested(&mut fields, node, kind.collection()) {
                credentials.push(FCredential {
                    kind,
                    fields: credential_fields,
                    source: self.source(&item),
                });
            }
        }
        self.refuse(
            &mut fields,
            node,
            CONSUMER_CREDENTIALS,
            "consumer credentials",
        );
        self.refuse(&mut fields, node, &["groups"], "consumer groups");
        FConsumer {
            fields,
            plugins,
            credentials,
            source: self.source(node),
        }
    }

    fn plugins(&mut self, fields: &mut Map<String, Value>, node: &[Seg]) -> Vec<FPlugin> {
        let mut plugins = Vec::new();
        for (item, plugin_fields) in self.nested(fields, node, "plugins") {
            plugins.push(self.plugin(&item, plugin_fields));
        }
        plugins
    }

    fn plugin(&mut self, node: &[Seg], mut fields: Map<String, Value>) -> FPlugin {
        self.refuse(&mut fields, node, &["consumer_group"], "consumer groups");
        FPlugin {
            fields,
            source: self.source(node),
        }
    }
}
