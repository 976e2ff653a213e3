//! Operator requests a front-end answers only once the cluster has done
//! what they ask (an edit applied from the stream, a job cancelled from
//! the stream, a device forgotten in the holders bucket): who asked, by
//! the number this front-end gave the request, with what the answer
//! needs.

use std::collections::HashMap;

use fleetmq_protocol::OperatorError;

/// Requests of one kind waiting for the cluster at once, at most: past
/// it, a new one is refused (one whose event never came back would
/// otherwise be held for ever).
pub(super) const MOST_WAITING: usize = 256;

/// Requests of one kind waiting for the cluster.
#[derive(Debug)]
pub(super) struct Pending<T> {
    next: u64,
    waiting: HashMap<u64, Waiting<T>>,
}

/// One request waiting: the operator's client and request id, and what
/// its answer needs.
#[derive(Debug)]
pub(super) struct Waiting<T> {
    pub client: Vec<u8>,
    pub request_id: u64,
    pub with: T,
}

impl<T> Pending<T> {
    /// Numbers drawn from the wall clock at start (`now_ms`): an event
    /// put on a stream before a restart and read after it then matches
    /// no request held since (a thousand numbers a millisecond would be
    /// needed to catch up with them).
    pub fn starting_at(now_ms: u64) -> Pending<T> {
        Pending {
            next: now_ms.saturating_mul(1_000),
            waiting: HashMap::new(),
        }
    }

    /// Holds a request of `what` (its kind, in words) until
    /// [`Pending::take`]; returns the number it goes to the cluster with.
    pub fn hold(
        &mut self,
        what: &str,
        client: &[u8],
        request_id: u64,
        with: T,
    ) -> Result<u64, OperatorError> {
        if self.waiting.len() >= MOST_WAITING {
            return Err(OperatorError::BadRequest(format!(
                "{MOST_WAITING} {what} already wait for the cluster; try again"
            )));
        }
        self.next += 1;
        let waiting = Waiting {
            client: client.to_vec(),
            request_id,
            with,
        };
        self.waiting.insert(self.next, waiting);
        Ok(self.next)
    }

    /// The request held as `ask`, now to be answered.
    pub fn take(&mut self, ask: u64) -> Option<Waiting<T>> {
        self.waiting.remove(&ask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_once_and_too_many_are_refused() {
        let mut p = Pending::starting_at(5);
        let first = p.hold("edits", b"op", 7, "x").unwrap();
        assert!(
            first > 5_000,
            "{first}: past any number of an earlier start"
        );
        let w = p.take(first).unwrap();
        assert_eq!(
            (w.client.as_slice(), w.request_id, w.with),
            (&b"op"[..], 7, "x")
        );
        assert!(p.take(first).is_none(), "answered once");
        for i in 0..MOST_WAITING as u64 {
            p.hold("edits", b"op", i, "y").unwrap();
        }
        let Err(OperatorError::BadRequest(why)) = p.hold("edits", b"op", 0, "z") else {
            panic!("the one past the bound is refused");
        };
        assert!(why.contains("256 edits already wait"), "{why}");
    }
}
