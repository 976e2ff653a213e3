//! Work-queue jobs: submitted to the queue, taken one at a time, settled.

use super::*;

/// Puts a job on the queue (its id: the stream sequence) and says so on
/// the events stream. A retried request (same client and request id) is
/// the same message to JetStream within the dedupe window.
pub(super) async fn submit_job(
    shared: &Shared,
    client: &[u8],
    request_id: u64,
    submission: Vec<u8>,
) -> Result<u64, String> {
    let parsed: fleetmq_protocol::JobSubmission =
        serde_json::from_slice(&submission).map_err(|e| e.to_string())?;
    let retry_id = format!(
        "{}/{}/{request_id}",
        shared.name,
        base64::engine::general_purpose::STANDARD.encode(client)
    );
    let msg = jetstream::message::PublishMessage::build()
        .message_id(retry_id)
        .payload(submission.into());
    let ack = shared
        .js
        .send_publish(JOBS_SUBJECT, msg)
        .await
        .map_err(|e| format!("the cluster did not take the job: {e}"))?
        .await
        .map_err(|e| format!("the cluster did not take the job: {e}"))?;
    if !ack.duplicate {
        let event = crate::cluster::jobs::JobEvent::Submitted {
            id: ack.sequence,
            submission: parsed,
            at_ms: crate::cluster::now_ms(),
        };
        publish_event(shared, event.encode()).await;
    }
    Ok(ack.sequence)
}

/// One job from the queue, if one is waiting.
pub(super) async fn take_job(shared: &Shared) -> FromCluster {
    let fetched = shared
        .jobs
        .fetch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await;
    let mut messages = match fetched {
        Ok(m) => m,
        Err(e) => {
            debug!(error = %e, "could not take a job from the queue");
            return FromCluster::NoJob;
        }
    };
    let Some(Ok(msg)) = messages.next().await else {
        return FromCluster::NoJob;
    };
    let Ok(info) = msg.info() else {
        return FromCluster::NoJob;
    };
    let (id, attempt) = (
        info.stream_sequence,
        u32::try_from(info.delivered).unwrap_or(u32::MAX),
    );
    let submission = msg.payload.to_vec();
    let Ok(mut taken) = shared.taken.lock() else {
        return FromCluster::NoJob;
    };
    taken.next += 1;
    let handle = taken.next;
    taken.messages.insert(handle, msg);
    FromCluster::Job {
        handle,
        id,
        attempt,
        submission,
    }
}

/// Ends a taken job with `kind` (done, back in the queue, or failed for
/// good), telling every front-end `event` if there is one.
pub(super) async fn job_over(shared: &Shared, handle: u64, kind: AckKind, event: Option<Vec<u8>>) {
    let msg = shared
        .taken
        .lock()
        .ok()
        .and_then(|mut t| t.messages.remove(&handle));
    if let Some(event) = event {
        publish_event(shared, event).await;
    }
    let Some(msg) = msg else { return };
    let done = match kind {
        AckKind::Ack => msg.double_ack().await,
        other => msg.ack_with(other).await,
    };
    if let Err(e) = done {
        warn!(error = %e, "could not settle a job with the cluster; it is delivered again after its lease");
    }
}

pub(super) async fn publish_event(shared: &Shared, event: Vec<u8>) {
    let sent = match shared.js.publish(EVENTS_SUBJECT, event.into()).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        warn!(error = %e, "could not record a job event in the cluster");
    }
}
