//! Local ingest: Influx lines and StatsD folded into samples, the
//! sockets, and what any line, random or mangled, becomes.

use std::time::Duration;

use super::*;

const NOW: u64 = 1_700_000_000_000;

fn one(line: &str) -> Result<Vec<Ingested>, String> {
    influx(line, NOW)
}

fn sample(name: &str, value: Value, ts_ms: Option<u64>) -> Ingested {
    Ingested {
        name: name.into(),
        value,
        ts_ms,
    }
}

#[test]
fn influx_lines_become_samples() {
    assert_eq!(
        one("env,room=lab temp=21.5,hum=40i,ok=true,note=\"fine, dry\" 1700000000123000000"),
        Ok(vec![
            sample(
                "env.temp{room=lab}",
                Value::Float(21.5),
                Some(1_700_000_000_123)
            ),
            sample("env.hum{room=lab}", Value::Int(40), Some(1_700_000_000_123)),
            sample("env.ok{room=lab}", Value::Int(1), Some(1_700_000_000_123)),
        ])
    );
    assert_eq!(
        one("pump value=3"),
        Ok(vec![sample("pump", Value::Float(3.0), None)])
    );
    assert_eq!(
        one(r"my\ pump,site=north\ yard value=1u"),
        Ok(vec![sample(
            "my pump{site=north yard}",
            Value::Int(1),
            None
        )])
    );
    assert_eq!(one("# a comment"), Ok(vec![]));
}

#[test]
fn influx_tag_keys_are_made_valid_as_statsd_ones() {
    assert_eq!(
        one("env,k8s.pod=web-1,host-name=pi\\ 3 t=1i"),
        Ok(vec![sample(
            "env.t{host_name=pi 3,k8s_pod=web-1}",
            Value::Int(1),
            None
        )])
    );
}

#[test]
fn malformed_lines_say_what_is_wrong() {
    let err = |line: &str| one(line).unwrap_err();
    assert!(err("just words here and more").contains("Influx needs"));
    assert!(err("m").contains("Influx needs"));
    assert!(err("m f=abc").contains("not a number"));
    assert!(err("m f=1x2i").contains("not an integer"));
    assert!(err("m,tag f=1").contains("not key=value"));
    assert!(err("m f=1 1700000000").contains("nanoseconds"));
    assert!(err("m f=1 soon").contains("not an integer"));
    assert!(err("m,k=a\\,b f=1").contains("tag k="));
}

#[test]
fn both_sockets_take_lines_and_count_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = IngestConfig {
        udp: "127.0.0.1:0".into(),
        unix: "in.sock".into(),
        ..IngestConfig::default()
    };
    let (mut ingest, problems) = Ingest::open(&cfg, dir.path());
    assert!(problems.is_empty(), "{problems:?}");
    let t0 = Instant::now();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"a:1|c\nbad line\n", &ingest.status.udp)
        .unwrap();
    let unix = UnixDatagram::unbound().unwrap();
    unix.send_to(b"b v=2", dir.path().join("in.sock")).unwrap();
    let mut got = Vec::new();
    let mut complaints = Vec::new();
    while ingest.status.datagrams < 2 {
        let mut fds: Vec<libc::pollfd> = ingest
            .fds()
            .into_iter()
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 5_000) };
        assert!(n > 0, "no datagram arrived within 5 s");
        let (s, c) = ingest.drain(NOW, t0);
        got.extend(s);
        complaints.extend(c);
    }
    // The Influx sample at once; the StatsD line when its interval is
    // flushed.
    let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["b.v"]);
    assert_eq!(ingest.statsd_due(), Some(t0 + Duration::from_secs(10)));
    let folded = ingest.flush_statsd(NOW);
    assert_eq!(folded.len(), 1);
    assert_eq!(
        (folded[0].name.as_str(), folded[0].value),
        ("a", Value::Int(1))
    );
    assert_eq!((ingest.status.statsd_lines, ingest.status.samples), (1, 2));
    assert_eq!(ingest.status.malformed, 1);
    assert_eq!(complaints.len(), 1);
    assert!(ingest.status.last_error.contains("bad line"));
    // A flood is taken a slice at a time, so the agent's loop goes on.
    // (A few datagrams: a Unix socket's queue is short, and a sender
    // blocks when it is full.)
    ingest.per_drain = 3;
    let unix_path = dir.path().join("in.sock");
    for i in 0..5 {
        unix.send_to(format!("n v={i}").as_bytes(), &unix_path)
            .unwrap();
    }
    let (first, _) = ingest.drain(NOW, t0);
    assert_eq!(first.len(), 3);
    let (rest, _) = ingest.drain(NOW, t0);
    assert_eq!(rest.len(), 2);

    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = IngestConfig {
        udp: taken.local_addr().unwrap().to_string(),
        unix: String::new(),
        ..IngestConfig::default()
    };
    let (second, problems) = Ingest::open(&busy, dir.path());
    assert_eq!(problems.len(), 1, "a port in use is said, not fatal");
    assert!(second.status.udp.starts_with("off: "));
    assert_eq!(
        second.status.unix, "off: ingest.unix is \"\" in the config",
        "a socket turned off says so in status"
    );
}

/// What a local program sends is a peer's input: any line, random or
/// a valid one mangled, is refused with a reason or becomes samples a
/// batch takes (a valid name, a finite value, a time in range), so a
/// line accepted here is never one the spool or the hub turns away.
#[test]
fn any_line_is_refused_with_a_reason_or_becomes_samples_a_batch_takes() {
    let mut rng = fastrand::Rng::with_seed(19);
    let valid = [
        "env,room=hall temp=21.5,hum=40i",
        "pump value=3i 1700000000000000000",
        "s,a=b f=t,g=\"text\",h=-1.5e3",
        "x\\,y,k\\ =v\\= f=1u",
        "door.opened:1|c|#room:hall,floor:2",
        "t:12|ms|@0.5",
        "g:-3|g",
        "set:7|s",
    ];
    let alphabet: Vec<char> = "aZ09._-,= |:#@\"\\{}\t\u{0}\u{7f}\u{1b}éµ∞eiutfTF+-.ns"
        .chars()
        .collect();
    // Whole words a parser must weigh: numbers at and past the edges.
    let words = [
        "NaN",
        "nan",
        "inf",
        "-inf",
        "Infinity",
        "1e999",
        "-1e999",
        "1e-400",
        "-0",
        "9223372036854775807i",
        "9223372036854775808i",
        "-9223372036854775809i",
        "18446744073709551616u",
        "99999999999999999999999",
        "0x10",
        "1_000",
    ];
    let mut statsd = Statsd::new(1_000, &[50.0, 99.0]);
    let now = Instant::now();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..40_000 {
        let mut line: Vec<char> = if i % 2 == 0 {
            valid[rng.usize(..valid.len())].chars().collect()
        } else {
            Vec::new()
        };
        for _ in 0..rng.usize(1..12) {
            let c = alphabet[rng.usize(..alphabet.len())];
            if rng.u8(..4) == 0 {
                let at = rng.usize(..=line.len());
                let word = words[rng.usize(..words.len())];
                line.splice(at..at, word.chars());
                continue;
            }
            match rng.u8(..3) {
                0 if !line.is_empty() => {
                    line.remove(rng.usize(..line.len()));
                }
                1 if !line.is_empty() => {
                    let at = rng.usize(..line.len());
                    line[at] = c;
                }
                _ => line.insert(rng.usize(..=line.len()), c),
            }
        }
        let text: String = line.into_iter().collect();
        // As drain hands lines over.
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let parsed = if line.contains('|') {
                statsd.fold(line, now).map(|()| Vec::new())
            } else {
                influx(line, NOW)
            };
            match parsed {
                Ok(samples) => accepted.extend(samples),
                Err(why) => {
                    refused += 1;
                    assert!(!why.trim().is_empty(), "{line:?} refused without a reason");
                }
            }
        }
    }
    accepted.extend(statsd.flush(NOW));
    assert!(
        refused > 1_000 && accepted.len() > 1_000,
        "{refused} refused, {} accepted",
        accepted.len()
    );
    for s in &accepted {
        if let Value::Float(v) = s.value {
            assert!(
                v.is_finite(),
                "accepted a value that is not a number: {s:?}"
            );
        }
        let mut batch = fleetmq_protocol::BatchBuilder::new(0);
        if let Err(e) = batch.push_sample(&s.name, s.ts_ms.unwrap_or(NOW), s.value) {
            panic!("accepted, but a batch refuses it: {s:?}: {e}");
        }
    }
}
