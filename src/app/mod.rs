//! The HTML shell, the router and the pages. Rendered on the server, hydrated in the browser
//! (`lib.rs`); data comes from server functions, live changes from `/api/stream`.

mod admin;
pub mod auth;
mod chart;
mod dashboard;
mod dead_letters;
mod decay_setting;
mod format;
mod lead;
pub mod live;
mod overview;
mod rescore_panel;
mod rule_editor;
mod rules;
pub mod server_fns;
mod stage_ladder;
mod upload;
mod webhooks;

use crate::domain::access::Access;
use auth::{Allowed, AuthOffBanner, UserMenu, Viewer};
use format::short_time;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::{
    components::{Route, Router, Routes, A},
    lazy_route, path, Lazy, LazyRoute,
};
use live::Live;

/// The page's Content-Security-Policy: inline scripts only with this response's nonce; the
/// bundle and WASM from this server;
/// no framing, no plugins, connections only back to this server.
#[cfg(feature = "ssr")]
pub fn page_csp(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// Page (split point) → the WASM its HTML preloads, when the server serves each page's parts
/// as one bundle (`server::page_bundles`): the bundle, where Leptos would name every part.
#[cfg(feature = "ssr")]
#[derive(Clone)]
pub struct PagePreloads(pub std::sync::Arc<std::collections::HashMap<String, Vec<String>>>);

/// Swaps the split manifest `HydrationScripts` provides (read when the page's HTML is done, to
/// write its preload links) for one naming the page bundles. `WasmSplitManifest` is Leptos's,
/// public but undocumented (leptos 0.8); without it the parts are preloaded one by one.
#[cfg(feature = "ssr")]
fn preload_page_bundles() {
    use leptos::WasmSplitManifest;
    let (Some(PagePreloads(preloads)), Some(WasmSplitManifest(manifest))) = (use_context(), use_context()) else {
        return;
    };
    if let Some((pkg, mut parts, loader)) = manifest.try_get_value() {
        // A page without a bundle keeps its parts' preloads.
        parts.extend(preloads.iter().map(|(page, bundle)| (page.clone(), bundle.clone())));
        provide_context(WasmSplitManifest(ArcStoredValue::new((pkg, parts, loader))));
    }
}

pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let (Some(nonce), Some(response)) = (leptos::nonce::use_nonce(), use_context::<leptos_axum::ResponseOptions>()) {
        if let Ok(value) = axum::http::HeaderValue::from_str(&page_csp(&nonce.to_string())) {
            response.insert_header(axum::http::header::CONTENT_SECURITY_POLICY, value);
        }
    }
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="dark"/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <HashedStylesheet options=options.clone() id="leptos"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                {
                    #[cfg(feature = "ssr")]
                    preload_page_bundles();
                }
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    #[cfg_attr(not(feature = "hydrate"), allow(unused_variables))]
    let live = Live::provide();
    #[cfg_attr(not(feature = "hydrate"), allow(unused_variables))]
    let viewer = Viewer::provide();
    Effect::new(move |_| {
        // Only a caller who may read opens the live stream (not the sign-in or setup pages).
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(async move {
            if viewer.0.await.is_ok_and(|me| me.may(Access::Read)) {
                live.connect();
            }
        });
    });

    view! {
        <Title text="Leadscore"/>
        <Router>
            // `mark_hydrated` sets it once the client has taken over; browser tests wait for it.
            <div class="app" data-hydrated="false">
                <header class="topbar">
                    <A href="/" attr:class="brand">"Leadscore"</A>
                    <nav aria-label="Main">
                        <Allowed access=Access::Read>
                            <A href="/" exact=true>"Leaderboard"</A>
                            <A href="/rules">"Rules"</A>
                        </Allowed>
                        <Allowed access=Access::Admin>
                            <A href="/users">"Users"</A>
                            <A href="/keys">"API keys"</A>
                            <A href="/audit">"Audit log"</A>
                            <A href="/dead-letters">"Dead letters"</A>
                            <A href="/webhooks">"Webhooks"</A>
                        </Allowed>
                    </nav>
                    <Allowed access=Access::Read>
                        <ConnectionBadge/>
                    </Allowed>
                    <UserMenu/>
                </header>
                <AuthOffBanner/>
                <main>
                    <Routes fallback=NotFound>
                        <Route path=path!("/") view=dashboard::Dashboard/>
                        <Route path=path!("/leads/:id") view={Lazy::<LeadRoute>::new()}/>
                        <Route path=path!("/rules") view={Lazy::<RulesRoute>::new()}/>
                        <Route path=path!("/users") view={Lazy::<UsersRoute>::new()}/>
                        <Route path=path!("/keys") view={Lazy::<KeysRoute>::new()}/>
                        <Route path=path!("/audit") view={Lazy::<AuditRoute>::new()}/>
                        <Route path=path!("/dead-letters") view={Lazy::<DeadLettersRoute>::new()}/>
                        <Route path=path!("/webhooks") view={Lazy::<WebhooksRoute>::new()}/>
                        <Route path=path!("/login") view={Lazy::<LoginRoute>::new()}/>
                        <Route path=path!("/setup") view={Lazy::<SetupRoute>::new()}/>
                    </Routes>
                </main>
            </div>
        </Router>
    }
}

/// Marks the page hydrated (`data-hydrated="true"` on the app's root) once the whole page,
/// its lazily loaded part included, has taken over: browser tests and the first-load
/// benchmark wait for it, since a button clicked before then has no handler yet.
#[cfg(feature = "hydrate")]
pub fn mark_hydrated() {
    let root = document().query_selector(".app[data-hydrated]").ok().flatten();
    if let Some(root) = root {
        let _ = root.set_attribute("data-hydrated", "true");
    }
}

/// Each page but the leaderboard is a part of the WASM bundle of its own, fetched when the page
/// is first shown (the build splits the bundle: `cargo leptos ... --split`), so a first visit
/// downloads the shell and one page rather than all of them; the server's HTML preloads the
/// page's part. The leaderboard, where most visits start, stays in the main WASM: compiled
/// and optimised with the shell rather than cut into parts that call each other through
/// imports, its first load is 305 KB instead of 362 (brotli; BENCHMARKS.md, "First load").
macro_rules! lazy_pages {
    ($($route:ident => $page:path),* $(,)?) => {$(
        struct $route;

        #[lazy_route]
        impl LazyRoute for $route {
            fn data() -> Self {
                $route
            }

            fn view(_this: Self) -> AnyView {
                $page().into_any()
            }
        }
    )*};
}

lazy_pages! {
    LeadRoute => lead::LeadPage,
    RulesRoute => rules::RulesPage,
    UsersRoute => admin::UsersPage,
    KeysRoute => admin::KeysPage,
    AuditRoute => admin::AuditPage,
    DeadLettersRoute => dead_letters::DeadLettersPage,
    WebhooksRoute => webhooks::WebhooksPage,
    LoginRoute => auth::LoginPage,
    SetupRoute => auth::SetupPage,
}

/// Shows whether live updates are flowing.
#[component]
fn ConnectionBadge() -> impl IntoView {
    let live = Live::get();
    let state = move || live.connection.get();
    view! {
        <span
            class="connection"
            data-state=move || state().name()
            role="status"
            aria-live="polite"
            title="Live updates"
        >
            <span class="dot" aria-hidden="true"></span>
            {move || state().label()}
        </span>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(axum::http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Not found · Leadscore"/>
        <section class="panel">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <a href="/">"Back to the leaderboard"</a></p>
        </section>
    }
}

/// What a failed load looks like: what failed, why, and a way to retry. A session that has
/// ended sends the browser to sign in again.
#[component]
fn LoadError(what: &'static str, error: crate::domain::error::ApiError) -> impl IntoView {
    let live = Live::get();
    let message = error.describe();
    if error.status == 401 {
        Effect::new(move |_| auth::sign_in_again());
    }
    view! {
        <div class="notice error" role="alert">
            <strong>{format!("Could not load {what}. ")}</strong>
            {message}
            " "
            <button type="button" class="link" on:click=move |_| live.resync.update(|n| *n += 1)>
                "Try again"
            </button>
        </div>
    }
}

/// Link to a lead's page, with the id encoded as one path segment.
fn lead_href(id: &str) -> String {
    format!("/leads/{}", encode_component(id))
}

/// Percent-encodes everything but unreserved characters: safe as a path segment or a query value.
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_links_encode_awkward_ids_as_one_segment() {
        assert_eq!(lead_href("lead-1"), "/leads/lead-1");
        assert_eq!(lead_href("a/b c"), "/leads/a%2Fb%20c");
        assert_eq!(lead_href("ü"), "/leads/%C3%BC");
    }
}
