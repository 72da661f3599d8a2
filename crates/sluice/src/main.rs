//! `sluice`: the Kong-compatible API and AI gateway.
//!
//! This binary is thin: it parses the CLI (every flag also reads `SLUICE_<FLAG>`), sets up
//! logging, and wires the library crates together. It is the only crate that uses `anyhow`.

/// mimalloc: the proxy allocates small, short-lived buffers per request from many threads,
/// which is what it is built for; it measurably lowers CPU per request against glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod dataplane;
mod deck;
mod hybrid;
mod plugins;
mod secrets;
mod start;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kong-compatible API and AI gateway"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax, e.g. `info` or `sluice=debug`).
    #[arg(long, global = true, env = "SLUICE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the Admin API and the proxy (traditional), the Admin API and the cluster
    /// listener (control_plane), or the proxy fed by a control plane (data_plane).
    Start(Box<start::StartArgs>),
    /// Validate decK-format files offline: schema, references, duplicates.
    Validate(deck::FilesArgs),
    /// Show what `sync` would change, in decK's words.
    Diff {
        #[command(flatten)]
        files: deck::FilesArgs,
        #[command(flatten)]
        admin: deck::AdminArgs,
        #[command(flatten)]
        plan: deck::PlanArgs,
        /// Exit 2 when there are changes (0 when none, 1 on error).
        #[arg(long)]
        non_zero_exit_code: bool,
    },
    /// Make the Admin API's config match the files, atomically.
    Sync {
        #[command(flatten)]
        files: deck::FilesArgs,
        #[command(flatten)]
        admin: deck::AdminArgs,
        #[command(flatten)]
        plan: deck::PlanArgs,
    },
    /// Write the current config as a decK-format file.
    Dump {
        #[command(flatten)]
        admin: deck::AdminArgs,
        /// Output file (stdout when absent).
        #[arg(short = 'o', long = "output-file")]
        output: Option<std::path::PathBuf>,
        #[arg(long = "select-tag", value_delimiter = ',')]
        select_tags: Vec<String>,
    },
    /// Check that the Admin API answers, and print its version.
    Ping {
        #[command(flatten)]
        admin: deck::AdminArgs,
    },
    /// Hybrid-mode helpers.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// decK's file commands.
    File {
        #[command(subcommand)]
        action: FileAction,
    },
    /// Manage the database schema.
    Migrations {
        #[command(subcommand)]
        action: MigrationsAction,
    },
}

#[derive(Subcommand)]
enum FileAction {
    /// Print the files as they will be applied: merged, environment substituted (mocked
    /// unless --populate-env-vars), validated, with defaults, in decK's format.
    Render(deck::RenderArgs),
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Write a shared certificate and key for --cluster-cert / --cluster-cert-key (Kong's
    /// "shared" mTLS mode: every node of the cluster uses the same pair).
    GenCert {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum MigrationsAction {
    /// Apply pending migrations.
    Up {
        #[arg(long, env = "SLUICE_DATABASE", default_value = start::DEFAULT_DATABASE)]
        database: String,
    },
    /// List migrations and whether each is applied.
    Status {
        #[arg(long, env = "SLUICE_DATABASE", default_value = start::DEFAULT_DATABASE)]
        database: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Start(args) => start::run(*args).await.map(|()| Ok(())),
            Command::Migrations { action } => migrations(action).await.map(|()| Ok(())),
            Command::Validate(files) => Ok(deck::validate(&files)),
            Command::Diff {
                files,
                admin,
                plan,
                non_zero_exit_code,
            } => Ok(deck::diff_command(&files, &admin, &plan, non_zero_exit_code).await),
            Command::Sync { files, admin, plan } => {
                Ok(deck::sync_command(&files, &admin, &plan).await)
            }
            Command::Dump {
                admin,
                output,
                select_tags,
            } => Ok(deck::dump(&admin, output.as_ref(), &select_tags).await),
            Command::Ping { admin } => Ok(deck::ping(&admin).await),
            Command::File {
                action: FileAction::Render(args),
            } => Ok(deck::render(&args)),
            Command::Cluster {
                action: ClusterAction::GenCert { cert, key },
            } => {
                sluice_cluster::gen_cert(&cert, &key)?;
                println!("wrote {} and {}", cert.display(), key.display());
                Ok(Ok(()))
            }
        }
    })?;
    // decK's exit codes: 0 ok, 1 error, 2 diff found (with --non-zero-exit-code).
    if let Err(deck::Exit(code)) = result {
        std::process::exit(code);
    }
    Ok(())
}

async fn migrations(action: MigrationsAction) -> anyhow::Result<()> {
    let (database, show) = match action {
        MigrationsAction::Up { database } => (database, false),
        MigrationsAction::Status { database } => (database, true),
    };
    // Opening the store applies pending migrations.
    let Some(url) = start::database_url(&database)? else {
        anyhow::bail!("migrations need a database; --database off has none");
    };
    let store = sluice_store::Store::open(&url).await?;
    for (version, description, applied) in store.migration_status().await? {
        if show {
            let state = if applied { "applied" } else { "pending" };
            println!("{version} {description}: {state}");
        }
    }
    if !show {
        println!(
            "database is up to date (config version {})",
            store.version()
        );
    }
    store.close().await;
    Ok(())
}

/// Colour only for a person reading a terminal: a log file or a pipe gets plain text, and
/// `NO_COLOR` (any non-empty value, per no-color.org) turns it off everywhere.
fn use_colour() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stderr().is_terminal()
}

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
