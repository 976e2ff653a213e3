//! The brokers an operator would pick instead, run beside the hub on this
//! machine: NATS (with JetStream on, as a fleet on NATS runs it) and
//! Mosquitto. So far one figure: what the broker holds per idle connected
//! device, each device connected and subscribed as a fleet device would be
//! (its own command subject or topic, and the broadcasts), every handshake
//! answered before the broker is measured.
//!
//! The load here is idle connections, so the generators speak just enough
//! of each protocol to connect and subscribe (NATS's text protocol, MQTT
//! 3.1.1's CONNECT and SUBSCRIBE packets); they hold sockets, nothing more.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::run::Running;

/// A broker started for a benchmark, on a loopback port the OS picked.
pub struct Broker {
    pub proc: Running,
    pub port: u16,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until something listens on `port`.
fn wait_listening(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 10 s (see its log)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// One nats-server (`server`) with JetStream, in `dir`.
pub fn nats(server: &Path, dir: &Path) -> anyhow::Result<Broker> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{port}\"\nmax_connections: 100000\njetstream {{ store_dir: \"{}\" }}\n",
            dir.join("js").display()
        ),
    )?;
    let child = Command::new(server)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nats.log"))?)
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let proc = Running { child };
    wait_listening(port, "nats-server")?;
    Ok(Broker { proc, port })
}

/// Mosquitto, in `dir`: plaintext on loopback, nothing persisted.
pub fn mosquitto(dir: &Path) -> anyhow::Result<Broker> {
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n"
        ),
    )?;
    let program = ["mosquitto", "/usr/sbin/mosquitto"]
        .into_iter()
        .find(|p| Command::new(p).arg("-h").output().is_ok())
        .context(
            "mosquitto is missing: scripts/bench.sh peers installs it (apt install mosquitto)",
        )?;
    let child = Command::new(program)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("mosquitto.log"))?)
        .spawn()
        .context("starting mosquitto")?;
    let proc = Running { child };
    wait_listening(port, "mosquitto")?;
    Ok(Broker { proc, port })
}

fn connect(port: u16) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(s)
}

/// `n` NATS clients, each subscribed to its own command subject and the
/// broadcasts, each having had its PONG (so the server has taken the
/// subscriptions).
pub fn nats_devices(port: u16, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let s = connect(port)?;
        let mut reader = BufReader::new(s.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        anyhow::ensure!(line.starts_with("INFO"), "NATS said {line:?}, not INFO");
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"dev-{i}\"}}\r\n\
             SUB fleet.cmd.dev-{i} 1\r\nSUB fleet.broadcast.> 2\r\nPING\r\n"
        );
        (&s).write_all(hello.as_bytes())?;
        line.clear();
        reader.read_line(&mut line)?;
        anyhow::ensure!(line.starts_with("PONG"), "NATS said {line:?}, not PONG");
        out.push(s);
    }
    Ok(out)
}

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

fn mqtt_string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `n` MQTT 3.1.1 clients (clean session, keep-alive 10 min), each
/// subscribed at QoS 1 to its own command topic and the broadcasts, each
/// having had its SUBACK.
pub fn mqtt_devices(port: u16, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(port)?;
        let id = format!("dev-{i}");
        let mut body = Vec::new();
        mqtt_string("MQTT", &mut body);
        body.extend_from_slice(&[4, 0x02, 0x02, 0x58]);
        mqtt_string(&id, &mut body);
        let mut packet = vec![0x10];
        remaining(body.len(), &mut packet);
        packet.extend_from_slice(&body);
        s.write_all(&packet)?;
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack)?;
        anyhow::ensure!(
            connack == [0x20, 2, 0, 0],
            "Mosquitto said {connack:?}, not CONNACK"
        );
        let mut body = vec![0, 1];
        for topic in [format!("fleet/cmd/{id}"), "fleet/broadcast/#".to_string()] {
            mqtt_string(&topic, &mut body);
            body.push(1);
        }
        let mut packet = vec![0x82];
        remaining(body.len(), &mut packet);
        packet.extend_from_slice(&body);
        s.write_all(&packet)?;
        let mut suback = [0u8; 6];
        s.read_exact(&mut suback)?;
        anyhow::ensure!(
            suback[0] == 0x90 && suback[4..] == [1, 1],
            "Mosquitto said {suback:?}, not a SUBACK granting QoS 1"
        );
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_lengths_are_seven_bits_a_byte_low_first() {
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
}
