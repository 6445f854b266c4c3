//! The "Where you're signed in" section of `/account/security`. Both forms work as plain
//! HTML posts and, hydrated, as server-function calls.

use leptos::prelude::*;

use super::api::{signed_in_sessions, ConfirmIdentity, SessionEntry, SignOutOtherSessions, SignOutSession};
use crate::auth::api::take_flash;
use crate::components::{field_message, form_message, submission_error, FormAlert, StepUpFields};
use crate::error::AppError;
use crate::page_data::page_data;

const SMALL_BUTTON: &str = "btn-sm";
const DANGER_BUTTON: &str = "inline-flex justify-center rounded-md bg-red-700 px-4 py-2 font-semibold text-white hover:bg-red-800 focus:outline-none focus-visible:ring-2 focus-visible:ring-red-600 focus-visible:ring-offset-2";

#[component]
pub fn SessionsSection() -> impl IntoView {
    let sign_out = ServerAction::<SignOutSession>::new();
    let sign_out_others = ServerAction::<SignOutOtherSessions>::new();
    let confirm = ServerAction::<ConfirmIdentity>::new();
    let page = page_data(
        move || (sign_out.version().get(), sign_out_others.version().get(), confirm.version().get()),
        |_| async {
            let mut flash = None;
            for form in ["sign_out_session", "sign_out_other_sessions", "confirm_identity"] {
                if let Ok(Some(f)) = take_flash(form.into()).await {
                    flash = Some((form.to_string(), f.error));
                }
            }
            (signed_in_sessions().await, flash)
        },
    );
    view! {
        <section id="sessions" aria-labelledby="sessions-heading" class="mt-10">
            <h2 id="sessions-heading" class="mb-3 text-lg font-semibold">"Where you're signed in"</h2>
            <Suspense>
                {move || Suspend::new(async move {
                    let (data, flash) = page.await;
                    let flash_for = |form: &str| flash.as_ref().filter(|(f, _)| *f == form).map(|(_, e)| e.clone());
                    let view = match data {
                        // The page around this section sends signed-out visitors to sign in.
                        Err(AppError::Unauthenticated) => ().into_any(),
                        Err(e) => view! { <p role="alert">{e.to_string()}</p> }.into_any(),
                        Ok(view) => {
                            let sign_out_error = submission_error(sign_out, flash_for("sign_out_session"));
                            let others_error = submission_error(sign_out_others, flash_for("sign_out_other_sessions"));
                            let confirm_error = submission_error(confirm, flash_for("confirm_identity"));
                            let others = view.sessions.iter().filter(|s| !s.this_device).count();
                            let older = view.sessions.iter().any(|s| s.older);
                            let confirm_form = (older && !view.step_up_fresh).then(|| view! {
                                <h3 class="mt-6 font-semibold">"Confirm it's you"</h3>
                                <p class="text-sm text-slate-700">"Sessions that signed in before this one can be signed out once you confirm it's you."</p>
                                <ActionForm action=confirm attr:class="mt-2 max-w-md space-y-3" attr:novalidate=true>
                                    <FormAlert message=form_message(confirm_error)/>
                                    <StepUpFields password_label="Current password" password_id="confirm-password" code_id="confirm-code" mfa=view.mfa_enabled fresh=false password_error=field_message(confirm_error, "password") code_error=field_message(confirm_error, "code")/>
                                    <button type="submit" class=SMALL_BUTTON>"Confirm it's me"</button>
                                </ActionForm>
                            });
                            let rows = view.sessions.into_iter().map(|s| session_row(s, sign_out)).collect_view();
                            let sign_out_all = (others > 0).then(|| view! {
                                <h3 class="mt-6 font-semibold">"Sign out all other sessions"</h3>
                                <p class="text-sm text-slate-700">"Every session but this one ends at once. Confirm it's you."</p>
                                <ActionForm action=sign_out_others attr:class="mt-2 max-w-md space-y-3" attr:novalidate=true>
                                    <FormAlert message=form_message(others_error)/>
                                    <StepUpFields password_label="Current password" password_id="sessions-password" code_id="sessions-code" mfa=view.mfa_enabled fresh=view.step_up_fresh password_error=field_message(others_error, "password") code_error=field_message(others_error, "code")/>
                                    <button type="submit" class=DANGER_BUTTON>"Sign out all other sessions"</button>
                                </ActionForm>
                            });
                            view! {
                                <FormAlert message=form_message(sign_out_error)/>
                                <ul class="divide-y divide-slate-200 rounded-md ring-1 ring-slate-200">{rows}</ul>
                                {confirm_form}
                                {sign_out_all}
                            }
                            .into_any()
                        }
                    };
                    view
                })}
            </Suspense>
        </section>
    }
}

fn session_row(s: SessionEntry, sign_out: ServerAction<SignOutSession>) -> impl IntoView {
    let name = format!("{} on {}", s.browser, s.system);
    let network = s.network.map_or_else(|| "Network unknown".to_string(), |n| format!("Network {n} (approximate)"));
    let control = if s.this_device {
        view! { <span class="rounded bg-emerald-100 px-2 py-0.5 text-sm font-medium text-emerald-900">"This device"</span> }
            .into_any()
    } else {
        let label = format!("Sign out {name}, last active {}", s.last_active_utc);
        view! {
            <ActionForm action=sign_out>
                <input type="hidden" name="session" value=s.handle/>
                <button type="submit" class=SMALL_BUTTON aria-label=label>"Sign out"</button>
            </ActionForm>
        }
        .into_any()
    };
    view! {
        <li class="flex flex-wrap items-center justify-between gap-3 px-4 py-3">
            <div>
                <p class="font-medium text-slate-900">{name}</p>
                <p class="text-sm text-slate-700">{network}</p>
                <p class="text-sm text-slate-700">
                    {format!("Signed in {} · Last active {}", s.signed_in_at_utc, s.last_active_utc)}
                </p>
            </div>
            {control}
        </li>
    }
}
