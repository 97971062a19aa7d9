//! Admission control: how many requests the server handles at once, how long each may take,
//! and how many bytes of request bodies it holds at once.
//!
//! Requests: past `MAX_CONCURRENT_REQUESTS` being handled, a request is turned away at once
//! (503, `Retry-After`) rather than queued without limit; a handler that takes longer than
//! `REQUEST_TIMEOUT_SECONDS` (a database that hangs) answers 503 too. A live stream counts
//! only while it starts: its response streams outside the handler.
//!
//! Bodies:
//! Every body is read into memory before it is parsed, so concurrent bodies are what memory
//! grows with. Each request reserves room for its size (its `Content-Length`, or the route's
//! limit when it does not say) from one budget before reading, and holds it until it is
//! answered. The room is [`COST_FACTOR`] times the size: while a batch is handled the server
//! also holds its checked events and the store's copy of them (measured under overload:
//! reserving the bare size let peak memory reach 6–7 times the budget). When
//! the budget is spent, a request waits a moment for room, then gets `503` with
//! `Retry-After`: back-pressure a client can act on, instead of memory growing until the
//! process dies.

use crate::domain::error::ApiError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Memory a request holds per byte of body while it is read, checked and stored.
pub const COST_FACTOR: usize = 3;
/// How long a request waits for room before it is told to come back.
const WAIT: Duration = Duration::from_secs(5);
/// What `Retry-After` tells a client turned away.
const RETRY_AFTER_SECONDS: u64 = 2;

#[derive(Clone, Debug)]
pub struct BodyBudget {
    room: Arc<Semaphore>,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        let bytes = bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Self { room: Arc::new(Semaphore::new(bytes)), bytes }
    }

    /// Reserves room for handling a body of `n` bytes (a body that needs more than the whole
    /// budget takes all of it), waiting up to a few seconds.
    pub async fn reserve(&self, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = n.saturating_mul(COST_FACTOR).clamp(1, self.bytes) as u32;
        match tokio::time::timeout(WAIT, self.room.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy()),
        }
    }

    /// Bytes free right now (for tests and metrics).
    pub fn available(&self) -> usize {
        self.room.available_permits()
    }
}

/// Requests being handled at once, and how long each may take.
#[derive(Clone, Debug)]
pub struct RequestLimits {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl RequestLimits {
    pub fn new(concurrent: usize, timeout: Duration) -> Self {
        Self { slots: Arc::new(Semaphore::new(concurrent.clamp(1, Semaphore::MAX_PERMITS))), timeout }
    }
}

/// The middleware: a slot for the request's handling, within the deadline.
pub async fn limit_requests(
    axum::extract::State(limits): axum::extract::State<RequestLimits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(_slot) = limits.slots.clone().try_acquire_owned() else {
        let mut e = ApiError::new(503, "Server busy", vec![]);
        e.retry_after = Some(1);
        return e.into_response();
    };
    match tokio::time::timeout(limits.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_s = limits.timeout.as_secs(), "a request took too long; answered 503");
            let mut e = ApiError::new(503, "Request took too long", vec![]);
            e.retry_after = Some(RETRY_AFTER_SECONDS);
            e.into_response()
        }
    }
}

fn busy() -> ApiError {
    let mut e = ApiError::field(
        503,
        "Server busy",
        "body",
        format!("too many request bodies in flight; retry in {RETRY_AFTER_SECONDS} s"),
    );
    e.retry_after = Some(RETRY_AFTER_SECONDS);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bodies_wait_for_room_then_are_turned_away_with_retry_after() {
        let budget = BodyBudget::new(3_000);
        let big = budget.reserve(800).await.unwrap();
        assert_eq!(budget.available(), 600, "a body costs {COST_FACTOR} times its size");
        let small = budget.reserve(200).await.unwrap();
        // No room: waits, then 503 with Retry-After (time is paused, so this is instant).
        let refused = budget.reserve(100).await.unwrap_err();
        assert_eq!((refused.status, refused.retry_after), (503, Some(RETRY_AFTER_SECONDS)));
        // Room comes back when a request is answered.
        drop((big, small));
        let again = budget.reserve(5_000).await.expect("larger than the budget: takes all of it");
        assert_eq!(budget.available(), 0);
        drop(again);
        assert_eq!(budget.available(), 3_000);
    }
}
