//! What the hub's answers hold: a device, a telemetry row, a job and its
//! runs, the hub's counters and the rest, each carried in a
//! [`Response`](super::Response). The structs marked growable in
//! PROTOCOL.md may gain fields at the end.

use serde::{Deserialize, Serialize};

use crate::messages::{Command, DeviceFacts, JobSpec, Outcome, Reply, messages};
use crate::telemetry::Value;

#[cfg(feature = "arbitrary")]
use arbitrary::Arbitrary;

messages! {
    /// A device came online or went offline.
    pub struct PresenceEvent {
        /// Online (true) or offline.
        pub online: bool,
        /// When (ms since the epoch, the hub's clock).
        pub at_ms: u64,
        /// Why: `hello`, `heard` (it spoke without a Hello, after a hub
        /// restart), `bye`, `silent` (its heartbeats stopped), `revoked`,
        /// `moved to FRONT-END`, `refused: its key is revoked (a connection
        /// from ADDRESS)` (a revoked device tried to connect), `another
        /// board: serial NEW (was OLD); ...` (its facts name another board).
        pub why: String,
    }

    /// A key not on the allow list that tried to connect: a device
    /// waiting to be enrolled, or a stranger.
    pub struct PendingKey {
        /// Its CURVE public key, Z85.
        pub public_key: String,
        /// Where its newest attempt came from (IP address).
        pub address: String,
        /// Its first attempt since the hub started (ms since the epoch,
        /// the hub's clock).
        pub first_ms: u64,
        /// Its newest attempt.
        pub last_ms: u64,
        /// How many handshakes it tried.
        pub attempts: u64,
    }

    /// One act an operator asked of the hub, allowed or not: the hub's
    /// audit trail.
    pub struct AuditEntry {
        /// Its row, rising.
        pub id: i64,
        /// When the hub took the request (ms since the epoch, the hub's
        /// clock).
        pub at_ms: u64,
        /// Who asked: `local` (the operator socket on the hub's machine),
        /// `console` (the HTTP side, with the admin token), or a remote
        /// operator as `NAME (ROLE)`.
        pub operator: String,
        /// What they asked, in the command line's words
        /// (`revoke pi-7`, `command pi-1: exec df -h`).
        pub act: String,
        /// Whether their role allowed it (a `read` operator's act is
        /// refused, and kept here all the same).
        pub allowed: bool,
    }

    /// An alert: one rule on one device (and one series, for a metric).
    pub struct AlertInfo {
        /// The rule's name.
        pub rule: String,
        /// The device.
        pub device: String,
        /// The series (metric rules), or empty.
        pub series: String,
        /// Firing (told to the webhooks), or pending (holding, not for
        /// long enough yet).
        pub firing: bool,
        /// Since when it fires, or holds (ms since the epoch).
        pub since_ms: u64,
        /// The value (metric rules), or the seconds offline.
        pub value: f64,
        /// In words.
        pub summary: String,
    }

    /// One device's desired configuration.
    pub struct ConfigView {
        /// The device.
        pub device: String,
        /// The configuration's version (for a conditional edit).
        pub version: u64,
        /// The version of the newest change that applies to this device.
        pub desired_version: u64,
        /// The version the device last reported applied (0: none).
        pub applied_version: u64,
        /// Merged keys: (key, value, the layer it came from).
        pub entries: Vec<(String, String, String)>,
        /// Keys the device did not apply, with why.
        pub errors: Vec<(String, String)>,
    }

    /// Where one device's configuration stands.
    pub struct ConfigState {
        /// The device.
        pub device: String,
        /// Its groups.
        pub groups: Vec<String>,
        /// The version of the newest change that applies to it.
        pub desired_version: u64,
        /// The version it last reported applied.
        pub applied_version: u64,
        /// Keys it did not apply, with why.
        pub errors: Vec<(String, String)>,
    }

    /// Where a fleet command stands on one device.
    pub struct FleetAnswer {
        /// The device.
        pub device: String,
        /// `offline` (waiting for the device), `sending`, `sent` (waiting
        /// for its answer), `answered`, `timed_out`, `expired` (the device
        /// stayed away past the time to live) or `failed`.
        pub state: String,
        /// The device's answer, once `answered`.
        pub reply: Option<Reply>,
        /// Why it ended without an answer.
        pub error: Option<String>,
        /// When it ended, ms since the epoch (0 while it has not).
        pub ended_ms: u64,
    }

    /// A command for many devices ([`Request::FleetCommand`](super::Request::FleetCommand)),
    /// and how many of its shares stand where.
    pub struct FleetCommandInfo {
        /// The id it was answered with.
        pub id: u64,
        /// What it asks.
        pub command: Command,
        /// Whom it is for, in words (`all`, `groups north`, `devices pi-1,pi-2`).
        pub target: String,
        /// When it was given, ms since the epoch.
        pub created_ms: u64,
        /// Until when a share may wait for its device, ms since the epoch.
        pub expires_ms: u64,
        /// How many shares are in each state, by the state's name
        /// (`waiting`: not yet sent; then as [`FleetAnswer`]'s), in the
        /// order of the names.
        pub states: Vec<(String, u32)>,
    }

    /// A command the hub sent to a device, from its command log.
    pub struct CommandInfo {
        /// Log row id.
        pub id: i64,
        /// The device it went to.
        pub device: String,
        /// The command, as JSON.
        pub command: String,
        /// When it was sent, ms since the epoch.
        pub sent_ms: u64,
        /// When it ended (answer or timeout); None while it is in flight.
        pub ended_ms: Option<u64>,
        /// The device's reply as JSON, or "timed out"; None while in flight.
        pub result: Option<String>,
    }

    /// The newest sample of one metric of one device.
    pub struct LatestValue {
        /// Device id.
        pub device: String,
        /// Metric name.
        pub name: String,
        /// Sample time, ms since the epoch.
        pub ts_ms: u64,
        /// Value.
        pub value: Value,
    }

    /// A device as the hub knows it.
    #[derive(Default)]
    pub struct DeviceInfo {
        /// Device id.
        pub id: String,
        /// Connected and heard from recently.
        pub online: bool,
        /// Its `dev/<id>/` broadcast subscription is live at the hub's XPUB
        /// socket (the hub publishes nothing on it; it marks a live link).
        pub listening: bool,
        /// When it came online (or went offline), ms since the epoch.
        pub since_ms: u64,
        /// When the hub last heard from it.
        pub last_seen_ms: u64,
        /// Agent version from its last Hello.
        pub agent_version: String,
        /// Architecture from its last Hello.
        pub arch: String,
        /// OS from its last Hello.
        pub os: String,
        /// Host name from its last Hello.
        pub hostname: String,
        /// Groups from its last Hello, or the ones the allow list pins.
        pub groups: Vec<String>,
        /// Batches stored from it.
        pub batches: u64,
        /// No key of it is on the allow list any more: it was revoked and
        /// cannot get in (never set on a plaintext hub).
        pub revoked: bool,
        /// Messages refused from a second agent with this device's key while
        /// the first was connected (a cloned SD card, or a restart the hub
        /// had not yet seen the end of).
        pub conflicts: u64,
        /// Where the last refused second agent connected from.
        pub conflict_address: String,
        /// The front-end it is connected to, when hubs are front-ends over
        /// a NATS cluster (empty on a single hub, and while offline).
        pub front_end: String,
        /// How far the device's clock is from the hub's, in ms (ahead
        /// when positive), as its heartbeats last showed; `None` when
        /// this hub has not measured it (an agent that does not say Hello
        /// again when its clock steps, or none heard since it said Hello).
        pub clock_offset_ms: Option<i64>,
        /// The IP address its connection comes from, as the hub sees it
        /// (behind NAT, the router's); its newest since the hub started
        /// when offline, and empty when this hub has not seen one.
        pub address: String,
        /// What the device is (growable), as its agent's newest Offer said
        /// (kept while it is offline, and over hub restarts); empty for
        /// an agent of a release before them.
        #[serde(with = "crate::growable")]
        pub facts: DeviceFacts,
    }

    /// One stored sample.
    pub struct TelemetryRow {
        /// Row id, usable as a cursor.
        pub id: i64,
        /// Device id.
        pub device: String,
        /// Batch sequence number.
        pub seq: u64,
        /// Sample time, ms since the epoch.
        pub ts_ms: u64,
        /// Metric name.
        pub name: String,
        /// Value.
        pub value: Value,
    }

    /// One stored log line.
    pub struct LogRow {
        /// Row id, usable as a cursor.
        pub id: i64,
        /// Device id.
        pub device: String,
        /// Batch sequence number.
        pub seq: u64,
        /// When the agent read it, ms since the epoch.
        pub ts_ms: u64,
        /// Where it was read (a file's path).
        pub source: String,
        /// The line.
        pub text: String,
    }

    /// One stored chat line.
    pub struct ChatRow {
        /// Row id, usable as a cursor.
        pub id: i64,
        /// Speaker.
        pub device: String,
        /// When it was said.
        pub ts_ms: u64,
        /// What was said.
        pub text: String,
    }

    /// A job and where it stands.
    pub struct JobInfo {
        /// Job id.
        pub id: u64,
        /// What it does.
        pub spec: JobSpec,
        /// Where it stands.
        pub state: JobState,
        /// Dispatches so far.
        pub attempts: u32,
        /// Dispatches allowed.
        pub max_attempts: u32,
        /// Agent-side time limit.
        pub timeout_ms: u32,
        /// Lease length.
        pub lease_ms: u32,
        /// When it was submitted.
        pub created_ms: u64,
        /// When it last changed.
        pub updated_ms: u64,
        /// Device whose result was taken.
        pub device: Option<String>,
        /// The result.
        pub outcome: Option<Outcome>,
        /// Why it failed, when it did.
        pub error: Option<String>,
        /// Where it runs: `any` (the work queue), or the devices, groups or
        /// `all` it was aimed at.
        pub target: String,
        /// For a job aimed at devices: its run on each, by device id.
        #[serde(with = "crate::growable::list")]
        pub runs: Vec<JobRun>,
    }

    /// A job's run on one device it was aimed at.
    pub struct JobRun {
        /// The run's own job id (its results carry it).
        pub id: u64,
        /// The device.
        pub device: String,
        /// Where it stands.
        pub state: JobState,
        /// Dispatches so far.
        pub attempts: u32,
        /// When it last changed.
        pub updated_ms: u64,
        /// The device's result.
        pub outcome: Option<Outcome>,
        /// Why it failed, when it did.
        pub error: Option<String>,
    }

    /// The life of a job.
    pub enum JobState {
        /// Waiting for an agent.
        Queued,
        /// Handed out; waiting for a result until the lease ends.
        Leased,
        /// A result came back.
        Done,
        /// Given up: attempts exhausted.
        Failed,
    }

    /// The hub's counters.
    #[derive(Default)]
    pub struct HubStats {
        /// Hub version.
        pub hub_version: String,
        /// Milliseconds since the hub started.
        pub uptime_ms: u64,
        /// Devices online now.
        pub devices_online: u32,
        /// Devices ever seen.
        pub devices_known: u32,
        /// Batches stored.
        pub batches_stored: u64,
        /// Batches received again and not stored twice.
        pub batches_duplicate: u64,
        /// Samples stored.
        pub samples_stored: u64,
        /// Frames dropped as malformed or unexpected.
        pub frames_dropped: u64,
        /// Jobs handed out, counting re-dispatches.
        pub jobs_dispatched: u64,
        /// Job results taken.
        pub results_received: u64,
        /// Commands sent to devices.
        pub commands_sent: u64,
        /// Commands that timed out.
        pub commands_timed_out: u64,
        /// "curve", or "plaintext" when the hub was started with --insecure.
        pub security: String,
        /// Keys on the allow list.
        pub devices_allowed: u32,
        /// CURVE handshakes refused: a key not on the allow list.
        pub handshakes_refused: u64,
        /// Handshakes that failed otherwise: a plaintext client against a
        /// CURVE hub, garbage instead of ZMTP, a wrong mechanism.
        pub handshakes_failed: u64,
        /// Messages dropped because the connection's key belongs to another
        /// device than the one the message claims, or was revoked.
        pub impersonations: u64,
        /// Messages dropped by the per-device rate limit.
        pub rate_limited: u64,
        /// Agent connections that ended (peer gone, or cut for a protocol
        /// error such as a frame over the size limit).
        pub disconnects: u64,
        /// Messages refused because another connection with the same
        /// device's key held the device (see `DeviceInfo.conflicts`).
        pub connection_conflicts: u64,
        /// Batches refused because the device's number was taken by a batch
        /// with other content; the agent was told to renumber them.
        pub batches_renumbered: u64,
        /// Job results refused: not for the attempt the device was given
        /// (a wrong token), so the job was unaffected.
        pub results_refused: u64,
        /// Batches answered Throttled: over a device's records or bytes
        /// a second (the agent sends them again later).
        pub batches_throttled: u64,
        /// Batches answered Rejected: invalid, or over a device's
        /// distinct-series budget (never stored).
        pub batches_rejected: u64,
        /// Why the hub cannot write its store now (a full disk), or empty:
        /// telemetry is held back (Throttled) until it can.
        pub storage_problem: String,
        /// A telemetry cursor at the end of the store: a `TelemetryQuery`
        /// with it as `after_id` reads only samples stored after this
        /// answer (what `--follow` starts from).
        pub telemetry_cursor: i64,
        /// The same for chat: the id of the newest chat line (0 for none).
        pub chat_cursor: i64,
        /// Bytes of telemetry stored (the batches' bodies as received).
        pub telemetry_bytes: u64,
        /// Telemetry batches deleted by retention since the hub started.
        pub pruned_batches: u64,
        /// Records (samples and chat lines) in them.
        pub pruned_records: u64,
        /// Chat lines deleted by retention since the hub started.
        pub pruned_chat: u64,
        /// Finished jobs deleted by retention since the hub started.
        pub pruned_jobs: u64,
        /// Command log entries deleted by retention since the hub started.
        pub pruned_commands: u64,
        /// Front-ends over NATS: what each live front-end, this one among
        /// them, last reported of its own traffic (every 5 s); empty on a
        /// single hub. The fields above are this hub's own.
        #[serde(with = "crate::growable::list")]
        pub front_ends: Vec<FrontEndStats>,
        /// Messages for devices on one connection that the hub dropped
        /// because the device was not reading (its queue of
        /// `[net] send_hwm` messages was full): acks, broadcasts, jobs,
        /// commands and configuration.
        pub messages_undelivered: u64,
        /// Broadcast subscriptions (agents on five sockets) the hub did not
        /// apply: another device's topic, a group the allow list does not
        /// pin the device to, or a prefix that is not one whole topic.
        pub subscriptions_refused: u64,
        /// Log lines stored (in batches stored since the hub started).
        pub log_lines_stored: u64,
        /// Of `telemetry_bytes`, the bytes of batches holding log lines
        /// (what `[retention.logs] max_bytes` holds to).
        pub log_bytes: u64,
        /// Keys not on the allow list that tried to connect since the hub
        /// started and are not enrolled yet ([`Request::Pending`] lists
        /// them); at most 1,024.
        ///
        /// [`Request::Pending`]: crate::Request::Pending
        pub keys_pending: u32,
        /// What this hub does that an older one would skip without a word,
        /// so that a client asks before relying on it: [`HUB_FEATURES`].
        #[serde(default)]
        pub features: Vec<String>,
    }

    /// One front-end's own traffic, as it last reported it.
    #[derive(Default)]
    pub struct FrontEndStats {
        /// Its name.
        pub name: String,
        /// When it reported (ms since the epoch, its clock).
        pub reported_ms: u64,
        /// Devices connected to it.
        pub devices_online: u32,
        /// Batches it acked once the cluster had them.
        pub batches_accepted: u64,
        /// Batches it answered Throttled.
        pub batches_throttled: u64,
        /// Frames it dropped as malformed or unexpected.
        pub frames_dropped: u64,
        /// Jobs it handed out.
        pub jobs_dispatched: u64,
        /// Job results it took.
        pub results_received: u64,
        /// Commands it sent to its devices.
        pub commands_sent: u64,
        /// Handshakes it refused (a key not on the allow list).
        pub handshakes_refused: u64,
        /// Agent connections to it that ended.
        pub disconnects: u64,
        /// The fleetmq-hub version it runs (empty: a front-end from
        /// before versions were reported).
        #[serde(default)]
        pub version: String,
        /// What it applies from the cluster that older front-ends do not
        /// ([`CLUSTER_FEATURES`] of its version): a cluster-wide request
        /// that needs one is refused while a live front-end lacks it.
        #[serde(default)]
        pub features: Vec<String>,
    }
}

/// What a front-end applies from the cluster that an older one skips, as
/// its [`FrontEndStats::features`] names them: `job_cancel` (a
/// `cancelled` job event), `forget` (a holder marked `forgotten_ms`),
/// `log_batches` (a `LogBatch` body on the telemetry stream).
pub const CLUSTER_FEATURES: [&str; 3] = ["job_cancel", "forget", "log_batches"];

/// What a hub of this release names in `HubStats.features`: `matching`
/// (it honours `JobSubmission.matching` and `FleetCommand.matching`).
pub const HUB_FEATURES: [&str; 1] = ["matching"];

impl FrontEndStats {
    /// Which of [`CLUSTER_FEATURES`] its report does not list.
    pub fn lacking(&self) -> Vec<&'static str> {
        (CLUSTER_FEATURES.iter())
            .filter(|f| !self.features.iter().any(|g| g == *f))
            .copied()
            .collect()
    }
}
