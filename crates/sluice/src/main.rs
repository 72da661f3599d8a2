//! `sluice`: the Kong-compatible API and AI gateway.
//!
//! This binary is thin: it parses the CLI (every flag also reads `SLUICE_<FLAG>`), sets up
//! logging, and wires the library crates together. It is the only crate that uses `anyhow`.

/// mimalloc: the proxy allocates small, short-lived buffers per request from many threads,
/// which is what it is built for; it measurably lowers CPU per request against glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod dataplane;
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
    /// Run a node: Admin API (and, as the data plane arrives, the proxy).
    Start(Box<start::StartArgs>),
    /// Manage the database schema.
    Migrations {
        #[command(subcommand)]
        action: MigrationsAction,
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
    runtime.block_on(async move {
        match cli.command {
            Command::Start(args) => start::run(*args).await,
            Command::Migrations { action } => migrations(action).await,
        }
    })
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

fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
