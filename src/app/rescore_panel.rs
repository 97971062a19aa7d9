//! "Rescore all leads" on the rules page: offered once the rules changed, with the job's
//! progress (done of total, rate, time left). The job runs on the server and its progress is
//! read from there, so the bar picks up where it was after a page reload.

use super::auth::Viewer;
use super::format::utc_minute;
use super::server_fns::{describe, fetch_rescore, start_rescore};
use super::LoadError;
use crate::domain::access::Access;
use crate::domain::rescore::{JobState, RescoreJob, RescoreStatus};
use leptos::prelude::*;
use std::time::Duration;

/// How often a running job's progress is read again.
const POLL: Duration = Duration::from_millis(1000);

#[component]
pub fn RescorePanel(
    /// Bumped by the rules page after a change: whether rules changed is read again.
    rules_changed: ReadSignal<u32>,
) -> impl IntoView {
    let viewer = Viewer::get();
    let tick = RwSignal::new(0u32);
    let status = Resource::new(move || (tick.get(), rules_changed.get()), |_| fetch_rescore());
    let start = Action::new(|_: &()| start_rescore());
    let failure = RwSignal::new(None::<String>);
    Effect::new(move |_| match start.value().get() {
        Some(Ok(_)) => {
            failure.set(None);
            tick.update(|n| *n += 1);
        }
        Some(Err(e)) => failure.set(Some(format!("Not started: {}", describe(&e)))),
        None => {}
    });
    // While a job runs, read its progress again every second — through a failed read too
    // (the server restarting, say) — with one timer at a time.
    let (running, timer) = (StoredValue::new(false), StoredValue::new(false));
    Effect::new(move |_| {
        match status.get() {
            Some(Ok(now)) => running.set_value(now.job.is_some_and(|j| j.state == JobState::Running)),
            Some(Err(_)) => {}
            None => return,
        }
        if running.get_value() && !timer.get_value() {
            timer.set_value(true);
            set_timeout(
                move || {
                    timer.set_value(false);
                    tick.update(|n| *n += 1);
                },
                POLL,
            );
        }
    });
    view! {
        <section class="panel" aria-labelledby="rescore-title" id="rescore">
            <h2 id="rescore-title">"Rescore all leads"</h2>
            <p class="muted">"A rule change applies to events scored from then on. Rescoring replays every stored event with the current rules, limits and decay, in the background: each lead whose score changes gets one “Rescore” entry in its history for the difference. The leaderboard stays live, and new events keep being scored meanwhile."</p>
            {move || failure.get().map(|m| view! { <p class="notice error" role="alert">{m}</p> })}
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let editable = viewer.0.await.is_ok_and(|me| me.may(Access::Edit));
                    match status.await {
                        Err(e) => view! { <LoadError what="the rescore status" error=e/> }.into_any(),
                        Ok(now) => {
                            let running = now.job.as_ref().is_some_and(|j| j.state == JobState::Running);
                            view! {
                                {(now.rules_changed && !running).then(|| view! {
                                    <p class="notice" id="rescore-hint" role="status">"The rules changed since scores were last replayed: past events still count as the rules were when they were scored."</p>
                                })}
                                {editable.then(|| view! {
                                    <button type="button" id="rescore-start"
                                        class:secondary=!now.rules_changed
                                        disabled=move || running || start.pending().get()
                                        on:click=move |_| { start.dispatch(()); }>
                                        {if running { "Rescoring…" } else { "Rescore all leads" }}
                                    </button>
                                })}
                                <JobProgress status=now/>
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn JobProgress(status: RescoreStatus) -> impl IntoView {
    let Some(job) = status.job else {
        return view! { <p class="muted small" id="rescore-progress">"No rescore has run yet."</p> }.into_any();
    };
    let (rate, left) = job.rate(status.now);
    let state = match job.state {
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
    };
    view! {
        <div id="rescore-progress" data-state=state data-processed=job.processed data-total=job.total>
            <div class="progress-row">
                <progress max=job.total.max(1) value=if job.state == JobState::Done { job.total.max(1) } else { job.processed }
                    aria-label="Rescore progress"></progress>
                <span class="small" id="rescore-count">{format!("{} of {} events", grouped(job.processed), grouped(job.total))}</span>
            </div>
            <p class="small" id="rescore-summary">{summary(&job, rate, left)}</p>
        </div>
    }
    .into_any()
}

fn summary(job: &RescoreJob, rate: f64, left: Option<f64>) -> String {
    let rate = format!("{} events/s", grouped(rate.round() as u64));
    match job.state {
        JobState::Running if job.processed >= job.total && job.to_adjust.is_some() => format!(
            "Every event replayed; moving scores: {} of {} leads.",
            grouped(job.adjusted),
            grouped(job.to_adjust.unwrap_or_default())
        ),
        JobState::Running => {
            let left = left.map(|s| format!(", about {} left", duration(s))).unwrap_or_default();
            format!("Rescoring: {:.0} % at {rate}{left}.", job.fraction() * 100.0)
        }
        JobState::Done => {
            let when = job.finished_at.map(utc_minute).unwrap_or_default();
            format!("Done {when}: {} of {} leads changed, at {rate}.", grouped(job.adjusted), grouped(job.leads))
        }
        JobState::Failed => format!(
            "Failed: {}. Start it again: leads already replayed are skipped.",
            job.error.as_deref().unwrap_or("unknown error")
        ),
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.ceil() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(5_000_000), "5,000,000");
        assert_eq!(duration(0.2), "1 s");
        assert_eq!(duration(75.0), "1 min 15 s");
        assert_eq!(duration(3_725.0), "1 h 2 min");
        let mut job = RescoreJob::new("r".into(), 1_000, None, 0);
        job.processed = 250;
        assert_eq!(summary(&job, 50.0, Some(15.0)), "Rescoring: 25 % at 50 events/s, about 15 s left.");
        (job.processed, job.adjusted, job.to_adjust) = (1_000, 1_500, Some(20_000));
        assert_eq!(summary(&job, 50.0, None), "Every event replayed; moving scores: 1,500 of 20,000 leads.");
        job.to_adjust = None;
        assert!(summary(&job, 50.0, None).starts_with("Rescoring: 100 %"), "a job that goes lead by lead");
        job.state = JobState::Failed;
        job.error = Some("store unavailable".into());
        assert_eq!(
            summary(&job, 0.0, None),
            "Failed: store unavailable. Start it again: leads already replayed are skipped."
        );
    }
}
