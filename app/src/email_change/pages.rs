//! "Email address" (a section of `/account/security`), `/confirm-email/:token` and
//! `/revert-email/:token`. The forms work as plain HTML posts and, hydrated, as
//! server-function calls.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use super::api::{email_change_link, revert_email_link, ChangeEmail, ChangeLinkState, RevertLinkState};
use crate::auth::api::take_flash;
use crate::auth::AuthContext;
use crate::components::{
    field_message, form_message, submission_error, Card, FormAlert, StepUpCodeField, StepUpFields, TextField,
    BUTTON_CLASS,
};
use crate::page_data::page_data;

/// "Email address" on `/account/security`; `mfa` and `fresh` as for [`StepUpFields`].
#[component]
pub fn ChangeEmailSection(mfa: bool, fresh: bool, current: String) -> impl IntoView {
    let change = ServerAction::<ChangeEmail>::new();
    let query = use_query_map();
    // Tracked: with JavaScript the form's redirect changes only the query.
    let sent = move || query.read().get("email").as_deref() == Some("sent");
    let flash = page_data(|| (), |_| async { take_flash("change_email".into()).await.ok().flatten() });
    view! {
        <section id="email-address" aria-labelledby="email-address-heading" class="mt-10">
            <h2 id="email-address-heading" class="mb-3 text-lg font-semibold">"Email address"</h2>
            <p class="mb-3 text-sm text-slate-700">"Currently "<strong class="break-all">{current}</strong>". A new address must be confirmed from a link we mail to it; until then this one stays. This address is told about the change and can undo it for 7 days."</p>
            {move || sent().then(|| view! {
                <p role="status" class="mb-3 text-sm text-slate-800">"We sent a link to the new address. Open it while signed in to make the change; until then your address stays as it is."</p>
            })}
            <Suspense>
                {move || Suspend::new(async move {
                    let flash = flash.await;
                    let email = flash.as_ref().and_then(|f| f.value("email")).unwrap_or_default();
                    let error = submission_error(change, flash.map(|f| f.error));
                    view! {
                        <ActionForm action=change attr:class="max-w-md space-y-3" attr:novalidate=true>
                            <FormAlert message=form_message(error)/>
                            <TextField label="New email address" name="email" id="change-email" kind="email" autocomplete="email" value=email error=field_message(error, "email")/>
                            <StepUpFields password_label="Current password" password_id="change-email-password" code_id="change-email-code" mfa=mfa fresh=fresh password_error=field_message(error, "password") code_error=field_message(error, "code")/>
                            <button type="submit" class=BUTTON_CLASS>"Change email address"</button>
                        </ActionForm>
                    }
                })}
            </Suspense>
        </section>
    }
}

/// A token as it may appear in a sign-in page's `next`: letters and digits only.
fn token_path(prefix: &str, token: &str) -> String {
    format!("/login?next=%2F{prefix}%2F{}", token.chars().filter(char::is_ascii_alphanumeric).collect::<String>())
}

#[component]
pub fn ConfirmEmailPage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.read().get("token").unwrap_or_default();
    let confirm = expect_context::<AuthContext>().confirm_email;
    let page = page_data(token, |token| async move {
        (email_change_link(token).await, take_flash("confirm_email_change".into()).await.ok().flatten())
    });
    view! {
        <Card title="Confirm your new email address">
            <Suspense>
                {move || Suspend::new(async move {
                    let (link, flash) = page.await;
                    let error = submission_error(confirm, flash.map(|f| f.error));
                    let token = token();
                    match link {
                        Ok(ChangeLinkState::SignedOut) => view! {
                            <p class="text-slate-800">"Sign in to the account that asked for the change, then confirm the new address."</p>
                            <p class="mt-4"><a href=token_path("confirm-email", &token) class="link">"Sign in to confirm"</a></p>
                        }
                        .into_any(),
                        Ok(ChangeLinkState::Ready { new_email }) => view! {
                            <p class="text-slate-800">"Make "<strong class="break-all">{new_email}</strong>" the email address of your account."</p>
                            <ActionForm action=confirm attr:class="mt-4 space-y-3">
                                <FormAlert message=form_message(error)/>
                                <input type="hidden" name="token" value=token/>
                                <button type="submit" class=BUTTON_CLASS>"Confirm new address"</button>
                            </ActionForm>
                        }
                        .into_any(),
                        Ok(ChangeLinkState::Unusable { message }) => view! {
                            <p role="alert" class="text-slate-800">{message}</p>
                            <p class="mt-4"><a href="/account/security#email-address" class="link">"Ask for the change again"</a></p>
                        }
                        .into_any(),
                        Err(e) => view! { <p role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </Card>
    }
}

#[component]
pub fn RevertEmailPage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.read().get("token").unwrap_or_default();
    // Shared with the navigation, whose signed-in person refetches when it completes.
    let revert = expect_context::<AuthContext>().revert_email;
    let page = page_data(token, |token| async move {
        (revert_email_link(token).await, take_flash("revert_email_change".into()).await.ok().flatten())
    });
    view! {
        <Card title="Undo the change of your email address">
            <Suspense>
                {move || Suspend::new(async move {
                    let (link, flash) = page.await;
                    let error = submission_error(revert, flash.map(|f| f.error));
                    match link {
                        Ok(RevertLinkState::Usable { mfa }) => view! {
                            <p class="mb-4 text-sm text-slate-700">"Your account gets this address back. Choose a new password: every session of the account will be signed out, and you will be signed in here."</p>
                            <ActionForm action=revert attr:class="space-y-4" attr:novalidate=true>
                                <FormAlert message=form_message(error)/>
                                <input type="hidden" name="token" value=token()/>
                                <TextField label="New password" name="new_password" kind="password" autocomplete="new-password" hint="At least 12 characters; not a common password." error=field_message(error, "new_password")/>
                                {mfa.then(|| view! { <StepUpCodeField id="revert-code" error=field_message(error, "code")/> })}
                                <button type="submit" class=BUTTON_CLASS>"Restore address and set password"</button>
                            </ActionForm>
                        }
                        .into_any(),
                        Ok(RevertLinkState::Unusable { message }) => view! {
                            <FormAlert message=form_message(error)/>
                            <p role="alert" class="text-slate-800">{message}</p>
                            <p class="mt-4"><a href="/forgot-password" class="link">"Reset your password instead"</a></p>
                        }
                        .into_any(),
                        Err(e) => view! { <p role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </Card>
    }
}
