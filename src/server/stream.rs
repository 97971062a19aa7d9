//! `GET /api/stream`: live score changes as Server-Sent Events.
//!
//! One hub task folds the worker's score changes per lead and publishes at most one frame
//! per interval (100 ms by default), serialised once and shared by every client. A frame is
//! an SSE `leadUpdated` event whose data is an array of `{leadId, score, delta, eventType,
//! updatedAt}`, one per changed lead, and whose id is `<server run>-<frame number>`.
//! Reconnecting browsers send `Last-Event-ID` and get the frames they missed from a bounded
//! replay buffer; if they fell too far behind, or the server restarted, they get a `reload`
//! event and refetch. Clients read from a broadcast channel that never blocks the hub: a
//! stalled client only ever hurts itself (it lags, and is told to reload).

use super::service::UpdateBatch;
use crate::domain::live::{Coalescer, Replay, ReplayBuffer};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
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

type Frame = (u64, Arc<str>);

pub struct StreamHub {
    /// Identifies this server run; ids from another run cannot be replayed.
    epoch: String,
    buffer: Mutex<ReplayBuffer<Arc<str>>>,
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
        interval: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut pending = Coalescer::default();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    batch = changes.recv() => match batch {
                        Ok(batch) => batch.iter().for_each(|c| pending.add(c)),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "live stream fell behind the worker; clients will reload");
                            hub.publish_reload();
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tick.tick() => {
                        if !pending.is_empty() {
                            hub.publish(&pending.flush());
                        }
                    }
                    _ = shutdown.changed() => break,
                }
            }
        })
    }

    fn publish(&self, updates: &[crate::domain::live::LeadUpdate]) {
        let data: Arc<str> = serde_json::to_string(updates).unwrap_or_else(|_| "[]".into()).into();
        let mut buffer = self.buffer.lock().unwrap();
        let id = buffer.push(data.clone());
        // Sent under the lock, so a subscriber sees each frame either in its replay or live.
        let _ = self.live.send((id, data));
    }

    /// Tells every client to refetch (id 0 marks a control frame, never replayed).
    fn publish_reload(&self) {
        let _ = self.live.send((0, Arc::from("")));
    }

    fn event_id(&self, id: u64) -> String {
        format!("{}-{id}", self.epoch)
    }

    /// The events a client starts with, and its live feed.
    fn subscribe(&self, last_event_id: Option<&str>) -> (Vec<Event>, broadcast::Receiver<Frame>, u64) {
        let buffer = self.buffer.lock().unwrap();
        let rx = self.live.subscribe();
        let current = buffer.last_id();
        let mut first = Vec::new();
        let seen = match last_event_id.map(|l| l.rsplit_once('-')) {
            None => None,
            Some(Some((epoch, n))) if epoch == self.epoch => n.parse::<u64>().ok(),
            Some(_) => Some(u64::MAX), // another server run, or garbage: cannot resume
        };
        match seen.map(|s| buffer.after(s)) {
            None => {}
            Some(Replay::Frames(frames)) => {
                first.extend(frames.into_iter().map(|(id, data)| self.frame_event(id, &data)));
            }
            Some(Replay::TooOld) => first.push(reload_event("missed updates; reload")),
        }
        // `ready` carries the current id, so even a quiet connection can resume exactly.
        first.push(
            Event::default()
                .event("ready")
                .id(self.event_id(current))
                .retry(Duration::from_millis(1000))
                .data(format!(r#"{{"epoch":"{}","id":{current}}}"#, self.epoch)),
        );
        (first, rx, current)
    }

    fn frame_event(&self, id: u64, data: &str) -> Event {
        Event::default().event("leadUpdated").id(self.event_id(id)).data(data)
    }
}

fn reload_event(reason: &str) -> Event {
    Event::default().event("reload").data(format!(r#"{{"reason":"{reason}"}}"#))
}

/// The SSE endpoint.
pub async fn stream_handler(State(hub): State<Arc<StreamHub>>, headers: HeaderMap) -> impl IntoResponse {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (first, rx, current) = hub.subscribe(last.as_deref());
    Sse::new(client_stream(hub, first, rx, current)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn client_stream(
    hub: Arc<StreamHub>,
    first: Vec<Event>,
    rx: broadcast::Receiver<Frame>,
    current: u64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let queued: VecDeque<Event> = first.into();
    let shutdown = hub.shutdown.clone();
    stream::unfold((queued, rx, current, shutdown), move |(mut queued, mut rx, mut sent, mut shutdown)| {
        let hub = hub.clone();
        async move {
            loop {
                if let Some(event) = queued.pop_front() {
                    return Some((event, (queued, rx, sent, shutdown)));
                }
                let frame = tokio::select! {
                    frame = rx.recv() => frame,
                    _ = shutdown.wait_for(|stop| *stop) => return None,
                };
                match frame {
                    Ok((0, _)) => queued.push_back(reload_event("server fell behind; reload")),
                    Ok((id, data)) if id > sent => {
                        sent = id;
                        queued.push_back(hub.frame_event(id, &data));
                    }
                    Ok(_) => {} // already sent in the replay
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        queued.push_back(reload_event("client fell behind; reload"));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    })
    .map(Ok)
}
