//! The readers: threads that answer the operator reads that scan the store
//! ([`crate::core::reads`]), each on its own read-only connection, so a
//! long scan never stalls ingest, commands or presence. The loop hands
//! them reads over a channel; they hand back encoded answers over an
//! inproc socket the loop polls like any other.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use fleetmq_protocol::{OperatorReplyFrame, OperatorResponse, Request};
use tracing::warn;

use super::{Error, zmq_error};
use crate::core::reads;
use crate::store::Store;

/// Reader threads: two, so one long scan leaves another reader free.
const THREADS: usize = 2;
const ENDPOINT: &str = "inproc://fleetmq-hub-readers";

pub struct Readers {
    /// Taken when the readers stop.
    jobs: Option<Sender<(u64, Request)>>,
    /// Answers: `[id as 8 bytes][frame]`.
    answers: zmq::Socket,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    /// Starts the readers over `dir/hub.db`.
    pub fn start(ctx: &zmq::Context, dir: &Path) -> Result<Readers, Error> {
        let answers = ctx
            .socket(zmq::PULL)
            .map_err(zmq_error("making the readers' socket"))?;
        answers
            .bind(ENDPOINT)
            .map_err(zmq_error("binding the readers' socket"))?;
        let (jobs, queue) = channel::<(u64, Request)>();
        let queue = Arc::new(Mutex::new(queue));
        let mut threads = Vec::with_capacity(THREADS);
        for n in 0..THREADS {
            let store = Store::open_reader(dir).map_err(|source| Error::Store {
                dir: dir.to_path_buf(),
                source,
            })?;
            let out = ctx
                .socket(zmq::PUSH)
                .map_err(zmq_error("making a reader's socket"))?;
            out.connect(ENDPOINT)
                .map_err(zmq_error("connecting a reader"))?;
            let queue = queue.clone();
            let thread = std::thread::Builder::new()
                .name(format!("reader-{n}"))
                .spawn(move || serve(store, &queue, &out))
                .map_err(Error::Thread)?;
            threads.push(thread);
        }
        Ok(Readers {
            jobs: Some(jobs),
            answers,
            threads,
        })
    }

    /// The socket answers arrive on.
    pub fn socket(&self) -> &zmq::Socket {
        &self.answers
    }

    /// Hands read `id` to a reader. False if none is running any more.
    pub fn submit(&self, id: u64, request: Request) -> bool {
        self.jobs
            .as_ref()
            .is_some_and(|j| j.send((id, request)).is_ok())
    }

    /// The answers waiting: (request id, encoded reply).
    pub fn answers(&self) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Ok(frames) = self.answers.recv_multipart(zmq::DONTWAIT) {
            if let [id, frame] = frames.as_slice()
                && let Ok(id) = <[u8; 8]>::try_from(id.as_slice())
            {
                out.push((u64::from_le_bytes(id), frame.clone()));
            }
        }
        out
    }
}

impl Drop for Readers {
    /// The readers end with the hub, closing their connections (the last
    /// connection to close folds the WAL into hub.db). One still in a long
    /// scan is not waited for past a second: the process is ending.
    fn drop(&mut self) {
        drop(self.jobs.take());
        let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while self.threads.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for t in std::mem::take(&mut self.threads) {
            if t.is_finished() && t.join().is_err() {
                warn!("a reader thread ended with a panic");
            }
        }
    }
}

/// The reply to read `id`; an answer that cannot be encoded is answered
/// with why, so nobody waits for it.
pub fn encode(id: u64, response: fleetmq_protocol::Response) -> Option<Vec<u8>> {
    OperatorReplyFrame::from(OperatorResponse { id, response })
        .encode()
        .or_else(|e| {
            warn!(error = %e, "could not encode a read's answer");
            let why = fleetmq_protocol::OperatorError::Storage(format!("encoding the answer: {e}"));
            let response = fleetmq_protocol::Response::Error(why);
            OperatorReplyFrame::from(OperatorResponse { id, response }).encode()
        })
        .ok()
}

/// One reader: answers reads until the loop is gone.
fn serve(mut store: Store, queue: &Mutex<Receiver<(u64, Request)>>, out: &zmq::Socket) {
    loop {
        // A poisoned lock is another reader that panicked: take it anyway.
        let next = match queue.lock() {
            Ok(q) => q.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok((id, request)) = next else { return };
        let response = reads::answer(&mut store, request);
        let Some(frame) = encode(id, response) else {
            continue;
        };
        // Frame by frame, each made again if a signal interrupts it: the
        // hub handles SIGHUP and SIGTERM, and this thread may take them.
        let sent = fleetmq_net::uninterrupted(|| out.send(&id.to_le_bytes()[..], zmq::SNDMORE))
            .and_then(|()| fleetmq_net::uninterrupted(|| out.send(&frame, 0)));
        if sent.is_err() {
            return;
        }
    }
}
