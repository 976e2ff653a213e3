//! Telemetry into the stream, and streams read back in order.

use super::*;

/// Puts one batch on the stream (as line protocol, the exact batch in a
/// header) and waits for JetStream's ack.
pub(super) async fn publish(
    shared: &Shared,
    device: &str,
    batch: &fleetmq_protocol::Batch,
    body: &[u8],
) -> Replicated {
    let seq = batch.seq;
    let lines = crate::cluster::lines::batch_lines(device, batch);
    let msg = jetstream::message::PublishMessage::build()
        .message_id(batch_id(device, seq))
        .header(HEADER_DEVICE, device)
        .header(HEADER_SEQ, seq.to_string().as_str())
        .header(
            HEADER_BATCH,
            base64::engine::general_purpose::STANDARD
                .encode(body)
                .as_str(),
        )
        .payload(lines.into());
    let subject = format!("{SUBJECT_PREFIX}{device}");
    let ack = match shared.js.send_publish(subject, msg).await {
        Ok(ack) => ack.await,
        Err(e) => return Replicated::Failed(format!("publishing: {e}")),
    };
    match ack {
        Ok(a) if a.duplicate => Replicated::Duplicate,
        Ok(_) => Replicated::Stored,
        Err(e) => Replicated::Failed(format!("JetStream did not ack: {e}")),
    }
}

/// What a stream reader reads: which stream, and what it makes of it.
#[derive(Clone, Copy)]
pub(super) struct Reading {
    stream: &'static str,
    subjects: &'static str,
    /// A chunk of messages for the loop (and the stream sequence of the
    /// last); a message it cannot read is logged and skipped.
    chunk: fn(&[jetstream::Message], u64) -> FromCluster,
}

/// The telemetry stream: (device, body) per batch.
pub(super) const TELEMETRY: Reading = Reading {
    stream: STREAM,
    subjects: "fleetmq.telemetry.>",
    chunk: |messages, last| FromCluster::Stream {
        batches: messages.iter().filter_map(exact_batch).collect(),
        last,
    },
};

/// The configuration stream: each event with its sequence (an edit's
/// version).
pub(super) const CONFIG_EVENTS: Reading = Reading {
    stream: crate::cluster::config::CONFIG_STREAM,
    subjects: crate::cluster::config::CONFIG_SUBJECT,
    chunk: |messages, last| FromCluster::ConfigEvents {
        events: messages.iter().filter_map(sequenced).collect(),
        last,
    },
};

/// The job events stream: each event with its sequence (a new job's id).
pub(super) const JOB_EVENTS: Reading = Reading {
    stream: crate::cluster::jobs::EVENTS_STREAM,
    subjects: crate::cluster::jobs::EVENTS_SUBJECT,
    chunk: |messages, last| FromCluster::JobEvents {
        events: messages.iter().filter_map(sequenced).collect(),
        last,
    },
};

/// A message's stream sequence and payload.
fn sequenced(m: &jetstream::Message) -> Option<(u64, Vec<u8>)> {
    Some((m.info().ok()?.stream_sequence, m.payload.to_vec()))
}

/// Reads a whole stream in order from after `after`, handing the loop
/// chunks; waits when the loop has not taken them.
pub(super) async fn read_stream(
    shared: Shared,
    reading: Reading,
    tx: mpsc::Sender<FromCluster>,
    mut after: u64,
) {
    loop {
        match read_stream_once(&shared, reading, &tx, &mut after).await {
            Ok(()) => return,
            Err(e) => {
                warn!(stream = reading.stream, error = %e, after, "reading a stream stopped; reading again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

pub(super) async fn read_stream_once(
    shared: &Shared,
    reading: Reading,
    tx: &mpsc::Sender<FromCluster>,
    after: &mut u64,
) -> Result<(), String> {
    let stream = shared
        .js
        .get_stream(reading.stream)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: reading.subjects.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: *after + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| e.to_string())?
        .ready_chunks(STREAM_CHUNK);
    loop {
        let chunk = match tokio::time::timeout(READ_STALL, messages.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                // Quiet, or stalled (a server it read from died): if the
                // stream has moved on past us, read again from here.
                let last = shared
                    .js
                    .get_stream(reading.stream)
                    .await
                    .map_err(|e| e.to_string())?
                    .cached_info()
                    .state
                    .last_sequence;
                if last > *after {
                    return Err(format!(
                        "no message for {READ_STALL:?} while the stream is at {last}, past {after}"
                    ));
                }
                continue;
            }
        };
        let mut read = Vec::with_capacity(chunk.len());
        let mut last = *after;
        for m in chunk {
            let m = m.map_err(|e| e.to_string())?;
            last = last.max(m.info().map_err(|e| e.to_string())?.stream_sequence);
            read.push(m);
        }
        if tx.send((reading.chunk)(&read, last)).await.is_err() {
            return Ok(());
        }
        shared.out.poke();
        *after = last;
    }
    Err("the stream's messages ended".into())
}

/// The device and postcard body a telemetry message carries.
pub(super) fn exact_batch(m: &jetstream::Message) -> Option<(String, Vec<u8>)> {
    let found = exact_batch_of(m);
    if found.is_none() {
        warn!("a telemetry message without a readable Fleetmq-Batch header was skipped");
    }
    found
}

pub(super) fn exact_batch_of(m: &jetstream::Message) -> Option<(String, Vec<u8>)> {
    let headers = m.headers.as_ref()?;
    let device = headers.get(HEADER_DEVICE)?.as_str().to_string();
    let body = base64::engine::general_purpose::STANDARD
        .decode(headers.get(HEADER_BATCH)?.as_str())
        .ok()?;
    Some((device, body))
}
