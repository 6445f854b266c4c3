//! Workspace pages. Every control is a plain form (works without JavaScript); controls a
//! role cannot use are not shown — and the server refuses them anyway.

use leptos::either::Either;
use leptos::prelude::*;
use leptos_router::components::Redirect;
use leptos_router::hooks::{use_location, use_params_map};

use super::api::*;
use crate::components::{field_message as field, form_message, Card, FormAlert, StepUpFields, TextField, BUTTON_CLASS};
use crate::error::AppError;
use crate::page_data::{page_data, PageData};
use crate::render::SyncHtml;

// Component classes defined in style/main.css (repeated elements keep the HTML small).
const SMALL_BUTTON: &str = "btn-sm";
const SELECT: &str = "select";
const LINK: &str = "link";

fn action_error<S>(action: ServerAction<S>) -> Signal<Option<AppError>>
where
    S: leptos::server_fn::ServerFn<Output = (), Error = AppError> + Clone + Send + Sync + 'static,
    S::Output: Send + Sync + 'static,
{
    // `value()` builds a new mapped signal on every call: take it once, not on every read.
    let value = action.value();
    Signal::derive(move || value.get().and_then(|r| r.err()))
}

fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What to render when a page's data could not be loaded.
pub(crate) fn problem_view(error: AppError) -> AnyView {
    match error {
        AppError::Unauthenticated => {
            let here = use_location().pathname.get_untracked();
            view! { <Redirect path=format!("/login?next={}", encode_path(&here))/> }.into_any()
        }
        AppError::NotFound => {
            #[cfg(feature = "ssr")]
            if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
                res.set_status(axum::http::StatusCode::NOT_FOUND);
            }
            view! {
                <section class="mx-auto mt-16 max-w-xl text-center">
                    <h1 class="text-2xl font-bold">"Workspace not found"</h1>
                    <p class="mt-2 text-slate-700">"It does not exist, or you are not a member of it."</p>
                    <p class="mt-4"><a href="/workspaces" class=LINK>"Your workspaces"</a></p>
                </section>
            }
            .into_any()
        }
        AppError::MfaRequired => {
            #[cfg(feature = "ssr")]
            if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
                res.set_status(axum::http::StatusCode::FORBIDDEN);
            }
            let here = use_location().pathname.get_untracked();
            view! {
                <section class="mx-auto mt-16 max-w-xl text-center">
                    <h1 class="text-2xl font-bold">"Two-factor authentication required"</h1>
                    <p class="mt-2 text-slate-700">"This workspace requires two-factor authentication. Set it up for your account and come back — or, if it is already on, sign out and sign in again with your code."</p>
                    <p class="mt-4"><a href=format!("/account/security?next={}", encode_path(&here)) class=LINK>"Set up two-factor authentication"</a></p>
                </section>
            }
            .into_any()
        }
        other => {
            // The page's own status says what went wrong too (e.g. 503 for a workspace
            // being upgraded), not only its text.
            #[cfg(feature = "ssr")]
            if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
                res.set_status(
                    axum::http::StatusCode::from_u16(other.status())
                        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                );
            }
            view! { <div class="mx-auto mt-10 max-w-xl"><FormAlert message=Signal::derive(move || Some(other.to_string()))/></div> }.into_any()
        }
    }
}

#[component]
pub fn WorkspacesPage() -> impl IntoView {
    let create = ServerAction::<CreateWorkspace>::new();
    let list = page_data(move || create.version().get(), |_| list_workspaces());
    let error = action_error(create);
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                match list.await {
                    Err(e) => problem_view(e),
                    Ok(workspaces) => view! {
                        <Card title="Your workspaces">
                            {if workspaces.is_empty() {
                                view! { <p class="text-slate-700">"You are not in any workspace yet."</p> }.into_any()
                            } else {
                                view! {
                                    <ul class="divide-y divide-slate-200" aria-label="Workspaces">
                                        {workspaces.into_iter().map(|w| view! {
                                            <li class="flex items-center justify-between py-2">
                                                <a href=format!("/w/{}", w.slug) class=LINK>{w.name}</a>
                                                <span class="text-sm text-slate-600">{w.role}</span>
                                            </li>
                                        }).collect_view()}
                                    </ul>
                                }.into_any()
                            }}
                            <h2 class="mt-8 mb-3 text-lg font-semibold">"Create a workspace"</h2>
                            <ActionForm action=create attr:class="space-y-4" attr:novalidate=true>
                                <FormAlert message=form_message(error)/>
                                <TextField label="Workspace name" name="name" error=field(error, "name")/>
                                <button type="submit" class=BUTTON_CLASS>"Create workspace"</button>
                            </ActionForm>
                        </Card>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// Links to every workspace of the signed-in person (the workspace switcher).
///
/// `list` is created by the page, next to the page's own data. Created here, inside
/// the page's resolved `Suspend`, the browser loaded the list again right after
/// hydration instead of using the value the server embedded (caught by the end-to-end
/// test "pages hydrate from the data the server sent").
#[component]
fn WorkspaceSwitcher(current: String, list: PageData<Result<Vec<WorkspaceLink>, AppError>>) -> impl IntoView {
    view! {
        <nav aria-label="Workspace switcher" class="mb-6">
            <details class="inline-block">
                <summary class="cursor-pointer rounded px-2 py-1 text-sm font-medium text-slate-700 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600">"Switch workspace"</summary>
                <ul class="mt-2 space-y-1 rounded-md border border-slate-200 bg-white p-2 shadow-sm">
                    <Suspense>
                        {move || {
                            let current = current.clone();
                            Suspend::new(async move {
                                list.await.unwrap_or_default().into_iter().map(|w| {
                                    let is_current = w.slug == current;
                                    view! {
                                        <li>
                                            <a href=format!("/w/{}", w.slug) class=LINK aria-current=is_current.then_some("page")>{w.name}</a>
                                        </li>
                                    }
                                }).collect_view()
                            })
                        }}
                    </Suspense>
                    <li><a href="/workspaces" class=LINK>"All workspaces"</a></li>
                </ul>
            </details>
        </nav>
    }
}

#[component]
pub fn WorkspaceHomePage() -> impl IntoView {
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let add_note = ServerAction::<CreateNote>::new();
    let home = page_data(move || (slug(), add_note.version().get()), |(slug, _)| get_workspace_home(slug));
    let workspaces = page_data(|| (), |_| list_workspaces());
    let error = action_error(add_note);
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                match home.await {
                    Err(e) => problem_view(e),
                    Ok(ws) => view! {
                        <section class="mx-auto mt-8 w-full max-w-3xl">
                            <WorkspaceSwitcher current=ws.slug.clone() list=workspaces/>
                            <h1 class="text-3xl font-bold text-slate-900">{ws.name.clone()}</h1>
                            <p class="mt-1 text-slate-700">"Your role: " <strong>{ws.role.clone()}</strong></p>
                            <nav aria-label="Workspace" class="mt-2 flex gap-4">
                                <a href=format!("/w/{}/settings/members", ws.slug) class=LINK>"Members"</a>
                                <a href=format!("/w/{}/integrations", ws.slug) class=LINK>"Integrations"</a>
                                <a href=format!("/w/{}/assistant", ws.slug) class=LINK>"Assistant"</a>
                                {ws.can_view_audit.then(|| view! { <a href=format!("/w/{}/audit", ws.slug) class=LINK>"Audit log"</a> })}
                            </nav>
                            <h2 class="mt-8 text-xl font-semibold">"Notes"</h2>
                            {if ws.notes.is_empty() {
                                view! { <p class="mt-2 text-slate-700">"No notes yet."</p> }.into_any()
                            } else {
                                view! {
                                    <ul class="mt-2 space-y-2" aria-label="Notes">
                                        {ws.notes.clone().into_iter().map(|n| view! {
                                            <li class="rounded-md bg-white p-3 ring-1 ring-slate-200">
                                                <h3 class="font-semibold">{n.title}</h3>
                                                <p class="whitespace-pre-wrap text-slate-700">{n.body}</p>
                                            </li>
                                        }).collect_view()}
                                    </ul>
                                }.into_any()
                            }}
                            {ws.can_write.then(|| view! {
                                <ActionForm action=add_note attr:class="mt-6 space-y-3 rounded-xl bg-white p-4 ring-1 ring-slate-200" attr:novalidate=true>
                                    <h3 class="font-semibold">"Add a note"</h3>
                                    <FormAlert message=form_message(error)/>
                                    <input type="hidden" name="slug" value=ws.slug.clone()/>
                                    <TextField label="Title" name="title" error=field(error, "title")/>
                                    <div class="space-y-1">
                                        <label for="body" class="block text-sm font-medium text-slate-800">"Text"</label>
                                        <textarea id="body" name="body" rows="3" class="block w-full rounded-md border border-slate-300 px-3 py-2 focus:outline-none focus:ring-2 focus:ring-indigo-600"></textarea>
                                    </div>
                                    <button type="submit" class=BUTTON_CLASS>"Add note"</button>
                                </ActionForm>
                            })}
                            {(!ws.can_write).then(|| view! {
                                <p class="mt-6 rounded-md bg-slate-100 p-3 text-sm text-slate-700">"You have read-only access to this workspace."</p>
                            })}
                        </section>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// The members table's rows. Each manageable row has one plain form: "Change role" posts
/// to its action, "Remove" to its own `formaction`; with JavaScript, one listener on the
/// table body dispatches either (`MembersSettingsPage`). The select is named by
/// `aria-label` (no `<label>`/id pair): the form repeats on every row.
fn member_row_views(members: Vec<MemberView>, slug: String, can_manage: bool, owner_choices: bool) -> impl IntoView {
    use leptos::server_fn::ServerFn;
    let choices: &'static [&'static str] =
        if owner_choices { &["owner", "admin", "member", "viewer"] } else { &["admin", "member", "viewer"] };
    members
        .into_iter()
        .map(|m| {
            let controls = can_manage.then(|| {
                let form = m.manageable.then(|| {
                    let role = m.role.clone();
                    view! {
                        <form action=ChangeMemberRole::url() method="post" class="row-controls">
                            <input type="hidden" name="slug" value=slug.clone()/>
                            <input type="hidden" name="user_id" value=m.user_id.clone()/>
                            <select name="role" aria-label=format!("Role for {}", m.display_name)>
                                {choices.iter().map(|&c| view! { <option value=c selected=c == role>{c}</option> }).collect_view()}
                            </select>
                            <button type="submit">"Change role"</button>
                            <button type="submit" formaction=RemoveMember::url()>"Remove"</button>
                        </form>
                    }
                });
                view! { <td>{form}</td> }
            });
            let label = m.display_name.clone();
            view! {
                <tr aria-label=label>
                    <td>{m.display_name}{m.is_me.then_some(" (you)")}</td>
                    <td>{m.email}{(!m.email_verified).then_some(" (not verified)")}</td>
                    <td>{m.role}</td>
                    <td>{if m.has_mfa { "On" } else { "Off" }}</td>
                    {controls}
                </tr>
            }
        })
        .collect_view()
}

#[component]
pub fn MembersSettingsPage() -> impl IntoView {
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let invite = ServerAction::<InviteMember>::new();
    let revoke = ServerAction::<RevokeInvitation>::new();
    let change = ServerAction::<ChangeMemberRole>::new();
    let remove = ServerAction::<RemoveMember>::new();
    let leave = ServerAction::<LeaveWorkspace>::new();
    let transfer = ServerAction::<TransferOwnership>::new();
    let delete = ServerAction::<DeleteWorkspace>::new();
    let set_mfa = ServerAction::<SetWorkspaceMfa>::new();
    let delete_error = action_error(delete);
    let mfa_error = action_error(set_mfa);
    let page = page_data(
        move || {
            (
                slug(),
                invite.version().get(),
                revoke.version().get(),
                change.version().get(),
                remove.version().get(),
                transfer.version().get(),
                set_mfa.version().get(),
            )
        },
        |(slug, ..)| get_members_page(slug),
    );
    let invite_error = action_error(invite);
    // After a successful invitation the form is cleared for the next one: the page around
    // it re-renders with the new pending invitation, but the browser would keep what was typed.
    let invite_form = NodeRef::<leptos::html::Form>::new();
    let invite_result = invite.value();
    Effect::new(move |_| {
        if matches!(invite_result.get(), Some(Ok(()))) {
            if let Some(form) = invite_form.get() {
                form.reset();
            }
        }
    });
    let row_errors = [action_error(revoke), action_error(change), action_error(remove), action_error(leave)];
    let other_error = Signal::derive(move || row_errors.iter().find_map(|s| s.get()));
    let transfer_error = action_error(transfer);
    // One listener for every row's form (submit events bubble to the table body): "Remove"
    // posts to `remove_member` (its `formaction`), "Change role" to `change_member_role`.
    // If the form cannot be read (it always can), the browser's own post still works.
    let on_row_submit = move |ev: leptos::ev::SubmitEvent| {
        use leptos::form::FromFormData;
        use leptos::server_fn::ServerFn;
        let removing = ev
            .submitter()
            .and_then(|button| button.get_attribute("formaction"))
            .is_some_and(|url| url == RemoveMember::url());
        if removing {
            if let Ok(input) = RemoveMember::from_event(&ev) {
                ev.prevent_default();
                remove.dispatch(input);
            }
        } else if let Ok(input) = ChangeMemberRole::from_event(&ev) {
            ev.prevent_default();
            change.dispatch(input);
        }
    };
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                match page.await {
                    Err(e) => Either::Left(problem_view(e)),
                    Ok(mut p) => {
                        let slug = p.slug.clone();
                        let (can_manage, is_owner, i_have_mfa, require_mfa, fresh) =
                            (p.can_manage, p.is_owner, p.i_have_mfa, p.require_mfa, p.step_up_fresh);
                        let members = std::mem::take(&mut p.members);
                        let invitations = std::mem::take(&mut p.invitations);
                        let has_candidates = is_owner && members.iter().any(|m| !m.is_me);
                        let candidates: Vec<(String, String)> = members
                            .iter()
                            .filter(|m| has_candidates && !m.is_me)
                            .map(|m| (m.user_id.clone(), m.display_name.clone()))
                            .collect();
                        let rows = member_row_views(members, slug.clone(), can_manage, is_owner);
                        let (slug_invite, slug_invs, slug_transfer, slug_leave) = (slug.clone(), slug.clone(), slug.clone(), slug.clone());
                        let slug_delete = slug.clone();
                        let slug_mfa = slug.clone();
                        // Either, not into_any(): erasing the type would first copy every
                        // static attribute of the page into an owned string. SyncHtml: the
                        // resolved page is written in one pass (see crate::render).
                        Either::Right(SyncHtml(view! {
                            <section class="mx-auto mt-8 w-full max-w-4xl">
                                <p><a href=format!("/w/{}", p.slug) class=LINK>{format!("← {}", p.name)}</a></p>
                                <h1 class="mt-2 text-2xl font-bold">"Members"</h1>
                                <p class="text-slate-700">"Your role: " <strong>{p.my_role.clone()}</strong></p>
                                <div class="mt-4"><FormAlert message=form_message(other_error)/></div>
                                <div class="mt-4 overflow-x-auto">
                                <table class="data-table">
                                    <thead><tr>
                                        <th scope="col">"Name"</th>
                                        <th scope="col">"Email"</th>
                                        <th scope="col">"Role"</th>
                                        <th scope="col">"Two-factor"</th>
                                        {p.can_manage.then(|| view! { <th scope="col">"Actions"</th> })}
                                    </tr></thead>
                                    <tbody on:submit=on_row_submit>{rows}</tbody>
                                </table>
                                </div>

                                {if can_manage { Some(view! {
                                    <h2 class="mt-8 text-lg font-semibold">"Invite someone"</h2>
                                    <ActionForm action=invite node_ref=invite_form attr:class="mt-2 max-w-md space-y-3" attr:novalidate=true>
                                        <FormAlert message=form_message(invite_error)/>
                                        <input type="hidden" name="slug" value=slug_invite/>
                                        <TextField label="Email" name="email" kind="email" error=field(invite_error, "email")/>
                                        <div class="space-y-1">
                                            <label for="invite-role" class="block text-sm font-medium text-slate-800">"Role"</label>
                                            <select id="invite-role" name="role" class=SELECT>
                                                <option value="member" selected=true>"member"</option>
                                                <option value="viewer">"viewer"</option>
                                                <option value="admin">"admin"</option>
                                            </select>
                                            {move || field(invite_error, "role").get().map(|m| view! { <p class="text-sm text-red-700">{m}</p> })}
                                        </div>
                                        <button type="submit" class=BUTTON_CLASS>"Send invitation"</button>
                                    </ActionForm>

                                    <h2 class="mt-8 text-lg font-semibold">"Pending invitations"</h2>
                                    {if invitations.is_empty() {
                                        Either::Left(view! { <p class="text-slate-700">"None."</p> })
                                    } else {
                                        Either::Right(
                                        view! {
                                            <ul class="mt-2 divide-y divide-slate-200" aria-label="Pending invitations">
                                                {invitations.into_iter().map(|i| { let slug = slug_invs.clone(); view! {
                                                    <li class="flex items-center justify-between py-2">
                                                        <span>
                                                            {i.email.clone()} " — " {i.role.clone()}
                                                            {i.mail.describe().map(|text| view! {
                                                                <span class=if i.mail == MailState::NotDelivered { "block text-sm text-red-700" } else { "block text-sm text-slate-600" }>
                                                                    {text}
                                                                </span>
                                                            })}
                                                        </span>
                                                        <ActionForm action=revoke>
                                                            <input type="hidden" name="slug" value=slug.clone()/>
                                                            <input type="hidden" name="invitation_id" value=i.id.clone()/>
                                                            <button type="submit" class=SMALL_BUTTON aria-label=format!("Revoke invitation for {}", i.email)>"Revoke"</button>
                                                        </ActionForm>
                                                    </li>
                                                }}).collect_view()}
                                            </ul>
                                        })
                                    }}
                                }) } else { None }}

                                {{
                                    if has_candidates { Some(view! {
                                        <h2 class="mt-8 text-lg font-semibold">"Transfer ownership"</h2>
                                        <ActionForm action=transfer attr:class="mt-2 max-w-md space-y-3" attr:novalidate=true>
                                            <FormAlert message=form_message(transfer_error)/>
                                            <input type="hidden" name="slug" value=slug_transfer/>
                                            <div class="space-y-1">
                                                <label for="new-owner" class="block text-sm font-medium text-slate-800">"New owner"</label>
                                                <select id="new-owner" name="user_id" class=SELECT>
                                                    {candidates.into_iter().map(|(id, name)| view! { <option value=id>{name}</option> }).collect_view()}
                                                </select>
                                            </div>
                                            <StepUpFields password_label="Your current password" password_id="transfer-password" code_id="transfer-code" mfa=i_have_mfa fresh=fresh password_error=field(transfer_error, "password") code_error=field(transfer_error, "code")/>
                                            <button type="submit" class=BUTTON_CLASS>"Transfer ownership"</button>
                                        </ActionForm>
                                    }) } else { None }
                                }}

                                {if is_owner { Some(view! {
                                    <h2 class="mt-8 text-lg font-semibold">"Two-factor authentication"</h2>
                                    <p class="text-sm text-slate-700">{if require_mfa {
                                        "Required: members without it cannot open this workspace until they set it up."
                                    } else {
                                        "Not required. When required, members without it cannot open this workspace until they set it up."
                                    }}</p>
                                    <ActionForm action=set_mfa attr:class="mt-2 max-w-md space-y-3" attr:novalidate=true>
                                        <FormAlert message=form_message(mfa_error)/>
                                        <input type="hidden" name="slug" value=slug_mfa/>
                                        <input type="hidden" name="required" value=if require_mfa { "off" } else { "on" }/>
                                        <StepUpFields password_label="Your current password" password_id="mfa-policy-password" code_id="mfa-policy-code" mfa=i_have_mfa fresh=fresh password_error=field(mfa_error, "password") code_error=field(mfa_error, "code")/>
                                        <button type="submit" class=BUTTON_CLASS>{if require_mfa { "Stop requiring two-factor authentication" } else { "Require two-factor authentication" }}</button>
                                    </ActionForm>
                                }) } else { None }}

                                {if is_owner { Some(view! {
                                    <h2 class="mt-8 text-lg font-semibold">"Delete workspace"</h2>
                                    <p class="text-sm text-slate-700">"Deletes the workspace and all its data for everyone. This cannot be undone."</p>
                                    <ActionForm action=delete attr:class="mt-2 max-w-md space-y-3" attr:novalidate=true>
                                        <FormAlert message=form_message(delete_error)/>
                                        <input type="hidden" name="slug" value=slug_delete/>
                                        <StepUpFields password_label="Current password to confirm deletion" password_id="delete-password" code_id="delete-code" mfa=i_have_mfa fresh=fresh password_error=field(delete_error, "password") code_error=field(delete_error, "code")/>
                                        <button type="submit" class="inline-flex w-full justify-center rounded-md bg-red-700 px-4 py-2 font-semibold text-white hover:bg-red-800 focus:outline-none focus-visible:ring-2 focus-visible:ring-red-600 focus-visible:ring-offset-2">"Delete workspace"</button>
                                    </ActionForm>
                                }) } else { None }}

                                <h2 class="mt-8 text-lg font-semibold">"Leave"</h2>
                                <ActionForm action=leave attr:class="mt-2">
                                    <input type="hidden" name="slug" value=slug_leave/>
                                    <button type="submit" class=SMALL_BUTTON>"Leave workspace"</button>
                                </ActionForm>
                            </section>
                        }))
                    }
                }
            })}
        </Suspense>
    }
}

#[component]
pub fn InvitePage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.read().get("token").unwrap_or_default();
    let info = page_data(token, get_invitation_info);
    let accept = ServerAction::<AcceptInvitation>::new();
    let error = action_error(accept);
    let user = expect_context::<crate::auth::AuthContext>().user;
    view! {
        <Card title="Workspace invitation">
            <Suspense>
                {move || Suspend::new(async move {
                    let signed_in = matches!(user.await, Ok(Some(_)));
                    match info.await {
                        Err(e) => view! { <FormAlert message=Signal::derive(move || Some(e.to_string()))/> }.into_any(),
                        Ok(i) => {
                            let here = use_location().pathname.get_untracked();
                            view! {
                                <p class="text-slate-800">"You are invited to join "<strong>{i.workspace_name}</strong>" as "<strong>{i.role}</strong>"."</p>
                                {i.requires_mfa.then(|| view! {
                                    <p class="mt-2 text-sm text-slate-700">"This workspace requires two-factor authentication: you will be asked to set up an authenticator app."</p>
                                })}
                                <div class="mt-4"><FormAlert message=form_message(error)/></div>
                                {if signed_in {
                                    view! {
                                        <ActionForm action=accept attr:class="mt-4">
                                            <input type="hidden" name="token" value=token()/>
                                            <button type="submit" class=BUTTON_CLASS>"Accept invitation"</button>
                                        </ActionForm>
                                    }.into_any()
                                } else {
                                    view! {
                                        <p class="mt-4 text-slate-700">
                                            <a class=LINK href=format!("/login?next={}", encode_path(&here))>"Sign in"</a>
                                            " or "
                                            <a class=LINK href=format!("/signup?next={}", encode_path(&here))>"create an account"</a>
                                            " with the invited email address to accept."
                                        </p>
                                    }.into_any()
                                }}
                            }.into_any()
                        }
                    }
                })}
            </Suspense>
        </Card>
    }
}
