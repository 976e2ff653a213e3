//! Operator reads that scan the store (telemetry, chat, the command log,
//! jobs) run off the hub loop, on the driver's readers: the core only
//! remembers who waits for each. A retried request (the Lazy Pirate
//! client asks again with the same id on a fresh socket) moves the answer
//! to its new client and starts no second scan.

use std::collections::HashMap;

use fleetmq_protocol::{OperatorError, Request, Response};

use super::{Action, Core};
use crate::store::{Store, StoreError};

/// Reads waiting at most; past it an operator is told to try again.
pub const MAX_READS: usize = 32;

/// The reads in flight: request id to the client waiting for it.
#[derive(Debug, Default)]
pub(super) struct Reads {
    waiting: HashMap<u64, Vec<u8>>,
}

impl Reads {
    /// A retry of a read in flight: its answer goes to `client` now.
    pub fn retarget(&mut self, id: u64, client: &[u8]) -> bool {
        match self.waiting.get_mut(&id) {
            Some(c) => {
                *c = client.to_vec();
                true
            }
            None => false,
        }
    }
}

/// Whether `request` is a read that runs off the loop.
pub fn off_loop(request: &Request) -> bool {
    matches!(
        request,
        Request::Telemetry(_)
            | Request::Logs(_)
            | Request::Chat(_)
            | Request::RecentChat { .. }
            | Request::Commands { .. }
            | Request::Jobs { .. }
    )
}

/// Answers a read from `store`: what a reader runs.
pub fn answer(store: &mut Store, request: Request) -> Response {
    let read = match request {
        Request::Telemetry(q) => store.telemetry(&q).map(Response::Telemetry),
        Request::Logs(q) => store.logs(&q).map(Response::Logs),
        Request::Chat(q) => store.chat(q.after_id, q.limit).map(Response::Chat),
        Request::RecentChat { limit } => store.recent_chat(limit).map(Response::Chat),
        Request::Commands { limit } => store.commands(limit).map(Response::Commands),
        Request::Jobs { limit } => store.jobs(limit).map(Response::Jobs),
        other => {
            let what = format!("{other:?} is not a read the readers answer");
            return Response::Error(OperatorError::BadRequest(what));
        }
    };
    read.unwrap_or_else(|e: StoreError| Response::Error(OperatorError::Storage(e.to_string())))
}

impl Core {
    /// A read for the readers: the driver runs it ([`Action::Read`]) and
    /// hands the answer back ([`Core::read_done`]).
    pub(super) fn read_off_loop(&mut self, client: &[u8], id: u64, request: Request) {
        if self.reads.waiting.len() >= MAX_READS {
            let busy = format!("the hub is answering {MAX_READS} reads already; try again shortly");
            return self.answer(client, id, Response::Error(OperatorError::Storage(busy)));
        }
        // The command log is written a tick at a time; a reader sees it
        // all, up to this request.
        if matches!(request, Request::Commands { .. })
            && let Err(e) = self.store.flush_log()
        {
            tracing::warn!(error = %e, "could not write the command log; will retry");
        }
        self.reads.waiting.insert(id, client.to_vec());
        self.out.push_back(Action::Read { id, request });
    }

    /// A reader answered read `id` with `frame` (an encoded reply): it goes
    /// to the client waiting for it, if one still is.
    pub fn read_done(&mut self, id: u64, frame: Vec<u8>) {
        if let Some(client) = self.reads.waiting.remove(&id) {
            self.out.push_back(Action::Operator { client, frame });
        }
    }
}
