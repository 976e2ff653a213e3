//! A front-end's side of the loop: what the cluster link says (JetStream's
//! acks, the stream, holders, the allow list bucket) handed to the core,
//! and the allow list file kept as a mirror of the bucket.

use tracing::warn;

use super::{Driver, now};
use crate::cluster::allow::{self, Enrolled};
use crate::cluster::{FromCluster, Link, ToCluster};
use crate::enrolment::{self, AllowList};

pub(super) struct FrontEnd {
    pub(super) link: Link,
    /// The cluster's allow list, once its bucket was read.
    mirror: Option<Enrolled>,
    /// The allow list file as last read or written here.
    file_seen: Enrolled,
    /// Where the telemetry socket is bound (closed while cut off).
    telemetry: String,
}

impl FrontEnd {
    /// `file` is the allow list file's list at start (`None` on plaintext).
    /// `telemetry` is the endpoint the telemetry socket is bound to.
    pub(super) fn new(link: Link, file: Option<&AllowList>, telemetry: String) -> FrontEnd {
        FrontEnd {
            link,
            mirror: None,
            file_seen: file.map(allow::enrolled).unwrap_or_default(),
            telemetry,
        }
    }

    /// Whether the file is a mirror of the cluster's list (once the bucket
    /// was read): edits go to the cluster, not straight to the core.
    pub(super) fn mirrors(&self) -> bool {
        self.mirror.is_some()
    }

    /// The file changed here: what differs from what it held goes to the
    /// cluster, and comes back from its bucket to every front-end.
    pub(super) fn file_changed(&mut self, list: &AllowList) {
        let now = allow::enrolled(list);
        for (device, keys) in allow::changes(&self.file_seen, &now) {
            self.link.send(ToCluster::Enrol { device, keys });
        }
        self.file_seen = now;
    }
}

impl Driver {
    /// What the cluster said.
    pub(super) fn drain_cluster(&mut self) {
        let Some(fe) = &mut self.cluster else {
            return;
        };
        for msg in fe.link.drain() {
            match msg {
                FromCluster::Replicated {
                    device,
                    seq,
                    outcome,
                } => self.core.replicated(&device, seq, outcome, now()),
                FromCluster::Stream { batches, last } => {
                    self.core.from_stream(&batches, last, now())
                }
                FromCluster::Holder { device, holder } => self.core.holder_changed(&device, holder),
                FromCluster::Forgot {
                    ask,
                    device,
                    outcome,
                } => self.core.forgot(ask, &device, outcome),
                FromCluster::FrontEnds(live) => self.core.front_ends_reported(live),
                FromCluster::Asked { id, frame } => {
                    let mut client = vec![super::CLUSTER];
                    client.extend_from_slice(&id.to_be_bytes());
                    let frames = [client, Vec::new(), frame];
                    self.core
                        .operator(&frames, crate::core::Caller::Cluster, now());
                }
                FromCluster::Answered { client, frame } => {
                    if !self.core.answered_elsewhere(&client, &frame) {
                        self.send_operator(&client, &frame);
                    }
                }
                FromCluster::Unanswered { client, frame, why } => {
                    self.core.unforwarded(&client, &frame, &why, now())
                }
                FromCluster::Connection(problem) => self.core.cluster_connection(problem, now()),
                FromCluster::Broadcast { topic, frame } => {
                    self.core.cluster_broadcast(topic, frame)
                }
                FromCluster::EnrolledAll(all) => self.enrolled_all(all),
                FromCluster::JobSubmitted {
                    client,
                    request_id,
                    outcome,
                } => self.core.job_submitted(&client, request_id, outcome),
                FromCluster::Job {
                    handle,
                    id,
                    attempt,
                    submission,
                } => self
                    .core
                    .cluster_job(handle, id, attempt, &submission, now()),
                FromCluster::NoJob => self.core.no_job(),
                FromCluster::CancelNotTaken { ask, why } => self.core.cancel_not_taken(ask, &why),
                FromCluster::JobEvents { events, last } => {
                    self.core.job_events(&events, last, now())
                }
                FromCluster::ConfigEvents { events, last } => {
                    self.core.config_events(&events, last, now())
                }
                FromCluster::EnrolledOne { device, keys } => {
                    let Some(fe) = &mut self.cluster else {
                        continue;
                    };
                    let mirror = fe.mirror.get_or_insert_with(Enrolled::new);
                    if keys.is_empty() {
                        mirror.remove(&device);
                    } else {
                        mirror.insert(device, keys.into_iter().collect());
                    }
                    self.apply_mirror();
                }
            }
        }
        self.carry_out();
    }

    /// Asks the cluster's queue for a job when the core wants one and an
    /// agent here can take it now (the jobs socket is writable, or an agent
    /// on one connection has room).
    pub(super) fn want_job(&mut self) {
        let Some(fe) = &self.cluster else { return };
        if !self.core.wants_job() {
            return;
        }
        let mut item = [self.jobs.as_poll_item(zmq::POLLOUT)];
        let mut pullable =
            || matches!(zmq::poll(&mut item, 0), Ok(n) if n > 0) && item[0].is_writable();
        // The socket first: one poll, where the core's answer walks the
        // devices online.
        if pullable() || self.core.room_for_jobs() {
            fe.link.send(ToCluster::WantJob);
            self.core.job_asked();
        }
    }

    /// Closes the telemetry endpoint (unbinding it ends the connections
    /// accepted on it, so agents move on) or opens it again.
    pub(super) fn door(&mut self, open: bool) {
        let Some(fe) = &self.cluster else { return };
        let done = if open {
            self.upstream.bind(&fe.telemetry)
        } else {
            self.upstream.unbind(&fe.telemetry)
        };
        if let Err(e) = done {
            warn!(endpoint = %fe.telemetry, open, error = %e, "could not open or close the telemetry port");
        }
    }

    /// The bucket as it is: an empty bucket is filled from this file (the
    /// first front-end of a hub that had a list); else the bucket wins.
    fn enrolled_all(&mut self, all: Enrolled) {
        let (Some(fe), Some(_)) = (&mut self.cluster, &self.watch) else {
            return;
        };
        if all.is_empty() && !fe.file_seen.is_empty() {
            for (device, keys) in allow::changes(&Enrolled::new(), &fe.file_seen) {
                fe.link.send(ToCluster::Enrol { device, keys });
            }
            fe.mirror = Some(fe.file_seen.clone());
            return;
        }
        fe.mirror = Some(all);
        self.apply_mirror();
    }

    /// The cluster's list in force here, and written to the file (unless
    /// an edit landed there first: that goes to the cluster, and the file
    /// is written when it comes back).
    fn apply_mirror(&mut self) {
        let (Some(fe), Some(watch)) = (&mut self.cluster, &self.watch) else {
            return;
        };
        let Some(mirror) = &fe.mirror else { return };
        let (list, clashes) = allow::allow_list(mirror);
        for (device, key) in clashes {
            warn!(
                device,
                key, "the cluster's allow list gives this key to two devices; the first keeps it"
            );
        }
        let (seen, _) = allow::allow_list(&fe.file_seen);
        match enrolment::write_unless_changed(watch.path(), &list, &seen) {
            Ok(None) => fe.file_seen = mirror.clone(),
            Ok(Some(edited)) => fe.file_changed(&edited),
            Err(e) => {
                warn!(error = %e, "could not write the cluster's allow list to the file; it is in force all the same")
            }
        }
        self.core.allow_list_changed(list, now());
    }
}
