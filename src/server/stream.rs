//! `GET /api/stream`: live score changes as Server-Sent Events.
//!
//! One hub task folds the worker's score changes per lead and publishes at most one frame
//! per interval (100 ms by default). A frame is an SSE `leadUpdated` event whose data is an
//! array of `{leadId, score, delta, eventType, updatedAt}`, one per changed lead, with id
//! `<server run>-<frame number>`. A frame carries at most [`MAX_FRAME_UPDATES`] leads — the
//! highest scores — followed by a `truncated` event saying how many were left out, so views
//! that filter differently know to refetch. Each frame is encoded once into shared bytes that
//! every client's connection writes as they are: a thousand clients cost a thousand socket
//! writes, not a thousand copies.
//!
//! A frame also carries a `stageChanged` event `{leadId, from, to, score}` for each lead whose
//! changes since the last frame moved it to another stage of the ladder; `leadUpdated` items
//! name each lead's `stage`.
//!
//! Reconnecting browsers send `Last-Event-ID` and get the frames they missed from a bounded
//! replay buffer; if they fell too far behind, or the server restarted, they get a `reload`
//! event and refetch. Clients read from a broadcast channel that never blocks the hub: a
//! stalled client only ever hurts itself (it lags, and is told to reload).

use crate::domain::live::{Coalescer, LeadMerged, LeadUpdate, Replay, ReplayBuffer, StageMoved, StageMoves};
use crate::domain::stages::{stage_for, Stage};
use crate::service::UpdateBatch;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Frames kept for replay: a minute at the default 10 frames per second.
const REPLAY_FRAMES: usize = 600;
/// Frames a client may fall behind before it is told to reload.
const CLIENT_LAG_FRAMES: usize = 256;
/// Leads per frame; the dashboard shows at most 500 rows and refetches when told.
pub const MAX_FRAME_UPDATES: usize = 100;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A published frame: its number (0 = a control message, never replayed) and its bytes.
type Frame = (u64, Bytes);

pub struct StreamHub {
    /// Identifies this server run; ids from another run cannot be replayed.
    epoch: String,
    buffer: Mutex<ReplayBuffer<Bytes>>,
    live: broadcast::Sender<Frame>,
    /// Server shutdown: open streams end so graceful shutdown does not wait on them forever.
    shutdown: watch::Receiver<bool>,
}

impl StreamHub {
    pub fn new(shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let epoch = format!("{:x}", chrono::Utc::now().timestamp_micros());
        Arc::new(Self {
            epoch,
            buffer: Mutex::new(ReplayBuffer::new(REPLAY_FRAMES)),
            live: broadcast::channel(CLIENT_LAG_FRAMES).0,
            shutdown,
        })
    }

    /// Folds score changes and publishes a frame per `interval` while there were any.
    pub fn start(
        self: &Arc<Self>,
        mut changes: broadcast::Receiver<UpdateBatch>,
        ladder: watch::Receiver<Arc<Vec<Stage>>>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut pending = Coalescer::default();
            let mut moves = StageMoves::default();
            let mut merges: Vec<LeadMerged> = Vec::new();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    batch = changes.recv() => match batch {
                        Ok(batch) => {
                            let stages = ladder.borrow().clone();
                            for change in batch.iter() {
                                pending.add(change);
                                moves.add(change, &stages);
                                if let Some(from) = &change.merged_from {
                                    merges.push(LeadMerged { from: from.clone(), to: change.lead_id.clone(), score: change.score });
                                }
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "live stream fell behind the worker; clients will reload");
                            let _ = hub.live.send((0, sse("reload", None, r#"{"reason":"server fell behind; reload"}"#)));
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tick.tick() => {
                        if !pending.is_empty() {
                            let (mut updates, omitted) = pending.flush_top(MAX_FRAME_UPDATES);
                            let stages = ladder.borrow().clone();
                            for u in &mut updates {
                                u.stage = stage_for(&stages, u.score).to_string();
                            }
                            hub.publish(&updates, omitted, &moves.flush(), &std::mem::take(&mut merges));
                        }
                    }
                    _ = shutdown.changed() => break,
                }
            }
        })
    }

    fn publish(&self, updates: &[LeadUpdate], omitted: usize, moved: &[StageMoved], merged: &[LeadMerged]) {
        let data = serde_json::to_string(updates).unwrap_or_else(|_| "[]".into());
        let mut buffer = self.buffer.lock().unwrap();
        let id = buffer.last_id() + 1;
        let mut bytes = sse("leadUpdated", Some(&self.event_id(id)), &data).to_vec();
        if omitted > 0 {
            bytes.extend_from_slice(&sse("truncated", None, &format!(r#"{{"omitted":{omitted}}}"#)));
        }
        // Moves are bounded like updates: past the bound, clients are told how many they missed.
        for m in moved.iter().take(MAX_FRAME_UPDATES) {
            bytes.extend_from_slice(&sse("stageChanged", None, &serde_json::to_string(m).unwrap_or_default()));
        }
        if moved.len() > MAX_FRAME_UPDATES {
            let omitted = moved.len() - MAX_FRAME_UPDATES;
            bytes.extend_from_slice(&sse("truncated", None, &format!(r#"{{"omittedStageChanges":{omitted}}}"#)));
        }
        // Merges are rare (one per identified visitor) and each changes which leads exist.
        for m in merged {
            bytes.extend_from_slice(&sse("leadMerged", None, &serde_json::to_string(m).unwrap_or_default()));
        }
        let bytes = Bytes::from(bytes);
        buffer.push(bytes.clone());
        // Sent under the lock, so a subscriber sees each frame either in its replay or live.
        let _ = self.live.send((id, bytes));
    }

    fn event_id(&self, id: u64) -> String {
        format!("{}-{id}", self.epoch)
    }

    /// What a client starts with (replay, then `ready`), and its live feed.
    fn subscribe(&self, last_event_id: Option<&str>) -> (Vec<Bytes>, broadcast::Receiver<Frame>, u64) {
        let buffer = self.buffer.lock().unwrap();
        let rx = self.live.subscribe();
        let current = buffer.last_id();
        let mut first = vec![Bytes::from_static(b"retry: 1000\n\n")];
        let seen = match last_event_id.map(|l| l.rsplit_once('-')) {
            None => None,
            Some(Some((epoch, n))) if epoch == self.epoch => n.parse::<u64>().ok(),
            Some(_) => Some(u64::MAX), // another server run, or garbage: cannot resume
        };
        match seen.map(|s| buffer.after(s)) {
            None => {}
            Some(Replay::Frames(frames)) => first.extend(frames.into_iter().map(|(_, bytes)| bytes)),
            Some(Replay::TooOld) => first.push(sse("reload", None, r#"{"reason":"missed updates; reload"}"#)),
        }
        // `ready` carries the current id, so even a quiet connection can resume exactly.
        let ready = format!(r#"{{"epoch":"{}","id":{current}}}"#, self.epoch);
        first.push(sse("ready", Some(&self.event_id(current)), &ready));
        (first, rx, current)
    }
}

/// Encodes one SSE event. `data` is single-line JSON.
fn sse(event: &str, id: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + event.len() + 40);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: ");
    out.push_str(event);
    out.push_str("\ndata: ");
    out.push_str(data);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// The SSE endpoint.
#[utoipa::path(get, path = "/api/stream", tag = "live",
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this frame.")),
    responses((status = 200, description = "Server-Sent Events: `scores` frames of score changes, `stageChanged`, `leadMerged`, `resync`.", content_type = "text/event-stream", body = String)))]
pub async fn stream_handler(State(hub): State<Arc<StreamHub>>, headers: HeaderMap) -> Response {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (first, rx, current) = hub.subscribe(last.as_deref());
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(counted(client_stream(hub.shutdown.clone(), first, rx, current))),
    )
        .into_response()
}

/// The stream, counted as an open client while it lasts (`leadscore_stream_clients`).
fn counted<S: Stream>(stream: S) -> impl Stream<Item = S::Item> {
    let open = crate::service::metrics::StreamClient::open();
    stream.map(move |item| {
        let _held = &open;
        item
    })
}

fn client_stream(
    shutdown: watch::Receiver<bool>,
    first: Vec<Bytes>,
    rx: broadcast::Receiver<Frame>,
    current: u64,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let queued: VecDeque<Bytes> = first.into();
    stream::unfold((queued, rx, current, shutdown), |(mut queued, mut rx, mut sent, mut shutdown)| async move {
        loop {
            if let Some(bytes) = queued.pop_front() {
                return Some((Ok(bytes), (queued, rx, sent, shutdown)));
            }
            let frame = tokio::select! {
                frame = rx.recv() => frame,
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    queued.push_back(Bytes::from_static(b": keep-alive\n\n"));
                    continue;
                }
                _ = shutdown.wait_for(|stop| *stop) => return None,
            };
            match frame {
                Ok((0, control)) => queued.push_back(control),
                Ok((id, bytes)) if id > sent => {
                    sent = id;
                    queued.push_back(bytes);
                }
                Ok(_) => {} // already sent in the replay
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    queued.push_back(sse("reload", None, r#"{"reason":"client fell behind; reload"}"#));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_encoded_as_sse() {
        assert_eq!(&sse("ready", Some("a-1"), "{}")[..], b"id: a-1\nevent: ready\ndata: {}\n\n");
        assert_eq!(&sse("reload", None, "{}")[..], b"event: reload\ndata: {}\n\n");
    }

    #[tokio::test]
    async fn replay_and_truncation_notices() {
        let (_tx, rx) = watch::channel(false);
        let hub = StreamHub::new(rx);
        let update = |id: &str| LeadUpdate {
            lead_id: id.into(),
            score: 1,
            delta: 1,
            event_type: "t".into(),
            updated_at: 0,
            event_id: "e".into(),
            events: 1,
            stage: "Cold".into(),
        };
        hub.publish(&[update("a")], 0, &[], &[]);
        let moved = StageMoved { lead_id: "b".into(), from: "Cold".into(), to: "Warm".into(), score: 60 };
        hub.publish(&[update("b")], 3, &[moved], &[]);
        let (first, _, current) = hub.subscribe(Some(&hub.event_id(1)));
        assert_eq!(current, 2);
        let text: Vec<String> = first.iter().map(|b| String::from_utf8_lossy(b).to_string()).collect();
        assert_eq!(text[0], "retry: 1000\n\n");
        assert!(text[1].contains(r#""leadId":"b""#) && text[1].contains("event: truncated\ndata: {\"omitted\":3}"));
        assert!(
            text[1].contains(
                r#"event: stageChanged
data: {"leadId":"b","from":"Cold","to":"Warm","score":60}"#
            ),
            "stage moves travel in their frame, replayed with it: {}",
            text[1]
        );
        assert!(text[2].starts_with(&format!("id: {}-2\nevent: ready", hub.epoch)));
        let (first, _, _) = hub.subscribe(Some("other-1"));
        assert!(String::from_utf8_lossy(&first[1]).starts_with("event: reload"));
    }
}
