//! The link to the hub: telemetry out through the outbox, acks, Hello and
//! Welcome (which connect the other sockets, unless the hub's Carry came
//! first: then everything travels on this one connection), handshake
//! failures and redials, broadcasts in.

use std::io::Write;
use std::time::{Duration, Instant};

use fleetmq_net::poll::{Event, event, next_event};
use fleetmq_net::{error_chain, recv_frames, send_frames};
use fleetmq_protocol::{
    Abilities, Announcement, Broadcast, ChatMessage, Desired, Downstream, Hello, HubPorts, Offer,
    Target, Upstream, names,
};
use tracing::{debug, info, warn};

use super::{Agent, Error, HELLO_RETRY, Links, zmq_error};
use crate::link::Seen;
use crate::telemetry::uplink::Record;

/// Aimed jobs an agent keeps waiting for a free worker; past it the hub
/// hands them out again when their leases end.
const MAX_AIMED: usize = 64;

impl Agent {
    /// Puts records in the outbox; they count as accepted only if this
    /// returns true.
    pub(super) fn accept(&mut self, records: &[Record]) -> bool {
        self.outbox.accept(records, Instant::now())
    }

    /// Packs the oldest waiting records into a batch and sends it if
    /// connected (else it goes out on reconnect).
    pub(super) fn pack_and_send(&mut self, now: Instant) {
        match self.outbox.pack(now) {
            Ok(packed) => {
                self.packing_again();
                if let Some((seq, frame)) = packed
                    && self.connected
                {
                    self.send_frame(seq, &frame);
                }
            }
            Err(e) => self.cannot_pack(&e, now),
        }
    }

    /// Packs everything waiting into batches now and sends them if connected.
    pub(super) fn seal_and_send(&mut self) {
        match self.outbox.pack_all(Instant::now()) {
            Ok(frames) => {
                for (seq, frame) in frames {
                    if self.connected {
                        self.send_frame(seq, &frame);
                    }
                }
            }
            Err(e) => self.cannot_pack(&e, Instant::now()),
        }
    }

    /// Records could not go into a batch (a full disk, most likely: the
    /// batch is recorded in the spool, and its number reserved, before it
    /// is sent). Not fatal: everything else goes on, packing is tried again
    /// after `PACK_RETRY`, and the first failure of an episode is logged.
    fn cannot_pack(&mut self, e: &crate::telemetry::outbox::OutboxError, now: Instant) {
        if self.pack_blocked_until.is_none() {
            warn!(
                error = %e,
                "cannot pack telemetry into a batch; records stay in the spool, packing is tried again every second, and the agent goes on answering commands and status"
            );
        }
        self.pack_blocked_until = Some(now + super::PACK_RETRY);
    }

    fn packing_again(&mut self) {
        if self.pack_blocked_until.take().is_some() {
            info!("packing telemetry into batches again");
        }
    }

    pub(super) fn send_up(&self, msg: Upstream) -> bool {
        let frame = match msg.encode() {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "could not encode");
                return false;
            }
        };
        match send_frames(&self.dealer, &[&frame]) {
            Ok(sent) => sent,
            Err(e) => {
                debug!(error = %e, "send to hub failed");
                false
            }
        }
    }

    pub(super) fn send_frame(&self, seq: u64, frame: &[u8]) {
        // Not queued now (disconnected, or the pipe is full): the batch stays
        // in flight and is resent on reconnect or after its ack timeout.
        if !matches!(send_frames(&self.dealer, &[frame]), Ok(true)) {
            debug!(seq, "batch not queued; it stays in flight");
        }
    }

    pub(super) fn send_hello(&mut self) {
        let hello = Hello {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            arch: crate::info::arch().into(),
            os: std::env::consts::OS.into(),
            hostname: crate::config::hostname(),
            groups: self.cfg.groups.clone(),
            heartbeat_ms: self.cfg.presence.heartbeat_ms,
            started_ms: self.started_ms(),
        };
        self.said_started_ms = Some(hello.started_ms);
        // A Carry counts only between this Hello and its Welcome, and so
        // do the groups the hub pins, if it tells us any.
        self.carry_offered = false;
        self.told_takes_logs = false;
        self.pinned_groups = None;
        self.need_hello = if self.send_up(Upstream::Hello(hello)) {
            self.send_offer();
            None
        } else {
            Some(Instant::now() + HELLO_RETRY)
        };
    }

    /// Tells the hub what this device takes on and is (after each Hello, a
    /// reload, a change of its facts): it aims no job here we would refuse.
    pub(super) fn send_offer(&mut self) {
        let offer = Offer(Abilities {
            job_kinds: self.cfg.jobs.allow.clone(),
            exec_programs: self.cfg.exec.programs.clone(),
            config_version: self.remote.version,
            one_connection: self.cfg.one_connection,
            chat: self.chat_mode(),
            job_slots: u32::try_from(self.cfg.jobs.max_concurrent).unwrap_or(u32::MAX),
            hello_on_clock_step: true,
            facts: self.facts.current().clone(),
        });
        if !self.send_up(Upstream::Offer(offer)) {
            debug!("offer not queued; the next hello sends it");
        }
    }

    pub(super) fn drain_monitor(&mut self) -> Result<(), Error> {
        while let Some(Event { kind: event, value }) =
            next_event(&self.monitor).map_err(zmq_error("reading socket monitor"))?
        {
            if matches!(
                event,
                event::HANDSHAKE_FAILED_AUTH | event::HANDSHAKE_FAILED_PROTOCOL
            ) {
                self.refused_by_hub();
            }
            let seen = match event {
                event::CONNECTED => Some(Seen::Connected),
                event::HANDSHAKE_SUCCEEDED => Some(Seen::Handshake),
                event::HANDSHAKE_FAILED_AUTH => Some(Seen::KeyRefused),
                event::HANDSHAKE_FAILED_NO_DETAIL | event::HANDSHAKE_FAILED_PROTOCOL => {
                    Some(Seen::HandshakeFailed)
                }
                event::DISCONNECTED => Some(Seen::Disconnected),
                _ => None,
            };
            if let Some(seen) = seen {
                self.link.seen(seen, Instant::now());
            }
            match event {
                event::HANDSHAKE_FAILED_AUTH if !self.refused => {
                    self.refused = true;
                    warn!(
                        hub = %self.hub,
                        status = value,
                        "the hub refused this device's key: enrol it on the hub with `fleetmq-hub allow {} {}`; retrying",
                        self.cfg.device_id,
                        fleetmq_net::keys::quoted(&self.public_key)
                    );
                }
                event::HANDSHAKE_FAILED_NO_DETAIL | event::HANDSHAKE_FAILED_PROTOCOL
                    if !self.refused =>
                {
                    self.refused = true;
                    warn!(
                        hub = %self.hub,
                        "handshake with the hub failed: is hub_public_key the hub's, and do both sides agree on --insecure? retrying"
                    );
                }
                event::HANDSHAKE_SUCCEEDED => {
                    self.refused = false;
                    self.redial.connected();
                    self.failover.linked();
                    info!(hub = %self.hub, "connected to hub");
                    self.connected = true;
                    self.send_hello();
                    self.outbox.reconnected(Instant::now());
                }
                event::DISCONNECTED => {
                    if self.connected {
                        warn!(hub = %self.hub, "lost the hub; reconnecting");
                    }
                    self.connected = false;
                    self.failover
                        .lost(Instant::now(), |max| fastrand::u64(0..=max));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The hub has stayed away: move to the next of the configured hubs,
    /// with everything unacked sent again there once it welcomes us.
    pub(super) fn move_hub(&mut self) -> Result<(), Error> {
        let Some(next) = crate::redial::next_hub(&self.rotation, &self.hub) else {
            return Ok(());
        };
        warn!(from = %self.hub, to = %next, "the hub stayed away; moving to the next hub");
        let _ = self.dealer.disconnect(&self.hub);
        self.links = None;
        self.connected = false;
        self.dealer
            .connect(&next)
            .map_err(zmq_error(format!("connecting to {next}")))?;
        self.link = crate::link::LinkWatch::new(&next, Instant::now());
        self.hub = next;
        self.failover
            .lost(Instant::now(), |max| fastrand::u64(0..=max));
        Ok(())
    }

    /// The hub refused a handshake, which libzmq takes as final for that
    /// connection: drop the links (they are remade after the next Welcome)
    /// and dial again later, backing off like libzmq's reconnects.
    pub(super) fn refused_by_hub(&mut self) {
        self.connected = false;
        self.links = None;
        self.redial
            .refused(Instant::now(), |max| fastrand::u64(0..=max));
    }

    pub(super) fn drain_dealer(&mut self) -> Result<(), Error> {
        while let Some(frames) =
            recv_frames(&self.dealer, 1).map_err(zmq_error("reading from hub"))?
        {
            let Ok(frames) = frames else { continue };
            match Downstream::decode(&frames[0]) {
                Ok(Downstream::Ack(ack)) => {
                    if !self.outbox.ack(ack.seq) {
                        debug!(seq = ack.seq, "ack for a batch not in flight");
                    }
                    self.over_budget = false;
                }
                Ok(Downstream::Throttled(t)) => {
                    let wait = Duration::from_millis(u64::from(t.retry_after_ms));
                    if self.outbox.throttled(t.seq, wait, Instant::now()) && !self.over_budget {
                        self.over_budget = true;
                        warn!(seq = t.seq, reason = %t.reason, retry_after_ms = t.retry_after_ms, "the hub holds batches back: this device is over its budget; they are sent again when it says (counted in status)");
                    }
                }
                Ok(Downstream::Carry(_)) => self.carry_offered = true,
                Ok(Downstream::TakesLogs(_)) => self.told_takes_logs = true,
                Ok(Downstream::PinnedGroups(p)) => {
                    // Told after each Hello, as the hub warns of each.
                    warn!(
                        pinned = ?p.groups,
                        configured = ?self.cfg.groups,
                        "the hub's allow list pins this device to other groups than its config names; it is in the pinned ones (set groups in the config to match, or ask the operator to pin others)"
                    );
                    self.pinned_groups = Some(p.groups);
                }
                Ok(Downstream::Welcome(w)) => {
                    self.link.seen(Seen::Welcome, Instant::now());
                    self.welcomed_logs(&w.hub_version);
                    if std::mem::take(&mut self.carry_offered) && self.cfg.one_connection {
                        self.on_one_connection(&w.hub_version);
                    } else if let Err(e) = self.welcome(w.hub_version, w.ports) {
                        // One hub's bad answer must not end the agent:
                        // telemetry goes on, and the next Welcome tries again.
                        warn!(
                            "could not connect the hub's other sockets: {}; telemetry goes on, jobs and commands wait for the next welcome",
                            error_chain(&e)
                        );
                    }
                }
                Ok(Downstream::HelloRequest(_)) => {
                    info!("hub asked for a hello (it restarted)");
                    self.send_hello();
                    self.outbox.reconnected(Instant::now());
                }
                Ok(Downstream::Refusal(r)) => {
                    warn!(reason = %r.reason, "hub refused a message");
                    self.link.seen(Seen::Refusal(r.reason), Instant::now());
                }
                Ok(Downstream::Announcement(a)) => self.announced(&a, "direct"),
                Ok(Downstream::Chat(c)) => self.chat_line(&c),
                Ok(Downstream::Command(r)) => self.command(r.corr, r.command),
                Ok(Downstream::Desired(Desired(doc))) => self.desired(doc),
                Ok(Downstream::Work(job)) => {
                    if self.aimed.len() >= MAX_AIMED {
                        // The hub hands it out again when its lease ends.
                        warn!(
                            job = job.id,
                            "too many aimed jobs waiting; this one is left to the hub to send again"
                        );
                    } else {
                        self.aimed.push_back(job);
                        self.drain_jobs()?;
                    }
                }
                Ok(Downstream::Renumber(r)) => self.renumber(r.seq, r.from),
                Ok(Downstream::Rejected(r)) => {
                    if self.outbox.reject(r.seq) {
                        warn!(seq = r.seq, reason = %r.reason, "the hub rejected a batch as invalid; its records are dropped (counted in status)");
                    }
                }
                Ok(Downstream::Relink(r)) => {
                    warn!(reason = %r.reason, "the hub asked for new connections; connecting again");
                    if let Some(ports) = self.links.take().map(|l| l.ports)
                        && let Err(e) = self.welcome("(unchanged)".into(), ports)
                    {
                        warn!(
                            "could not connect the hub's other sockets again: {}; the next welcome tries again",
                            error_chain(&e)
                        );
                    }
                }
                Err(e) => warn!(error = %e, "undecodable message from hub dropped"),
            }
        }
        Ok(())
    }

    /// The hub carries everything on the telemetry connection: the other
    /// sockets, if any, are closed (a job's result goes up this connection
    /// too).
    fn on_one_connection(&mut self, hub_version: &str) {
        self.links = None;
        if !self.carried {
            info!(%hub_version, "hub welcomed us; broadcasts, commands and jobs travel on this one connection");
        }
        self.carried = true;
    }

    pub(super) fn welcome(&mut self, hub_version: String, ports: HubPorts) -> Result<(), Error> {
        self.carried = false;
        if self.links.as_ref().is_some_and(|l| l.ports == ports) {
            self.subscribe_groups();
            return Ok(());
        }
        // Dropping old links closes them.
        self.links = None;
        let ep = |port: u16| self.hub_port(port);
        let groups = self.groups().to_vec();
        self.links = Some(Links {
            sub: self.broadcast_socket(&ports, &groups)?,
            groups,
            jobs: self.jobs_socket(&ports)?,
            results: self.results_socket(&ports)?,
            commands: self
                .sockets
                .build(zmq::DEALER)
                .routing_id(self.route.as_bytes())
                .secure()
                .connect(&ep(ports.commands)?)?,
            ports,
        });
        if let Some(links) = &self.links {
            let mut which = vec!["broadcast", "commands"];
            if links.jobs.is_some() {
                which.push("jobs");
            }
            if links.results.is_some() {
                which.push("results");
            }
            let (last, rest) = which.split_last().unwrap_or((&"", &[]));
            let which = format!("{} and {last}", rest.join(", "));
            info!(%hub_version, ports = ?links.ports, "hub welcomed us; connecting {which}");
        }
        Ok(())
    }

    /// The groups this device is in: the ones the hub's allow list pins,
    /// if it told us, else the configured ones.
    pub(super) fn groups(&self) -> &[String] {
        self.pinned_groups.as_deref().unwrap_or(&self.cfg.groups)
    }

    /// The broadcast SUB, subscribed to everyone's topic, this device's
    /// and its groups' (and the chat room's in chat mode).
    fn broadcast_socket(&self, ports: &HubPorts, groups: &[String]) -> Result<zmq::Socket, Error> {
        let mut sub = self
            .sockets
            .build(zmq::SUB)
            .subscribe(names::ALL_TOPIC.as_bytes())
            .subscribe(names::device_topic(&self.cfg.device_id).as_bytes());
        for g in groups {
            sub = sub.subscribe(names::group_topic(g).as_bytes());
        }
        if self.chat_mode() {
            sub = sub.subscribe(names::CHAT_TOPIC.as_bytes());
        }
        Ok(sub.secure().connect(&self.hub_port(ports.broadcast)?)?)
    }

    /// When this device's groups changed (the hub pins others), a new
    /// broadcast SUB takes the old one's place. A new socket rather than
    /// new subscriptions on the old one: libzmq would send the old one's
    /// former subscriptions again if its connection were cut meanwhile,
    /// as the hub does when a pin changes.
    fn subscribe_groups(&mut self) {
        let groups = self.groups().to_vec();
        let Some(links) = &self.links else {
            return;
        };
        if links.groups == groups {
            return;
        }
        match self.broadcast_socket(&links.ports, &groups) {
            Ok(sub) => {
                info!(groups = ?groups, "broadcasts now heard for these groups");
                if let Some(links) = &mut self.links {
                    links.sub = sub;
                    links.groups = groups;
                }
            }
            Err(e) => warn!(
                "could not connect a broadcast socket for groups {groups:?}: {}; the next welcome tries again",
                error_chain(&e)
            ),
        }
    }

    /// The hub's address at another of its ports.
    fn hub_port(&self, port: u16) -> Result<String, Error> {
        fleetmq_net::endpoint::with_port(&self.hub, port)
            .ok_or_else(|| Error::HubPort(self.hub.clone()))
    }

    /// The work queue's socket to the hub at `ports`, if `[jobs] allow`
    /// names a kind: a device that takes no jobs is never handed one.
    fn jobs_socket(&self, ports: &HubPorts) -> Result<Option<zmq::Socket>, Error> {
        if self.cfg.jobs.allow.is_empty() {
            info!(
                "[jobs] allow is empty: this device takes no jobs, so its jobs and results sockets are not connected"
            );
            return Ok(None);
        }
        let ep = self.hub_port(ports.jobs)?;
        let hwm = self.sockets.options().send_hwm;
        // Take few jobs ahead: the hub's round robin skips full pipes.
        let socket = self
            .sockets
            .build(zmq::PULL)
            .hwm(hwm, 2)
            .secure()
            .connect(&ep)?;
        Ok(Some(socket))
    }

    /// The socket job results go to the hub by, if this device takes jobs
    /// or is running one.
    fn results_socket(&self, ports: &HubPorts) -> Result<Option<zmq::Socket>, Error> {
        if self.cfg.jobs.allow.is_empty() && self.running_jobs == 0 {
            return Ok(None);
        }
        let ep = self.hub_port(ports.results)?;
        Ok(Some(self.sockets.build(zmq::PUSH).secure().connect(&ep)?))
    }

    /// `[jobs] allow` went from empty to naming a kind, or back: the jobs
    /// socket is connected, or closed, to match (at the next Welcome it
    /// would be anyway), and the results socket is connected if it is
    /// missing. A results socket is not closed here: a job that is still
    /// running sends its result by it.
    pub(super) fn relink_jobs(&mut self) {
        let Some(ports) = self.links.as_ref().map(|l| l.ports.clone()) else {
            return;
        };
        let results = match self.links.as_ref().and_then(|l| l.results.as_ref()) {
            Some(_) => Ok(None),
            None => self.results_socket(&ports),
        };
        match (self.jobs_socket(&ports), results) {
            (Ok(jobs), Ok(results)) => {
                if let Some(links) = &mut self.links {
                    links.jobs = jobs;
                    if results.is_some() {
                        links.results = results;
                    }
                }
            }
            (Err(e), _) | (_, Err(e)) => warn!(
                "the jobs or results socket could not be connected after the reload; work-queue jobs wait for the next connection to the hub: {}",
                error_chain(&e)
            ),
        }
    }

    /// The hub holds batch `seq` from another agent with this device id:
    /// send it again under a new number (and every later batch above it).
    fn renumber(&mut self, seq: u64, from: u64) {
        let (new, frame) = match self.outbox.renumber(seq, from, Instant::now()) {
            Ok(Some(renumbered)) => renumbered,
            Ok(None) => return debug!(seq, "renumber for a batch not in flight"),
            // It stays in flight under its old number: resent, and told to
            // renumber again.
            Err(e) => return self.cannot_pack(&e, Instant::now()),
        };
        if !self.renumbering {
            self.renumbering = true;
            warn!(
                seq,
                new,
                "the hub already holds this batch number from another agent with this device id (this data directory was wiped, or this SD card is a clone): sending it as {new}, numbering on from there; nothing is lost"
            );
        }
        if self.connected {
            self.send_frame(new, &frame);
        }
    }

    /// An operator's announcement, from a broadcast `topic` or sent to
    /// this device alone.
    fn announced(&self, a: &Announcement, topic: &str) {
        let to = match &a.target {
            Target::All => "all".to_string(),
            Target::Group(g) => format!("group {g}"),
            Target::Device(d) => format!("to {d}"),
        };
        if self.chat_mode() {
            println!("[{to}] {}", fleetmq_net::text::line(&a.text));
            let _ = std::io::stdout().flush();
        }
        info!(%topic, text = %a.text, "announcement");
    }

    /// A line of the chat room, shown in chat mode.
    fn chat_line(&self, c: &ChatMessage) {
        if self.chat_mode() {
            // Another device's words: shown, never acted on.
            println!("<{}> {}", c.from, fleetmq_net::text::line(&c.text));
            let _ = std::io::stdout().flush();
        }
    }

    pub(super) fn drain_broadcasts(&mut self) -> Result<(), Error> {
        let Some(links) = &self.links else {
            return Ok(());
        };
        while let Some(frames) =
            recv_frames(&links.sub, 2).map_err(zmq_error("reading broadcasts"))?
        {
            let Ok(frames) = frames else { continue };
            let [topic, frame] = frames.as_slice() else {
                continue;
            };
            let topic = String::from_utf8_lossy(topic);
            match Broadcast::decode(frame) {
                Ok(Broadcast::Chat(c)) => self.chat_line(&c),
                Ok(Broadcast::Announcement(a)) => self.announced(&a, &topic),
                Err(e) => warn!(%topic, error = %e, "undecodable broadcast dropped"),
            }
            let _ = std::io::stdout().flush();
        }
        Ok(())
    }
}

/// Resolves each hub's host name on a thread of its own (a slow resolver
/// must not hold the loop): a name that does not
/// resolve is said in status and the log; one that resolves to several
/// addresses becomes all of them in the agent's rotation (libzmq itself
/// would connect to the first only).
pub(super) fn spawn_lookup(hubs: Vec<String>, notifier: super::Notifier) {
    std::thread::spawn(move || {
        for hub in hubs {
            let Some((host, port)) =
                fleetmq_net::endpoint::host_port(&hub).map(|(h, p)| (h.to_string(), p))
            else {
                continue;
            };
            use std::net::ToSocketAddrs as _;
            match (host.as_str(), port).to_socket_addrs() {
                Ok(addrs) => {
                    let addrs: Vec<String> = addrs.map(|a| format!("tcp://{a}")).collect();
                    if addrs.is_empty() {
                        notifier.send(super::Event::Unresolvable("no address".into()));
                    } else if addrs.len() > 1 && host.parse::<std::net::IpAddr>().is_err() {
                        notifier.send(super::Event::Resolved { hub, addrs });
                    }
                }
                Err(e) => notifier.send(super::Event::Unresolvable(e.to_string())),
            }
        }
    });
}
