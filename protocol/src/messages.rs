//! Every message, grouped by the socket pair (channel) it travels on.
//!
//! | channel | sockets | kinds |
//! |---|---|---|
//! | [`Upstream`] | agent DEALER → hub ROUTER | 0x01 Hello, 0x02 Heartbeat, 0x03 Batch, 0x04 Bye, 0x05 Offer, 0x06 Applied, 0x07 Result, 0x08 Reply, 0x09 LogBatch |
//! | [`Downstream`] | hub ROUTER → agent DEALER | 0x10 Welcome, 0x11 Ack, 0x12 HelloRequest, 0x13 Refusal, 0x14 Announcement, 0x15 Relink, 0x16 Renumber, 0x17 Rejected, 0x18 Throttled, 0x19 Work, 0x1a Desired, 0x1b Carry, 0x1c Chat, 0x1d Command, 0x1e PinnedGroups, 0x1f TakesLogs |
//! | [`Broadcast`] | hub PUB → agent SUB, after a topic frame | 0x20 ChatMessage, 0x21 Announcement |
//! | [`JobFrame`] | hub PUSH → agent PULL | 0x30 Job |
//! | [`ResultFrame`] | agent PUSH → hub PULL | 0x31 JobResult |
//! | [`CommandFrame`] | hub ROUTER → agent DEALER (REP envelope) | 0x40 CommandRequest |
//! | [`ReplyFrame`] | agent DEALER → hub ROUTER | 0x41 CommandReply |
//! | [`OperatorFrame`](crate::OperatorFrame) | operator REQ → hub ROUTER | 0x50 OperatorRequest (in [`operator`](crate::operator)) |
//! | [`OperatorReplyFrame`](crate::OperatorReplyFrame) | hub ROUTER → operator REQ | 0x51 OperatorResponse |
//!
//! Kind bytes are unique across channels, so a frame that arrives on the wrong
//! socket is refused by kind rather than mis-read as something else.
//!
//! Multipart layouts (ZeroMQ frames, left to right, as the receiver sees them):
//!
//! ```text
//! Upstream at the hub:    [device id][envelope]        (the DEALER's routing id is the device id)
//! Downstream at agent:    [envelope]
//! Broadcast at agent:     [topic][envelope]
//! Job, JobResult:         [envelope]
//! Command at agent:       [empty][envelope]            (the REP envelope, on a DEALER)
//! Reply at the hub:       [device id][empty][envelope]
//! Operator at the hub:    [client id][empty][envelope]
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::channel;
use crate::names::Target;
use crate::telemetry::{Batch, LogBatch};

#[cfg(feature = "arbitrary")]
use arbitrary::Arbitrary;

/// Declares plain message structs and enums with the derives every message needs.
macro_rules! messages {
    ($($item:item)+) => {
        $(
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
            $item
        )+
    };
}
pub(crate) use messages;

messages! {
    /// First message on every (re)connection: who the agent is.
    pub struct Hello {
        /// The agent's semantic version.
        pub agent_version: String,
        /// CPU architecture the agent was built for, e.g. `aarch64`, `arm`.
        pub arch: String,
        /// Operating system, e.g. `linux`.
        pub os: String,
        /// The device's host name, for people.
        pub hostname: String,
        /// Groups the agent subscribes to.
        pub groups: Vec<String>,
        /// How often the agent sends heartbeats; the hub marks the device
        /// offline after three of these pass in silence.
        pub heartbeat_ms: u32,
        /// When the agent process started, ms since the Unix epoch.
        pub started_ms: u64,
    }

    /// Sent by an agent after each Hello: what work it takes on, so the
    /// hub never hands it a job it would refuse. Its one field is growable.
    pub struct Offer(#[serde(with = "crate::growable")] pub Abilities);

    /// What an agent takes on.
    pub struct Abilities {
        /// The job kinds its `[jobs] allow` names: `echo`, `exec`.
        pub job_kinds: Vec<String>,
        /// The programs its `[exec] programs` allows (for exec jobs and
        /// commands).
        pub exec_programs: Vec<String>,
        /// The version of the hub's desired configuration it applied last
        /// (0: none): the hub sends the document only if it is newer.
        pub config_version: u64,
        /// The agent carries everything on its telemetry connection when
        /// the hub offers it ([`Carry`] before [`Welcome`]): broadcasts,
        /// commands and jobs come down it, results and replies go up it,
        /// and it connects none of the hub's other sockets.
        pub one_connection: bool,
        /// On one connection: the agent wants the chat room's lines.
        pub chat: bool,
        /// On one connection: how many work-queue jobs it runs at once
        /// (0 reads as 1, more than 64 as 64). The hub hands it no more
        /// than this many, plus one waiting, until their results come back.
        pub job_slots: u32,
        /// The agent says Hello again when its system clock steps (an NTP
        /// sync, `date -s`), so that its `started_ms` is on the clock it
        /// stamps samples with: the hub may then tell how far that clock
        /// is from its own, from `started_ms` and each Heartbeat's
        /// `uptime_ms`.
        pub hello_on_clock_step: bool,
        /// What the device is (growable), read from its system when the
        /// agent starts and again each minute; the agent sends its Offer
        /// again when they change (an address came or went).
        #[serde(with = "crate::growable")]
        pub facts: DeviceFacts,
    }

    /// What a device is, as its agent reads it from the system: for the
    /// operator's inventory (which devices run which OS, where one is on
    /// its site's network). Each field is empty (or 0) when the agent could
    /// not read it.
    #[derive(Default)]
    pub struct DeviceFacts {
        /// The operating system and its version: `PRETTY_NAME` of
        /// `/etc/os-release`, e.g. `Debian GNU/Linux 12 (bookworm)`.
        pub os_release: String,
        /// The running kernel's release (`uname -r`).
        pub kernel: String,
        /// The hardware: the device tree's model (a Pi's `Raspberry Pi 4
        /// Model B Rev 1.4`), else the firmware's (DMI) product name.
        pub model: String,
        /// The board's serial number, from the device tree or
        /// `/proc/cpuinfo` (a Pi's), empty when the system has none.
        pub serial: String,
        /// Memory the kernel sees, in bytes (`MemTotal`).
        pub memory_bytes: u64,
        /// Its network interfaces, loopback left out, in name order.
        #[serde(with = "crate::growable::list")]
        pub interfaces: Vec<Interface>,
    }

    /// One network interface of a device.
    #[derive(Default)]
    pub struct Interface {
        /// Its name, e.g. `eth0`, `wlan0`.
        pub name: String,
        /// Its hardware address, `aa:bb:cc:dd:ee:ff` (empty when it has none).
        pub mac: String,
        /// Its addresses with their prefix length, IPv4 first, e.g.
        /// `192.168.1.23/24`, `fe80::1/64`.
        pub addresses: Vec<String>,
    }

    /// The hub's desired configuration for this device, whole: sent when the
    /// device's Offer shows it behind, and again on every change. Its one
    /// field is growable.
    pub struct Desired(#[serde(with = "crate::growable")] pub ConfigDoc);

    /// A configuration document: keys and values, merged from the hub's
    /// layers.
    pub struct ConfigDoc {
        /// Its version; the agent reports it back once applied.
        pub version: u64,
        /// Keys and their values (text, as an operator typed them).
        pub values: Vec<(String, String)>,
    }

    /// The agent applied a [`Desired`] document: every key but those in
    /// `errors`. Its one field is growable.
    pub struct Applied(#[serde(with = "crate::growable")] pub ConfigReport);

    /// What became of a configuration document.
    pub struct ConfigReport {
        /// The document's version.
        pub version: u64,
        /// Keys not applied, each with why.
        pub errors: Vec<(String, String)>,
    }

    /// "Still here", sent on the heartbeat interval.
    pub struct Heartbeat {
        /// Milliseconds since the agent started.
        pub uptime_ms: u64,
    }

    /// Sent on a clean shutdown, so the hub marks the device offline at once.
    pub struct Bye {
        /// Why the agent is leaving, for the log.
        pub reason: String,
    }

    /// The hub's answer to [`Hello`]: its version and the ports of its other
    /// sockets, so an agent needs only one address.
    pub struct Welcome {
        /// The hub's semantic version.
        pub hub_version: String,
        /// Ports of the other sockets, on the same host as the telemetry socket.
        pub ports: HubPorts,
    }

    /// Ports of the hub's sockets other than the telemetry ROUTER.
    pub struct HubPorts {
        /// PUB for broadcasts and chat.
        pub broadcast: u16,
        /// PUSH that hands out jobs.
        pub jobs: u16,
        /// PULL that collects job results.
        pub results: u16,
        /// ROUTER that sends commands to agents' command sockets.
        pub commands: u16,
    }

    /// The hub stored the batch with this sequence number (or already had it).
    pub struct Ack {
        /// The acknowledged batch.
        pub seq: u64,
    }

    /// The hub does not know this agent's session (it restarted): send Hello again.
    pub struct HelloRequest;

    /// Sent just before [`Welcome`] by a hub that carries everything on the
    /// telemetry connection for an agent whose Offer says
    /// `one_connection`: such an agent then connects none of the ports in
    /// the Welcome.
    pub struct Carry;

    /// Sent just before [`Welcome`] by a hub that takes log lines
    /// (batches of kind 0x09, [`LogBatch`]). An agent sends log lines only
    /// to a hub that said so since its last Hello.
    pub struct TakesLogs;

    /// The groups the hub's allow list pins this device to, sent after a
    /// Hello that named others (and before the Carry and Welcome that
    /// answer it): the hub uses these, whatever the Hello said. The agent
    /// subscribes to them (on five sockets) and reports them as its groups
    /// until its next Hello.
    pub struct PinnedGroups {
        /// The pinned groups, in name order; empty for none.
        pub groups: Vec<String>,
    }

    /// The hub dropped something the agent sent, and why. Logged by the agent.
    pub struct Refusal {
        /// What was wrong.
        pub reason: String,
    }

    /// The hub holds batch `seq` of this device with other content: another
    /// agent used the number (a reinstall that started again at 1, or a
    /// cloned SD card). The agent sends the batch again under a number at
    /// or above `from` and numbers every later batch above it.
    pub struct Renumber {
        /// The refused batch.
        pub seq: u64,
        /// The lowest number the hub does not hold for this device.
        pub from: u64,
    }

    /// The hub will never store batch `seq` (it is invalid): the agent gives
    /// it up instead of resending it, and counts its records as dropped.
    pub struct Rejected {
        /// The batch given up.
        pub seq: u64,
        /// What was wrong with it.
        pub reason: String,
    }

    /// Batch `seq` is over the device's budget (records or bytes a second)
    /// and was not stored: the agent keeps it and sends it again after
    /// `retry_after_ms`.
    pub struct Throttled {
        /// The batch not stored.
        pub seq: u64,
        /// How long until the budget has room for it.
        pub retry_after_ms: u32,
        /// Which budget, and its figures.
        pub reason: String,
    }

    /// The hub cannot reach this agent's commands socket though its
    /// telemetry connection works: close the broadcast, jobs, results and
    /// commands sockets and connect them again.
    pub struct Relink {
        /// What the hub saw, for the agent's log.
        pub reason: String,
    }

    /// A line in the chat room, as rebroadcast by the hub.
    pub struct ChatMessage {
        /// Device id of the speaker.
        pub from: String,
        /// When it was said, ms since the Unix epoch (the device's clock).
        pub ts_ms: u64,
        /// What was said.
        pub text: String,
    }

    /// An operator's broadcast.
    pub struct Announcement {
        /// When the hub sent it, ms since the Unix epoch.
        pub ts_ms: u64,
        /// Who it was sent to (also the topic prefix).
        pub target: Target,
        /// The text.
        pub text: String,
    }

    /// A unit of work handed out by the hub.
    pub struct Job {
        /// The hub's job id; an agent runs each id at most once.
        pub id: u64,
        /// 1 on the first dispatch, incremented on each re-dispatch.
        pub attempt: u32,
        /// What to do.
        pub spec: JobSpec,
        /// How long the agent lets it run before killing it.
        pub timeout_ms: u32,
        /// Drawn at random by the hub for this attempt: its result must
        /// carry it, so only the device the attempt was given to can
        /// finish the job.
        pub token: u64,
    }

    /// What a job does.
    pub enum JobSpec {
        /// Return the text: proves the path without running anything.
        Echo {
            /// Text to return.
            text: String,
        },
        /// Run an allow-listed program with an argument vector, never a shell.
        Exec {
            /// Program name, exactly as in the agent's allow list.
            program: String,
            /// Arguments, passed as they are.
            args: Vec<String>,
        },
    }

    /// The result of a job, keyed by job id.
    pub struct JobResult {
        /// The job id.
        pub id: u64,
        /// The attempt that produced this result.
        pub attempt: u32,
        /// The device that ran it.
        pub device: String,
        /// What happened.
        pub outcome: Outcome,
        /// The `token` of the attempt, from its `Job`.
        pub token: u64,
    }

    /// How running a job or an exec command ended.
    pub enum Outcome {
        /// It ran to the end.
        Completed(Output),
        /// It was killed at its time limit; the output so far.
        TimedOut(Output),
        /// The agent's config does not allow this program or job kind.
        NotAllowed(String),
        /// The agent does not know this command or job kind.
        Unknown(String),
        /// This device already ran this job id and will not run it again.
        AlreadyRun,
        /// It could not be started.
        Failed(String),
    }

    /// What a program printed and how it exited.
    pub struct Output {
        /// Exit code; `None` when killed by a signal.
        pub exit_code: Option<i32>,
        /// Captured standard output (lossy UTF-8), at most the agent's cap.
        pub stdout: String,
        /// Captured standard error (lossy UTF-8), at most the agent's cap.
        pub stderr: String,
        /// True when output past the cap was discarded.
        pub truncated: bool,
        /// Wall time it ran.
        pub duration_ms: u32,
    }

    /// An operator's command to one device.
    pub enum Command {
        /// Answer with [`Reply::Pong`].
        Ping,
        /// Answer with [`Reply::Status`].
        Status,
        /// Run an allow-listed program.
        Exec {
            /// Program name, exactly as in the agent's allow list.
            program: String,
            /// Arguments, passed as they are.
            args: Vec<String>,
            /// Time limit.
            timeout_ms: u32,
        },
        /// A command this protocol version does not define; agents answer
        /// [`Outcome::Unknown`].
        Other {
            /// Its name.
            name: String,
            /// Its arguments.
            args: Vec<String>,
        },
    }

    /// A command as delivered to the agent's command socket.
    pub struct CommandRequest {
        /// Chosen by the hub; the reply carries it back.
        pub corr: u64,
        /// What to do.
        pub command: Command,
    }

    /// The agent's answer, on the same socket.
    pub struct CommandReply {
        /// The request's `corr`.
        pub corr: u64,
        /// The answer.
        pub reply: Reply,
    }

    /// An answer to a [`Command`].
    pub enum Reply {
        /// Answer to [`Command::Ping`].
        Pong {
            /// Milliseconds since the agent started.
            uptime_ms: u64,
        },
        /// Answer to [`Command::Status`].
        Status(#[serde(with = "crate::growable")] AgentStatus),
        /// Answer to [`Command::Exec`] or [`Command::Other`].
        Outcome(Outcome),
    }

    /// The agent's own view of itself.
    pub struct AgentStatus {
        /// Its device id.
        pub device: String,
        /// Its version.
        pub agent_version: String,
        /// Its architecture.
        pub arch: String,
        /// Its groups: the ones the hub's allow list pins, if the hub told
        /// it ([`PinnedGroups`]), else its configured ones.
        pub groups: Vec<String>,
        /// Milliseconds since it started.
        pub uptime_ms: u64,
        /// Batches sent at least once.
        pub batches_sent: u64,
        /// Batches the hub acked.
        pub batches_acked: u64,
        /// Sends of a batch after the first.
        pub batches_resent: u64,
        /// Records dropped because the queue was full.
        pub records_dropped: u64,
        /// Records waiting to be batched.
        pub records_pending: u64,
        /// Batches sent and not yet acked.
        pub in_flight: u32,
        /// Jobs run.
        pub jobs_run: u64,
        /// Commands answered.
        pub commands_answered: u64,
    }

}

channel! {
    /// Agent DEALER → hub ROUTER.
    Upstream {
        /// First message on a connection.
        0x01 => Hello(Hello),
        /// Periodic liveness.
        0x02 => Heartbeat(Heartbeat),
        /// Telemetry and chat.
        0x03 => Batch(Batch),
        /// Clean shutdown.
        0x04 => Bye(Bye),
        /// What the agent takes on, after each Hello.
        0x05 => Offer(Offer),
        /// A desired configuration applied (with the keys that were not).
        0x06 => Applied(Applied),
        /// A job's result, from an agent on one connection.
        0x07 => Result(JobResult),
        /// A command's reply, from an agent on one connection.
        0x08 => Reply(CommandReply),
        /// Telemetry, chat and log lines, to a hub that takes log lines.
        0x09 => LogBatch(LogBatch),
    }
}

impl Upstream {
    /// The sequence number of a `Batch` or `LogBatch` frame, read without
    /// decoding the rest (`None` for another kind or a frame too short):
    /// what a hub answers with when it will not read the batch.
    pub fn batch_seq(frame: &[u8]) -> Option<u64> {
        match crate::envelope::open(frame) {
            Ok((0x03 | 0x09, body)) => postcard::take_from_bytes::<u64>(body).ok().map(|(s, _)| s),
            _ => None,
        }
    }

    /// `batch` as the kind that carries it: `Batch` (0x03) without log
    /// lines, so a hub that predates them reads it, else `LogBatch` (0x09).
    pub fn from_batch(batch: Batch) -> Upstream {
        if batch.logs.is_empty() && batch.sources.is_empty() {
            Upstream::Batch(batch)
        } else {
            Upstream::LogBatch(LogBatch(batch))
        }
    }
}

channel! {
    /// Hub ROUTER → agent DEALER.
    Downstream {
        /// Answer to Hello.
        0x10 => Welcome(Welcome),
        /// A batch is stored.
        0x11 => Ack(Ack),
        /// Send Hello again.
        0x12 => HelloRequest(HelloRequest),
        /// Something was dropped.
        0x13 => Refusal(Refusal),
        /// An operator's announcement for this one device.
        0x14 => Announcement(Announcement),
        /// Connect the other sockets again.
        0x15 => Relink(Relink),
        /// Send a batch again under a new number.
        0x16 => Renumber(Renumber),
        /// Give a batch up: it will never be stored.
        0x17 => Rejected(Rejected),
        /// Send a batch again later: it is over the device's budget.
        0x18 => Throttled(Throttled),
        /// A job aimed at this device, or from the work queue to an agent
        /// on one connection: run it and send its result on the results
        /// socket, as for a pulled one (on one connection, as `Result`).
        0x19 => Work(Job),
        /// The hub's desired configuration for this device.
        0x1a => Desired(Desired),
        /// Everything travels on this connection (sent before Welcome).
        0x1b => Carry(Carry),
        /// A chat room line, to an agent on one connection.
        0x1c => Chat(ChatMessage),
        /// A command, to an agent on one connection.
        0x1d => Command(CommandRequest),
        /// The groups the allow list pins this device to (before Welcome).
        0x1e => PinnedGroups(PinnedGroups),
        /// This hub takes log lines (sent before Welcome).
        0x1f => TakesLogs(TakesLogs),
    }
}

channel! {
    /// Hub PUB → agent SUB, after the topic frame.
    Broadcast {
        /// Chat room line.
        0x20 => Chat(ChatMessage),
        /// Operator broadcast.
        0x21 => Announcement(Announcement),
    }
}

channel! {
    /// Hub PUSH → agent PULL.
    JobFrame {
        /// A job.
        0x30 => Job(Job),
    }
}

channel! {
    /// Agent PUSH → hub PULL.
    ResultFrame {
        /// A job's result.
        0x31 => Result(JobResult),
    }
}

channel! {
    /// Hub ROUTER → agent DEALER, in the REP envelope.
    CommandFrame {
        /// A command.
        0x40 => Request(CommandRequest),
    }
}

channel! {
    /// Agent DEALER → hub ROUTER, in the REP envelope.
    ReplyFrame {
        /// A command's reply.
        0x41 => Reply(CommandReply),
    }
}
