//! `luumen-agent`: the agentless inventory collector's binary. Glue only: it parses flags, reads
//! the config files, sets up logging and hands over to the actors.

mod config;
mod doctor;
mod logging;
mod runner;
mod service;
#[cfg(windows)]
mod windows_service;

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
    /// Write a systemd unit for `run --config CONFIG` (default /etc/systemd/system/luumen-agent.service).
    #[cfg(not(windows))]
    InstallService {
        /// The config.yaml the service runs with.
        #[arg(long, default_value = "/etc/luumen/config.yaml")]
        config: PathBuf,
        /// Where to write the unit.
        #[arg(long, default_value = "/etc/systemd/system/luumen-agent.service")]
        unit: PathBuf,
        /// Use Type=notify-reload (systemd 253+); detected from `systemctl --version` by default.
        #[arg(long)]
        notify_reload: Option<bool>,
    },
    /// Register the Windows service `luumen-agent` that runs `service --config CONFIG`, started
    /// automatically and restarted on failure.
    #[cfg(windows)]
    InstallService {
        /// The config.yaml the service runs with.
        #[arg(long, default_value = r"C:\ProgramData\luumen\config.yaml")]
        config: PathBuf,
    },
    /// Run as the Windows service: what the Service Control Manager starts. Like `run`, with
    /// stop, shutdown and reload (ParamChange) coming from the SCM.
    #[cfg(windows)]
    Service(RunArgs),
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
    // First of all: a SIGHUP that arrives before `run` has installed its reload handler (or
    // during `once`) must not kill the process. `run` replaces this with its handler.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    let cli = Cli::parse();
    logging::init(&cli.log_level);
    log_panics();
    let outcome = match cli.command {
        Command::Once(args) => runner::once(args),
        Command::Run(args) => runner::run(args),
        Command::Doctor { run, host, format } => doctor::run(run, host, format),
        #[cfg(not(windows))]
        Command::InstallService {
            config,
            unit,
            notify_reload,
        } => install_service(&config, &unit, notify_reload),
        #[cfg(windows)]
        Command::InstallService { config } => windows_service::install(&config),
        #[cfg(windows)]
        Command::Service(args) => windows_service::dispatch(args),
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

/// Panics (caught per host and restarted by the Supervisor) go to the structured log, with
/// where they happened, instead of as bare text on standard error.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            message = "Panic.",
            panic = %message,
            location = %location,
            thread = thread.name().unwrap_or("unnamed"),
        );
    }));
}

/// Writes the unit file; paths come from config.yaml (state_dir, log_dir) when it can be read.
#[cfg(not(windows))]
fn install_service(
    config: &std::path::Path,
    unit: &std::path::Path,
    notify_reload: Option<bool>,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let binary = std::env::current_exe().context("cannot find this executable")?;
    let local = config::load_local(config).ok();
    let state_dir = local
        .as_ref()
        .map(|c| c.state_dir.clone())
        .unwrap_or_else(luumen_schemas::config::default_state_dir);
    let log_dir = local.as_ref().and_then(|c| c.log_dir.clone());
    let notify_reload =
        notify_reload.unwrap_or_else(|| service::systemd_version().is_some_and(|v| v >= 253));
    let text = service::unit_file(
        &binary,
        config,
        &state_dir,
        log_dir.as_deref(),
        notify_reload,
    );
    std::fs::write(unit, text).with_context(|| format!("cannot write {}", unit.display()))?;
    println!(
        "wrote {} (Type={}); next: systemctl daemon-reload && systemctl enable --now luumen-agent",
        unit.display(),
        if notify_reload {
            "notify-reload"
        } else {
            "notify"
        }
    );
    Ok(ExitCode::SUCCESS)
}
