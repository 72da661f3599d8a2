//! `sluice-mock-llm`: the mock OpenAI / xAI upstream as a process, for benchmarks and for
//! tests that need it outside their own process.
//!
//! ```text
//! sluice-mock-llm --listen 127.0.0.1:9000 --flavor xai --chunk-gap-ms 5 --latency-ms 20
//! ```
//!
//! Prints `listening on http://ADDR` on stdout once the socket is bound, so a script can wait
//! for that line. Stops on Ctrl-C. See the library docs for endpoints and per-request knobs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use sluice_mock_llm::{Flavor, MockConfig, RequestLog};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-mock-llm",
    about = "A mock OpenAI / xAI upstream speaking the real wire formats"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Which provider to imitate: error shapes, routes, default models.
    #[arg(long, value_enum, default_value_t = FlavorArg::Openai)]
    flavor: FlavorArg,
    /// Milliseconds between two SSE events of a streamed answer.
    #[arg(long, default_value_t = 0)]
    chunk_gap_ms: u64,
    /// Milliseconds to wait before sending response headers.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Keep every request for `GET /__mock/requests`. Off by default: a benchmark would grow
    /// memory without bound.
    #[arg(long)]
    record: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FlavorArg {
    Openai,
    Xai,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = MockConfig {
        flavor: match args.flavor {
            FlavorArg::Openai => Flavor::OpenAi,
            FlavorArg::Xai => Flavor::Xai,
        },
        chunk_gap: Duration::from_millis(args.chunk_gap_ms),
        latency: Duration::from_millis(args.latency_ms),
        ..MockConfig::default()
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!("listening on http://{addr}");

    let log = args.record.then(RequestLog::new);
    let app = sluice_mock_llm::router(config, log);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // If the signal handler cannot be installed, run until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
        .context("serving")?;
    Ok(())
}
