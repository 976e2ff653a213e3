//! The audit trail: every act an operator asks, who asked and whether
//! their role allowed it; reads are not kept.

use super::*;

fn ask(f: &mut Fleet, client: &[u8], caller: Caller<'_>, id: u64, request: Request) {
    let frame = OperatorFrame::from(OperatorRequest { id, request })
        .encode()
        .unwrap();
    f.core
        .operator(&[client.to_vec(), vec![], frame], caller, at(T0 + id));
    f.deliver(T0 + id);
}

fn audit(f: &mut Fleet) -> Vec<(String, String, bool)> {
    f.operator(999, Request::Audit { limit: 100 }, T0 + 1_000);
    match to_operator(&f.actions()).as_slice() {
        [(999, Response::Audit(log))] => {
            assert!(log.windows(2).all(|w| w[0].id > w[1].id), "newest first");
            log.iter()
                .map(|e| (e.operator.clone(), e.act.clone(), e.allowed))
                .collect()
        }
        other => panic!("{other:?}"),
    }
}

/// Who asked is told by the socket: the local one, the HTTP side's
/// connections on it (the console, with the admin token), or a remote
/// operator by name and role. A read operator's act is refused and kept;
/// a retry, a read and another front-end's request are not kept.
#[test]
fn each_act_is_kept_once_with_who_asked_and_whether_it_was_allowed() {
    let mut f = Fleet::new();
    let local = b"Lcli-1".as_slice();
    let mut console = b"L".to_vec();
    console.extend_from_slice(crate::core::HTTP_CLIENT);
    console.extend_from_slice(b"0123456789abcdef");
    let revoke = Request::Revoke(fleetmq_protocol::Revocation {
        device: "pi-a".into(),
        public_key: None,
    });
    let shout = Request::Broadcast {
        target: fleetmq_protocol::Target::Group("north".into()),
        text: "maintenance at noon".into(),
    };

    ask(&mut f, local, Caller::Local, 1, Request::Devices);
    ask(&mut f, local, Caller::Local, 2, ping("pi-a", 1_000));
    ask(&mut f, local, Caller::Local, 2, ping("pi-a", 1_000));
    ask(&mut f, &console, Caller::Local, 3, shout);
    let reader = crate::operators::user_id("bob", crate::operators::Role::Read);
    ask(
        &mut f,
        b"Rx",
        Caller::Remote(Some(&reader)),
        4,
        revoke.clone(),
    );
    let admin = crate::operators::user_id("alice", crate::operators::Role::Admin);
    ask(&mut f, b"Ry", Caller::Remote(Some(&admin)), 5, revoke);
    let forget = Request::Forget {
        device: "pi-b".into(),
    };
    ask(&mut f, b"C12345678", Caller::Cluster, 6, forget);

    assert_eq!(
        audit(&mut f),
        [
            ("alice (admin)".into(), "revoke pi-a".into(), true),
            ("bob (read)".into(), "revoke pi-a".into(), false),
            (
                "console".into(),
                "broadcast to group north: 'maintenance at noon'".into(),
                true
            ),
            ("local".into(), "command pi-a: ping".into(), true),
        ]
    );
}

/// Acts are told in the command line's words, with what they aim at.
#[test]
fn acts_are_told_in_the_command_lines_words() {
    use crate::core::audit::describe;
    let job = Request::SubmitJob(fleetmq_protocol::JobSubmission {
        spec: JobSpec::Exec {
            program: "df".into(),
            args: vec!["-h".into(), "/var/lib".into()],
        },
        timeout_ms: 0,
        lease_ms: 0,
        max_attempts: 0,
        devices: vec!["pi-1".into()],
        groups: vec!["north".into()],
        all: false,
        ttl_ms: 0,
        matching: vec![],
    });
    assert_eq!(
        describe(&job),
        "job for devices pi-1 and groups north: exec df -h /var/lib"
    );
    let edit = Request::ConfigEdit(fleetmq_protocol::ConfigEdit {
        layer: "group:north".into(),
        set: vec![("host.interval_ms".into(), "5000".into())],
        unset: vec!["app.mode".into()],
        if_version: 0,
    });
    assert_eq!(
        describe(&edit),
        "config group:north: host.interval_ms=5000 -app.mode"
    );
    let fleet = Request::FleetCommand(fleetmq_protocol::FleetCommand {
        command: Command::Exec {
            program: "sh".into(),
            args: vec!["-c".into(), "echo it's".into()],
            timeout_ms: 0,
        },
        devices: vec![],
        groups: vec![],
        all: true,
        timeout_ms: 0,
        ttl_ms: 0,
        matching: vec![],
    });
    assert_eq!(
        describe(&fleet),
        r"command for all: exec sh -c 'echo it'\''s'"
    );
    assert_eq!(describe(&Request::CancelJob { id: 7 }), "cancel job 7");
}
