//! The socket builder's tests: every option set before bind or connect,
//! and a CURVE handshake through the libzmq we build.

use super::*;

#[test]
fn every_option_is_set_before_bind() {
    let sockets = Sockets::new(SocketOptions {
        linger_ms: 123,
        send_hwm: 11,
        recv_hwm: 12,
        max_message_bytes: 4096,
        reconnect_ms: 250,
        reconnect_max_ms: 9000,
        heartbeat_ms: 1000,
        heartbeat_timeout_ms: 3000,
    });
    let (s, ep) = sockets
        .build(zmq::ROUTER)
        .bind("tcp://127.0.0.1:*")
        .expect("bind");
    assert!(ep.starts_with("tcp://127.0.0.1:") && !ep.ends_with(":*"));
    assert_eq!(s.get_linger().unwrap(), 123);
    assert_eq!(s.get_sndhwm().unwrap(), 11);
    assert_eq!(s.get_rcvhwm().unwrap(), 12);
    assert_eq!(s.get_maxmsgsize().unwrap(), 4096);
    let ivl = s.get_reconnect_ivl().unwrap();
    assert!((250..=500).contains(&ivl), "jittered first delay {ivl}");
    assert_eq!(s.get_reconnect_ivl_max().unwrap(), 9000);
    assert_eq!(s.get_heartbeat_ivl().unwrap(), 1000);
    assert_eq!(s.get_heartbeat_timeout().unwrap(), 3000);
    assert_eq!(s.get_backlog().unwrap(), LISTEN_BACKLOG);
}

/// A socket with thousands of peers leaves liveness to TCP keepalive:
/// no ZMTP heartbeat timers, probes at the heartbeat interval, given
/// up after the timeout.
#[test]
fn kernel_liveness_sets_keepalive_from_the_heartbeat_and_no_zmtp_heartbeats() {
    let sockets = Sockets::new(SocketOptions {
        heartbeat_ms: 5000,
        heartbeat_timeout_ms: 15_000,
        ..SocketOptions::default()
    });
    let (s, _) = sockets
        .build(zmq::ROUTER)
        .kernel_liveness()
        .bind("tcp://127.0.0.1:*")
        .unwrap();
    assert_eq!(s.get_heartbeat_ivl().unwrap(), 0);
    assert_eq!(
        s.get_heartbeat_timeout().unwrap(),
        -1,
        "libzmq's unset value"
    );
    assert_eq!(s.get_tcp_keepalive().unwrap(), 1);
    assert_eq!(s.get_tcp_keepalive_idle().unwrap(), 5);
    assert_eq!(s.get_tcp_keepalive_intvl().unwrap(), 5);
    assert_eq!(s.get_tcp_keepalive_cnt().unwrap(), 3);
    // Other sockets keep ZMTP heartbeats, without a TTL for the peer.
    let (z, _) = sockets
        .build(zmq::DEALER)
        .bind("tcp://127.0.0.1:*")
        .unwrap();
    assert_eq!(z.get_heartbeat_ivl().unwrap(), 5000);
    assert_eq!(z.get_heartbeat_ttl().unwrap(), 0);
    assert_eq!(z.get_tcp_keepalive().unwrap(), -1, "the OS default");
}

/// `err`, as the binaries print it, names the malformed endpoint and
/// libzmq's reason once.
fn names_the_endpoint_and_the_reason_once(err: &NetError) {
    let chain = crate::error_chain(err);
    let reason = zmq::Error::EINVAL.to_string();
    assert!(chain.contains("tcp://nonsense"), "{chain}");
    assert_eq!(chain.matches(&reason).count(), 1, "{chain}");
}

#[test]
fn bind_and_connect_errors_name_the_endpoint_and_libzmqs_reason_once() {
    let sockets = Sockets::new(SocketOptions::default());
    let Err(err) = sockets.build(zmq::PUB).bind("tcp://nonsense") else {
        panic!("binding a malformed endpoint succeeded");
    };
    names_the_endpoint_and_the_reason_once(&err);
    let Err(err) = sockets.build(zmq::DEALER).connect("tcp://nonsense") else {
        panic!("connecting to a malformed endpoint succeeded");
    };
    names_the_endpoint_and_the_reason_once(&err);
}

mod curve {
    /// The libzmq we link is 4.3.5 with CURVE compiled in (the targets
    /// issue), and a CURVE handshake completes between two of our sockets.
    #[test]
    fn libzmq_has_curve_and_a_handshake_completes() {
        assert!(
            zmq::has("curve").unwrap_or(false),
            "libzmq was built without CURVE"
        );
        assert_eq!(zmq::version(), (4, 3, 5));
        let ctx = zmq::Context::new();
        let server_keys = zmq::CurveKeyPair::new().expect("server key pair");
        let client_keys = zmq::CurveKeyPair::new().expect("client key pair");
        let server = ctx.socket(zmq::REP).unwrap();
        server.set_curve_server(true).unwrap();
        server.set_curve_secretkey(&server_keys.secret_key).unwrap();
        server.set_linger(0).unwrap();
        server.bind("tcp://127.0.0.1:*").unwrap();
        let ep = server.get_last_endpoint().unwrap().unwrap();
        let client = ctx.socket(zmq::REQ).unwrap();
        client.set_curve_serverkey(&server_keys.public_key).unwrap();
        client.set_curve_publickey(&client_keys.public_key).unwrap();
        client.set_curve_secretkey(&client_keys.secret_key).unwrap();
        client.set_linger(0).unwrap();
        client.set_rcvtimeo(10_000).unwrap();
        server.set_rcvtimeo(10_000).unwrap();
        client.connect(&ep).unwrap();
        client.send("over curve", 0).unwrap();
        let got = server.recv_msg(0).expect("the request arrives over CURVE");
        assert_eq!(&*got, b"over curve");
        assert_eq!(server.get_mechanism().unwrap(), zmq::Mechanism::ZMQ_CURVE);
        server.send("ok", 0).unwrap();
        assert_eq!(client.recv_bytes(0).unwrap(), b"ok");
    }
}
