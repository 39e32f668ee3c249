//! The property-collector actor: turns raw outputs into typed properties with the pure parsers
//! of `luumen_properties`, on its own threads so parsing never stalls scheduling.

use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::{Actor, Handler, Message, MessageResult, SyncContext};
use luumen_properties::plan::Plan;
use luumen_properties::{linux, Collected, ErrorKind, Properties, PropertyError};
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
        MessageResult(parsed.unwrap_or_else(|payload| {
            let message = crate::panic_message(payload.as_ref());
            tracing::error!(message = "Parser panicked.", host = %msg.host_id, panic = %message);
            Collected {
                properties: Properties::default(),
                errors: vec![PropertyError {
                    property: "*".to_owned(),
                    kind: ErrorKind::ParseError,
                    message: format!("parser panicked: {message}"),
                }],
            }
        }))
    }
}
