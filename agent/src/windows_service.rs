//! The Windows Service Control Manager (SCM): `luumen-agent service`, the process the SCM starts,
//! and `luumen-agent install-service`, which registers it.
//!
//! **Never compiled.** This module is built only for Windows targets. The project's toolchain
//! (Linux, no Windows standard library, no way to add one) cannot build it, so it was written
//! against the documented API of windows-service 0.8.1 and has not been compiled or run.
//!
//! How it runs: the SCM starts `luumen-agent.exe service --config FILE`. [`dispatch`] keeps the
//! arguments and blocks in `service_dispatcher::start`, while the SCM calls `service_main` on a
//! thread of its own. That thread registers the control handler, reports `StartPending`, and
//! runs the loop of `luumen-agent run` ([`runner::run_from`]) with its controls taken from the
//! SCM instead of signals: Stop and Shutdown stop it (the same grace and flush as SIGTERM),
//! ParamChange (`sc.exe control luumen-agent paramchange`) reloads it like SIGHUP. The loop's
//! `service::ready` and `service::stopping` report `Running` and `StopPending` here; `Stopped`
//! follows when the loop returned, with a service-specific exit code when it failed.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ::windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use ::windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use ::windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use ::windows_service::{define_windows_service, service_dispatcher};
use anyhow::Context;
use tokio::sync::mpsc;

use crate::runner::{self, Control, ControlSource};
use crate::RunArgs;

/// The service's name in the SCM.
const SERVICE_NAME: &str = "luumen-agent";
/// The agent runs in a process of its own.
const SERVICE_TYPE: ServiceType = ServiceType::OWN_PROCESS;
/// How long start-up may take before `Running`: reading the config and fetching the remote
/// config from the API.
const START_WAIT_HINT: Duration = Duration::from_secs(60);

/// The arguments of `luumen-agent service`, handed from [`dispatch`] to `service_main` (the SCM
/// calls it with the service's start parameters, not the command line).
static ARGS: Mutex<Option<RunArgs>> = Mutex::new(None);
/// Where status changes are reported, once the control handler is registered.
static STATUS: OnceLock<ServiceStatusHandle> = OnceLock::new();
/// The progress counter the SCM expects to grow during a pending state.
static CHECKPOINT: AtomicU32 = AtomicU32::new(0);
/// The process's exit code, set by `service_main` before it reports `Stopped`.
static EXIT: AtomicU8 = AtomicU8::new(0);

define_windows_service!(ffi_service_main, service_main);

/// `luumen-agent service`: connects to the SCM and returns when the service has stopped.
pub fn dispatch(args: RunArgs) -> anyhow::Result<ExitCode> {
    *ARGS.lock().unwrap_or_else(PoisonError::into_inner) = Some(args);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context(
        "cannot connect to the Service Control Manager (`service` is started by the SCM; \
         from a console use `luumen-agent run`)",
    )?;
    Ok(ExitCode::from(EXIT.load(Ordering::SeqCst)))
}

/// Called by the SCM on its own thread; there is no console here, only the log files.
fn service_main(_start_parameters: Vec<OsString>) {
    let args = ARGS.lock().unwrap_or_else(PoisonError::into_inner).take();
    let Some(args) = args else {
        tracing::error!(message = "The service was started without its arguments.");
        return;
    };
    if let Err(error) = run_service(args) {
        tracing::error!(message = "The Windows service failed.", error = %format!("{error:#}"));
    }
}

fn run_service(args: RunArgs) -> anyhow::Result<()> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let handler = move |control: ServiceControl| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            // A closed channel (the loop already gone) means stopped anyway.
            let _ = sender.send(Control::Stop);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::ParamChange => {
            let _ = sender.send(Control::Reload);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)
        .context("cannot register the service control handler")?;
    // Only ever set here, once per process.
    let _ = STATUS.set(handle);
    report(
        ServiceState::StartPending,
        START_WAIT_HINT,
        ServiceExitCode::NO_ERROR,
    );
    let outcome = runner::run_from(args, ControlSource::Channel(receiver));
    let exit_code = match &outcome {
        Ok(_) => ServiceExitCode::NO_ERROR,
        Err(_) => {
            EXIT.store(runner::EXIT_CONFIG, Ordering::SeqCst);
            ServiceExitCode::ServiceSpecific(u32::from(runner::EXIT_CONFIG))
        }
    };
    report(ServiceState::Stopped, Duration::ZERO, exit_code);
    outcome.map(|_| ())
}

/// The schedule runs: the SCM may now send Stop, Shutdown and ParamChange.
pub fn running() {
    report(
        ServiceState::Running,
        Duration::ZERO,
        ServiceExitCode::NO_ERROR,
    );
}

/// Shutdown begins; it takes at most the stop grace plus the flush grace.
pub fn stop_pending() {
    let wait_hint = runner::STOP_GRACE + runner::FLUSH_GRACE + Duration::from_secs(5);
    report(
        ServiceState::StopPending,
        wait_hint,
        ServiceExitCode::NO_ERROR,
    );
}

/// Reports a state to the SCM; a no-op when not running as a service (`luumen-agent run`).
fn report(state: ServiceState, wait_hint: Duration, exit_code: ServiceExitCode) {
    let Some(handle) = STATUS.get() else {
        return;
    };
    let pending = matches!(
        state,
        ServiceState::StartPending | ServiceState::StopPending
    );
    let status = ServiceStatus {
        service_type: SERVICE_TYPE,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP
                | ServiceControlAccept::SHUTDOWN
                | ServiceControlAccept::PARAM_CHANGE
        } else {
            ServiceControlAccept::empty()
        },
        exit_code,
        checkpoint: if pending {
            CHECKPOINT.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            0
        },
        wait_hint,
        process_id: None,
    };
    if let Err(error) = handle.set_service_status(status) {
        tracing::warn!(message = "Cannot report the service status.", state = ?state, %error);
    }
}

/// `luumen-agent install-service` on Windows: registers the service to run
/// `service --config CONFIG` as LocalSystem, started at boot and restarted on failure.
pub fn install(config: &Path) -> anyhow::Result<ExitCode> {
    let binary = std::env::current_exe().context("cannot find this executable")?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("cannot open the Service Control Manager (run as Administrator)")?;
    let info = ServiceInfo {
        name: OsString::from(SERVICE_NAME),
        display_name: OsString::from("Luumen inventory agent"),
        service_type: SERVICE_TYPE,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: binary,
        launch_arguments: vec![
            OsString::from("service"),
            OsString::from("--config"),
            config.as_os_str().to_owned(),
        ],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::START | ServiceAccess::QUERY_STATUS,
        )
        .with_context(|| format!("cannot create the service {SERVICE_NAME}"))?;
    service
        .set_description("luumen-agent agentless inventory collector")
        .context("cannot set the service description")?;
    // Restart on failure, like the systemd unit's Restart=on-failure: a crash or a Stopped
    // with a non-zero exit code restarts the service after 5 s, twice, then every 60 s.
    let restart = |seconds| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(seconds),
    };
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart(5), restart(5), restart(60)]),
        })
        .context("cannot set the service's failure actions")?;
    service
        .set_failure_actions_on_non_crash_failures(true)
        .context("cannot set the service's failure actions")?;
    println!(
        "registered the Windows service {SERVICE_NAME} (config {}); next: sc.exe start {SERVICE_NAME}",
        config.display()
    );
    Ok(ExitCode::SUCCESS)
}
