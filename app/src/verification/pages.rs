//! `/verify-email/:token`, the banner of unverified accounts, and the "Send a new link"
//! form of `/account`. The forms work as plain HTML posts and, hydrated, as
//! server-function calls.

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use super::api::{verification_link, ResendVerification, VerificationLinkState};
use crate::auth::api::take_flash;
use crate::auth::AuthContext;
use crate::components::{form_message, submission_error, Card, FormAlert, BUTTON_CLASS};
use crate::page_data::page_data;

#[component]
pub fn VerifyEmailPage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.read().get("token").unwrap_or_default();
    let verify = expect_context::<AuthContext>().verify_email;
    let page = page_data(token, |token| async move {
        (verification_link(token).await, take_flash("verify_email".into()).await.ok().flatten())
    });
    view! {
        <Card title="Confirm your email address">
            <Suspense>
                {move || Suspend::new(async move {
                    let (link, flash) = page.await;
                    let error = submission_error(verify, flash.map(|f| f.error));
                    let token = token();
                    match link {
                        Ok(VerificationLinkState::SignedOut) => {
                            let next = format!("/login?next=%2Fverify-email%2F{}", token.chars().filter(char::is_ascii_alphanumeric).collect::<String>());
                            view! {
                                <p class="text-slate-800">"Sign in to the account this link was sent for, then confirm the address."</p>
                                <p class="mt-4"><a href=next class="link">"Sign in to confirm"</a></p>
                            }
                            .into_any()
                        }
                        Ok(VerificationLinkState::Ready { email }) => view! {
                            <p class="text-slate-800">"Confirm that "<strong class="break-all">{email}</strong>" is your address."</p>
                            <ActionForm action=verify attr:class="mt-4 space-y-3">
                                <FormAlert message=form_message(error)/>
                                <input type="hidden" name="token" value=token/>
                                <button type="submit" class=BUTTON_CLASS>"Confirm email address"</button>
                            </ActionForm>
                        }
                        .into_any(),
                        Ok(VerificationLinkState::AlreadyVerified) => view! {
                            <p role="status" class="text-slate-800">"Your email address is already confirmed."</p>
                            <p class="mt-4"><a href="/account" class="link">"Your account"</a></p>
                        }
                        .into_any(),
                        Ok(VerificationLinkState::Unusable { message }) => view! {
                            <p role="alert" class="text-slate-800">{message}</p>
                            <p class="mt-4"><a href="/account#email" class="link">"Send a new link from your account page"</a></p>
                        }
                        .into_any(),
                        Err(e) => view! { <p role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </Card>
    }
}

/// Shown on every page to a signed-in person whose address is not confirmed yet.
#[component]
pub fn VerifyEmailBanner() -> impl IntoView {
    let user = expect_context::<AuthContext>().user;
    view! {
        <Transition>
            {move || Suspend::new(async move {
                user.await.ok().flatten().filter(|u| !u.email_verified).map(|u| view! {
                    <div role="region" aria-label="Address not confirmed" class="border-b border-amber-300 bg-amber-50 px-4 py-2 text-center text-sm text-amber-950">
                        "Confirm your email address: open the link we sent to "
                        <strong class="break-all">{u.email}</strong>
                        ". Until then you cannot accept invitations. "
                        <a href="/account#email" class="link">"Send a new link"</a>
                    </div>
                })
            })}
        </Transition>
    }
}

/// "Send a new link", for `/account`; `sent` when the page follows a successful send.
#[component]
pub fn ResendVerificationForm(sent: bool) -> impl IntoView {
    let resend = ServerAction::<ResendVerification>::new();
    let flash = page_data(|| (), |_| async { take_flash("resend_verification".into()).await.ok().flatten() });
    view! {
        <Suspense>
            {move || Suspend::new(async move {
                let error = submission_error(resend, flash.await.map(|f| f.error));
                view! {
                    {sent.then(|| view! { <p role="status" class="mt-2 text-sm text-slate-800">"We sent a new link. It works for 24 hours."</p> })}
                    <ActionForm action=resend attr:class="mt-2">
                        <FormAlert message=form_message(error)/>
                        <button type="submit" class="btn-sm">"Send a new link"</button>
                    </ActionForm>
                }
            })}
        </Suspense>
    }
}
