//! "Change password" (a section of `/account/security`), `/forgot-password` and
//! `/reset-password/:token`. The forms work as plain HTML posts and, hydrated, as
//! server-function calls.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use super::api::{reset_link, ChangePassword, RequestPasswordReset, ResetLinkState};
use crate::auth::api::take_flash;
use crate::components::{
    field_message, form_message, submission_error, Card, FormAlert, StepUpCodeField, StepUpFields, TextField,
    BUTTON_CLASS,
};

/// "Change password" on `/account/security`; `mfa` and `fresh` as for [`StepUpFields`].
#[component]
pub fn ChangePasswordSection(mfa: bool, fresh: bool) -> impl IntoView {
    let change = ServerAction::<ChangePassword>::new();
    let query = use_query_map();
    // Tracked: with JavaScript the form's redirect changes only the query.
    let changed = move || query.read().get("password").as_deref() == Some("changed");
    let flash =
        crate::page_data::page_data(|| (), |_| async { take_flash("change_password".into()).await.ok().flatten() });
    view! {
        <section id="password" aria-labelledby="password-heading" class="mt-10">
            <h2 id="password-heading" class="mb-3 text-lg font-semibold">"Password"</h2>
            {move || changed().then(|| view! { <p role="status" class="mb-3 text-sm text-slate-800">"Your password was changed."</p> })}
            <Suspense>
                {move || Suspend::new(async move {
                    let error = submission_error(change, flash.await.map(|f| f.error));
                    view! {
                        <ActionForm action=change attr:class="max-w-md space-y-3" attr:novalidate=true>
                            <FormAlert message=form_message(error)/>
                            <StepUpFields password_label="Current password" password_id="change-current-password" code_id="change-code" mfa=mfa fresh=fresh password_error=field_message(error, "password") code_error=field_message(error, "code")/>
                            <TextField label="New password" name="new_password" id="change-new-password" kind="password" autocomplete="new-password" hint="At least 12 characters; not a common password." error=field_message(error, "new_password")/>
                            <div class="flex items-center gap-2">
                                <input type="checkbox" id="change-sign-out-others" name="sign_out_others" value="on" checked class="h-4 w-4 rounded border-slate-400 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600"/>
                                <label for="change-sign-out-others" class="text-sm text-slate-800">"Sign out all other sessions"</label>
                            </div>
                            <button type="submit" class=BUTTON_CLASS>"Change password"</button>
                        </ActionForm>
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
pub fn ForgotPasswordPage() -> impl IntoView {
    let request = ServerAction::<RequestPasswordReset>::new();
    let query = use_query_map();
    let sent = move || query.read().get("sent").is_some();
    let flash = crate::page_data::page_data(
        || (),
        |_| async { take_flash("request_password_reset".into()).await.ok().flatten() },
    );
    view! {
        <Card title="Reset your password">
            {move || sent().then(|| view! {
                <p role="status" class="mb-4 rounded-md border border-emerald-300 bg-emerald-50 px-3 py-2 text-sm text-emerald-900">
                    "If an account uses that address, we sent it a link to choose a new password. The link works for 30 minutes."
                </p>
            })}
            <Suspense>
                {move || Suspend::new(async move {
                    let flash = flash.await;
                    let email = flash.as_ref().and_then(|f| f.value("email")).unwrap_or_default();
                    let error = submission_error(request, flash.map(|f| f.error));
                    view! {
                        <ActionForm action=request attr:class="space-y-4" attr:novalidate=true>
                            <FormAlert message=form_message(error)/>
                            <TextField label="Email" name="email" kind="email" autocomplete="username" value=email error=field_message(error, "email")/>
                            <button type="submit" class=BUTTON_CLASS>"Send reset link"</button>
                        </ActionForm>
                    }
                })}
            </Suspense>
            <p class="mt-6 text-sm"><a href="/login" class="link">"Back to sign in"</a></p>
        </Card>
    }
}

#[component]
pub fn ResetPasswordPage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.read().get("token").unwrap_or_default();
    // Shared with the navigation, whose signed-in person refetches when it completes.
    let reset = expect_context::<crate::auth::AuthContext>().reset_password;
    let page = crate::page_data::page_data(token, |token| async move {
        (reset_link(token).await, take_flash("reset_password".into()).await.ok().flatten())
    });
    view! {
        <Card title="Choose a new password">
            <Suspense>
                {move || Suspend::new(async move {
                    let (link, flash) = page.await;
                    let error = submission_error(reset, flash.map(|f| f.error));
                    match link {
                        Ok(ResetLinkState::Usable { mfa }) => view! {
                            <p class="mb-4 text-sm text-slate-700">"Every session of your account will be signed out; you will be signed in here."</p>
                            <ActionForm action=reset attr:class="space-y-4" attr:novalidate=true>
                                <FormAlert message=form_message(error)/>
                                <input type="hidden" name="token" value=token()/>
                                <TextField label="New password" name="new_password" kind="password" autocomplete="new-password" hint="At least 12 characters; not a common password." error=field_message(error, "new_password")/>
                                {mfa.then(|| view! { <StepUpCodeField id="reset-code" error=field_message(error, "code")/> })}
                                <button type="submit" class=BUTTON_CLASS>"Set new password"</button>
                            </ActionForm>
                        }
                        .into_any(),
                        Ok(ResetLinkState::Unusable { message }) => view! {
                            <FormAlert message=form_message(error)/>
                            <p role="alert" class="text-slate-800">{message}</p>
                            <p class="mt-4"><a href="/forgot-password" class="link">"Ask for a new link"</a></p>
                        }
                        .into_any(),
                        Err(e) => view! { <p role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </Card>
    }
}
