//! `luumen-api`: the self-hosted Luumen API server.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use luumen_api::server;
use luumen_api::store::Role;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "luumen-api", version, about = "Self-hosted Luumen API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the data dir, database and master key; prints one admin and one agent key.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Serves the API.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        /// Address and port, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// PEM certificate chain; serves HTTPS with --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Largest accepted POST /reports body.
        #[arg(long, default_value_t = 32 * 1024 * 1024)]
        max_report_bytes: usize,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Adds an API key and prints it once.
    CreateKey {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, value_enum)]
        role: Role,
    },
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new("info"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.with_target(false).init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(false)
            .init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Init { data_dir } => server::init(&data_dir).map(|(admin, agent)| {
            println!("admin_key={}", admin.as_str());
            println!("agent_key={}", agent.as_str());
        }),
        Command::CreateKey { data_dir, role } => {
            server::create_key(&data_dir, role).map(|(key, id)| {
                println!("{}_key={}", role.as_str(), key.as_str());
                println!("key_id={id}");
            })
        }
        Command::Serve {
            data_dir,
            listen,
            tls_cert,
            tls_key,
            max_report_bytes,
            workers,
        } => actix_web::rt::System::new().block_on(server::serve(server::ServeOptions {
            data_dir,
            listen,
            tls_cert,
            tls_key,
            max_report_bytes,
            workers,
        })),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "luumen-api failed");
            ExitCode::FAILURE
        }
    }
}
