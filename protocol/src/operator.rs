//! The operator's channel: what an operator (the command line, the HTTP
//! side, a script) asks the hub on its operator socket ([`OperatorFrame`]),
//! and the answers ([`OperatorReplyFrame`]). The structs marked growable
//! in PROTOCOL.md may gain fields at the end.

use serde::{Deserialize, Serialize};

use crate::envelope::channel;
use crate::messages::{Command, JobSpec, Reply, messages};
use crate::names::Target;

#[cfg(feature = "arbitrary")]
use arbitrary::Arbitrary;

mod views;
pub use views::*;

messages! {
    /// One operator request, with an id that makes retries idempotent: the hub
    /// answers a repeated id from its memory instead of acting twice.
    pub struct OperatorRequest {
        /// Random per request; the same on every retry of it.
        pub id: u64,
        /// What the operator asks for.
        pub request: Request,
    }

    /// What an operator can ask the hub.
    pub enum Request {
        /// List every known device.
        Devices,
        /// Telemetry rows after a cursor.
        Telemetry(#[serde(with = "crate::growable")] TelemetryQuery),
        /// Chat rows after a cursor.
        Chat(#[serde(with = "crate::growable")] ChatQuery),
        /// Send a command to a device and wait for its reply.
        Command {
            /// Target device id.
            device: String,
            /// The command.
            command: Command,
            /// How long to wait for the device's answer.
            timeout_ms: u32,
        },
        /// Queue a job.
        SubmitJob(#[serde(with = "crate::growable")] JobSubmission),
        /// One job and its result.
        Job {
            /// Job id.
            id: u64,
        },
        /// Recent jobs, newest first.
        Jobs {
            /// At most this many.
            limit: u32,
        },
        /// Publish an announcement.
        Broadcast {
            /// Who it is for.
            target: Target,
            /// The text.
            text: String,
        },
        /// The hub's counters.
        Stats,
        /// Like `Command`, but if the device is offline the hub keeps the
        /// command for up to `queue_ms` and sends it when the device is back.
        QueuedCommand {
            /// Target device id.
            device: String,
            /// The command.
            command: Command,
            /// How long to wait for the device's answer once it is sent.
            timeout_ms: u32,
            /// How long the command may wait for the device to come online.
            queue_ms: u32,
        },
        /// The newest value of every metric of every device since the hub
        /// started (what `/metrics` exports).
        Latest,
        /// The newest chat lines, oldest of them first.
        RecentChat {
            /// At most this many.
            limit: u32,
        },
        /// Recent commands sent to devices and how each ended, newest first.
        Commands {
            /// At most this many.
            limit: u32,
        },
        /// One command for several devices: each gets it when online,
        /// within the time to live; answered at once with the command's id.
        FleetCommand(#[serde(with = "crate::growable")] FleetCommand),
        /// Where a [`Request::FleetCommand`] stands on each device.
        FleetAnswers {
            /// The id it was answered with.
            id: u64,
        },
        /// Sets or unsets keys of one layer of the desired configuration.
        ConfigEdit(#[serde(with = "crate::growable")] ConfigEdit),
        /// One device's desired configuration, merged, each key with the
        /// layer it came from.
        ConfigShow {
            /// The device.
            device: String,
        },
        /// Every device's desired and applied configuration versions.
        ConfigStatus,
        /// The alerts pending or firing.
        Alerts,
        /// A device's newest connects and disconnects, newest first.
        PresenceLog {
            /// The device.
            device: String,
            /// At most this many.
            limit: u32,
        },
        /// The newest values of one device (`None`: every device) and of
        /// some metrics (a name without tags: that metric with any tags;
        /// none: every series), answered as [`Response::Latest`].
        LatestOf {
            /// The device, if one.
            device: Option<String>,
            /// Series or metric names; empty for all.
            names: Vec<String>,
        },
        /// Stops a job: of the work queue, aimed (every run of it), or one
        /// run. What has not been handed out never is; an attempt running
        /// on a device finishes there, with no further attempt.
        CancelJob {
            /// The job's id (or a run's).
            id: u64,
        },
        /// Stops a [`Request::FleetCommand`]: a share not yet sent to its
        /// device (offline, or not yet reached) never is; one sent is
        /// answered or times out as before.
        CancelCommand {
            /// The id [`Response::FleetCommandQueued`] gave.
            id: u64,
        },
        /// Forgets a decommissioned device: offline, and on a hub with an
        /// allow list, revoked. It leaves the device list, `/metrics`,
        /// alerts and what a group or the fleet reaches; job runs and
        /// command shares waiting for it fail, and its log of connects
        /// goes. Its stored telemetry stays (until retention), and so do
        /// its batch numbers: a message from it later (enrolled again)
        /// brings it back.
        Forget {
            /// The device.
            device: String,
        },
        /// The newest commands for many devices, newest first, each with
        /// how many of its shares stand where.
        FleetCommands {
            /// At most this many.
            limit: u32,
        },
        /// Log lines devices sent, after a cursor.
        Logs(#[serde(with = "crate::growable")] LogQuery),
        /// Keys not on the allow list that tried to connect since the hub
        /// started, newest attempt first: devices waiting to be enrolled.
        Pending,
        /// Adds a device's key to the hub's allow list, as `fleetmq-hub
        /// allow` does: the device gets in at its next handshake.
        Enrol(#[serde(with = "crate::growable")] Enrolment),
        /// Takes a device's keys (or one of them) off the hub's allow
        /// list, as `fleetmq-hub revoke` does: its connections are closed
        /// and its next handshake is refused.
        Revoke(#[serde(with = "crate::growable")] Revocation),
        /// The newest acts operators asked of the hub (allowed or
        /// refused), newest first: who did what, and when.
        Audit {
            /// At most this many.
            limit: u32,
        },
    }

    /// A device and its key, for [`Request::Enrol`].
    pub struct Enrolment {
        /// The device id it is let in as.
        pub device: String,
        /// Its CURVE public key, Z85 (40 characters).
        pub public_key: String,
    }

    /// A device, and which of its keys, for [`Request::Revoke`].
    pub struct Revocation {
        /// The device id to cut off.
        pub device: String,
        /// Only this key (Z85), the old one after a rotation; `None`: every
        /// key the device has.
        pub public_key: Option<String>,
    }

    /// An edit of one layer of the desired configuration.
    pub struct ConfigEdit {
        /// `fleet`, `group:NAME` or `device:ID`.
        pub layer: String,
        /// Keys to set, with their values.
        pub set: Vec<(String, String)>,
        /// Keys to take out of this layer.
        pub unset: Vec<String>,
        /// Apply only if the configuration's version is still this one
        /// (0: whatever it is).
        pub if_version: u64,
    }

    /// A command for devices, groups or the whole fleet.
    pub struct FleetCommand {
        /// What to do.
        pub command: Command,
        /// These devices,
        pub devices: Vec<String>,
        /// and every device in any of these groups,
        pub groups: Vec<String>,
        /// or every device the hub knows.
        pub all: bool,
        /// How long each device may take to answer once it has the
        /// command (0: the hub's `commands.timeout_ms`).
        pub timeout_ms: u32,
        /// How long the command waits for a device that is offline (0: the
        /// hub's `jobs.ttl_ms`).
        pub ttl_ms: u32,        /// Only the devices of the aim (or, with no other aim, of the
        /// fleet) that match every one of these filters (`model~zero`; see
        /// [`crate::matching`]). Send them only to a hub whose
        /// `HubStats.features` names `matching`: an older one would run
        /// the command on every device of the aim.
        #[serde(default)]
        pub matching: Vec<String>,
    }

    /// Filter and cursor for telemetry.
    pub struct TelemetryQuery {
        /// Only this device.
        pub device: Option<String>,
        /// Only this metric: a name without tags matches its series with
        /// any tags (`host.disk.used_pct` matches
        /// `host.disk.used_pct{mount=/}`); a name with tags matches that
        /// one series.
        pub name: Option<String>,
        /// Rows with a larger id than this (0 for the start).
        pub after_id: i64,
        /// At most this many rows.
        pub limit: u32,
        /// Only samples taken at or after this time, ms since the epoch
        /// (0: no bound).
        pub since_ms: u64,
        /// Only samples taken at or before this time (0: no bound).
        pub until_ms: u64,
        /// Read the newest `limit` matching rows after `after_id`
        /// (returned oldest first), not the oldest.
        pub newest: bool,
        /// Only series carrying every one of these tags, each `key=value`.
        pub tags: Vec<String>,
    }

    /// Filter and cursor for log lines.
    pub struct LogQuery {
        /// Only this device.
        pub device: Option<String>,
        /// Only lines from this source (a file's path, as the agent names
        /// it).
        pub source: Option<String>,
        /// Only lines holding this text (as it is, case and all); empty:
        /// every line.
        pub contains: String,
        /// Rows with a larger id than this (0 for the start).
        pub after_id: i64,
        /// At most this many rows.
        pub limit: u32,
        /// Only lines read at or after this time, ms since the epoch (0:
        /// no bound).
        pub since_ms: u64,
        /// Only lines read at or before this time (0: no bound).
        pub until_ms: u64,
        /// Read the newest `limit` matching rows after `after_id`
        /// (returned oldest first), not the oldest.
        pub newest: bool,
    }

    /// Cursor for chat.
    pub struct ChatQuery {
        /// Rows with a larger id than this (0 for the start).
        pub after_id: i64,
        /// At most this many rows.
        pub limit: u32,
    }

    /// A job to queue.
    pub struct JobSubmission {
        /// What to do.
        pub spec: JobSpec,
        /// Agent-side time limit.
        pub timeout_ms: u32,
        /// How long a dispatched job may go without a result before it is
        /// handed out again.
        pub lease_ms: u32,
        /// Dispatches before the job fails.
        pub max_attempts: u32,
        /// Run it on each of these devices (with `groups` and `all`;
        /// none of the three: on any one device, from the work queue).
        pub devices: Vec<String>,
        /// Run it on each device in any of these groups.
        pub groups: Vec<String>,
        /// Run it on every device the hub knows.
        pub all: bool,
        /// How long an aimed job waits for an offline device (0: the hub's
        /// `jobs.ttl_ms`); past it that device's run fails.
        pub ttl_ms: u32,        /// Only the devices of the aim (or, with no other aim, of the
        /// fleet) that match every one of these filters, as for
        /// [`FleetCommand::matching`] (and only to a hub that names
        /// `matching` among its features).
        #[serde(default)]
        pub matching: Vec<String>,
    }

    /// The hub's answer to an [`OperatorRequest`].
    pub struct OperatorResponse {
        /// The request's id.
        pub id: u64,
        /// The answer.
        pub response: Response,
    }

    /// Answers, one per [`Request`] kind, or an error.
    pub enum Response {
        /// For [`Request::Devices`].
        Devices(#[serde(with = "crate::growable::list")] Vec<DeviceInfo>),
        /// For [`Request::Telemetry`].
        Telemetry(#[serde(with = "crate::growable::list")] Vec<TelemetryRow>),
        /// For [`Request::Chat`].
        Chat(#[serde(with = "crate::growable::list")] Vec<ChatRow>),
        /// For [`Request::Command`].
        Reply {
            /// Device that answered.
            device: String,
            /// Its answer.
            reply: Reply,
        },
        /// For [`Request::SubmitJob`].
        JobSubmitted {
            /// The new job's id.
            id: u64,
        },
        /// For [`Request::Job`].
        Job(#[serde(with = "crate::growable")] JobInfo),
        /// For [`Request::Jobs`].
        Jobs(#[serde(with = "crate::growable::list")] Vec<JobInfo>),
        /// For [`Request::Broadcast`].
        Broadcast {
            /// The topic it went out on.
            topic: String,
        },
        /// For [`Request::Stats`].
        Stats(#[serde(with = "crate::growable")] HubStats),
        /// The request failed.
        Error(OperatorError),
        /// For [`Request::Latest`].
        Latest(#[serde(with = "crate::growable::list")] Vec<LatestValue>),
        /// For [`Request::Commands`].
        Commands(#[serde(with = "crate::growable::list")] Vec<CommandInfo>),
        /// For [`Request::FleetCommand`].
        FleetCommandQueued {
            /// Ask [`Request::FleetAnswers`] with it.
            id: u64,
            /// The devices it is for.
            devices: Vec<String>,
        },
        /// For [`Request::FleetAnswers`]: one per device, by device id.
        FleetAnswers(#[serde(with = "crate::growable::list")] Vec<FleetAnswer>),
        /// For [`Request::ConfigEdit`]: the configuration's new version.
        ConfigVersion {
            /// The version now.
            version: u64,
        },
        /// For [`Request::ConfigShow`].
        ConfigShow(#[serde(with = "crate::growable")] ConfigView),
        /// For [`Request::ConfigStatus`]: one per known device.
        ConfigStatus(#[serde(with = "crate::growable::list")] Vec<ConfigState>),
        /// For [`Request::Alerts`].
        Alerts(#[serde(with = "crate::growable::list")] Vec<AlertInfo>),
        /// For [`Request::PresenceLog`].
        PresenceLog(#[serde(with = "crate::growable::list")] Vec<PresenceEvent>),
        /// For [`Request::CancelJob`]: how much of the job it stopped (both
        /// 0: it had already ended).
        JobCancelled {
            /// Attempts or runs not handed out, now failed as cancelled.
            stopped: u32,
            /// Attempts running on devices, which finish with no further one.
            running: u32,
        },
        /// For [`Request::CancelCommand`]: how much of the command it
        /// stopped (both 0: every share had ended).
        CommandCancelled {
            /// Shares not yet sent, now failed as cancelled.
            stopped: u32,
            /// Shares sent and not answered yet, which go on.
            sent: u32,
        },
        /// For [`Request::Forget`]: what was waiting for the device and
        /// now never will be sent.
        Forgotten {
            /// Job runs aimed at it, not yet handed out.
            runs: u32,
            /// Shares of commands for many devices, not yet sent.
            shares: u32,
        },
        /// For [`Request::FleetCommands`].
        FleetCommands(#[serde(with = "crate::growable::list")] Vec<FleetCommandInfo>),
        /// For [`Request::Logs`].
        Logs(#[serde(with = "crate::growable::list")] Vec<LogRow>),
        /// For [`Request::Pending`].
        Pending(#[serde(with = "crate::growable::list")] Vec<PendingKey>),
        /// For [`Request::Enrol`]: `enrolled`, `enrolled_another_key` (the
        /// device had a key already: both get in), or `already_enrolled`.
        Enrolled {
            /// What became of it, as `fleetmq-hub allow --json` says.
            result: String,
        },
        /// For [`Request::Revoke`]: how many of the device's keys left the
        /// allow list.
        Revoked {
            /// As `fleetmq-hub revoke --json` says.
            removed_keys: u32,
        },
        /// For [`Request::Audit`].
        Audit(#[serde(with = "crate::growable::list")] Vec<AuditEntry>),
    }
}

/// Why an operator request failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
pub enum OperatorError {
    /// The hub has never seen this device.
    #[error("unknown device {0:?}: `fleetmq-hub devices` lists the known ones")]
    UnknownDevice(String),
    /// The device is known but not connected.
    #[error("device {0:?} is offline")]
    DeviceOffline(String),
    /// The device did not answer in time.
    #[error("device did not answer within {after_ms} ms")]
    TimedOut {
        /// The limit that passed.
        after_ms: u32,
    },
    /// No such job or row.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request itself is wrong.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The hub could not read or write its store.
    #[error("hub storage error: {0}")]
    Storage(String),
    /// A queued command's device did not come online in time.
    #[error("device {device:?} stayed offline for the {waited_ms} ms the command could wait")]
    StayedOffline {
        /// The device.
        device: String,
        /// How long the command waited.
        waited_ms: u32,
    },
    /// The operator's role does not allow the request (a `read` operator
    /// asked to act), or the caller is not an operator.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// The device is connected but has not read what the hub sent it
    /// until its queue filled: what the hub sends it is dropped until it
    /// reads again.
    #[error(
        "device {0:?} is connected but not reading what the hub sends (its queue is full); nothing was sent: try again once it reads (see the hub's log)"
    )]
    NotReading(String),
}

channel! {
    /// Operator REQ → hub ROUTER.
    OperatorFrame {
        /// A request.
        0x50 => Request(OperatorRequest),
    }
}

impl OperatorFrame {
    /// The `id` of an `OperatorRequest` frame, read without decoding the
    /// request (`None` for another version or kind, or a frame too short):
    /// what a hub answers a request it cannot read with, so that the
    /// client can match the error to its request.
    pub fn request_id(frame: &[u8]) -> Option<u64> {
        match crate::envelope::open(frame) {
            Ok((0x50, body)) => postcard::take_from_bytes::<u64>(body)
                .ok()
                .map(|(id, _)| id),
            _ => None,
        }
    }
}

channel! {
    /// Hub ROUTER → operator REQ.
    OperatorReplyFrame {
        /// A response.
        0x51 => Response(OperatorResponse),
    }
}
