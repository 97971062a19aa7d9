//! Batch upload of a CSV or JSON file: parsed in the browser, sent in chunks through the
//! `upload_events` server function with a progress bar, then a report of every row.

use super::dashboard::FieldErrors;
use crate::domain::FieldError;
use leptos::prelude::*;

/// Events per request: well under the batch limits, small enough for a smooth progress bar.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const CHUNK: usize = 500;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct UploadReport {
    pub file: String,
    pub total: usize,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    /// (where in the file, eventId, field, problem)
    pub problems: Vec<(String, String, String, String)>,
    /// Set when the upload stopped early; what was accepted before stays accepted.
    pub stopped: Option<String>,
}

#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
struct UploadState {
    busy: RwSignal<bool>,
    progress: RwSignal<(usize, usize)>,
    report: RwSignal<Option<UploadReport>>,
    problems: RwSignal<Vec<FieldError>>,
}

#[component]
pub fn Upload() -> impl IntoView {
    let state = UploadState {
        busy: RwSignal::new(false),
        progress: RwSignal::new((0, 0)),
        report: RwSignal::new(None),
        problems: RwSignal::new(Vec::new()),
    };
    let on_change = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let input: web_sys::HtmlInputElement = ev.target().unwrap().unchecked_into();
            if let Some(file) = input.files().and_then(|files| files.get(0)) {
                leptos::task::spawn_local(client::upload(file, state));
            }
            input.set_value("");
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    };
    let percent = move || {
        let (done, total) = state.progress.get();
        if total == 0 {
            0
        } else {
            done * 100 / total
        }
    };

    view! {
        <section class="panel" aria-labelledby="upload-title">
            <h2 id="upload-title">"Upload events"</h2>
            <p class="muted small">
                "CSV with a header row " <code>"eventId,leadId,eventType,timestamp"</code>
                " (other columns become metadata; a missing eventId or timestamp is generated), or a JSON array of events."
            </p>
            <label class="file">
                "Choose a .csv or .json file"
                <input type="file" name="file" accept=".csv,.json,text/csv,application/json" on:change=on_change disabled=move || state.busy.get()/>
            </label>
            <FieldErrors errors=state.problems/>
            <Show when={move || state.busy.get() || state.progress.get().1 > 0}>
                <div class="progress-row">
                    <progress max="100" value=percent aria-label="Upload progress"></progress>
                    <span class="small">{move || { let (d, t) = state.progress.get(); format!("{d} / {t} events") }}</span>
                </div>
            </Show>
            {move || state.report.get().map(|r| view! { <ReportView report=r/> })}
        </section>
    }
}

#[component]
fn ReportView(report: UploadReport) -> impl IntoView {
    let problems = report.problems.clone();
    view! {
        <div class="upload-report" role="status">
            <p>
                <strong>{report.file.clone()}</strong>": "
                <span class="accepted">{report.accepted}" accepted"</span>", "
                <span class="duplicates">{report.duplicates}" duplicates"</span>", "
                <span class="rejected">{report.rejected}" rejected"</span>
                {format!(" of {} events.", report.total)}
            </p>
            {report.stopped.clone().map(|why| view! { <p class="notice error">{why}</p> })}
            <Show when={let empty = problems.is_empty(); move || !empty}>
                <table class="table compact rejected-rows">
                    <thead><tr><th scope="col">"Row"</th><th scope="col">"eventId"</th><th scope="col">"Field"</th><th scope="col">"Problem"</th></tr></thead>
                    <tbody>
                        {problems.clone().into_iter().map(|(at, id, field, problem)| view! {
                            <tr><td>{at}</td><td>{id}</td><td>{field}</td><td>{problem}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </Show>
        </div>
    }
}

#[cfg(feature = "hydrate")]
mod client {
    use super::{UploadReport, UploadState, CHUNK};
    use crate::app::server_fns::{describe, upload_events, RawItems};
    use crate::domain::upload::{parse_file, Generate};
    use crate::domain::FieldError;
    use leptos::prelude::*;

    /// Generates what the old app generated: `evt_<ms>_<random>` and the current time.
    struct Browser;
    impl Generate for Browser {
        fn event_id(&mut self) -> String {
            let random = (js_sys::Math::random() * 36f64.powi(9)) as u64;
            format!("evt_{}_{}", js_sys::Date::now() as u64, radix36(random))
        }
        fn now_iso(&mut self) -> String {
            js_sys::Date::new_0().to_iso_string().into()
        }
    }

    fn radix36(mut n: u64) -> String {
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut out = Vec::new();
        loop {
            out.push(digits[(n % 36) as usize]);
            n /= 36;
            if n == 0 {
                break;
            }
        }
        out.reverse();
        String::from_utf8(out).unwrap_or_default()
    }

    pub async fn upload(file: web_sys::File, state: UploadState) {
        state.busy.set(true);
        state.report.set(None);
        state.problems.set(vec![]);
        state.progress.set((0, 0));
        let name = file.name();
        let text = match wasm_bindgen_futures::JsFuture::from(file.text()).await {
            Ok(t) => t.as_string().unwrap_or_default(),
            Err(_) => {
                state.problems.set(vec![FieldError::new("file", "could not be read")]);
                state.busy.set(false);
                return;
            }
        };
        let parsed = match parse_file(&name, &text, &mut Browser) {
            Ok(p) if p.items.is_empty() => Err("contains no events".to_string()),
            Ok(p) => Ok(p),
            Err(e) => Err(e),
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                state.problems.set(vec![FieldError::new(name, e)]);
                state.busy.set(false);
                return;
            }
        };
        let total = parsed.items.len();
        let mut report = UploadReport { file: name, total, ..Default::default() };
        state.progress.set((0, total));
        for (chunk_no, chunk) in parsed.items.chunks(CHUNK).enumerate() {
            let base = chunk_no * CHUNK;
            match upload_events(RawItems::from_values(chunk)).await {
                Ok(Ok(r)) => {
                    report.accepted += r.accepted;
                    report.duplicates += r.duplicates;
                    report.rejected += r.rejected;
                    for e in r.errors {
                        let at = parsed.origins.get(base + e.index).cloned().unwrap_or_default();
                        report.problems.push((at, e.event_id.unwrap_or_default(), e.field, e.problem));
                    }
                }
                Ok(Err(problems)) => {
                    report.stopped = Some(format!(
                        "Stopped at events {}–{}: {}.",
                        base + 1,
                        base + chunk.len(),
                        problems.iter().map(|p| format!("{} {}", p.field, p.problem)).collect::<Vec<_>>().join("; ")
                    ));
                    break;
                }
                Err(e) => {
                    report.stopped = Some(format!(
                        "Stopped after {base} of {total} events: {} Uploading the file again is safe: accepted events are recognised as duplicates.",
                        describe(&e)
                    ));
                    break;
                }
            }
            state.progress.set((base + chunk.len(), total));
        }
        state.report.set(Some(report));
        state.busy.set(false);
    }
}
