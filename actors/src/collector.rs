//! The property-collector actor: turns raw outputs into typed properties with the pure parsers
//! of `luumen_properties`, on its own threads so parsing never stalls scheduling.

use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::{Actor, Handler, Message, MessageResult, SyncContext};
use luumen_properties::plan::Plan;
use luumen_properties::{linux, windows, Collected, ErrorKind, Properties, PropertyError};
use luumen_protocols::ExecOutput;

/// Parse the output of a Linux collection plan.
#[derive(Debug, Message)]
#[rtype(result = "Collected")]
pub struct ParseLinux {
    /// The host's id, for logs.
    pub host_id: String,
    /// The plan that produced the output (it knows the section markers).
    pub plan: Plan,
    /// What the plan printed.
    pub output: ExecOutput,
}

/// Parse the output of the Windows collection script (`luumen_properties::windows::script`).
#[derive(Debug, Message)]
#[rtype(result = "Collected")]
pub struct ParseWindows {
    /// The host's id, for logs.
    pub host_id: String,
    /// What the script printed (one JSON document on stdout).
    pub output: ExecOutput,
}

/// Parses; one instance per pool thread.
#[derive(Debug, Default)]
pub struct CollectorActor;

impl Actor for CollectorActor {
    type Context = SyncContext<Self>;
}

impl Handler<ParseLinux> for CollectorActor {
    type Result = MessageResult<ParseLinux>;

    fn handle(&mut self, msg: ParseLinux, _ctx: &mut SyncContext<Self>) -> Self::Result {
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            let sections = msg.plan.split(&msg.output.stdout, &msg.output.stderr);
            linux::collect(&sections)
        }));
        MessageResult(parsed.unwrap_or_else(|payload| panicked(&msg.host_id, payload.as_ref())))
    }
}

impl Handler<ParseWindows> for CollectorActor {
    type Result = MessageResult<ParseWindows>;

    fn handle(&mut self, msg: ParseWindows, _ctx: &mut SyncContext<Self>) -> Self::Result {
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            let out = &msg.output;
            windows::collect(&out.stdout, &out.stderr, out.exit_status)
        }));
        MessageResult(parsed.unwrap_or_else(|payload| panicked(&msg.host_id, payload.as_ref())))
    }
}

/// A parser panicked: log it and report it for this host only.
fn panicked(host_id: &str, payload: &(dyn std::any::Any + Send)) -> Collected {
    let message = crate::panic_message(payload);
    tracing::error!(message = "Parser panicked.", host = %host_id, panic = %message);
    Collected {
        properties: Properties::default(),
        errors: vec![PropertyError {
            property: "*".to_owned(),
            kind: ErrorKind::ParseError,
            message: format!("parser panicked: {message}"),
        }],
    }
}

#[cfg(test)]
mod tests {
    use actix::SyncArbiter;

    use super::*;

    fn parse_windows(stdout: &[u8], exit_status: Option<i32>) -> Collected {
        let output = ExecOutput {
            stdout: stdout.to_vec(),
            stderr: Vec::new(),
            exit_status,
        };
        actix::System::new().block_on(async move {
            let pool = SyncArbiter::start(1, CollectorActor::default);
            pool.send(ParseWindows {
                host_id: "win-1".into(),
                output,
            })
            .await
            .expect("collector answers")
        })
    }

    #[test]
    fn parse_windows_runs_the_windows_parser() {
        let capture =
            include_str!("../../properties/testdata/windows/windows-10-partial-errors.json");
        let json: String = capture
            .lines()
            .filter(|l| !l.starts_with("#!source:"))
            .collect();
        let c = parse_windows(json.as_bytes(), Some(0));
        let os = c.properties.os.expect("os collected");
        assert_eq!(os.family, "windows");
        assert!(c.properties.services.is_none());
        assert!(c
            .errors
            .iter()
            .any(|e| e.property == "services" && e.kind == ErrorKind::PermissionDenied));

        let c = parse_windows(b"not json", Some(1));
        assert_eq!(c.properties, Properties::default());
        assert_eq!(c.errors.len(), 1);
        assert_eq!(c.errors[0].property, "*");
    }
}
