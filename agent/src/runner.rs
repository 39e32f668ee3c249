//! `once` and `run`: wires config, actors and outputs together.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use actix::{Actor, Addr, SyncArbiter};
use anyhow::{bail, Context};
use luumen_actors::api::ApiClient;
use luumen_actors::collector::CollectorActor;
use luumen_actors::host::Peers;
use luumen_actors::protocol::ProtocolActor;
use luumen_actors::reporter::output::NdjsonOutput;
use luumen_actors::reporter::{DeliveryReport, Flush, Reporter, ReporterConfig};
use luumen_actors::spool::{Spool, SpoolLimits};
use luumen_actors::supervisor::{CycleSummary, RunCycle, StartSchedule, Supervisor};
use luumen_actors::vault::{RenewalTask, SecretSource, VaultClient, VaultSettings};
use luumen_actors::{HostSpec, SshSettings};
use luumen_schemas::config::{
    default_max_concurrency, default_state_dir, BatchConfig, LocalConfig, Timeouts,
};
use luumen_schemas::inventory::Inventory;
use luumen_schemas::report::Status;
use secrecy::SecretString;

use crate::config;
use crate::RunArgs;

/// Some host was not collected.
pub const EXIT_HOSTS_FAILED: u8 = 1;
/// The configuration could not be used.
pub const EXIT_CONFIG: u8 = 2;
/// A batch could not be delivered to the API.
pub const EXIT_NOT_DELIVERED: u8 = 3;

/// Threads that run the parsers.
const COLLECTOR_THREADS: usize = 2;
/// Pause before sending again after a failed send in `run`.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Everything a cycle needs, read before the actors start.
struct Setup {
    inventory: Inventory,
    agent_id: String,
    max_concurrency: usize,
    timeouts: Timeouts,
    batch: BatchConfig,
    ssh: SshSettings,
    spool: Option<Spool>,
    vault: Option<VaultClient>,
    api: Option<ApiClient>,
    output: Option<NdjsonOutput>,
}

fn open_output(path: Option<&Path>) -> anyhow::Result<Option<NdjsonOutput>> {
    Ok(match path {
        None => None,
        Some(path) if path == Path::new("-") => Some(NdjsonOutput::Stdout(std::io::stdout())),
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("cannot create output file {}", path.display()))?;
            Some(NdjsonOutput::File(BufWriter::new(file)))
        }
    })
}

pub(crate) fn api_client(config: &LocalConfig) -> anyhow::Result<ApiClient> {
    let ca = match &config.api.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read api.ca_file {}", path.display()))?,
        ),
        None => None,
    };
    Ok(ApiClient::new(
        &config.api.base_url,
        &config.api.api_key,
        ca.as_deref(),
        Duration::from_secs(config.api.request_timeout_seconds),
    )?)
}

/// Reads config.yaml and the host list (from `--inventory` or the API).
async fn setup(args: &RunArgs) -> anyhow::Result<Setup> {
    let local = match &args.config {
        Some(path) => Some(config::load_local(path)?),
        None => None,
    };
    if local.is_none() && args.inventory.is_none() {
        bail!("give --config FILE (the API's remote config) or --inventory FILE (a host list)");
    }
    let api = local.as_ref().map(api_client).transpose()?;
    let inventory = match (&args.inventory, &api) {
        (Some(path), _) => config::load_inventory(path)?,
        (None, Some(api)) => {
            let body = api
                .fetch_config()
                .await
                .context("cannot fetch the remote config")?;
            let url = format!("{}/config", api.base_url());
            let inventory = config::parse_remote(&body, &url)?;
            tracing::info!(message = "Remote config fetched.", url = %url, hosts = inventory.hosts.len());
            inventory
        }
        (None, None) => unreachable!("checked above"),
    };
    // Without an API, results must go somewhere: standard output.
    let output_path = match (&args.output, &api) {
        (None, None) => Some(Path::new("-")),
        (path, _) => path.as_deref(),
    };
    Ok(Setup {
        agent_id: local
            .as_ref()
            .and_then(|c| c.agent_id.clone())
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        max_concurrency: local
            .as_ref()
            .map_or_else(default_max_concurrency, |c| c.max_concurrency),
        timeouts: local.as_ref().map(|c| c.timeouts).unwrap_or_default(),
        batch: local.as_ref().map(|c| c.batch).unwrap_or_default(),
        ssh: ssh_settings(local.as_ref(), args.state_dir.as_deref()),
        spool: match (&local, &api) {
            (Some(local), Some(_)) => Some(open_spool(local, args.state_dir.as_deref())?),
            _ => None,
        },
        vault: local.as_ref().map(vault_client).transpose()?.flatten(),
        output: open_output(output_path)?,
        inventory,
        api,
    })
}

/// The durable spool under the state directory; damaged data found there is set aside and
/// reported, never fatal.
fn open_spool(local: &LocalConfig, state_dir: Option<&Path>) -> anyhow::Result<Spool> {
    let dir = state_dir.unwrap_or(&local.state_dir).join("spool");
    let limits = SpoolLimits {
        max_bytes: local.spool.max_bytes,
        ..SpoolLimits::default()
    };
    let (spool, recovery) = Spool::open(&dir, limits)
        .with_context(|| format!("cannot open the spool {}", dir.display()))?;
    let stats = spool.stats();
    tracing::info!(
        message = "Spool opened.",
        dir = %dir.display(),
        records = stats.records,
        bytes = stats.bytes,
        set_aside = recovery.corrupt_set_aside(),
        torn_tails = recovery.torn_tails,
    );
    Ok(spool)
}

/// A file read anew at every Vault login (tokens and secret ids rotate).
fn file_source(path: &Path, what: &'static str) -> SecretSource {
    let path = path.to_path_buf();
    SecretSource::from_fn(move || {
        std::fs::read_to_string(&path)
            .map(|text| SecretString::from(text.trim().to_owned()))
            .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
    })
}

/// The Vault client of config.yaml's `vault` block, if any.
pub(crate) fn vault_client(config: &LocalConfig) -> anyhow::Result<Option<VaultClient>> {
    let Some(vault) = &config.vault else {
        return Ok(None);
    };
    let ca = match &vault.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read vault.ca_file {}", path.display()))?,
        ),
        None => None,
    };
    let token = match &vault.token_file {
        Some(path) => Some(file_source(path, "vault.token_file")),
        None => std::env::var("VAULT_TOKEN")
            .ok()
            .map(|t| SecretSource::fixed(SecretString::from(t))),
    };
    let secret_id = vault
        .approle
        .as_ref()
        .map(|a| file_source(&a.secret_id_file, "vault.approle.secret_id_file"));
    let settings = VaultSettings::from_config(vault, ca, token, secret_id)
        .context("invalid vault settings")?;
    Ok(Some(
        VaultClient::new(settings).context("cannot set up the Vault client")?,
    ))
}

pub(crate) fn ssh_settings(local: Option<&LocalConfig>, state_dir: Option<&Path>) -> SshSettings {
    let state_dir = state_dir
        .map(Path::to_path_buf)
        .or_else(|| local.map(|c| c.state_dir.clone()))
        .unwrap_or_else(default_state_dir);
    SshSettings {
        host_key_policy: local.map(|c| c.host_key_policy).unwrap_or_default(),
        pin_file: state_dir.join("known_hosts"),
        known_hosts_files: local
            .map(|c| c.known_hosts_files.clone())
            .unwrap_or_default(),
        allow_ssh_rsa_sha1: local.is_some_and(|c| c.allow_ssh_rsa_sha1),
    }
}

fn start_actors(
    setup: Setup,
) -> (
    Addr<Supervisor>,
    Addr<Reporter>,
    Option<String>,
    Option<RenewalTask>,
) {
    let renewal = setup.vault.as_ref().map(VaultClient::spawn_renewal);
    let api_url = setup.api.as_ref().map(|a| a.base_url().to_owned());
    let specs = HostSpec::from_inventory(&setup.inventory, &setup.timeouts, &setup.ssh);
    let threads = setup.max_concurrency.min(specs.len().max(1));
    let protocol = SyncArbiter::start(threads, || ProtocolActor);
    let collector = SyncArbiter::start(COLLECTOR_THREADS, || CollectorActor);
    let reporter = Reporter::new(ReporterConfig {
        agent_id: setup.agent_id,
        batch: setup.batch,
        api: setup.api,
        output: setup.output,
        retry_after: RETRY_AFTER,
        spool: setup.spool,
    })
    .start();
    let peers = Peers {
        protocol,
        collector,
        reporter: reporter.clone(),
        vault: setup.vault,
    };
    (
        Supervisor::new(specs, peers).start(),
        reporter,
        api_url,
        renewal,
    )
}

/// `luumen-agent once`.
pub fn once(args: RunArgs) -> anyhow::Result<ExitCode> {
    let system = actix::System::new();
    system.block_on(async move {
        let setup = setup(&args).await?;
        let (supervisor, reporter, api_url, _renewal) = start_actors(setup);
        let summary = supervisor
            .send(RunCycle)
            .await
            .context("the supervisor stopped")?;
        let delivery = reporter.send(Flush).await.context("the reporter stopped")?;
        eprintln!("{}", summary_line(&summary, &delivery, api_url.as_deref()));
        Ok(ExitCode::from(exit_code(
            &summary,
            &delivery,
            api_url.is_some(),
        )))
    })
}

/// `luumen-agent run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let system = actix::System::new();
    system.block_on(async move {
        let setup = setup(&args).await?;
        let interval = Duration::from_secs(setup.inventory.schedule.interval_seconds);
        let (supervisor, reporter, _api_url, _renewal) = start_actors(setup);
        supervisor.do_send(StartSchedule { interval });
        tokio::signal::ctrl_c()
            .await
            .context("cannot listen for Ctrl-C")?;
        tracing::info!(message = "Stopping; sending what is waiting.");
        let delivery = reporter.send(Flush).await.context("the reporter stopped")?;
        if delivery.batches_waiting > 0 {
            tracing::error!(
                message = "Results not delivered at exit.",
                results = delivery.results_waiting
            );
            return Ok(ExitCode::from(EXIT_NOT_DELIVERED));
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn exit_code(summary: &CycleSummary, delivery: &DeliveryReport, has_api: bool) -> u8 {
    if has_api && (delivery.batches_waiting > 0 || delivery.batches_quarantined > 0) {
        EXIT_NOT_DELIVERED
    } else if !summary.all_collected() {
        EXIT_HOSTS_FAILED
    } else {
        0
    }
}

/// One line for people: `cycle 1: 3 hosts in 1.2 s: 2 ok, 1 unreachable; 1 batch (3 results) sent to URL`.
fn summary_line(
    summary: &CycleSummary,
    delivery: &DeliveryReport,
    api_url: Option<&str>,
) -> String {
    let statuses = [
        Status::Ok,
        Status::Partial,
        Status::Unreachable,
        Status::AuthFailed,
        Status::Timeout,
        Status::HostKeyMismatch,
        Status::Error,
    ];
    let counts: Vec<String> = statuses
        .iter()
        .filter_map(|s| match summary.count(*s) {
            0 => None,
            n => Some(format!("{n} {}", s.as_str())),
        })
        .collect();
    let mut line = format!(
        "luumen-agent: cycle {}: {} hosts in {:.2} s: {}",
        summary.cycle,
        summary.statuses.len(),
        summary.elapsed.as_secs_f64(),
        if counts.is_empty() {
            "nothing to do".to_owned()
        } else {
            counts.join(", ")
        }
    );
    if let Some(url) = api_url {
        line.push_str(&format!(
            "; {} batches ({} results) sent to {url}",
            delivery.batches_sent, delivery.results_sent
        ));
        if delivery.batches_quarantined > 0 {
            line.push_str(&format!(
                "; {} batches refused by the API and quarantined: {}",
                delivery.batches_quarantined,
                delivery.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
        if delivery.batches_waiting > 0 {
            line.push_str(&format!(
                "; {} batches ({} results) NOT delivered: {}",
                delivery.batches_waiting,
                delivery.results_waiting,
                delivery.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
    }
    line
}
