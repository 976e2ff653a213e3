//! Operator requests in flight: commands awaiting a device's reply, and
//! recent answers kept so a retried request is answered, not repeated.

use std::collections::{HashMap, VecDeque};

/// A command sent to a device whose reply an operator waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCommand {
    /// The operator client's routing id, to answer on.
    pub client: Vec<u8>,
    /// The operator request id.
    pub request_id: u64,
    /// Device the command went to.
    pub device: String,
    /// When to give up, ms since the epoch.
    pub deadline_ms: u64,
    /// The operator's timeout, for the error message.
    pub timeout_ms: u32,
    /// Row in the command log.
    pub log_id: i64,
}

/// Commands in flight, keyed by correlation id.
#[derive(Debug, Default)]
pub struct Pending {
    by_corr: HashMap<u64, PendingCommand>,
    next_corr: u64,
}

impl Pending {
    /// Registers a command; returns its correlation id.
    pub fn next_corr(&mut self) -> u64 {
        self.next_corr += 1;
        self.next_corr
    }

    pub fn insert(&mut self, corr: u64, cmd: PendingCommand) {
        self.by_corr.insert(corr, cmd);
    }

    /// A reply came: the pending command, if it is still waited for and came
    /// from the device it was sent to.
    pub fn answer(&mut self, corr: u64, device: &str) -> Option<PendingCommand> {
        match self.by_corr.get(&corr) {
            Some(p) if p.device == device => self.by_corr.remove(&corr),
            _ => None,
        }
    }

    /// A retried operator request that is still in flight: answer on the new
    /// client id. Returns true if it was found.
    pub fn retarget(&mut self, request_id: u64, client: &[u8]) -> bool {
        match self
            .by_corr
            .values_mut()
            .find(|p| p.request_id == request_id)
        {
            Some(p) => {
                p.client = client.to_vec();
                true
            }
            None => false,
        }
    }

    /// Commands whose deadline passed; they are forgotten.
    pub fn expired(&mut self, now_ms: u64) -> Vec<PendingCommand> {
        let corrs: Vec<u64> = self
            .by_corr
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(c, _)| *c)
            .collect();
        corrs
            .iter()
            .filter_map(|c| self.by_corr.remove(c))
            .collect()
    }
}

/// Answers to recent operator requests, by request id, bounded.
#[derive(Debug)]
pub struct Recent {
    answers: HashMap<u64, Vec<u8>>,
    order: VecDeque<u64>,
    cap: usize,
}

impl Recent {
    pub fn new(cap: usize) -> Self {
        Recent {
            answers: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn get(&self, request_id: u64) -> Option<&[u8]> {
        self.answers.get(&request_id).map(Vec::as_slice)
    }

    pub fn remember(&mut self, request_id: u64, frame: Vec<u8>) {
        if self.answers.insert(request_id, frame).is_none() {
            self.order.push_back(request_id);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(device: &str, request_id: u64, deadline_ms: u64) -> PendingCommand {
        PendingCommand {
            client: b"op".to_vec(),
            request_id,
            device: device.into(),
            deadline_ms,
            timeout_ms: 1000,
            log_id: 1,
        }
    }

    #[test]
    fn a_reply_is_taken_once_and_only_from_the_addressed_device() {
        let mut p = Pending::default();
        let c = p.next_corr();
        p.insert(c, cmd("pi-1", 9, 100));
        assert_eq!(p.answer(c, "pi-2"), None);
        assert!(p.answer(c, "pi-1").is_some());
        assert_eq!(p.answer(c, "pi-1"), None);
    }

    #[test]
    fn deadlines_expire_and_retries_retarget() {
        let mut p = Pending::default();
        let a = p.next_corr();
        let b = p.next_corr();
        p.insert(a, cmd("pi-1", 1, 100));
        p.insert(b, cmd("pi-1", 2, 200));
        assert!(p.retarget(2, b"op2"));
        assert!(!p.retarget(3, b"op3"));
        assert_eq!(p.expired(99), vec![]);
        assert_eq!(p.expired(150).len(), 1);
        let left = p.expired(200);
        assert_eq!(left[0].client, b"op2");
    }

    #[test]
    fn recent_answers_are_bounded() {
        let mut r = Recent::new(2);
        r.remember(1, vec![1]);
        r.remember(2, vec![2]);
        r.remember(3, vec![3]);
        assert_eq!(r.get(1), None);
        assert_eq!(r.get(3), Some(&[3u8][..]));
    }
}
