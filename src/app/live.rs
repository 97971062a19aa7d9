//! The browser's end of `/api/stream`: one EventSource per page, shared through context.
//! Pages read `frame` (the latest coalesced updates) and `resync` (bumped when the stream
//! says the client missed something and must refetch, or, throttled, that a frame was
//! truncated). The browser's EventSource resumes
//! with `Last-Event-ID` by itself; if it gives up, we open a new one with a backoff.

use crate::domain::live::LeadUpdate;
use leptos::prelude::*;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Live,
    Reconnecting,
}

impl Connection {
    /// For `data-state` (styles and tests).
    pub fn name(self) -> &'static str {
        match self {
            Connection::Connecting => "connecting",
            Connection::Live => "live",
            Connection::Reconnecting => "reconnecting",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Connection::Connecting => "Connecting…",
            Connection::Live => "Live",
            Connection::Reconnecting => "Reconnecting…",
        }
    }
}

#[derive(Clone, Copy)]
pub struct Live {
    pub connection: RwSignal<Connection>,
    pub frame: RwSignal<Option<Arc<Vec<LeadUpdate>>>>,
    pub resync: RwSignal<u64>,
}

impl Live {
    pub fn provide() -> Self {
        let live = Live {
            connection: RwSignal::new(Connection::Connecting),
            frame: RwSignal::new(None),
            resync: RwSignal::new(0),
        };
        provide_context(live);
        live
    }

    pub fn get() -> Self {
        expect_context::<Live>()
    }

    /// Opens the stream; call once, in the browser.
    #[cfg(feature = "hydrate")]
    pub fn connect(self) {
        leptos::task::spawn_local(client::run(self));
    }
}

#[cfg(feature = "hydrate")]
mod client {
    use super::{Connection, Live};
    use crate::domain::live::LeadUpdate;
    use futures::StreamExt;
    use gloo_net::eventsource::{futures::EventSource, State};
    use leptos::prelude::*;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::time::Duration;

    async fn sleep(d: Duration) {
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        set_timeout(
            move || {
                let _ = tx.send(());
            },
            d,
        );
        let _ = rx.await;
    }

    pub async fn run(live: Live) {
        let mut backoff = Duration::from_millis(500);
        let mut first = true;
        loop {
            if !first {
                // A new connection cannot resume: whatever happened meanwhile must be refetched.
                live.resync.update(|n| *n += 1);
            }
            first = false;
            let Ok(mut source) = EventSource::new("/api/stream") else {
                sleep(backoff).await;
                continue;
            };
            let subscriptions: Vec<_> = ["ready", "leadUpdated", "truncated", "reload", "leadMerged"]
                .iter()
                .filter_map(|kind| source.subscribe(*kind).ok())
                .collect();
            let source = Rc::new(source);
            let watcher = Rc::downgrade(&source);
            // While the browser retries on its own, the source sits in Connecting: show it.
            leptos::task::spawn_local(async move {
                while let Some(source) = watcher.upgrade() {
                    if source.state() == State::Connecting {
                        live.connection.set(Connection::Reconnecting);
                    }
                    drop(source);
                    sleep(Duration::from_millis(500)).await;
                }
            });
            let mut messages = futures::stream::select_all(subscriptions);
            let mut last_truncated_resync = 0.0;
            while let Some(message) = messages.next().await {
                let Ok((kind, event)) = message else { break };
                let data = event.data().as_string().unwrap_or_default();
                match kind.as_str() {
                    // Sent on every (re)connect, after any replay of missed frames.
                    "ready" => {
                        backoff = Duration::from_millis(500);
                        live.connection.set(Connection::Live);
                    }
                    "leadUpdated" => {
                        if let Ok(updates) = serde_json::from_str::<Vec<LeadUpdate>>(&data) {
                            live.connection.set(Connection::Live);
                            live.frame.set(Some(Arc::new(updates)));
                        }
                    }
                    // A lead is gone (merged into another): views refetch.
                    "reload" | "leadMerged" => live.resync.update(|n| *n += 1),
                    // The frame left some leads out: views may refetch, at most every 2 s.
                    "truncated" => {
                        let now = js_sys::Date::now();
                        if now - last_truncated_resync > 2000.0 {
                            last_truncated_resync = now;
                            live.resync.update(|n| *n += 1);
                        }
                    }
                    _ => {}
                }
            }
            drop(messages);
            drop(source);
            live.connection.set(Connection::Reconnecting);
            sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}
