//! `fleetmq-agent info`: what this build is and whether its libzmq can do
//! CURVE, checked with a real handshake over loopback. For operators who
//! want to know a binary works on a device before enrolling it.

use std::time::Duration;

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

fn curve_handshake() -> Result<(), String> {
    let fail = |what: &str, e: zmq::Error| format!("{what}: {e}");
    let ctx = zmq::Context::new();
    let server_keys = zmq::CurveKeyPair::new().map_err(|e| fail("making server keys", e))?;
    let client_keys = zmq::CurveKeyPair::new().map_err(|e| fail("making client keys", e))?;
    let timeout = Duration::from_secs(10).as_millis() as i32;
    let server = ctx
        .socket(zmq::PULL)
        .map_err(|e| fail("server socket", e))?;
    server.set_linger(0).map_err(|e| fail("linger", e))?;
    server
        .set_rcvtimeo(timeout)
        .map_err(|e| fail("receive timeout", e))?;
    server
        .set_curve_server(true)
        .map_err(|e| fail("CURVE server", e))?;
    server
        .set_curve_secretkey(&server_keys.secret_key)
        .map_err(|e| fail("server key", e))?;
    server
        .bind("tcp://127.0.0.1:*")
        .map_err(|e| fail("binding loopback", e))?;
    let endpoint = server
        .get_last_endpoint()
        .map_err(|e| fail("reading endpoint", e))?
        .map_err(|_| "endpoint is not UTF-8".to_string())?;
    let client = ctx
        .socket(zmq::PUSH)
        .map_err(|e| fail("client socket", e))?;
    client.set_linger(0).map_err(|e| fail("linger", e))?;
    client
        .set_curve_serverkey(&server_keys.public_key)
        .map_err(|e| fail("server public key", e))?;
    client
        .set_curve_publickey(&client_keys.public_key)
        .map_err(|e| fail("client public key", e))?;
    client
        .set_curve_secretkey(&client_keys.secret_key)
        .map_err(|e| fail("client secret key", e))?;
    client
        .connect(&endpoint)
        .map_err(|e| fail("connecting", e))?;
    client.send("curve", 0).map_err(|e| fail("sending", e))?;
    let got = server
        .recv_bytes(0)
        .map_err(|e| fail("receiving over CURVE", e))?;
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
