//! The audit trail: every act an operator asks of the hub (a command, a
//! job, an announcement, a configuration edit, a cancel, forgetting,
//! enrolling or revoking a device), who asked and when, and whether their
//! role allowed it, kept in the store ([`Request::Audit`] reads it). Reads
//! are not kept. A retried request (the same id) is kept once; a request
//! another front-end passes on is kept where the operator asked.
//!
//! [`Request::Audit`]: fleetmq_protocol::Request::Audit

use std::collections::{HashSet, VecDeque};

use fleetmq_net::text::shell_word;
use fleetmq_protocol::{Command, JobSpec, Request, Target};

use super::aim::Aim;
use super::{Caller, Core, Now};

/// Request ids remembered, so that a retry is not kept twice.
const REMEMBERED: usize = 1024;

/// The routing id the hub's HTTP side gives its operator connections
/// starts with this: its acts are the console's (the admin token's).
pub const HTTP_CLIENT: &[u8] = b"fleetmq-http:";

/// The request ids kept lately.
#[derive(Debug, Default)]
pub(super) struct Audited {
    order: VecDeque<u64>,
    ids: HashSet<u64>,
}

impl Audited {
    /// Whether `id` is new (and now remembered).
    fn first(&mut self, id: u64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

impl Core {
    /// Keeps `request` in the audit trail if it acts: asked by `client`
    /// on the socket `caller` names, allowed or not.
    pub(super) fn audit(
        &mut self,
        client: &[u8],
        caller: Caller<'_>,
        id: u64,
        request: &Request,
        allowed: bool,
        now: Now,
    ) {
        if !crate::operators::acts(request) {
            return;
        }
        let operator = match caller {
            Caller::Cluster => return,
            Caller::Remote(Some(user)) => match crate::operators::from_user_id(user) {
                Some((name, role)) => format!("{name} ({})", role.name()),
                None => "an unknown remote client".into(),
            },
            Caller::Remote(None) => "an unknown remote client".into(),
            Caller::Local if client.get(1..).is_some_and(|c| c.starts_with(HTTP_CLIENT)) => {
                "console".into()
            }
            Caller::Local => "local".into(),
        };
        if !self.audited.first(id) {
            return;
        }
        let act = describe(request);
        self.store
            .audit_record(now.wall_ms, &operator, &act, allowed);
    }
}

/// An act in the command line's words.
pub fn describe(request: &Request) -> String {
    match request {
        Request::Command {
            device, command, ..
        } => format!("command {device}: {}", command_words(command)),
        Request::QueuedCommand {
            device,
            command,
            queue_ms,
            ..
        } => format!(
            "command {device}: {} (may wait {queue_ms} ms for it)",
            command_words(command)
        ),
        Request::FleetCommand(c) => format!(
            "command for {}: {}",
            Aim::of_command(c).words(),
            command_words(&c.command)
        ),
        Request::SubmitJob(j) => {
            let spec = match &j.spec {
                JobSpec::Echo { text } => format!("echo {}", shell_word(text)),
                JobSpec::Exec { program, args } => words("exec", program, args),
            };
            let aim = Aim::of_job(j);
            if aim.is_empty() {
                format!("job: {spec}")
            } else {
                format!("job for {}: {spec}", aim.words())
            }
        }
        Request::CancelJob { id } => format!("cancel job {id}"),
        Request::CancelCommand { id } => format!("cancel command {id}"),
        Request::Broadcast { target, text } => {
            let to = match target {
                Target::All => "the fleet".to_string(),
                Target::Group(g) => format!("group {g}"),
                Target::Device(d) => d.clone(),
            };
            format!("broadcast to {to}: {}", shell_word(text))
        }
        Request::ConfigEdit(e) => {
            let mut changes: Vec<String> = (e.set.iter())
                .map(|(k, v)| format!("{k}={}", shell_word(v)))
                .collect();
            changes.extend(e.unset.iter().map(|k| format!("-{k}")));
            format!("config {}: {}", e.layer, changes.join(" "))
        }
        Request::Forget { device } => format!("forget {device}"),
        Request::Enrol(e) => format!(
            "allow {} {}",
            e.device,
            fleetmq_net::keys::quoted(&e.public_key)
        ),
        Request::Revoke(r) => match &r.public_key {
            Some(key) => format!(
                "revoke {} --key {}",
                r.device,
                fleetmq_net::keys::quoted(key)
            ),
            None => format!("revoke {}", r.device),
        },
        other => format!("{other:?}"),
    }
}

fn command_words(c: &Command) -> String {
    match c {
        Command::Ping => "ping".into(),
        Command::Status => "status".into(),
        Command::Exec { program, args, .. } => words("exec", program, args),
        Command::Other { name, args } => words(name, "", args),
    }
}

fn words(head: &str, program: &str, args: &[String]) -> String {
    std::iter::once(head.to_string())
        .chain((!program.is_empty()).then(|| shell_word(program)))
        .chain(args.iter().map(|a| shell_word(a)))
        .collect::<Vec<_>>()
        .join(" ")
}
