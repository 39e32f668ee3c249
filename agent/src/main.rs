//! `luumen-agent`: the agentless inventory collector's binary. Glue only: it parses flags, reads
//! the config files, sets up logging and hands over to the actors.

mod config;
mod doctor;
mod logging;
mod runner;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Agentless inventory collector: collects Linux hosts over SSH and reports to the Luumen API.
#[derive(Debug, Parser)]
#[command(name = "luumen-agent", version, about)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Collect every host once, report, and exit: 0 when every host was collected and every
    /// batch delivered, 1 when a host was not collected, 2 on a configuration error, 3 when a
    /// batch could not be delivered.
    Once(RunArgs),
    /// Collect on the schedule until stopped.
    Run(RunArgs),
    /// Check everything a collection needs — config, API, and per host TCP, host key,
    /// authentication and each sudo read — and print how to fix what fails. Exit 0 only when
    /// every check passes.
    Doctor {
        #[command(flatten)]
        run: RunArgs,
        /// Check only this host.
        #[arg(long)]
        host: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: doctor::Format,
    },
    /// Check a config.yaml or an inventory file and exit 0 when it is valid.
    ValidateConfig {
        /// The file to check.
        file: PathBuf,
        /// The file is an inventory (host list), not a config.yaml.
        #[arg(long)]
        inventory: bool,
    },
}

/// Where the configuration and the host list come from, and where results go.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The local config.yaml (API endpoint and key, limits).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A host list file (YAML or JSON) used instead of the API's remote config.
    #[arg(long, short)]
    inventory: Option<PathBuf>,
    /// Also write one JSON object per host to FILE, or to standard output with `-`.
    #[arg(long, short, value_name = "FILE|-")]
    output: Option<PathBuf>,
    /// The agent's state directory (pinned host keys); overrides config.yaml's `state_dir`
    /// (default /var/lib/luumen-agent).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_level);
    let outcome = match cli.command {
        Command::Once(args) => runner::once(args),
        Command::Run(args) => runner::run(args),
        Command::Doctor { run, host, format } => doctor::run(run, host, format),
        Command::ValidateConfig { file, inventory } => config::validate_file(&file, inventory),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(message = "luumen-agent failed.", error = %format!("{error:#}"));
            eprintln!("luumen-agent: error: {error:#}");
            ExitCode::from(runner::EXIT_CONFIG)
        }
    }
}
