//! The driver against real sockets: what libzmq options it sets still carry
//! every message.

use super::*;
use fleetmq_net::SocketOptions;

/// The quiet sockets' small read and write batches still carry
/// messages many times their size, and many small ones, whole and in
/// order, both ways.
#[test]
fn small_batch_buffers_carry_large_and_small_messages_whole() {
    let sockets = Sockets::new(SocketOptions::default());
    let (router, ep) = sockets
        .build(zmq::ROUTER)
        .batch_sizes(QUIET_BATCH, QUIET_BATCH)
        .bind("tcp://127.0.0.1:*")
        .unwrap();
    let dealer = sockets
        .build(zmq::DEALER)
        .routing_id(b"pi-1")
        .connect(&ep)
        .unwrap();
    router.set_rcvtimeo(10_000).unwrap();
    dealer.set_rcvtimeo(10_000).unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    dealer.send(&big[..], 0).unwrap();
    for i in 0..300u32 {
        dealer.send(&i.to_le_bytes()[..], 0).unwrap();
    }
    let got = router.recv_multipart(0).unwrap();
    assert_eq!(got[0], b"pi-1");
    assert!(got[1] == big, "the large message arrived changed");
    for i in 0..300u32 {
        assert_eq!(router.recv_multipart(0).unwrap()[1], i.to_le_bytes());
    }
    router.send_multipart([&b"pi-1"[..], &big[..]], 0).unwrap();
    assert!(
        dealer.recv_bytes(0).unwrap() == big,
        "the large reply arrived changed"
    );
}
