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
use luumen_actors::reporter::retry::RetryPolicy;
use luumen_actors::reporter::{DeliveryReport, Flush, Reconfigure, Reporter, ReporterConfig};
use luumen_actors::spool::{Spool, SpoolLimits};
use luumen_actors::supervisor::{
    CycleSummary, Ping, RunCycle, StartSchedule, StopSchedule, Supervisor, UpdateHosts,
};
use luumen_actors::vault::{RenewalTask, SecretSource, VaultClient, VaultSettings};
use luumen_actors::{HostSpec, SshSettings};
use luumen_schemas::config::{
    default_max_concurrency, default_state_dir, BatchConfig, LocalConfig, Timeouts, WhenFull,
};
use luumen_schemas::inventory::Inventory;
use luumen_schemas::report::Status;
use secrecy::SecretString;
use tokio::sync::mpsc;

use crate::config;
use crate::logging;
use crate::service;
use crate::RunArgs;

/// Some host was not collected.
pub const EXIT_HOSTS_FAILED: u8 = 1;
/// The configuration could not be used.
pub const EXIT_CONFIG: u8 = 2;
/// A batch could not be delivered to the API.
pub const EXIT_NOT_DELIVERED: u8 = 3;

/// Threads that run the parsers.
const COLLECTOR_THREADS: usize = 2;

/// Everything a cycle needs, read before the actors start.
struct Setup {
    /// Keeps the rolling log files open for the whole run.
    log_files: Option<logging::FileGuard>,
    /// Where `run` serves metrics.
    metrics_listen: Option<String>,
    /// The full-spool policy.
    when_full: WhenFull,
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
    let log_files = match (&local, logging::handle()) {
        (Some(local), Some(handle)) => local
            .log_dir
            .as_deref()
            .map(|dir| logging::add_file_output(&handle, dir, local.log_retention_days))
            .transpose()?,
        _ => None,
    };
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
        log_files,
        metrics_listen: local.as_ref().and_then(|c| c.metrics_listen.clone()),
        when_full: local
            .as_ref()
            .map(|c| c.spool.when_full)
            .unwrap_or_default(),
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
    if !recovery.is_clean() {
        tracing::warn!(
            message = "Spool repaired at start.",
            dir = %dir.display(),
            set_aside = recovery.corrupt_set_aside(),
            torn_tails = recovery.torn_tails,
        );
    }
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
        retry: RetryPolicy::default(),
        spool: setup.spool,
    })
    .start();
    let peers = Peers {
        protocol,
        collector,
        reporter: reporter.clone(),
        vault: setup.vault,
    };
    let when_full = setup.when_full;
    let supervisor = Supervisor::new(specs, peers)
        .skip_cycles_when_spool_full(when_full == WhenFull::SkipCycles)
        .start();
    (supervisor, reporter, api_url, renewal)
}

/// `luumen-agent once`.
pub fn once(args: RunArgs) -> anyhow::Result<ExitCode> {
    let system = actix::System::new();
    system.block_on(async move {
        let mut setup = setup(&args).await?;
        let _log_files = setup.log_files.take();
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

/// Time a running cycle gets to finish after SIGTERM.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(20);
/// Time the last send gets after SIGTERM (everything is in the spool before it starts).
pub(crate) const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// What the service manager asks of the `run` loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Re-read the configuration: SIGHUP, or the Windows SCM's ParamChange.
    Reload,
    /// Stop gracefully: SIGTERM or SIGINT, or the SCM's Stop or Shutdown.
    Stop,
}

/// Where the `run` loop's controls come from.
pub(crate) enum ControlSource {
    /// This process's signals: SIGHUP, SIGTERM and SIGINT on Unix; Ctrl-C elsewhere.
    Signals,
    /// A channel fed by someone else: the Windows SCM control handler. A closed channel
    /// means stop.
    #[cfg_attr(not(any(windows, test)), expect(dead_code))]
    Channel(mpsc::UnboundedReceiver<Control>),
}

/// A [`ControlSource`] with its handlers installed.
enum Controls {
    #[cfg(unix)]
    Signals {
        hangup: tokio::signal::unix::Signal,
        terminate: tokio::signal::unix::Signal,
        interrupt: tokio::signal::unix::Signal,
    },
    #[cfg(not(unix))]
    CtrlC,
    Channel(mpsc::UnboundedReceiver<Control>),
}

impl Controls {
    /// Installs the handlers (signals replace the SIGHUP disposition `main` set).
    fn install(source: ControlSource) -> anyhow::Result<Self> {
        Ok(match source {
            #[cfg(unix)]
            ControlSource::Signals => {
                use tokio::signal::unix::{signal, SignalKind};
                Controls::Signals {
                    hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
                    terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
                    interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                }
            }
            #[cfg(not(unix))]
            ControlSource::Signals => Controls::CtrlC,
            ControlSource::Channel(receiver) => Controls::Channel(receiver),
        })
    }

    /// The next control. Cancel-safe: a control is never lost when another branch of the
    /// loop's `select!` wins.
    async fn next(&mut self) -> Control {
        match self {
            #[cfg(unix)]
            Controls::Signals {
                hangup,
                terminate,
                interrupt,
            } => tokio::select! {
                _ = hangup.recv() => Control::Reload,
                _ = terminate.recv() => Control::Stop,
                _ = interrupt.recv() => Control::Stop,
            },
            #[cfg(not(unix))]
            Controls::CtrlC => {
                let _ = tokio::signal::ctrl_c().await;
                Control::Stop
            }
            Controls::Channel(receiver) => receiver.recv().await.unwrap_or(Control::Stop),
        }
    }
}

/// What a reload read: the hosts and schedule, and config.yaml.
struct Reloaded {
    specs: Vec<HostSpec>,
    interval: Duration,
    splay: Duration,
    local: Option<LocalConfig>,
    /// A new API client, when config.yaml's `api` block changed.
    api: Option<ApiClient>,
}

/// Whether the `api` block changed, key included (compared in place: no copy of the secret).
fn api_changed(old: &LocalConfig, new: &LocalConfig) -> bool {
    use secrecy::ExposeSecret;
    let (old, new) = (&old.api, &new.api);
    old.base_url != new.base_url
        || old.api_key.expose_secret() != new.api_key.expose_secret()
        || old.ca_file != new.ca_file
        || old.request_timeout_seconds != new.request_timeout_seconds
}

/// The config.yaml settings a reload cannot apply (they shape the process: pools, spool, log
/// files, listeners, Vault login), by name, when they changed.
fn restart_only_changes(old: &LocalConfig, new: &LocalConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("agent_id", old.agent_id != new.agent_id);
    check(
        "max_concurrency",
        old.max_concurrency != new.max_concurrency,
    );
    check("state_dir", old.state_dir != new.state_dir);
    check("spool", old.spool != new.spool);
    check("log_dir", old.log_dir != new.log_dir);
    check(
        "log_retention_days",
        old.log_retention_days != new.log_retention_days,
    );
    check("metrics_listen", old.metrics_listen != new.metrics_listen);
    check(
        "vault",
        format!("{:?}", old.vault) != format!("{:?}", new.vault),
    );
    changed
}

/// Re-reads config.yaml and the host list (file or API) for a reload. The remote config is
/// fetched from the new `api` block when it changed.
async fn reload(
    args: &RunArgs,
    current: Option<&LocalConfig>,
    api: Option<&ApiClient>,
) -> anyhow::Result<Reloaded> {
    let local = match &args.config {
        Some(path) => Some(config::load_local(path)?),
        None => None,
    };
    let new_api = match (&local, current) {
        (Some(new), Some(old)) if api_changed(old, new) => Some(api_client(new)?),
        _ => None,
    };
    let inventory = match (&args.inventory, new_api.as_ref().or(api)) {
        (Some(path), _) => config::load_inventory(path)?,
        (None, Some(api)) => {
            let body = api
                .fetch_config()
                .await
                .context("cannot fetch the remote config")?;
            config::parse_remote(&body, &format!("{}/config", api.base_url()))?
        }
        (None, None) => bail!("no host list: give --config or --inventory"),
    };
    let timeouts = local.as_ref().map(|c| c.timeouts).unwrap_or_default();
    let ssh = ssh_settings(local.as_ref(), args.state_dir.as_deref());
    Ok(Reloaded {
        specs: HostSpec::from_inventory(&inventory, &timeouts, &ssh),
        interval: Duration::from_secs(inventory.schedule.interval_seconds),
        splay: inventory.schedule.splay(),
        local,
        api: new_api,
    })
}

/// `luumen-agent run`: collect on the schedule; SIGHUP reloads, SIGTERM/SIGINT stop.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    run_from(args, ControlSource::Signals)
}

/// The `run` loop with its reload and stop controls taken from `source`.
pub(crate) fn run_from(args: RunArgs, source: ControlSource) -> anyhow::Result<ExitCode> {
    let system = actix::System::new();
    system.block_on(async move {
        // Signal handlers before anything else: a SIGHUP during start-up must not kill us.
        let mut controls = Controls::install(source)?;
        let mut setup = setup(&args).await?;
        let _log_files = setup.log_files.take();
        if let Some(address) = &setup.metrics_listen {
            service::serve_metrics(address)?;
        }
        let mut api = setup.api.clone();
        // What config.yaml said at start, to tell what a reload changed.
        let mut local = match &args.config {
            Some(path) => config::load_local(path).ok(),
            None => None,
        };
        let mut interval = Duration::from_secs(setup.inventory.schedule.interval_seconds);
        let mut splay = setup.inventory.schedule.splay();
        let (supervisor, reporter, _api_url, _renewal) = start_actors(setup);
        supervisor.do_send(StartSchedule { interval, splay });
        service::ready();
        let mut watchdog = service::watchdog_period().map(tokio::time::interval);
        loop {
            tokio::select! {
                control = controls.next() => {
                    if control == Control::Stop {
                        break;
                    }
                    service::reloading();
                    match reload(&args, local.as_ref(), api.as_ref()).await {
                        Ok(reloaded) => {
                            let changes = supervisor.send(UpdateHosts(reloaded.specs)).await.context("the supervisor stopped")?;
                            if (reloaded.interval, reloaded.splay) != (interval, splay) {
                                (interval, splay) = (reloaded.interval, reloaded.splay);
                                supervisor.do_send(StartSchedule { interval, splay });
                            }
                            let batch = reloaded.local.as_ref().map(|c| c.batch).filter(|b| local.as_ref().is_some_and(|old| old.batch != *b));
                            let api_changed = reloaded.api.is_some();
                            if api_changed || batch.is_some() {
                                reporter.do_send(Reconfigure { api: reloaded.api.clone(), batch });
                            }
                            if let Some(new_api) = reloaded.api {
                                api = Some(new_api);
                            }
                            if let (Some(old), Some(new)) = (&local, &reloaded.local) {
                                let pending = restart_only_changes(old, new);
                                if !pending.is_empty() {
                                    tracing::warn!(
                                        message = "Some config.yaml changes take effect only after a restart; the running values stay in force.",
                                        settings = ?pending,
                                    );
                                }
                            }
                            if reloaded.local.is_some() {
                                local = reloaded.local;
                            }
                            tracing::info!(
                                message = "Configuration reloaded.",
                                added = changes.added.len(),
                                removed = changes.removed.len(),
                                changed = changes.changed.len(),
                                interval_seconds = interval.as_secs(),
                                api_changed,
                                batch_changed = batch.is_some(),
                            );
                        }
                        Err(error) => tracing::error!(
                            message = "Reload failed; the previous configuration stays in force.",
                            error = %format!("{error:#}"),
                        ),
                    }
                    service::ready();
                }
                _ = async { match watchdog.as_mut() { Some(w) => { w.tick().await; } None => std::future::pending::<()>().await } } => {
                    // Pinging through the Supervisor proves the scheduling loop is alive.
                    if supervisor.send(Ping).await.is_ok() {
                        service::watchdog();
                    }
                }
            }
        }
        service::stopping();
        tracing::info!(message = "Stopping: no new cycles; waiting for the running one.");
        supervisor.send(StopSchedule).await.context("the supervisor stopped")?;
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while supervisor.send(Ping).await.is_ok_and(|s| s.cycle_running)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Flush seals the open batch into the spool at once; the send gets a short grace.
        match tokio::time::timeout(FLUSH_GRACE, reporter.send(Flush)).await {
            Ok(Ok(delivery)) if delivery.batches_waiting > 0 => tracing::warn!(
                message = "Stopped with results waiting in the spool; they are sent on the next start.",
                batches = delivery.batches_waiting,
                results = delivery.results_waiting,
            ),
            Ok(_) => tracing::info!(message = "Stopped; everything delivered."),
            Err(_) => tracing::warn!(message = "Stopped while a send was under way; waiting batches stay in the spool."),
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
    let counts: Vec<String> = Status::ALL
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_changed_api_key_is_a_changed_api_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "api:\n  base_url: https://127.0.0.1:1/api/v1\n  api_key: first\n",
        )
        .expect("write config");
        let old = config::load_local(&path).expect("config");
        let mut new = config::load_local(&path).expect("config");
        assert!(!api_changed(&old, &new));
        new.api.api_key = secrecy::SecretString::from("second");
        assert!(api_changed(&old, &new));
        new.api.api_key = secrecy::SecretString::from("first");
        new.api.request_timeout_seconds += 1;
        assert!(api_changed(&old, &new));
    }

    fn write_inventory(path: &Path, ids: &[&str]) {
        let hosts: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "protocol": "local"}))
            .collect();
        let body = serde_json::json!({"schedule": {"interval_seconds": 1}, "hosts": hosts});
        std::fs::write(path, body.to_string()).expect("write inventory");
    }

    fn results_for(output: &Path, id: &str) -> usize {
        std::fs::read_to_string(output)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["host"]["id"] == id)
            .count()
    }

    fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        done()
    }

    /// The loop as the Windows SCM drives it, with its controls from a channel instead of
    /// signals: a Reload re-reads the host list (the added host gets collected), a Stop ends
    /// the loop with exit 0 well within the stop grace.
    #[test]
    fn run_takes_reload_and_stop_from_a_channel() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inventory = dir.path().join("inventory.json");
        let output = dir.path().join("results.ndjson");
        write_inventory(&inventory, &["first"]);
        let args = RunArgs {
            config: None,
            inventory: Some(inventory.clone()),
            output: Some(output.clone()),
            state_dir: Some(dir.path().join("state")),
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let running = std::thread::spawn(move || run_from(args, ControlSource::Channel(receiver)));

        assert!(
            wait_until(Duration::from_secs(60), || results_for(&output, "first")
                > 0),
            "no result for the first host"
        );
        assert_eq!(results_for(&output, "added"), 0);
        write_inventory(&inventory, &["first", "added"]);
        sender.send(Control::Reload).expect("the loop is running");
        assert!(
            wait_until(Duration::from_secs(60), || results_for(&output, "added")
                > 0),
            "a Reload from the channel did not add the host"
        );
        assert!(!running.is_finished(), "the loop ended without a Stop");

        let stop_sent = Instant::now();
        sender.send(Control::Stop).expect("the loop is running");
        let outcome = running.join().expect("the loop panicked");
        let stopped_in = stop_sent.elapsed();
        assert_eq!(outcome.expect("the loop failed"), ExitCode::SUCCESS);
        assert!(
            stopped_in < STOP_GRACE + FLUSH_GRACE,
            "stopping took {stopped_in:?}"
        );
        eprintln!("stopped {stopped_in:?} after the Stop control");
    }
}
