//! What happens on the device itself: the agent's own samples and host
//! metrics, StatsD/Influx ingest, the control socket (`status`, `send`,
//! `reload`), SIGHUP, and the status the agent reports.

use std::time::{Duration, Instant};

use fleetmq_net::{error_chain, now_ms};
use fleetmq_protocol::telemetry::MAX_CHAT_LEN;
use fleetmq_protocol::{AgentStatus, Value};
use tracing::{debug, info, warn};

use crate::sources::control::{self, ReloadStatus, Request};
use crate::sources::sample::Ingested;
use crate::telemetry::uplink::Record;
use crate::work::runner::ExecPolicy;

use super::{Agent, Error};

impl Agent {
    pub(super) fn sample(&mut self) {
        let ts_ms = now_ms();
        let dropped = self.records_dropped();
        let dropping = dropped.saturating_sub(self.dropped_sampled);
        self.dropped_sampled = dropped;
        let records = vec![
            Record::Sample {
                name: "agent.uptime_s".into(),
                ts_ms,
                value: Value::Float(self.started.elapsed().as_secs_f64()),
            },
            Record::Sample {
                name: "agent.heartbeats".into(),
                ts_ms,
                value: Value::Int(self.heartbeats as i64),
            },
            // Records this agent dropped since the last sample (a full
            // spool, refused or rejected batches): an alert's signal.
            Record::Sample {
                name: "agent.records_dropping".into(),
                ts_ms,
                value: Value::Int(i64::try_from(dropping).unwrap_or(i64::MAX)),
            },
        ];
        self.accept(&records);
        debug!(pending = self.outbox.waiting(), "sampled");
    }

    pub(super) fn sample_host(&mut self) {
        let (samples, skipped) = self.host.collect(Instant::now());
        for why in skipped {
            info!("host metric group skipped: {why}");
        }
        let ts_ms = now_ms();
        let records: Vec<Record> = samples
            .into_iter()
            .map(|(name, value)| Record::Sample { name, ts_ms, value })
            .collect();
        if !records.is_empty() {
            self.accept(&records);
        }
    }

    /// Takes what local programs sent over StatsD or Influx.
    pub(super) fn drain_ingest(&mut self) {
        let now = now_ms();
        let (samples, complaint) = self.ingest.drain(now, Instant::now());
        if let Some(line) = complaint {
            warn!(
                "ingest: malformed line {line}; counted in status, quiet until a datagram parses cleanly"
            );
        }
        self.accept_ingested(samples, now);
    }

    /// Sends what the open StatsD interval folded.
    pub(super) fn flush_statsd(&mut self) {
        let now = now_ms();
        let samples = self.ingest.flush_statsd(now);
        self.accept_ingested(samples, now);
    }

    /// Whether the `[logs]` sources are read now: there are some, and the
    /// hub that welcomed this agent last takes log lines (a file, or the
    /// journal, is the best place for lines to wait until one does).
    pub(super) fn reading_logs(&self) -> bool {
        self.takes_logs && !self.tailer.is_empty()
    }

    /// Whether the hub that welcomes us takes log lines: the `[logs]`
    /// sources are read only while it does (said once each time that
    /// changes).
    pub(super) fn welcomed_logs(&mut self, hub_version: &str) {
        let takes = self.told_takes_logs;
        if takes != self.takes_logs && !self.tailer.is_empty() {
            if takes {
                info!("the hub takes log lines; reading the log sources");
            } else {
                warn!(%hub_version, "the hub does not take log lines (it is older than this agent): upgrade it; the log files and journal are read on from where they were left once a hub that takes them welcomes this agent");
            }
        }
        self.takes_logs = takes;
    }

    /// Reads the new lines of the `[logs]` sources into the spool; what
    /// the spool refuses is read again at the next poll.
    pub(super) fn read_logs(&mut self) {
        let records = self.tailer.poll(now_ms(), Instant::now());
        if records.is_empty() || self.accept(&records) {
            self.tailer.commit();
        } else {
            debug!(
                lines = records.len(),
                "log lines refused by the spool; read again at the next poll"
            );
            self.tailer.rewind();
        }
    }

    fn accept_ingested(&mut self, samples: Vec<Ingested>, now: u64) {
        let records: Vec<Record> = samples
            .into_iter()
            .map(|s| Record::Sample {
                name: s.name,
                ts_ms: s.ts_ms.unwrap_or(now),
                value: s.value,
            })
            .collect();
        if !records.is_empty() && !self.accept(&records) {
            debug!(
                records = records.len(),
                "ingested samples refused by the spool"
            );
        }
    }

    /// SIGHUP: reads the configuration again and applies what can change
    /// while running (with the hub's configuration over it, as applied
    /// before). What cannot is named, and keeps its running value.
    pub(super) fn reload(&mut self) {
        let local = match (self.reload)() {
            Ok(cfg) => cfg,
            Err(e) => {
                let e = error_chain(&*e);
                warn!("SIGHUP: the configuration has an error; the running one stays: {e}");
                self.last_reload = ReloadStatus {
                    at_ms: now_ms(),
                    error: e,
                    ..ReloadStatus::default()
                };
                return;
            }
        };
        self.local = local;
        let pairs: Vec<(String, String)> = self.remote.values.clone().into_iter().collect();
        let out = crate::remote::apply(&self.local, &pairs);
        self.remote_errors = out.errors;
        let crate::reload::Diff {
            applied,
            needs_restart: restart,
        } = crate::reload::diff(&self.cfg, &out.config);
        self.apply_live(out.config);
        info!(applied = ?applied, "SIGHUP: configuration reloaded");
        if !restart.is_empty() {
            warn!(
                keys = ?restart,
                "SIGHUP: these changed but take effect only after a restart; their running values stay"
            );
        }
        self.last_reload = ReloadStatus {
            at_ms: now_ms(),
            applied,
            needs_restart: restart,
            error: String::new(),
        };
    }

    /// The hub's desired configuration: the keys this device lets it set
    /// are applied over the local file, kept in DATA_DIR/remote, and
    /// reported with the keys that were not.
    pub(super) fn desired(&mut self, doc: fleetmq_protocol::ConfigDoc) {
        let out = crate::remote::apply(&self.local, &doc.values);
        self.apply_live(out.config);
        let remote = crate::remote::Remote {
            version: doc.version,
            values: out.applied,
        };
        if let Err(e) = crate::remote::save(&self.cfg.data_dir, &remote) {
            warn!(error = %e, "could not keep the hub's configuration in DATA_DIR/remote; it applies until a restart");
        }
        for (key, why) in &out.errors {
            warn!(key, %why, version = doc.version, "a key of the hub's configuration was not applied");
        }
        info!(
            version = doc.version,
            keys = remote.values.len(),
            refused = out.errors.len(),
            "applied the hub's configuration"
        );
        self.remote = remote;
        self.remote_errors = out.errors.clone();
        let report = fleetmq_protocol::Applied(fleetmq_protocol::ConfigReport {
            version: doc.version,
            errors: out.errors,
        });
        if !self.send_up(fleetmq_protocol::Upstream::Applied(report)) {
            debug!(
                "could not report the configuration applied; the next connect's offer says its version"
            );
        }
    }

    /// Makes `new` the running configuration where it can change while
    /// running (`LIVE` in `reload.rs`); the rest keeps its running value.
    fn apply_live(&mut self, new: crate::config::AgentConfig) {
        let now = Instant::now();
        if new.telemetry.sample_interval_ms != self.cfg.telemetry.sample_interval_ms {
            self.cfg.telemetry.sample_interval_ms = new.telemetry.sample_interval_ms;
            self.next_sample = now;
        }
        if new.host != self.cfg.host {
            self.host.reconfigure(new.host.clone());
            self.cfg.host = new.host;
            self.next_host = now;
        }
        let i = &new.ingest;
        if i.statsd_interval_ms != self.cfg.ingest.statsd_interval_ms
            || i.percentiles != self.cfg.ingest.percentiles
        {
            self.ingest.reconfigure(i);
            self.cfg.ingest.statsd_interval_ms = i.statsd_interval_ms;
            self.cfg.ingest.percentiles = i.percentiles.clone();
        }
        self.exec = ExecPolicy {
            programs: new.exec.programs.clone(),
            max_timeout: Duration::from_millis(u64::from(new.exec.timeout_ms)),
            max_output: new.exec.max_output_bytes,
        };
        let offered = (self.cfg.jobs.allow.clone(), self.cfg.exec.programs.clone());
        let took_none = self.cfg.jobs.allow.is_empty();
        self.cfg.exec = new.exec;
        self.cfg.jobs = new.jobs;
        if took_none != self.cfg.jobs.allow.is_empty() {
            self.relink_jobs();
        }
        self.cfg.commands = new.commands;
        self.cfg.remote = new.remote;
        if new.logs != self.cfg.logs {
            // Each source goes on from where it was left (kept after every
            // poll the spool took); one new to the list starts at its end.
            self.tailer = crate::sources::logs::Tailer::open(&new.logs, &self.cfg.data_dir);
            self.cfg.logs = new.logs;
            self.next_logs = now;
        }
        // The hub aims jobs by what we take on.
        if self.connected
            && offered != (self.cfg.jobs.allow.clone(), self.cfg.exec.programs.clone())
        {
            self.send_offer();
        }
    }

    /// Answers local clients of the control socket.
    pub(super) fn serve_control(&mut self) {
        for (stream, line) in self.control.requests() {
            let answer = match control::parse(&line) {
                Ok(Request::Status) => self.status_json(),
                Ok(Request::Send(samples)) => {
                    let ts_ms = now_ms();
                    let records: Vec<Record> = samples
                        .into_iter()
                        .map(|(name, value)| Record::Sample { name, ts_ms, value })
                        .collect();
                    if self.accept(&records) {
                        format!("ok {}", records.len())
                    } else {
                        "error: the spool refused them (it is full, or the disk failed); see the agent's log".into()
                    }
                }
                Err(e) => format!("error: {e}"),
            };
            control::reply(stream, &answer);
        }
    }

    /// Everything `fleetmq-agent status` shows, as one JSON line.
    pub(super) fn status_json(&self) -> String {
        let s = self.status();
        let c = self.outbox.spool_counters();
        let u = self.outbox.uplink_counters();
        let doc = control::Status {
            device: s.device,
            agent_version: s.agent_version,
            arch: s.arch,
            groups: s.groups,
            uptime_ms: s.uptime_ms,
            hub: self.hub.clone(),
            security: self.sockets.security().name(),
            connected: self.connected,
            linked: self.links.is_some() || self.carried,
            one_connection: self.carried,
            hub_problem: self
                .link
                .problem(Instant::now())
                .map_or_else(String::new, |p| p.to_string()),
            batches: control::BatchCounts {
                sent: s.batches_sent,
                acked: s.batches_acked,
                resent: s.batches_resent,
                renumbered: u.batches_renumbered,
                throttled: u.batches_throttled,
                in_flight: s.in_flight,
            },
            records: control::RecordCounts {
                acked: u.records_acked,
                waiting: s.records_pending,
                dropped: control::Dropped {
                    spool_full_oldest: c.dropped + u.records_abandoned,
                    spool_full_refused: c.refused,
                    lost_to_corruption: c.lost_records,
                    refused_by_protocol: u.records_dropped,
                    rejected_by_hub: u.records_rejected,
                },
            },
            spool: control::SpoolStatus {
                bytes: self.outbox.bytes(),
                max_bytes: self.cfg.spool.max_bytes,
                when_full: self.cfg.spool.when_full,
                torn_tails_cut: c.torn_tails,
                corrupt_entries_skipped: c.corrupt_entries,
            },
            jobs_run: s.jobs_run,
            commands_answered: s.commands_answered,
            host_skipped: self.host.skipped().collect(),
            facts: self.facts.current().clone(),
            facts_problem: self.facts.problem().to_string(),
            ingest: self.ingest.status.clone(),
            logs: control::LogsStatus {
                files: self.tailer.status(),
                waiting: if self.tailer.is_empty() || self.takes_logs {
                    String::new()
                } else {
                    "for a hub that takes log lines: none has welcomed this agent yet, or the last is older than this agent (upgrade it); each source is read on from where it was left once one does".into()
                },
            },
            reload: self.last_reload.clone(),
            config: control::ConfigStatus {
                version: self.remote.version,
                values: self.remote.values.clone(),
                errors: self.remote_errors.clone(),
            },
        };
        serde_json::to_string(&doc).unwrap_or_else(|e| format!("error: encoding the status: {e}"))
    }

    /// Records dropped since the start, every way a record can be lost.
    fn records_dropped(&self) -> u64 {
        let c = self.outbox.uplink_counters();
        let spooled = self.outbox.spool_counters();
        c.records_dropped
            + c.records_abandoned
            + c.records_rejected
            + spooled.dropped
            + spooled.refused
            + spooled.lost_records
    }

    pub(super) fn status(&self) -> AgentStatus {
        let c = self.outbox.uplink_counters();
        AgentStatus {
            device: self.cfg.device_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            arch: crate::info::arch().into(),
            groups: self.groups().to_vec(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            batches_sent: c.batches_sent,
            batches_acked: c.batches_acked,
            batches_resent: c.batches_resent,
            records_dropped: self.records_dropped(),
            records_pending: self.outbox.waiting(),
            in_flight: self.outbox.in_flight() as u32,
            jobs_run: self.jobs_done,
            commands_answered: self.commands_answered,
        }
    }
}

impl Agent {
    /// Chat mode, stdin closed: true once every line is acked; an error
    /// once the wait is over, saying why from what the link has seen.
    pub(super) fn chat_ended(&self) -> Result<bool, Error> {
        let Some(deadline) = self.chat_deadline else {
            return Ok(false);
        };
        if self.outbox.waiting() == 0 && self.outbox.in_flight() == 0 {
            info!("stdin closed and every chat line is acked");
            return Ok(true);
        }
        let now = Instant::now();
        if now < deadline {
            return Ok(false);
        }
        let why = match self.link.problem(now) {
            Some(problem) => problem.to_string(),
            None if self.connected => "the hub has not acked them yet".into(),
            None => format!("no connection to the hub at {} yet", self.hub),
        };
        Err(Error::ChatUnacked {
            records: self.outbox.waiting(),
            batches: self.outbox.in_flight(),
            wait: self.chat_wait.unwrap_or_default(),
            why,
        })
    }
}

/// Chat mode: stdin's lines, each a chat line, read on a thread of their
/// own.
pub(super) fn spawn_stdin_reader(notifier: super::Notifier) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in std::io::BufRead::lines(stdin.lock()) {
            let Ok(mut line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            if fleetmq_net::text::truncate(&mut line, MAX_CHAT_LEN) {
                warn!("chat line cut to {MAX_CHAT_LEN} bytes");
            }
            notifier.send(super::Event::ChatLine(line));
        }
        notifier.send(super::Event::StdinClosed);
    });
}
