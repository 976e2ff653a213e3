//! Wire-format tests: golden bytes, randomized round trips, garbage input,
//! and the size of a typical batch next to JSON.

use arbitrary::{Arbitrary, Unstructured};
use fleetmq_protocol::*;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Golden vectors: these exact bytes are documented in PROTOCOL.md, so a
/// client in another language can check itself against them.
#[test]
fn golden_vectors() {
    let ack = Downstream::from(Ack { seq: 300 }).encode().unwrap();
    // version 2, kind 0x11, seq 300 as varint: 0xac 0x02
    assert_eq!(hex(&ack), "02 11 ac 02");

    let mut b = BatchBuilder::new(7);
    b.push_sample("cpu", 1_000, Value::Float(0.5)).unwrap();
    b.push_sample("up", 1_250, Value::Int(-2)).unwrap();
    b.push_chat(1_000, "hi").unwrap();
    let batch = Upstream::Batch(b.finish()).encode().unwrap();
    assert_eq!(
        hex(&batch),
        concat!(
            "02 03 ",                            // version 2, kind Batch
            "07 ",                               // seq 7
            "e8 07 ",                            // base_ts_ms 1000
            "02 03 63 70 75 02 75 70 ",          // names ["cpu", "up"]
            "02 ",                               // 2 samples
            "00 00 01 00 00 00 00 00 00 e0 3f ", // name 0, offset 0, Float 0.5
            "01 f4 03 00 03 ", // name 1, offset +250 (zigzag 500), Int -2 (zigzag 3)
            "01 00 02 68 69"   // 1 chat line: offset 0, "hi"
        )
    );

    let hello = Upstream::from(Hello {
        agent_version: "0.1".into(),
        arch: "arm".into(),
        os: "linux".into(),
        hostname: "pi".into(),
        groups: vec!["n".into()],
        heartbeat_ms: 5000,
        started_ms: 1,
    })
    .encode()
    .unwrap();
    assert_eq!(
        hex(&hello),
        "02 01 03 30 2e 31 03 61 72 6d 05 6c 69 6e 75 78 02 70 69 01 01 6e 88 27 01"
    );

    let cmd = CommandFrame::from(CommandRequest {
        corr: 1,
        command: Command::Exec {
            program: "df".into(),
            args: vec!["-h".into()],
            timeout_ms: 1000,
        },
    })
    .encode()
    .unwrap();
    // corr 1, Command variant 2 (Exec), "df", ["-h"], 1000
    assert_eq!(hex(&cmd), "02 40 01 02 02 64 66 01 02 2d 68 e8 07");

    let chat = Broadcast::from(ChatMessage {
        from: "pi".into(),
        ts_ms: 2,
        text: "yo".into(),
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&chat), "02 20 02 70 69 02 02 79 6f");

    let welcome = Downstream::from(Welcome {
        hub_version: "0.1".into(),
        ports: HubPorts {
            broadcast: 7751,
            jobs: 7752,
            results: 7753,
            commands: 7754,
        },
    })
    .encode()
    .unwrap();
    // "0.1", then four u16 ports as varints (7751 = 0xc7 0x3c, ...)
    assert_eq!(hex(&welcome), "02 10 03 30 2e 31 c7 3c c8 3c c9 3c ca 3c");

    let refusal = Downstream::from(Refusal {
        reason: "no".into(),
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&refusal), "02 13 02 6e 6f");

    // An operator request with an Option of each kind: Some is 01 then the
    // value, None is 00; a signed integer is zigzag (-1 is 01).
    let request = OperatorFrame::from(OperatorRequest {
        id: 5,
        request: Request::Telemetry(TelemetryQuery {
            device: Some("pi".into()),
            name: None,
            after_id: -1,
            limit: 10,
            since_ms: 0,
            until_ms: 0,
            newest: true,
            tags: vec!["k=v".into()],
        }),
    })
    .encode()
    .unwrap();
    // id 5, Request variant 1 (Telemetry), the query's 15 bytes (growable):
    // Some "pi", None, -1, 10, 0, 0, true, ["k=v"]
    assert_eq!(
        hex(&request),
        "02 50 05 01 0f 01 02 70 69 00 01 0a 00 00 01 01 03 6b 3d 76"
    );
    // An older client's query (its first four fields, 7 bytes) reads the
    // rest as zero: no time bounds, oldest first, no tags.
    let older = OperatorFrame::decode(&[
        0x02, 0x50, 0x05, 0x01, 0x07, 0x01, 0x02, 0x70, 0x69, 0x00, 0x01, 0x0a,
    ])
    .unwrap();
    let OperatorFrame::Request(OperatorRequest {
        request: Request::Telemetry(q),
        ..
    }) = older
    else {
        panic!("{older:?}");
    };
    assert_eq!(
        (q.limit, q.since_ms, q.until_ms, q.newest, q.tags.len()),
        (10, 0, 0, false, 0)
    );

    // An operator reply with bools: true is 01, false is 00.
    let reply = OperatorReplyFrame::from(OperatorResponse {
        id: 5,
        response: Response::Devices(vec![DeviceInfo {
            id: "pi".into(),
            online: true,
            listening: false,
            since_ms: 1,
            last_seen_ms: 2,
            agent_version: String::new(),
            arch: String::new(),
            os: String::new(),
            hostname: String::new(),
            groups: vec![],
            batches: 3,
            revoked: false,
            conflicts: 2,
            conflict_address: "h".into(),
            front_end: String::new(),
            clock_offset_ms: None,
            address: String::new(),
            facts: DeviceFacts::default(),
        }]),
    })
    .encode()
    .unwrap();
    // id 5, Response variant 0 (Devices), 1 device of 27 bytes (growable):
    // "pi", true, false, 1,
    // 2, four empty strings, no groups, 3 batches, not revoked, 2
    // conflicts, the last from "h", on no front-end, its clock not
    // measured, no address seen, no facts (growable: 6 bytes of zero
    // values)
    assert_eq!(
        hex(&reply),
        "02 51 05 00 01 1b 02 70 69 01 00 01 02 00 00 00 00 00 03 00 02 01 68 00 00 00 06 00 00 00 00 00 00"
    );

    // What the hub sends one device on its own connection.
    let direct = Downstream::from(Announcement {
        ts_ms: 1,
        target: Target::Device("pi".into()),
        text: "hi".into(),
    })
    .encode()
    .unwrap();
    // ts 1, Target variant 2 (Device) "pi", "hi"
    assert_eq!(hex(&direct), "02 14 01 02 02 70 69 02 68 69");
    let relink = Downstream::from(Relink { reason: "x".into() })
        .encode()
        .unwrap();
    assert_eq!(hex(&relink), "02 15 01 78");
    let renumber = Downstream::from(Renumber { seq: 1, from: 300 })
        .encode()
        .unwrap();
    assert_eq!(hex(&renumber), "02 16 01 ac 02");
    let rejected = Downstream::from(Rejected {
        seq: 2,
        reason: "x".into(),
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&rejected), "02 17 02 01 78");
    let throttled = Downstream::from(Throttled {
        seq: 3,
        retry_after_ms: 1500,
        reason: "x".into(),
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&throttled), "02 18 03 dc 0b 01 78");
    // A job aimed at the device: a Job, as on the work queue.
    let work = Downstream::Work(Job {
        id: 7,
        attempt: 1,
        spec: JobSpec::Echo { text: "hi".into() },
        timeout_ms: 1000,
        token: 9,
    })
    .encode()
    .unwrap();
    // id 7, attempt 1, JobSpec variant 0 (Echo) "hi", 1000, token 9
    assert_eq!(hex(&work), "02 19 07 01 00 02 68 69 e8 07 09");
    // What an agent takes on and is, growable: 44 bytes of fields follow,
    // the facts 29 of them (growable: 28 bytes; its one interface, an
    // element of a growable list, 18).
    let offer = Upstream::Offer(Offer(Abilities {
        job_kinds: vec!["echo".into()],
        exec_programs: vec!["df".into()],
        config_version: 3,
        one_connection: true,
        chat: false,
        job_slots: 2,
        hello_on_clock_step: true,
        facts: DeviceFacts {
            kernel: "6.1".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: String::new(),
                addresses: vec!["10.0.0.2/8".into()],
            }],
            ..DeviceFacts::default()
        },
    }))
    .encode()
    .unwrap();
    assert_eq!(
        hex(&offer),
        "02 05 2c 01 04 65 63 68 6f 01 02 64 66 03 01 00 02 01 \
         1c 00 03 36 2e 31 00 00 00 01 \
         12 04 65 74 68 30 00 01 0a 31 30 2e 30 2e 30 2e 32 2f 38"
    );
    // A newer agent's extra fields are skipped (here one in its facts,
    // `07`, after memory_bytes 9 and no interfaces, and `07 07` after
    // them); an older one's missing fields read as zero values: an agent
    // of the previous release (11 bytes) is not on one connection.
    let newer = Upstream::decode(&[
        0x02, 0x05, 0x19, 0x01, 0x04, 0x65, 0x63, 0x68, 0x6f, 0x01, 0x02, 0x64, 0x66, 0x03, 0x01,
        0x00, 0x02, 0x01, 0x07, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x07, 0x07, 0x07,
    ])
    .unwrap();
    assert!(
        matches!(newer, Upstream::Offer(Offer(ref a)) if a.exec_programs == ["df"] && a.job_slots == 2 && a.hello_on_clock_step && a.facts.memory_bytes == 9)
    );
    // The release before facts: 15 bytes, read as a device that said none.
    let before_facts = Upstream::decode(&[
        0x02, 0x05, 0x0f, 0x01, 0x04, 0x65, 0x63, 0x68, 0x6f, 0x01, 0x02, 0x64, 0x66, 0x03, 0x01,
        0x00, 0x02, 0x01,
    ])
    .unwrap();
    assert!(
        matches!(before_facts, Upstream::Offer(Offer(ref a)) if a.hello_on_clock_step && a.facts == DeviceFacts::default())
    );
    // The release before clock steps were told: 14 bytes, measured by no
    // hub.
    let before = Upstream::decode(&[
        0x02, 0x05, 0x0e, 0x01, 0x04, 0x65, 0x63, 0x68, 0x6f, 0x01, 0x02, 0x64, 0x66, 0x03, 0x01,
        0x00, 0x02,
    ])
    .unwrap();
    assert!(
        matches!(before, Upstream::Offer(Offer(ref a)) if a.job_slots == 2 && !a.hello_on_clock_step)
    );
    let previous = Upstream::decode(&[
        0x02, 0x05, 0x0b, 0x01, 0x04, 0x65, 0x63, 0x68, 0x6f, 0x01, 0x02, 0x64, 0x66, 0x03,
    ])
    .unwrap();
    assert!(
        matches!(previous, Upstream::Offer(Offer(ref a)) if a.config_version == 3 && !a.one_connection && a.job_slots == 0)
    );
    let older = Upstream::decode(&[0x02, 0x05, 0x06, 0x01, 0x04, 0x65, 0x63, 0x68, 0x6f]).unwrap();
    assert!(
        matches!(older, Upstream::Offer(Offer(ref a)) if a.exec_programs.is_empty() && a.config_version == 0)
    );
    // One connection: the hub's Carry before its Welcome; what the other
    // sockets carry, as kinds of their own on the telemetry connection.
    let carry = Downstream::Carry(Carry).encode().unwrap();
    assert_eq!(hex(&carry), "02 1b");
    let chat = Downstream::Chat(ChatMessage {
        from: "pi".into(),
        ts_ms: 2,
        text: "yo".into(),
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&chat), "02 1c 02 70 69 02 02 79 6f");
    let command = Downstream::Command(CommandRequest {
        corr: 1,
        command: Command::Ping,
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&command), "02 1d 01 00");
    let pinned = Downstream::PinnedGroups(PinnedGroups {
        groups: vec!["north".into()],
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&pinned), "02 1e 01 05 6e 6f 72 74 68");
    let reply = Upstream::Reply(CommandReply {
        corr: 1,
        reply: Reply::Pong { uptime_ms: 5 },
    })
    .encode()
    .unwrap();
    assert_eq!(hex(&reply), "02 08 01 00 05");
    let result = Upstream::Result(JobResult {
        id: 7,
        attempt: 1,
        device: "pi".into(),
        outcome: Outcome::AlreadyRun,
        token: 9,
    })
    .encode()
    .unwrap();
    // id 7, attempt 1, "pi", Outcome variant 4 (AlreadyRun), token 9
    assert_eq!(hex(&result), "02 07 07 01 02 70 69 04 09");
    // The hub's document, and the agent's report (each growable).
    let desired = Downstream::Desired(Desired(ConfigDoc {
        version: 2,
        values: vec![("a.b".into(), "1".into())],
    }))
    .encode()
    .unwrap();
    assert_eq!(hex(&desired), "02 1a 08 02 01 03 61 2e 62 01 31");
    let applied = Upstream::Applied(Applied(ConfigReport {
        version: 2,
        errors: vec![("a.b".into(), "no".into())],
    }))
    .encode()
    .unwrap();
    assert_eq!(hex(&applied), "02 06 09 02 01 03 61 2e 62 02 6e 6f");
    // A batch's number is read without decoding the batch.
    let mut b = BatchBuilder::new(300);
    b.push_chat(1, "hi").unwrap();
    let frame = Upstream::Batch(b.finish()).encode().unwrap();
    assert_eq!(Upstream::batch_seq(&frame), Some(300));
    assert_eq!(Upstream::batch_seq(&frame[..2]), None);
    let hb = Upstream::Heartbeat(Heartbeat { uptime_ms: 300 })
        .encode()
        .unwrap();
    assert_eq!(Upstream::batch_seq(&hb), None, "not a batch");

    // Log lines: the batch's fields as kind 0x03 has them, then the
    // sources and the lines.
    let mut b = BatchBuilder::new(8);
    b.push_sample("up", 1_000, Value::Int(1)).unwrap();
    b.push_log("/l", 1_000, "hi").unwrap();
    b.push_log("/l", 1_002, "yo").unwrap();
    let logged = Upstream::from_batch(b.finish()).encode().unwrap();
    assert_eq!(
        hex(&logged),
        concat!(
            "02 09 ",             // version 2, kind LogBatch
            "08 e8 07 ",          // seq 8, base_ts_ms 1000
            "01 02 75 70 ",       // names ["up"]
            "01 00 00 00 02 ",    // 1 sample: name 0, offset 0, Int 1
            "00 ",                // no chat line
            "01 02 2f 6c ",       // sources ["/l"]
            "02 00 00 02 68 69 ", // 2 lines: source 0, offset 0, "hi"
            "00 04 02 79 6f"      // source 0, offset +2, "yo"
        )
    );
    assert_eq!(Upstream::batch_seq(&logged), Some(8));
    let takes = Downstream::TakesLogs(TakesLogs).encode().unwrap();
    assert_eq!(hex(&takes), "02 1f");
    let logs = OperatorFrame::from(OperatorRequest {
        id: 5,
        request: Request::Logs(LogQuery {
            device: Some("pi".into()),
            source: None,
            contains: "err".into(),
            after_id: 0,
            limit: 10,
            since_ms: 0,
            until_ms: 0,
            newest: true,
        }),
    })
    .encode()
    .unwrap();
    // id 5, Request variant 25 (Logs), the query's 14 bytes (growable)
    assert_eq!(
        hex(&logs),
        "02 50 05 19 0e 01 02 70 69 00 03 65 72 72 00 0a 00 00 01"
    );
    let rows = OperatorReplyFrame::from(OperatorResponse {
        id: 5,
        response: Response::Logs(vec![LogRow {
            id: 1,
            device: "pi".into(),
            seq: 8,
            ts_ms: 2,
            source: "/l".into(),
            text: "hi".into(),
        }]),
    })
    .encode()
    .unwrap();
    // id 5, Response variant 23 (Logs), one row of 12 bytes (growable)
    assert_eq!(
        hex(&rows),
        "02 51 05 17 01 0c 02 02 70 69 08 02 02 2f 6c 02 68 69"
    );

    let revoke = OperatorFrame::from(OperatorRequest {
        id: 5,
        request: Request::Revoke(Revocation {
            device: "pi".into(),
            public_key: None,
        }),
    })
    .encode()
    .unwrap();
    // id 5, Request variant 28 (Revoke), the revocation's 4 bytes (growable)
    assert_eq!(hex(&revoke), "02 50 05 1c 04 02 70 69 00");
    let revoked = OperatorReplyFrame::from(OperatorResponse {
        id: 5,
        response: Response::Revoked { removed_keys: 2 },
    })
    .encode()
    .unwrap();
    // id 5, Response variant 26 (Revoked)
    assert_eq!(hex(&revoked), "02 51 05 1a 02");

    let aimed = OperatorFrame::from(OperatorRequest {
        id: 5,
        request: Request::FleetCommand(FleetCommand {
            command: Command::Ping,
            devices: vec![],
            groups: vec!["n".into()],
            all: false,
            timeout_ms: 0,
            ttl_ms: 0,
            matching: vec!["model~zero".into()],
        }),
    })
    .encode()
    .unwrap();
    // id 5, Request variant 13 (FleetCommand), 20 bytes (growable): Ping,
    // no devices, groups ["n"], all false, 0, 0, matching ["model~zero"]
    let aimed_hex = "02 50 05 0d 14 00 00 01 01 6e 00 00 00 01 0a 6d 6f 64 65 6c 7e 7a 65 72 6f";
    assert_eq!(hex(&aimed), aimed_hex);
    // An older client's, without filters: read as none.
    let older = &aimed[..aimed.len() - 12];
    let OperatorFrame::Request(OperatorRequest {
        request: Request::FleetCommand(read),
        ..
    }) = OperatorFrame::decode(&[&older[..4], &[older[4] - 12], &older[5..]].concat()).unwrap()
    else {
        panic!("not a FleetCommand")
    };
    assert!(read.matching.is_empty() && read.groups == ["n"]);

    // The routing id of an agent's DEALERs: device id, '@', nonce.
    assert_eq!(route("pi", "0123456789abcdef"), "pi@0123456789abcdef");
}

/// A client reads a reply from a hub with more fields, or fewer, than it
/// knows: growable structs carry their length.
#[test]
fn operator_replies_from_newer_and_older_hubs_decode() {
    let golden = "02 51 05 00 01 1b 02 70 69 01 00 01 02 00 00 00 00 00 03 00 02 01 68 00 00 00 06 00 00 00 00 00 00";
    let bytes = |hex: &str| -> Vec<u8> {
        hex.split(' ')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    };
    let devices = |frame: &[u8]| match OperatorReplyFrame::decode(frame).unwrap() {
        OperatorReplyFrame::Response(OperatorResponse {
            response: Response::Devices(d),
            ..
        }) => d,
        other => panic!("{other:?}"),
    };
    let now = devices(&bytes(golden));
    // A newer hub: two more bytes of fields this client does not know.
    let newer = golden.replace("01 1b ", "01 1d ") + " 07 07";
    assert_eq!(devices(&bytes(&newer)), now);
    // A hub of the release before facts: none.
    let before_facts =
        "02 51 05 00 01 14 02 70 69 01 00 01 02 00 00 00 00 00 03 00 02 01 68 00 00 00";
    assert_eq!(devices(&bytes(before_facts)), now);
    // An older hub, without conflicts and conflict_address: read as 0, "".
    let older = "02 51 05 00 01 0e 02 70 69 01 00 01 02 00 00 00 00 00 03 00";
    let old = devices(&bytes(older));
    assert_eq!(
        (old[0].conflicts, old[0].conflict_address.as_str()),
        (0, "")
    );
    assert_eq!((old[0].id.as_str(), old[0].batches), ("pi", 3));
}

/// Decodes what `frame` encodes and checks it is the same message.
fn round_trip<T>(bytes: &[u8])
where
    T: for<'a> Arbitrary<'a> + std::fmt::Debug,
    T: Codec,
{
    let mut u = Unstructured::new(bytes);
    let Ok(msg) = T::arbitrary(&mut u) else {
        return;
    };
    let frame = msg.encode_frame();
    let back = T::decode_frame(&frame).unwrap_or_else(|e| panic!("{msg:?} did not decode: {e}"));
    // Debug, not PartialEq: a NaN sample must round-trip too.
    assert_eq!(format!("{msg:?}"), format!("{back:?}"));
    assert_eq!(back.encode_frame(), frame);
}

trait Codec: Sized {
    fn encode_frame(&self) -> Vec<u8>;
    fn decode_frame(frame: &[u8]) -> Result<Self, DecodeError>;
}

macro_rules! codec {
    ($($t:ty),+) => {$(
        impl Codec for $t {
            fn encode_frame(&self) -> Vec<u8> { self.encode().unwrap() }
            fn decode_frame(frame: &[u8]) -> Result<Self, DecodeError> { <$t>::decode(frame) }
        }
    )+};
}
codec!(
    Upstream,
    Downstream,
    Broadcast,
    JobFrame,
    ResultFrame,
    CommandFrame,
    ReplyFrame,
    OperatorFrame,
    OperatorReplyFrame
);

#[test]
fn randomized_round_trips_for_every_channel() {
    let mut rng = fastrand::Rng::with_seed(0x_f1ee7);
    for _ in 0..3_000 {
        let len = rng.usize(0..2048);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        round_trip::<Upstream>(&bytes);
        round_trip::<Downstream>(&bytes);
        round_trip::<Broadcast>(&bytes);
        round_trip::<JobFrame>(&bytes);
        round_trip::<ResultFrame>(&bytes);
        round_trip::<CommandFrame>(&bytes);
        round_trip::<ReplyFrame>(&bytes);
        round_trip::<OperatorFrame>(&bytes);
        round_trip::<OperatorReplyFrame>(&bytes);
    }
}

fn decode_everything(frame: &[u8]) {
    let _ = Upstream::decode(frame);
    let _ = Downstream::decode(frame);
    let _ = Broadcast::decode(frame);
    let _ = JobFrame::decode(frame);
    let _ = ResultFrame::decode(frame);
    let _ = CommandFrame::decode(frame);
    let _ = ReplyFrame::decode(frame);
    let _ = OperatorFrame::decode(frame);
    let _ = OperatorReplyFrame::decode(frame);
    if let Ok(Upstream::Batch(b)) = Upstream::decode(frame) {
        let _ = b.validate();
        let _ = b.resolved_samples().count();
    }
}

#[test]
fn garbage_never_panics_and_is_refused() {
    let mut rng = fastrand::Rng::with_seed(42);
    let kinds = [
        0x01, 0x02, 0x03, 0x04, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x20, 0x21, 0x30,
        0x31, 0x40, 0x41, 0x50, 0x51,
    ];
    for _ in 0..100_000 {
        let len = rng.usize(0..256);
        let mut frame: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Most random frames die at the version byte; reach the body decoders too.
        if frame.len() >= 2 && rng.bool() {
            frame[0] = VERSION;
            frame[1] = kinds[rng.usize(..kinds.len())];
        }
        decode_everything(&frame);
    }
}

#[test]
fn mutated_valid_frames_never_panic() {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut b = BatchBuilder::new(99);
    for i in 0..20 {
        b.push_sample(&format!("m{}", i % 4), 1_000 + i, Value::Int(i as i64))
            .unwrap();
    }
    b.push_chat(1_000, "chat").unwrap();
    let frames = [
        Upstream::Batch(b.finish()).encode().unwrap(),
        OperatorFrame::from(OperatorRequest {
            id: 5,
            request: Request::Telemetry(TelemetryQuery {
                device: Some("pi".into()),
                name: None,
                after_id: 3,
                limit: 10,
                since_ms: 5,
                until_ms: 0,
                newest: false,
                tags: vec![],
            }),
        })
        .encode()
        .unwrap(),
    ];
    for frame in &frames {
        for _ in 0..20_000 {
            let mut f = frame.clone();
            match rng.u8(0..3) {
                0 => f.truncate(rng.usize(0..f.len())),
                1 => {
                    let i = rng.usize(2..f.len());
                    f[i] = rng.u8(..);
                }
                _ => f.insert(rng.usize(2..f.len()), rng.u8(..)),
            }
            decode_everything(&f);
        }
    }
}

#[test]
fn wrong_version_kind_and_trailing_bytes_are_typed_errors() {
    let ack = Downstream::from(Ack { seq: 1 }).encode().unwrap();
    let mut v1 = ack.clone();
    v1[0] = 1;
    assert_eq!(
        Downstream::decode(&v1),
        Err(DecodeError::UnsupportedVersion { found: 1 })
    );
    assert_eq!(
        Upstream::decode(&ack),
        Err(DecodeError::UnknownKind {
            channel: "Upstream",
            kind: 0x11
        })
    );
    let mut long = ack.clone();
    long.push(0);
    assert_eq!(
        Downstream::decode(&long),
        Err(DecodeError::TrailingBytes {
            kind: "Ack",
            extra: 1
        })
    );
    let msg = DecodeError::UnsupportedVersion { found: 1 }.to_string();
    assert!(
        msg.contains("version 1") && msg.contains("upgrade"),
        "{msg}"
    );
}

/// A typical 50-sample batch: ten metrics a Pi reports, sampled five times
/// ten seconds apart, as fleetmq sends it and as the same data in JSON.
#[test]
fn a_typical_batch_is_much_smaller_than_json() {
    type Metric = (&'static str, fn(u64) -> Value);
    let metrics: [Metric; 10] = [
        ("cpu.usage_pct", |i| Value::Float(12.5 + i as f64 * 1.25)),
        ("load.1m", |i| Value::Float(0.42 + i as f64 * 0.01)),
        ("mem.used_bytes", |i| {
            Value::Int(412_000_000 + i as i64 * 4096)
        }),
        ("mem.available_bytes", |i| {
            Value::Int(3_400_000_000 - i as i64 * 4096)
        }),
        ("disk.root.used_pct", |_| Value::Float(37.2)),
        ("net.eth0.rx_bytes", |i| {
            Value::Int(9_876_543_210 + i as i64 * 1_500_000)
        }),
        ("net.eth0.tx_bytes", |i| {
            Value::Int(1_234_567_890 + i as i64 * 200_000)
        }),
        ("thermal.cpu_c", |i| Value::Float(48.3 + i as f64 * 0.1)),
        ("system.uptime_s", |i| Value::Int(86_400 + i as i64 * 10)),
        ("agent.heartbeats", |i| Value::Int(1_000 + i as i64)),
    ];
    let base = 1_795_292_428_000u64;
    let mut b = BatchBuilder::new(123_456);
    let mut json_samples = Vec::new();
    for i in 0..5u64 {
        for (name, value) in &metrics {
            let ts = base + i * 10_000 + 3;
            let v = value(i);
            b.push_sample(name, ts, v).unwrap();
            json_samples.push(serde_json::json!({ "name": name, "ts": ts, "value": v }));
        }
    }
    let batch = b.finish();
    assert_eq!(batch.samples.len(), 50);
    let wire = Upstream::Batch(batch).encode().unwrap();
    let json = serde_json::to_vec(&serde_json::json!({
        "device": "pi-kitchen",
        "seq": 123_456,
        "samples": json_samples,
    }))
    .unwrap();
    let ratio = wire.len() as f64 / json.len() as f64;
    println!(
        "50-sample batch: fleetmq {} bytes, JSON {} bytes ({:.2}x of JSON)",
        wire.len(),
        json.len(),
        ratio
    );
    assert!(
        ratio < 0.3,
        "a batch should be under 0.3x its JSON, got {ratio:.2}"
    );
}
