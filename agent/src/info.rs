//! `fleetmq-agent info`: what this build is and whether its libzmq can do
//! CURVE, checked with a real handshake over loopback. For operators who
//! want to know a binary works on a device before enrolling it.

use std::time::Duration;

use fleetmq_net::{Security, SocketOptions, Sockets, keys};
use serde::Serialize;

/// The CPU architecture this binary was built for, precise enough to tell a
/// Pi Zero (armv6) build from a Pi 2 (armv7) one.
pub fn arch() -> &'static str {
    if cfg!(target_arch = "arm") {
        if cfg!(target_feature = "v7") {
            "armv7"
        } else {
            "armv6"
        }
    } else {
        std::env::consts::ARCH
    }
}

#[derive(Serialize)]
pub struct Info {
    pub agent_version: &'static str,
    pub arch: &'static str,
    pub os: &'static str,
    pub libzmq: String,
    pub curve: bool,
    /// "ok", or why a CURVE handshake over loopback failed.
    pub curve_handshake: String,
}

/// Sends one message over CURVE from a client to a server on loopback,
/// both made by the same builder the agent uses for the hub.
fn curve_handshake() -> Result<(), String> {
    let server_keys = keys::generate().map_err(|e| format!("making server keys: {e}"))?;
    let client_keys = keys::generate().map_err(|e| format!("making client keys: {e}"))?;
    let server_side = Sockets::new(SocketOptions::default()).with_security(Security::CurveServer {
        secret: server_keys.secret,
    });
    let (server, endpoint) = server_side
        .build(zmq::PULL)
        .secure()
        .bind("tcp://127.0.0.1:*")
        .map_err(|e| e.to_string())?;
    let client_side = Sockets::new(SocketOptions::default()).with_security(Security::CurveClient {
        server: server_keys.public,
        ours: client_keys,
    });
    let client = client_side
        .build(zmq::PUSH)
        .secure()
        .connect(&endpoint)
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(10).as_millis() as i32;
    server
        .set_rcvtimeo(timeout)
        .map_err(|e| format!("receive timeout: {e}"))?;
    client
        .send("curve", 0)
        .map_err(|e| format!("sending: {e}"))?;
    let got = server
        .recv_bytes(0)
        .map_err(|e| format!("receiving over CURVE: {e}"))?;
    if got == b"curve" {
        Ok(())
    } else {
        Err("the message arrived changed".into())
    }
}

pub fn info() -> Info {
    let (major, minor, patch) = zmq::version();
    let curve = zmq::has("curve").unwrap_or(false);
    Info {
        agent_version: env!("CARGO_PKG_VERSION"),
        arch: arch(),
        os: std::env::consts::OS,
        libzmq: format!("{major}.{minor}.{patch}"),
        curve,
        curve_handshake: if curve {
            curve_handshake().map_or_else(|e| e, |()| "ok".into())
        } else {
            "libzmq was built without CURVE".into()
        },
    }
}
