//! `luumen-agent doctor`: config, API, then every host in parallel; a table (or JSON) with a
//! remedy per failure.

use std::process::ExitCode;

use actix::SyncArbiter;
use luumen_actors::doctor::{diagnose, Check};
use luumen_actors::protocol::ProtocolActor;
use luumen_actors::HostSpec;
use luumen_schemas::config::default_max_concurrency;
use luumen_schemas::inventory::Inventory;

use crate::{config, runner, RunArgs};

/// How the checks are printed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns with ✓/✗.
    Table,
    /// A JSON array of checks.
    Json,
}

/// Runs every check and prints them; exit 0 only when all pass.
pub fn run(args: RunArgs, only_host: Option<String>, format: Format) -> anyhow::Result<ExitCode> {
    let system = actix::System::new();
    let checks = system.block_on(async move { collect_checks(&args, only_host.as_deref()).await });
    print(&checks, format)?;
    Ok(if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(runner::EXIT_HOSTS_FAILED)
    })
}

async fn collect_checks(args: &RunArgs, only_host: Option<&str>) -> Vec<Check> {
    let mut checks = Vec::new();
    let local = match &args.config {
        None => None,
        Some(path) => match config::load_local(path) {
            Ok(local) => {
                checks.push(Check::pass("-", "config", path.display().to_string()));
                Some(local)
            }
            Err(error) => {
                checks.push(Check::fail(
                    "-",
                    "config",
                    format!("{error:#}"),
                    "fix the file (luumen-agent validate-config FILE)",
                ));
                return checks;
            }
        },
    };
    // The client resolves the hosts' `vault:` references below, as a collection does; without
    // one such hosts fail their credentials check without being contacted.
    let mut vault = None;
    if let Some(local) = &local {
        match runner::vault_client(local) {
            Ok(None) => {}
            Err(error) => checks.push(Check::fail(
                "-",
                "vault",
                format!("{error:#}"),
                "fix the vault block of config.yaml and the token / secret id files",
            )),
            Ok(Some(client)) => {
                match client.check().await {
                    Ok(info) => checks.push(Check::pass("-", "vault", format!("token valid (ttl {:?}, renewable {})", info.ttl, info.renewable))),
                    Err(error) => checks.push(Check::fail("-", "vault", error.to_string(), "check vault.address, the CA, and the token (VAULT_TOKEN / token_file) or AppRole")),
                }
                vault = Some(client);
            }
        }
    }
    let mut inventory: Option<Inventory> = None;
    if let Some(path) = &args.inventory {
        match config::load_inventory(path) {
            Ok(found) => {
                checks.push(Check::pass(
                    "-",
                    "inventory",
                    format!("{}: {} hosts", path.display(), found.hosts.len()),
                ));
                inventory = Some(found);
            }
            Err(error) => checks.push(Check::fail(
                "-",
                "inventory",
                format!("{error:#}"),
                "fix the file (luumen-agent validate-config --inventory FILE)",
            )),
        }
    }
    if let Some(local) = &local {
        match runner::api_client(local) {
            Err(error) => checks.push(Check::fail("-", "api", format!("{error:#}"), "check api.base_url and api.ca_file")),
            Ok(api) => match api.fetch_config().await {
                Ok(body) => match config::parse_remote(&body, &format!("{}/config", api.base_url())) {
                    Ok(remote) => {
                        checks.push(Check::pass("-", "api", format!("{}/config accepted the key: {} hosts", api.base_url(), remote.hosts.len())));
                        inventory.get_or_insert(remote);
                    }
                    Err(error) => checks.push(Check::fail("-", "api", format!("{error:#}"), "the API serves a config this agent cannot use: check the API and agent versions")),
                },
                Err(error) => {
                    let remedy = if matches!(error.kind, luumen_actors::api::ApiErrorKind::KeyRejected(_)) {
                        "the key was rejected: check api.api_key (or LUUMEN_API_KEY) and the key's role"
                    } else {
                        "check that the patch server reaches the API over HTTPS (proxy, firewall, DNS, CA)"
                    };
                    checks.push(Check::fail("-", "api", error.to_string(), remedy));
                }
            },
        }
    }
    let Some(inventory) = inventory else {
        if args.config.is_none() && args.inventory.is_none() {
            checks.push(Check::fail(
                "-",
                "config",
                "no --config and no --inventory",
                "give --config FILE or --inventory FILE",
            ));
        }
        return checks;
    };
    let timeouts = local.as_ref().map(|c| c.timeouts).unwrap_or_default();
    let ssh = runner::ssh_settings(local.as_ref(), args.state_dir.as_deref());
    let mut specs = HostSpec::from_inventory(&inventory, &timeouts, &ssh);
    if let Some(id) = only_host {
        specs.retain(|s| s.host.id == id);
        if specs.is_empty() {
            checks.push(Check::fail(
                "-",
                "host",
                format!("no host with id {id:?}"),
                "use an id from the host list",
            ));
            return checks;
        }
    }
    let threads = local
        .as_ref()
        .map_or_else(default_max_concurrency, |c| c.max_concurrency)
        .min(specs.len().max(1));
    let protocol = SyncArbiter::start(threads, || ProtocolActor);
    checks.extend(diagnose(specs, protocol, vault).await);
    checks
}

fn print(checks: &[Check], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(checks)?),
        Format::Table => {
            let host_width = checks
                .iter()
                .map(|c| c.host.chars().count())
                .max()
                .unwrap_or(4)
                .max(4);
            let check_width = checks
                .iter()
                .map(|c| c.check.len())
                .max()
                .unwrap_or(5)
                .max(5);
            println!(
                "{:host_width$}  {:check_width$}     DETAIL",
                "HOST", "CHECK"
            );
            for check in checks {
                let mark = if check.ok { "✓" } else { "✗" };
                println!(
                    "{:host_width$}  {:check_width$}  {mark}  {}",
                    check.host, check.check, check.detail
                );
                if let Some(remedy) = &check.remedy {
                    println!("{:host_width$}  {:check_width$}     → {remedy}", "", "");
                }
            }
            let failed = checks.iter().filter(|c| !c.ok).count();
            println!("{} checks, {failed} failed", checks.len());
        }
    }
    Ok(())
}
