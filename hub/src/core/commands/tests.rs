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
