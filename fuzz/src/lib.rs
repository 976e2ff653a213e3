//! What every fuzz target checks, for one channel type: decoding any bytes
//! returns a value or an error and never panics; whatever decodes encodes
//! again, and that encoding decodes to a value that encodes to the same
//! bytes (compared as bytes, since a float may be NaN). A telemetry batch
//! that passes `validate` can then be read without panicking, as the hub
//! reads it.

/// Expands to the body of a fuzz target for channel type `$channel`.
#[macro_export]
macro_rules! check_channel {
    ($channel:ty, $data:expr) => {{
        if let Ok(msg) = <$channel>::decode($data) {
            let once = msg.encode().expect("a decoded message encodes");
            let back = <$channel>::decode(&once).expect("our own encoding decodes");
            let twice = back.encode().expect("it encodes again");
            assert_eq!(once, twice, "encode(decode(encode(m))) differs");
            $crate::inspect(&msg);
        }
    }};
}

/// Reads a decoded message the way the hub and agent do.
pub fn inspect<T: std::any::Any>(msg: &T) {
    use fleetmq_protocol::{Batch, LogBatch, Upstream};
    let any = msg as &dyn std::any::Any;
    let batch: Option<&Batch> = match any.downcast_ref::<Upstream>() {
        Some(Upstream::Batch(b) | Upstream::LogBatch(LogBatch(b))) => Some(b),
        _ => None,
    };
    if let Some(b) = batch
        && b.validate().is_ok()
    {
        for s in b.resolved_samples() {
            std::hint::black_box(s);
        }
        for c in b.resolved_chat() {
            std::hint::black_box(c);
        }
        for l in b.resolved_logs() {
            std::hint::black_box(l);
        }
    }
}
