//! `sluice validate | diff | sync | dump | ping`: decK's workflow against the Admin API.
//!
//! diff and sync read the whole config at one version (`GET /sluice/snapshot`), compute the
//! plan locally (`sluice_model::diff`), and sync sends it in one request (`POST /sluice/sync`)
//! guarded by that version, so it is applied in one transaction or not at all.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;
use sluice_model::declarative::{self, Content, Entities, SourceFile};
use sluice_model::diff::{self, Plan};
use sluice_model::wire::{SnapshotBody, SyncRequest, SyncResponse};
use sluice_model::{Schemas, Snapshot};

pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8001";

#[derive(Args)]
pub struct AdminArgs {
    /// The Admin API to talk to.
    #[arg(long, env = "SLUICE_ADMIN_URL", default_value = DEFAULT_ADMIN_URL)]
    admin_url: String,
}

#[derive(Args)]
pub struct FilesArgs {
    /// decK-format YAML files; several are merged.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Manage only entities with these tags (added to the file's `_info.select_tags`).
    #[arg(long = "select-tag", env = "SLUICE_SELECT_TAG", value_delimiter = ',')]
    select_tags: Vec<String>,
}

/// decK's flags of `diff` and `sync`.
#[derive(Args)]
pub struct PlanArgs {
    /// Leave consumers, their credentials and the plugins scoped to them out, on both sides
    /// (decK's `--skip-consumers`).
    #[arg(long)]
    skip_consumers: bool,
    /// Print decK's JSON report (`changes`, `summary`, `warnings`, `errors`) instead of the
    /// text plan. As in decK, a failed sync is reported in `errors`.
    #[arg(long)]
    json_output: bool,
}

/// `sluice file render`'s arguments, as decK's.
#[derive(Args)]
pub struct RenderArgs {
    /// decK-format files, merged; standard input when none is given or for `-`.
    files: Vec<PathBuf>,
    /// Where to write; `-` (the default) is standard output.
    #[arg(short = 'o', long = "output-file", default_value = "-")]
    output: String,
    /// `yaml` or `json` (decK reads DECK_FORMAT when the flag is absent).
    #[arg(long, env = "DECK_FORMAT", default_value = "yaml", value_parser = ["yaml", "json"])]
    format: String,
    /// Substitute the real DECK_ variables instead of decK's mock values.
    #[arg(long)]
    populate_env_vars: bool,
}

/// Why a command failed, already printed; the process exits with this code.
pub struct Exit(pub i32);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Reads, parses and validates the files. Prints every problem with file, line and path.
fn load(files: &FilesArgs, schemas: &Schemas) -> Result<(Content, Entities), Exit> {
    let mut sources = Vec::with_capacity(files.files.len());
    for path in &files.files {
        match std::fs::read_to_string(path) {
            Ok(text) => sources.push(SourceFile {
                name: path.display().to_string(),
                text,
            }),
            Err(error) => {
                eprintln!("Error: reading {}: {error}", path.display());
                return Err(Exit(1));
            }
        }
    }
    let env = |name: &str| std::env::var(name).ok();
    let report = |errors: Vec<declarative::DeclarativeError>| {
        eprintln!("Error: {} problem(s) found:", errors.len());
        for error in errors {
            eprintln!("  {error}");
        }
        Exit(1)
    };
    let mut content = declarative::parse(&sources, &env).map_err(report)?;
    for tag in &files.select_tags {
        if !content.select_tags.contains(tag) {
            content.select_tags.push(tag.clone());
        }
    }
    let entities = declarative::resolve(&content, schemas, now()).map_err(report)?;
    Ok((content, entities))
}

/// `sluice file render`: the files as they will be applied.
pub fn render(args: &RenderArgs) -> Result<(), Exit> {
    let fail = |message: String| {
        eprintln!("Error: {message}");
        Exit(1)
    };
    let schemas = crate::plugins::schemas(Arc::new(crate::plugins::offline_registry()))
        .map_err(|e| fail(e.to_string()))?;
    let mut sources = Vec::new();
    let stdin = args.files.is_empty() || args.files.iter().any(|p| p.as_os_str() == "-");
    if stdin {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| fail(format!("reading standard input: {e}")))?;
        sources.push(SourceFile {
            name: "-".to_owned(),
            text,
        });
    }
    for path in args.files.iter().filter(|p| p.as_os_str() != "-") {
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
        sources.push(SourceFile {
            name: path.display().to_string(),
            text,
        });
    }
    let report = |errors: Vec<declarative::DeclarativeError>| {
        eprintln!("Error: {} problem(s) found:", errors.len());
        for error in errors {
            eprintln!("  {error}");
        }
        Exit(1)
    };
    let env = |name: &str| std::env::var(name).ok();
    let content = if args.populate_env_vars {
        declarative::parse(&sources, &env)
    } else {
        declarative::parse_mocked(&sources)
    }
    .map_err(report)?;
    let entities = declarative::resolve(&content, &schemas, now()).map_err(report)?;
    let mut text = declarative::render(&entities, &content.select_tags);
    if args.format == "json" {
        let value: serde_json::Value =
            serde_yaml::from_str(&text).map_err(|e| fail(format!("rendering JSON: {e}")))?;
        text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
    }
    if args.output == "-" {
        print!("{text}");
    } else {
        write_private(&args.output, &text)
            .map_err(|e| fail(format!("writing {}: {e}", args.output)))?;
    }
    Ok(())
}

/// A rendered file can carry secrets (credentials, substituted variables): owner-only.
fn write_private(path: &str, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?.write_all(text.as_bytes())
}

pub fn validate(files: &FilesArgs) -> Result<(), Exit> {
    let schemas =
        crate::plugins::schemas(Arc::new(crate::plugins::offline_registry())).map_err(|e| {
            eprintln!("Error: {e}");
            Exit(1)
        })?;
    let (_, entities) = load(files, &schemas)?;
    println!(
        "valid: {} services, {} routes, {} consumers, {} plugins",
        entities.services.len(),
        entities.routes.len(),
        entities.consumers.len(),
        entities.plugins.len()
    );
    Ok(())
}

struct Admin {
    base: String,
    client: reqwest::Client,
}

impl Admin {
    fn new(args: &AdminArgs) -> Self {
        Self {
            base: args.admin_url.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// `GET path`, its body read as `T`; a non-2xx answer is an error with Kong's message.
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach the Admin API at {}", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            bail!("GET {path} answered {status}: {}", message(&body));
        }
        response
            .json()
            .await
            .with_context(|| format!("reading the answer to GET {path}"))
    }

    /// The current config and its version.
    async fn snapshot(&self) -> anyhow::Result<(u64, Entities)> {
        let body: SnapshotBody = self.get("/sluice/snapshot").await?;
        let snapshot = Snapshot::from(body);
        Ok((snapshot.version, snapshot.entities))
    }
}

fn message(body: &Value) -> String {
    body["message"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned)
}

/// A computed plan: the changes, the config version they were computed against, and the
/// secret values its rendering must not show.
struct Planned {
    plan: Plan,
    version: u64,
    secrets: Vec<String>,
}

/// `--skip-consumers`: consumers, their credentials and the plugins scoped to them.
fn without_consumers(entities: &mut Entities) {
    entities.consumers.clear();
    entities.keyauth_credentials.clear();
    entities.basicauth_credentials.clear();
    entities.acls.clear();
    entities.plugins.retain(|p| p.consumer.is_none());
}

/// decK's `--json-output` report of a plan (go-database-reconciler's `JSONOutputObject`):
/// each change is `{name, kind, body: {new, old}}`; a deleted entity is in `new`.
fn json_report(plan: &Plan, errors: &[String]) -> String {
    let mut creating = Vec::new();
    let mut updating = Vec::new();
    let mut deleting = Vec::new();
    for change in &plan.changes {
        let (list, new, old) = match change.op {
            diff::Op::Create => (&mut creating, change.new.as_ref(), None),
            diff::Op::Update => (&mut updating, change.new.as_ref(), change.old.as_ref()),
            diff::Op::Delete => (&mut deleting, change.old.as_ref(), None),
        };
        list.push(serde_json::json!({
            "name": change.label,
            "kind": change.kind.singular(),
            "body": {"new": new, "old": old},
        }));
    }
    let summary = serde_json::json!({
        "creating": creating.len(),
        "updating": updating.len(),
        "deleting": deleting.len(),
        "total": plan.changes.len(),
    });
    let report = serde_json::json!({
        "changes": {"creating": creating, "updating": updating, "deleting": deleting},
        "summary": summary,
        "warnings": [],
        "errors": errors,
    });
    // decK indents with tabs.
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    let _ = serde::Serialize::serialize(&report, &mut serializer);
    String::from_utf8(out).unwrap_or_default()
}

/// Computes the plan of `files` against the Admin API's config.
async fn plan(files: &FilesArgs, admin: &AdminArgs, flags: &PlanArgs) -> Result<Planned, Exit> {
    let schemas =
        crate::plugins::schemas(Arc::new(crate::plugins::offline_registry())).map_err(|e| {
            eprintln!("Error: {e}");
            Exit(1)
        })?;
    // Fetch the current config while the files are parsed and validated: the two are
    // independent, and each takes a good part of a large diff's time.
    let admin = Admin::new(admin);
    let fetch = tokio::spawn(async move { admin.snapshot().await });
    let (content, mut target) = load(files, &schemas)?;
    let (version, current) = fetch
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .and_then(|r| r)
        .map_err(|e| {
            eprintln!("Error: {e:#}");
            Exit(1)
        })?;
    let mut current = current;
    if flags.skip_consumers {
        without_consumers(&mut current);
        without_consumers(&mut target);
    }
    diff::reconcile(&mut target, &content, &current);
    let plan = diff::diff(&current, &target, &content.select_tags);
    // decK masks every DECK_ variable's value (templates read only those, so the values the
    // files took are among them).
    let secrets = crate::secrets::of_plan(&plan, &schemas, crate::secrets::deck_env_values());
    Ok(Planned {
        plan,
        version,
        secrets,
    })
}

pub async fn diff_command(
    files: &FilesArgs,
    admin: &AdminArgs,
    flags: &PlanArgs,
    non_zero_exit_code: bool,
) -> Result<(), Exit> {
    let Planned { plan, secrets, .. } = plan(files, admin, flags).await?;
    if flags.json_output {
        println!(
            "{}\n",
            crate::secrets::mask(json_report(&plan, &[]), &secrets)
        );
    } else {
        let rendered = diff::render(&plan, std::io::stdout().is_terminal());
        print!("{}", crate::secrets::mask(rendered, &secrets));
    }
    if non_zero_exit_code && !plan.is_empty() {
        return Err(Exit(2));
    }
    Ok(())
}

pub async fn sync_command(
    files: &FilesArgs,
    admin_args: &AdminArgs,
    flags: &PlanArgs,
) -> Result<(), Exit> {
    let Planned {
        plan,
        version,
        secrets,
    } = plan(files, admin_args, flags).await?;
    if flags.json_output {
        // decK reports a failed sync in the JSON's `errors` and exits 0; the report goes out
        // once the sync is over.
        let result = apply(&plan, version, admin_args).await;
        let errors: Vec<String> = result.as_ref().err().cloned().into_iter().collect();
        println!(
            "{}\n",
            crate::secrets::mask(json_report(&plan, &errors), &secrets)
        );
        return Ok(());
    }
    let rendered = diff::render(&plan, std::io::stdout().is_terminal());
    print!("{}", crate::secrets::mask(rendered, &secrets));
    apply(&plan, version, admin_args).await.map_err(|error| {
        eprintln!("Error: {error}");
        Exit(1)
    })
}

/// Sends the plan to the Admin API, to apply in one transaction. The error says why nothing
/// was applied.
async fn apply(plan: &Plan, version: u64, admin_args: &AdminArgs) -> Result<(), String> {
    if plan.is_empty() {
        return Ok(());
    }
    let admin = Admin::new(admin_args);
    let started = Instant::now();
    eprintln!(
        "applying {} changes in one transaction (against config version {version})...",
        plan.changes.len()
    );
    let response = admin
        .client
        .post(format!("{}/sluice/sync", admin.base))
        .json(&SyncRequest {
            expected_version: version,
            plan,
        })
        .send()
        .await;
    let response = response.map_err(|error| {
        format!(
            "cannot reach the Admin API at {}: {error}; nothing was applied",
            admin.base
        )
    })?;
    let status = response.status();
    if !status.is_success() {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        return Err(format!(
            "sync refused ({status}): {}; nothing was applied",
            message(&body)
        ));
    }
    let applied: SyncResponse = response
        .json()
        .await
        .map_err(|error| format!("the sync was applied but its answer was unreadable: {error}"))?;
    eprintln!(
        "applied in {:.2} s; config version is now {}",
        started.elapsed().as_secs_f64(),
        applied.version
    );
    Ok(())
}

pub async fn dump(
    admin_args: &AdminArgs,
    output: Option<&PathBuf>,
    select_tags: &[String],
) -> Result<(), Exit> {
    let admin = Admin::new(admin_args);
    let (_, mut entities) = admin.snapshot().await.map_err(|e| {
        eprintln!("Error: {e:#}");
        Exit(1)
    })?;
    if !select_tags.is_empty() {
        let keep = |tags: &Option<Vec<String>>| {
            select_tags
                .iter()
                .all(|t| tags.as_ref().is_some_and(|tags| tags.contains(t)))
        };
        entities.services.retain(|e| keep(&e.tags));
        entities.routes.retain(|e| keep(&e.tags));
        entities.consumers.retain(|e| keep(&e.tags));
        entities.plugins.retain(|e| keep(&e.tags));
    }
    let text = declarative::render(&entities, select_tags);
    match output {
        // A dump carries credentials: owner-only, as Sluice stores every secret.
        Some(path) => write_private(&path.display().to_string(), &text).map_err(|e| {
            eprintln!("Error: writing {}: {e}", path.display());
            Exit(1)
        }),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

pub async fn ping(admin_args: &AdminArgs) -> Result<(), Exit> {
    let admin = Admin::new(admin_args);
    match admin.get::<Value>("/").await {
        Ok(root) => {
            println!("Successfully connected to Sluice!");
            println!(
                "Kong version:  {}",
                root["version"].as_str().unwrap_or("unknown")
            );
            if let Some(version) = root["sluice_version"].as_str() {
                println!("Sluice version:  {version}");
            }
            Ok(())
        }
        Err(error) => {
            eprintln!("Error: {error:#}");
            Err(Exit(1))
        }
    }
}
