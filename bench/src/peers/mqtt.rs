//! MQTT 3.1.1 load for Mosquitto: the few packets the benchmark needs,
//! each client on a blocking socket of its own.

use std::io::{BufReader, Read, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::{Counted, Tally, connect};

/// MQTT's variable-length "remaining length".
fn remaining(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return;
        }
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A packet: its first byte, its length, its body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

/// PUBLISH at QoS 0 (`id` None) or QoS 1 with packet id `id`.
pub fn publish(topic: &str, id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    string(topic, &mut body);
    if let Some(id) = id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(if id.is_some() { 0x32 } else { 0x30 }, &body)
}

/// Reads one packet: (first byte, body). Read through a buffer: a packet
/// read straight from the socket costs three reads.
fn read_packet(s: &mut impl Read) -> anyhow::Result<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first)?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        len |= usize::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        anyhow::ensure!(shift < 28, "Mosquitto sent a malformed packet length");
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body)?;
    Ok((first[0], body))
}

/// A client `id` (keep-alive 10 min), its CONNACK read; `clean` false
/// keeps its session (and what is queued for it) while it is away.
fn client(port: u16, id: &str, clean: bool) -> anyhow::Result<TcpStream> {
    let mut s = connect(port)?;
    s.set_nodelay(true)?;
    let mut body = Vec::new();
    string("MQTT", &mut body);
    body.extend_from_slice(&[4, if clean { 0x02 } else { 0x00 }, 0x02, 0x58]);
    string(id, &mut body);
    s.write_all(&packet(0x10, &body))?;
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack)?;
    anyhow::ensure!(
        connack[0] == 0x20 && connack[3] == 0,
        "Mosquitto said {connack:?}, not a CONNACK accepting {id}"
    );
    Ok(s)
}

/// Subscribes `s` to `topics` at `qos` and reads the SUBACK.
fn subscribe(s: &mut TcpStream, topics: &[&str], qos: u8) -> anyhow::Result<()> {
    let mut body = vec![0, 1];
    for topic in topics {
        string(topic, &mut body);
        body.push(qos);
    }
    s.write_all(&packet(0x82, &body))?;
    let (kind, body) = read_packet(s)?;
    anyhow::ensure!(
        kind == 0x90 && body.len() == 2 + topics.len() && body[2..].iter().all(|g| *g == qos),
        "Mosquitto answered a SUBSCRIBE with {kind:#x} {body:?}, not a SUBACK granting QoS {qos}"
    );
    Ok(())
}

/// `n` clients (clean session), each subscribed at QoS 1 to its own
/// command topic and the broadcasts, each having had its SUBACK.
pub fn devices(port: u16, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("dev-{i}");
        let mut s = client(port, &id, true)?;
        subscribe(
            &mut s,
            &[&format!("fleet/cmd/{id}"), "fleet/broadcast/#"],
            1,
        )?;
        out.push(s);
    }
    Ok(out)
}

/// The store the telemetry is for: a client with a kept session,
/// subscribed at QoS 1 to every device's telemetry, that then goes away,
/// so Mosquitto keeps each message published for it (in memory).
pub fn offline_store(port: u16) -> anyhow::Result<()> {
    let mut s = client(port, "fleet-store", false)?;
    subscribe(&mut s, &["telemetry/#"], 1)?;
    s.write_all(&[0xe0, 0])?;
    Ok(())
}

/// `publishers` clients, each publishing `payload` at QoS 1 on its own
/// topic with `window` messages awaiting their PUBACK; counts PUBACKs.
pub fn ingest(
    port: u16,
    publishers: usize,
    window: usize,
    payload: &[u8],
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Counted> {
    let tally = Tally::default();
    let mut clients = Vec::with_capacity(publishers);
    for i in 0..publishers {
        clients.push(client(port, &format!("pub-{i}"), true)?);
    }
    let workers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let (tally, payload) = (tally.clone(), payload.to_vec());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut acks = BufReader::new(s.try_clone()?);
                // One packet, its packet id (the two bytes before the
                // payload) written in place for each publish.
                let mut packet = publish(&format!("telemetry/dev-{i}"), Some(0), &payload);
                let id_at = packet.len() - payload.len() - 2;
                let mut id: u16 = 0;
                let mut next = |s: &mut TcpStream| -> anyhow::Result<()> {
                    id = id.checked_add(1).unwrap_or(1);
                    packet[id_at..id_at + 2].copy_from_slice(&id.to_be_bytes());
                    s.write_all(&packet)?;
                    Ok(())
                };
                for _ in 0..window {
                    next(&mut s)?;
                }
                while !tally.stopped() {
                    let (kind, body) = read_packet(&mut acks)?;
                    anyhow::ensure!(
                        kind == 0x40 && body.len() == 2,
                        "Mosquitto answered a PUBLISH with {kind:#x}, not a PUBACK"
                    );
                    tally.ack();
                    next(&mut s)?;
                }
                Ok(())
            })
        })
        .collect();
    tally.count_then_join(warmup, measure, workers, "an MQTT publisher")
}

/// `count` round trips: a request published at QoS 0 on a device's
/// command topic, answered by the device on its reply topic, as an
/// operator's tool and a device would over MQTT; sizes as fleetmq's ping
/// and pong. Returns the times, sorted.
pub fn round_trips(
    port: u16,
    count: usize,
    request_bytes: usize,
    reply_bytes: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut device = client(port, "pi-rtt", true)?;
    subscribe(&mut device, &["fleet/cmd/pi-rtt"], 0)?;
    let mut operator = client(port, "operator", true)?;
    subscribe(&mut operator, &["fleet/reply/pi-rtt"], 0)?;
    let responder = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut requests = BufReader::new(device.try_clone()?);
        let reply = publish("fleet/reply/pi-rtt", None, &vec![0u8; reply_bytes]);
        for _ in 0..count {
            let (kind, _) = read_packet(&mut requests)?;
            anyhow::ensure!(
                kind & 0xf0 == 0x30,
                "the device got {kind:#x}, not a PUBLISH"
            );
            device.write_all(&reply)?;
        }
        Ok(())
    });
    let mut replies = BufReader::new(operator.try_clone()?);
    let request = publish("fleet/cmd/pi-rtt", None, &vec![0u8; request_bytes]);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        operator.write_all(&request)?;
        let (kind, _) = read_packet(&mut replies)?;
        anyhow::ensure!(
            kind & 0xf0 == 0x30,
            "the operator got {kind:#x}, not a PUBLISH"
        );
        times.push(t.elapsed());
    }
    responder
        .join()
        .map_err(|_| anyhow::anyhow!("the MQTT responder panicked"))??;
    times.sort();
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_seven_bits_a_byte_low_first() {
        let enc = |n| {
            let mut v = Vec::new();
            remaining(n, &mut v);
            v
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [127]);
        assert_eq!(enc(128), [0x80, 1]);
        assert_eq!(enc(16_383), [0xff, 0x7f]);
    }

    #[test]
    fn a_qos_1_publish_carries_its_topic_id_and_payload() {
        let p = publish("t/a", Some(0x0102), &[9; 200]);
        // 2 + 3 topic, 2 id, 200 payload = 207: two length bytes.
        assert_eq!(&p[..3], &[0x32, 207 & 0x7f | 0x80, 1]);
        assert_eq!(&p[3..8], &[0, 3, b't', b'/', b'a']);
        assert_eq!(&p[8..10], &[1, 2]);
        assert_eq!(p.len(), 3 + 207);
        assert_eq!(publish("t", None, b"x"), [0x30, 4, 0, 1, b't', b'x']);
    }
}
