//! The admin pages: `/users` (accounts and roles), `/keys` (API keys) and `/audit` (who did
//! what). The server refuses every call here to anyone but an admin; the pages only show it.

use super::dashboard::FieldErrors;
use super::live::Live;
use super::server_fns::{create_key, fetch_audit, fetch_keys, fetch_users, remove_user, revoke_key, save_user};
use super::{short_time, LoadError};
use crate::domain::access::{ApiKeyInfo, AuditEntry, CreatedKey, Role, Scope, UserInfo, MIN_PASSWORD_CHARS};
use crate::domain::error::ApiError;
use crate::domain::FieldError;
use leptos::prelude::*;
use leptos_meta::Title;
use serde_json::Value;

/// The outcome of the last change, shown in one status line.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Feedback {
    Saved(String),
    Failed(String),
}

/// A page's bookkeeping of changes: the status line, the field problems of the last failed
/// change (keyed by the form they belong to, "" for the page's add form), and the counter
/// the list's Resource tracks, so a successful change reloads the list.
#[derive(Clone, Copy)]
pub(super) struct Changes {
    feedback: RwSignal<Option<Feedback>>,
    problems: RwSignal<(String, Vec<FieldError>)>,
    pub(super) reload: RwSignal<u32>,
}

impl Changes {
    pub(super) fn new() -> Self {
        Self { feedback: RwSignal::new(None), problems: RwSignal::new(Default::default()), reload: RwSignal::new(0) }
    }

    pub(super) fn succeeded(self, message: String) {
        self.problems.set(Default::default());
        self.feedback.set(Some(Feedback::Saved(message)));
        self.reload.update(|n| *n += 1);
    }

    pub(super) fn failed(self, form: String, what: &str, e: &ApiError) {
        self.feedback.set(Some(Feedback::Failed(format!("{what}: {}", e.describe()))));
        // Invalid input (400) and a taken name (409) name their field; a refusal (403, e.g. the
        // last admin) or an outage is said once, in the status line.
        let fields = if matches!(e.status, 400 | 409) { e.details.clone() } else { vec![] };
        self.problems.set((form, fields));
    }

    pub(super) fn errors_for(self, form: String) -> Signal<Vec<FieldError>> {
        let problems = self.problems;
        Signal::derive(move || problems.with(|(f, p)| if *f == form { p.clone() } else { vec![] }))
    }
}

#[component]
pub(super) fn Status(changes: Changes, html_id: &'static str) -> impl IntoView {
    move || {
        changes.feedback.get().map(|f| match f {
            Feedback::Saved(m) => view! { <p class="notice ok" role="status" id=html_id>{m}</p> }.into_any(),
            Feedback::Failed(m) => view! { <p class="notice error" role="alert" id=html_id>{m}</p> }.into_any(),
        })
    }
}

/// `"true"` when a field of `errors` is named `field`, for `aria-invalid`.
fn invalid(errors: Signal<Vec<FieldError>>, field: &'static str) -> impl Fn() -> String + Copy + Send + Sync {
    move || errors.with(|e| e.iter().any(|p| p.field == field)).to_string()
}

/// The role choices; `selected` as well as the bound value, so the server's HTML is right too.
fn role_options(current: Role) -> impl IntoView {
    Role::ALL.map(|r| view! { <option value=r.as_str() selected={r == current}>{r.as_str()}</option> }).collect_view()
}

// ----- /users -----

#[derive(Clone, Debug)]
enum UserOp {
    Save { username: String, role: String, password: String, create: bool },
    Remove(String),
}

impl UserOp {
    /// The form whose field problems this change shows ("" is the add form), and what failed.
    fn context(&self) -> (String, String) {
        match self {
            UserOp::Save { create: true, username, .. } => (String::new(), format!("Could not add “{username}”")),
            UserOp::Save { username, .. } => (username.clone(), format!("Could not save “{username}”")),
            UserOp::Remove(username) => (username.clone(), format!("Could not remove “{username}”")),
        }
    }

    async fn run(self) -> Result<String, ApiError> {
        match self {
            UserOp::Save { username, role, password, create } => {
                let also = if create || password.is_empty() { "" } else { ", password changed" };
                let u = save_user(username, role, password, create).await?;
                let verb = if create { "Added" } else { "Saved" };
                Ok(format!("{verb} “{}” as {}{also}.", u.username, u.role.as_str()))
            }
            UserOp::Remove(username) => {
                remove_user(username.clone()).await?;
                Ok(format!("Removed “{username}”."))
            }
        }
    }
}

#[derive(Clone, Copy)]
struct UserEditing {
    run: Action<UserOp, (UserOp, Result<String, ApiError>)>,
    changes: Changes,
}

#[component]
pub fn UsersPage() -> impl IntoView {
    let live = Live::get();
    let changes = Changes::new();
    let users = Resource::new(move || (changes.reload.get(), live.resync.get()), |_| fetch_users());
    let run = Action::new(|op: &UserOp| {
        let op = op.clone();
        async move { (op.clone(), op.run().await) }
    });
    Effect::new(move |_| match run.value().get() {
        Some((_, Ok(message))) => changes.succeeded(message),
        Some((op, Err(e))) => {
            let (form, what) = op.context();
            changes.failed(form, &what, &e)
        }
        None => {}
    });
    let ctx = UserEditing { run, changes };

    view! {
        <Title text="Users · Leadscore"/>
        <section class="panel" aria-labelledby="users-title">
            <h1 id="users-title">"Users"</h1>
            <p class="muted">"Viewers see leads; editors also change rules and send events; admins also manage users, API keys and the audit log."</p>
            <Status changes html_id="users-feedback"/>
            <Transition fallback=|| view! { <p class="muted">"Loading users…"</p> }>
                {move || Suspend::new(async move {
                    match users.await {
                        Err(e) => view! { <LoadError what="the users" error=e/> }.into_any(),
                        Ok(list) => view! {
                            <table class="table" id="users">
                                <thead><tr><th scope="col">"User"</th><th scope="col">"Role"</th><th scope="col">"New password"</th><th scope="col">"Changed (UTC)"</th><th scope="col"><span class="sr-only">"Actions"</span></th></tr></thead>
                                <tbody>
                                    {list.into_iter().enumerate().map(|(index, user)| view! { <UserRow user index ctx/> }).collect_view()}
                                </tbody>
                            </table>
                        }.into_any(),
                    }
                })}
            </Transition>
        </section>
        <NewUser ctx/>
    }
}

#[component]
fn UserRow(user: UserInfo, index: usize, ctx: UserEditing) -> impl IntoView {
    let UserInfo { username, role, updated_at, .. } = user;
    let chosen = RwSignal::new(role.as_str().to_string());
    let password = RwSignal::new(String::new());
    // By position: usernames may hold characters that are awkward in ids.
    let form_id = format!("user-{index}");
    let errors = ctx.changes.errors_for(username.clone());
    let pending = move || ctx.run.pending().get();
    let on_submit = {
        let username = username.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let (role, password) = (chosen.get_untracked(), password.get_untracked());
            ctx.run.dispatch(UserOp::Save { username: username.clone(), role, password, create: false });
        }
    };
    let on_remove = {
        let username = username.clone();
        move |_| {
            ctx.run.dispatch(UserOp::Remove(username.clone()));
        }
    };
    view! {
        <tr data-user=username.clone()>
            <th scope="row">{username.clone()}</th>
            <td>
                <select name="role" form=form_id.clone() bind:value=chosen aria-label=format!("Role of {username}")
                    aria-invalid=invalid(errors, "role")>
                    {role_options(role)}
                </select>
            </td>
            <td>
                <input type="password" name="password" form=form_id.clone() bind:value=password autocomplete="new-password"
                    placeholder="unchanged" class="row-password" aria-label=format!("New password for {username}")
                    aria-invalid=invalid(errors, "password")/>
                <FieldErrors errors/>
            </td>
            <td class="time">{short_time(updated_at)}</td>
            <td class="actions">
                <form id=form_id class="inline" on:submit=on_submit>
                    <button type="submit" disabled=pending aria-label=format!("Save {username}")>"Save"</button>
                </form>
                <button type="button" class="secondary" on:click=on_remove disabled=pending
                    aria-label=format!("Remove {username}")>"Remove"</button>
            </td>
        </tr>
    }
}

#[component]
fn NewUser(ctx: UserEditing) -> impl IntoView {
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let role = RwSignal::new(Role::Viewer.as_str().to_string());
    let errors = ctx.changes.errors_for(String::new());
    // Cleared only once the user exists, so a rejected form can be corrected.
    Effect::new(move |_| {
        if let Some((UserOp::Save { create: true, .. }, Ok(_))) = ctx.run.value().get() {
            username.set(String::new());
            password.set(String::new());
        }
    });
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (username, role, password) = (username.get_untracked(), role.get_untracked(), password.get_untracked());
        ctx.run.dispatch(UserOp::Save { username, role, password, create: true });
    };
    view! {
        <section class="panel" aria-labelledby="new-user-title">
            <h2 id="new-user-title">"Add a user"</h2>
            <form class="row-form" id="new-user" on:submit=on_submit novalidate>
                <label>"Username" <input name="username" bind:value=username autocomplete="off" aria-invalid=invalid(errors, "username")/></label>
                <label>"Password" <input type="password" name="password" bind:value=password autocomplete="new-password"
                    aria-invalid=invalid(errors, "password")/></label>
                <label>"Role" <select name="role" bind:value=role aria-invalid=invalid(errors, "role")>{role_options(Role::Viewer)}</select></label>
                <button type="submit" disabled=move || ctx.run.pending().get()>"Add user"</button>
            </form>
            <FieldErrors errors/>
            <p class="muted small">{format!("Usernames: letters, digits and . _ @ -. Passwords: at least {MIN_PASSWORD_CHARS} characters.")}</p>
        </section>
    }
}

// ----- /keys -----

#[component]
pub fn KeysPage() -> impl IntoView {
    let live = Live::get();
    let changes = Changes::new();
    let keys = Resource::new(move || (changes.reload.get(), live.resync.get()), |_| fetch_keys());
    let create = Action::new(|(name, scopes): &(String, Vec<String>)| create_key(name.clone(), scopes.clone()));
    let revoke = Action::new(|id: &String| {
        let id = id.clone();
        async move { (id.clone(), revoke_key(id).await) }
    });
    // The key itself: kept only in this page's memory, never fetched again.
    let created = RwSignal::new(None::<CreatedKey>);
    let name = RwSignal::new(String::new());
    let scopes = Scope::ALL.map(|s| (s, RwSignal::new(s == Scope::Ingest)));
    Effect::new(move |_| match create.value().get() {
        Some(Ok(key)) => {
            changes.succeeded(format!("Created key “{}”.", key.info.name));
            name.set(String::new());
            created.set(Some(key));
        }
        Some(Err(e)) => changes.failed(String::new(), "Could not create the key", &e),
        None => {}
    });
    Effect::new(move |_| match revoke.value().get() {
        Some((_, Ok(info))) => changes.succeeded(format!("Revoked “{}”: it no longer works.", info.name)),
        Some((id, Err(e))) => changes.failed(id.clone(), &format!("Could not revoke key {id}"), &e),
        None => {}
    });
    let errors = changes.errors_for(String::new());
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let chosen = scopes.iter().filter(|(_, on)| on.get_untracked()).map(|(s, _)| s.as_str().to_string()).collect();
        created.set(None);
        create.dispatch((name.get_untracked(), chosen));
    };

    view! {
        <Title text="API keys · Leadscore"/>
        <section class="panel" aria-labelledby="keys-title">
            <h1 id="keys-title">"API keys"</h1>
            <p class="muted">"Programs use a key in the Authorization header. Only its first characters are kept for display; a lost key cannot be shown again, only revoked and replaced."</p>
            <Status changes html_id="keys-feedback"/>
            {move || created.get().map(|k| view! {
                <div class="new-key" role="status">
                    <p><strong>"Copy this key now: it will not be shown again."</strong>" "{format!("(“{}”)", k.info.name)}</p>
                    <code id="new-key">{k.key}</code>
                    <button type="button" class="secondary" on:click=move |_| created.set(None)>"I have copied it"</button>
                </div>
            })}
            <Transition fallback=|| view! { <p class="muted">"Loading keys…"</p> }>
                {move || Suspend::new(async move {
                    match keys.await {
                        Err(e) => view! { <LoadError what="the API keys" error=e/> }.into_any(),
                        Ok(list) => {
                            let empty = list.is_empty();
                            view! {
                                <table class="table" id="keys">
                                    <thead><tr><th scope="col">"Name"</th><th scope="col">"Key"</th><th scope="col">"Scopes"</th><th scope="col">"Created (UTC)"</th><th scope="col">"Last used"</th><th scope="col">"Status"</th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|info| view! { <KeyRow info revoke/> }).collect_view()}
                                    </tbody>
                                </table>
                                {empty.then(|| view! { <p class="muted empty">"No API keys yet."</p> })}
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        </section>
        <section class="panel" aria-labelledby="new-key-title">
            <h2 id="new-key-title">"Create a key"</h2>
            <form class="row-form" id="new-key-form" on:submit=on_submit novalidate>
                <label>"Name" <input name="name" bind:value=name autocomplete="off" placeholder="e.g. Marketing website"
                    aria-invalid=invalid(errors, "name")/></label>
                <fieldset class="scopes">
                    <legend>"Scopes"</legend>
                    {scopes.map(|(s, on)| view! {
                        <label class="switch">
                            <input type="checkbox" name="scopes" value=s.as_str() checked={s == Scope::Ingest} bind:checked=on/>
                            {s.as_str()}
                        </label>
                    }).collect_view()}
                </fieldset>
                <button type="submit" disabled=move || create.pending().get()>"Create key"</button>
            </form>
            <FieldErrors errors/>
            <p class="muted small">"ingest sends events, read reads leads and rules, admin may do everything. A website may embed an ingest-only key: it can send events but read nothing."</p>
        </section>
    }
}

type Revoke = Action<String, (String, Result<ApiKeyInfo, ApiError>)>;

#[component]
fn KeyRow(info: ApiKeyInfo, revoke: Revoke) -> impl IntoView {
    let ApiKeyInfo { id, name, scopes, prefix, created_at, created_by, last_used_at, revoked_at } = info;
    let scopes = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    let status = match revoked_at {
        Some(at) => view! { <span class="muted">{format!("revoked {}", short_time(at))}</span> }.into_any(),
        None => {
            let id = id.clone();
            view! {
                <button type="button" class="secondary" disabled=move || revoke.pending().get() aria-label=format!("Revoke {name}")
                    on:click=move |_| { revoke.dispatch(id.clone()); }>"Revoke"</button>
            }
            .into_any()
        }
    };
    view! {
        <tr data-key=id class:revoked={revoked_at.is_some()}>
            <th scope="row">{name}</th>
            <td><code>{format!("{prefix}…")}</code></td>
            <td>{scopes}</td>
            <td class="time">{short_time(created_at)}<span class="muted small">{format!(" by {created_by}")}</span></td>
            <td class="time">{last_used_at.map(short_time).unwrap_or_else(|| "never".into())}</td>
            <td>{status}</td>
        </tr>
    }
}

// ----- /audit -----

const PAGE: usize = 50;

/// `before → after` as compact JSON; "—" for a side that is absent.
fn change_text(before: Option<Value>, after: Option<Value>) -> String {
    if before.is_none() && after.is_none() {
        return String::new();
    }
    let side = |v: Option<Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "—".into());
    format!("{} → {}", side(before), side(after))
}

#[component]
pub fn AuditPage() -> impl IntoView {
    let live = Live::get();
    let offset = RwSignal::new(0usize);
    let entries = Resource::new(move || (offset.get(), live.resync.get()), |(o, _)| fetch_audit(o));

    view! {
        <Title text="Audit log · Leadscore"/>
        <section class="panel" aria-labelledby="audit-title">
            <h1 id="audit-title">"Audit log"</h1>
            <p class="muted">"Sign-ins and changes to rules, users and API keys, newest first."</p>
            <Transition fallback=|| view! { <p class="muted">"Loading the audit log…"</p> }>
                {move || Suspend::new(async move {
                    match entries.await {
                        Err(e) => view! { <LoadError what="the audit log" error=e/> }.into_any(),
                        Ok(list) => {
                            let (from, len) = (offset.get_untracked(), list.len());
                            view! {
                                <table class="table compact audit" id="audit">
                                    <thead><tr><th scope="col">"Time (UTC)"</th><th scope="col">"Who"</th><th scope="col">"Action"</th><th scope="col">"Target"</th><th scope="col">"Change"</th><th scope="col">"Address"</th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|e: AuditEntry| {
                                            let change = change_text(e.before, e.after);
                                            view! {
                                                <tr data-audit=e.id.to_string()>
                                                    <td class="time">{short_time(e.at)}</td>
                                                    <td>{e.actor}</td>
                                                    <td><code>{e.action}</code></td>
                                                    <td class="target">{e.target}</td>
                                                    <td><code class="meta">{change}</code></td>
                                                    <td>{e.ip.unwrap_or_default()}</td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </tbody>
                                </table>
                                {(len == 0).then(|| view! { <p class="muted empty">"Nothing recorded here."</p> })}
                                <nav class="pager" aria-label="Audit log pages">
                                    <button type="button" class="secondary" disabled={from == 0}
                                        on:click=move |_| offset.update(|o| *o = o.saturating_sub(PAGE))>"← Newer"</button>
                                    <span class="muted small">{format!("{}–{}", from + usize::from(len > 0), from + len)}</span>
                                    <button type="button" class="secondary" disabled={len < PAGE}
                                        on:click=move |_| offset.update(|o| *o += PAGE)>"Older →"</button>
                                </nav>
                            }.into_any()
                        }
                    }
                })}
            </Transition>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_as_compact_json() {
        let before = Some(serde_json::json!({"role": "editor"}));
        let after = Some(serde_json::json!({"role": "admin"}));
        assert_eq!(change_text(before.clone(), after), r#"{"role":"editor"} → {"role":"admin"}"#);
        assert_eq!(change_text(before, None), r#"{"role":"editor"} → —"#);
        assert_eq!(change_text(None, None), "");
    }
}
