//! Memory the allocator holds but no longer uses goes back to the system once a minute.
//! glibc keeps freed memory in per-thread arenas, and the store's reads run on the blocking
//! pool's threads, which come and go: the freed pages stay spread over the arenas, so in the
//! soak RSS rose for its first ~20 minutes while nothing leaked (BENCHMARKS.md, "Soak").
//! `malloc_trim` releases the whole free pages of every arena, in milliseconds.

use std::time::Duration;

pub async fn return_freed_memory(every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        trim().await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
async fn trim() {
    // SAFETY: malloc_trim takes a size and touches only the allocator's own state.
    let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
async fn trim() {}
