//! Signing in and out, first-run setup, and who the browser is: the pages show only the
//! controls the signed-in role may use (the server refuses the rest anyway).

use super::server_fns::{current_user, login, logout, setup};
use crate::domain::access::{Access, Me};
use crate::domain::error::ApiError;
use crate::domain::FieldError;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

/// Who is signed in, loaded once per page load and shared by every component.
#[derive(Clone, Copy)]
pub struct Viewer(pub Resource<Result<Me, ApiError>>);

impl Viewer {
    pub fn provide() -> Self {
        let viewer = Viewer(Resource::new(|| (), |_| current_user()));
        provide_context(viewer);
        viewer
    }

    pub fn get() -> Self {
        expect_context()
    }
}

/// Renders `children` only for a caller with `access`. Inside a Transition, so the server's
/// answer and the hydrated page agree.
#[component]
pub fn Allowed(access: Access, children: ChildrenFn) -> impl IntoView {
    let viewer = Viewer::get();
    let children = StoredValue::new(children);
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let me = viewer.0.await.ok();
                me.is_some_and(|m| m.may(access)).then(|| children.with_value(|c| c()))
            })}
        </Transition>
    }
}

/// A full page load, so every resource is fetched again under the new session.
fn go(to: &str) {
    #[cfg(feature = "hydrate")]
    if let Some(w) = web_sys::window() {
        let _ = w.location().set_href(to);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = to;
}

/// Only same-site paths are followed after signing in (no open redirect).
pub fn safe_next(next: Option<String>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\")).unwrap_or_else(|| "/".into())
}

/// Sends the browser to sign in, coming back here afterwards.
pub fn sign_in_again() {
    #[cfg(feature = "hydrate")]
    if let Some(w) = web_sys::window() {
        let here = w.location().pathname().unwrap_or_default() + &w.location().search().unwrap_or_default();
        let next: String = here
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        go(&format!("/login?next={next}"));
    }
}

/// Name, role and "Sign out" in the top bar; a banner when everything is open.
#[component]
pub fn UserMenu() -> impl IntoView {
    let viewer = Viewer::get();
    let sign_out = Action::new(|_: &()| logout());
    Effect::new(move |_| {
        if sign_out.value().get().is_some() {
            go("/login");
        }
    });
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match viewer.0.await {
                    Ok(Me { username: Some(name), role: Some(role), .. }) => view! {
                        <span class="user-menu" data-role=role.as_str()>
                            <span class="who">{name}" · "{role.as_str()}</span>
                            <button type="button" class="link" id="sign-out" on:click=move |_| { sign_out.dispatch(()); }>"Sign out"</button>
                        </span>
                    }.into_any(),
                    _ => ().into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
pub fn AuthOffBanner() -> impl IntoView {
    let viewer = Viewer::get();
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                viewer.0.await.is_ok_and(|m| m.auth_off).then(|| view! {
                    <p class="notice error banner" role="alert" id="auth-off-banner">
                        "Access control is off (AUTH=off): anyone who can reach this server can read your leads and change rules."
                    </p>
                })
            })}
        </Transition>
    }
}

/// Field problems of a failed call: its details, or its sentence when it names no field.
/// Wrong credentials and throttling are about the whole form, so they show as one line.
fn problems_of(e: &ApiError) -> Vec<FieldError> {
    match e.details.first() {
        Some(d) if matches!(d.field.as_str(), "Authorization" | "rate") => vec![FieldError::new("", d.problem.clone())],
        Some(_) => e.details.clone(),
        None => vec![FieldError::new("", e.describe())],
    }
}

#[component]
fn Problems(problems: RwSignal<Vec<FieldError>>) -> impl IntoView {
    view! {
        <Show when=move || !problems.get().is_empty()>
            <ul class="notice error field-errors" role="alert" id="auth-errors">
                {move || problems.get().into_iter().map(|e| view! { <li><strong>{e.field}</strong>" "{e.problem}</li> }).collect_view()}
            </ul>
        </Show>
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let problems = RwSignal::new(Vec::<FieldError>::new());
    let submit = Action::new(|(u, p): &(String, String)| login(u.clone(), p.clone()));
    Effect::new(move |_| match submit.value().get() {
        Some(Ok(_)) => go(&safe_next(query.get_untracked().get("next"))),
        Some(Err(e)) => problems.set(problems_of(&e)),
        None => {}
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        problems.set(vec![]);
        submit.dispatch((username.get_untracked(), password.get_untracked()));
    };
    view! {
        <Title text="Sign in · Leadscore"/>
        <section class="panel narrow" aria-labelledby="login-title">
            <h1 id="login-title">"Sign in"</h1>
            <form class="stack" id="login" on:submit=on_submit>
                <label>"Username" <input name="username" autocomplete="username" bind:value=username required/></label>
                <label>"Password" <input name="password" type="password" autocomplete="current-password" bind:value=password required/></label>
                <Problems problems/>
                <button type="submit" disabled=move || submit.pending().get()>"Sign in"</button>
            </form>
        </section>
    }
}

#[component]
pub fn SetupPage() -> impl IntoView {
    let query = use_query_map();
    let token = RwSignal::new(String::new());
    Effect::new(move |_| {
        if let Some(t) = query.get().get("token") {
            token.set(t);
        }
    });
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let confirm = RwSignal::new(String::new());
    let problems = RwSignal::new(Vec::<FieldError>::new());
    let submit = Action::new(|(t, u, p): &(String, String, String)| setup(t.clone(), u.clone(), p.clone()));
    Effect::new(move |_| match submit.value().get() {
        Some(Ok(_)) => go("/"),
        Some(Err(e)) => problems.set(problems_of(&e)),
        None => {}
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if password.get_untracked() != confirm.get_untracked() {
            problems.set(vec![FieldError::new("confirm", "does not match the password")]);
            return;
        }
        problems.set(vec![]);
        submit.dispatch((token.get_untracked(), username.get_untracked(), password.get_untracked()));
    };
    view! {
        <Title text="First-run setup · Leadscore"/>
        <section class="panel narrow" aria-labelledby="setup-title">
            <h1 id="setup-title">"Create the first admin"</h1>
            <p class="muted">"Open the setup link the server printed in its log when it started (it carries a one-time token), then choose the admin's name and password."</p>
            <form class="stack" id="setup" on:submit=on_submit>
                <label>"Setup token" <input name="token" bind:value=token autocomplete="off" required/></label>
                <label>"Username" <input name="username" autocomplete="username" bind:value=username required/></label>
                <label>"Password (at least 10 characters)" <input name="password" type="password" autocomplete="new-password" bind:value=password required/></label>
                <label>"Repeat the password" <input name="confirm" type="password" autocomplete="new-password" bind:value=confirm required/></label>
                <Problems problems/>
                <button type="submit" disabled=move || submit.pending().get()>"Create admin and sign in"</button>
            </form>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_followed() {
        assert_eq!(safe_next(Some("/leads/a%2Fb?x=1".into())), "/leads/a%2Fb?x=1");
        assert_eq!(safe_next(Some("//evil.test/".into())), "/");
        assert_eq!(safe_next(Some("/\\evil.test".into())), "/");
        assert_eq!(safe_next(Some("https://evil.test".into())), "/");
        assert_eq!(safe_next(None), "/");
    }
}
