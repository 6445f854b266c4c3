//! `/signup`, `/confirm-sign-up/:token` and `/login`. All work as plain HTML form posts (errors come back through
//! a one-time flash) and, once hydrated, as server-function calls.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use super::api::{sign_up_link, take_flash, FormFlash, SignUpLinkState, Signup};
use super::AuthContext;
use crate::components::{Card, FormAlert, TextField, BUTTON_CLASS};
use crate::error::AppError;
use crate::page_data::page_data;

/// The error to show: the latest hydrated submission's, else the plain-form flash's.
fn current_error(
    value: impl Fn() -> Option<Result<(), AppError>> + Send + Sync + 'static,
    flash: Option<FormFlash>,
) -> Signal<Option<AppError>> {
    Signal::derive(move || match value() {
        Some(Err(e)) => Some(e),
        Some(Ok(_)) => None,
        None => flash.as_ref().map(|f| f.error.clone()),
    })
}

fn field_error(error: Signal<Option<AppError>>, field: &'static str) -> Signal<Option<String>> {
    Signal::derive(move || error.get().and_then(|e| e.message_for(field)))
}

#[component]
pub fn SignupPage() -> impl IntoView {
    let signup = ServerAction::<Signup>::new();
    let query = use_query_map();
    // Tracked: with JavaScript the form's redirect changes only the query.
    let sent = move || query.read().get("sent").is_some();
    let flash = page_data(|| (), |_| take_flash("signup".into()));
    view! {
        <Card title="Create your account">
            {move || sent().then(|| view! {
                <div role="status" class="mb-4 rounded-md border border-emerald-300 bg-emerald-50 px-3 py-2 text-sm text-emerald-900">
                    <p class="font-semibold">"Check your email"</p>
                    <p class="mt-1">"We sent a mail to the address you entered. Open the link in it within 24 hours and enter your password to finish creating your account."</p>
                </div>
            })}
            <Suspense>
                {move || Suspend::new(async move {
                    let flash = flash.await.ok().flatten();
                    let name_value = flash.as_ref().and_then(|f| f.value("display_name")).unwrap_or_default();
                    let email_value = flash.as_ref().and_then(|f| f.value("email")).unwrap_or_default();
                    let next = query.read_untracked().get("next").unwrap_or_default();
                    let error = current_error(move || signup.value().get(), flash);
                    view! {
                        <ActionForm action=signup attr:novalidate=true attr:class="space-y-4">
                            <FormAlert message=Signal::derive(move || error.get().and_then(|e| e.form_message()))/>
                            <input type="hidden" name="next" value=next/>
                            <TextField label="Display name" name="display_name" autocomplete="name"
                                value=name_value error=field_error(error, "display_name")/>
                            <TextField label="Email" name="email" kind="email" autocomplete="email"
                                value=email_value error=field_error(error, "email")/>
                            <TextField label="Password" name="password" kind="password" autocomplete="new-password"
                                hint="12 to 128 characters. A long phrase is easier to remember and harder to guess."
                                error=field_error(error, "password")/>
                            <button type="submit" class=BUTTON_CLASS>"Create account"</button>
                        </ActionForm>
                    }
                })}
            </Suspense>
            <p class="mt-6 text-sm text-slate-700">
                "Already have an account? "
                <a href="/login" class="font-medium text-indigo-700 underline focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600">"Sign in"</a>
            </p>
        </Card>
    }
}

/// `/confirm-sign-up/:token`: the mailed link, and the password chosen at sign-up.
#[component]
pub fn ConfirmSignUpPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let token = move || params.read().get("token").unwrap_or_default();
    // Shared with the navigation, whose signed-in person refetches when it completes.
    let confirm = expect_context::<AuthContext>().confirm_sign_up;
    let page = page_data(token, |token| async move {
        (sign_up_link(token).await, take_flash("confirm_sign_up".into()).await.ok().flatten())
    });
    view! {
        <Card title="Finish creating your account">
            <Suspense>
                {move || Suspend::new(async move {
                    let (link, flash) = page.await;
                    let error = current_error(move || confirm.value().get(), flash);
                    match link {
                        Ok(SignUpLinkState::Usable { email }) => view! {
                            <p class="mb-4 text-sm text-slate-700">
                                "Enter the password you chose when signing up to create the account for "
                                <strong class="font-semibold">{email}</strong>"."
                            </p>
                            <ActionForm action=confirm attr:novalidate=true attr:class="space-y-4">
                                <FormAlert message=Signal::derive(move || error.get().and_then(|e| e.form_message()))/>
                                <input type="hidden" name="token" value=token()/>
                                <input type="hidden" name="next" value=query.read_untracked().get("next").unwrap_or_default()/>
                                <TextField label="Password" name="password" kind="password" autocomplete="current-password"
                                    error=field_error(error, "password")/>
                                <button type="submit" class=BUTTON_CLASS>"Create account"</button>
                            </ActionForm>
                        }
                        .into_any(),
                        Ok(SignUpLinkState::Unusable { message }) => view! {
                            <FormAlert message=Signal::derive(move || error.get().and_then(|e| e.form_message()))/>
                            <p role="alert" class="text-slate-800">{message}</p>
                            <p class="mt-4"><a href="/signup" class="link">"Sign up again"</a>" or "<a href="/login" class="link">"sign in"</a></p>
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
pub fn LoginPage() -> impl IntoView {
    let login = expect_context::<AuthContext>().login;
    let query = use_query_map();
    let flash = page_data(|| (), |_| take_flash("login".into()));
    view! {
        <Card title="Sign in to Fluxi">
            <Suspense>
                {move || Suspend::new(async move {
                    let flash = flash.await.ok().flatten();
                    let email_value = flash.as_ref().and_then(|f| f.value("email")).unwrap_or_default();
                    let next = flash
                        .as_ref()
                        .and_then(|f| f.value("next"))
                        .or_else(|| query.read_untracked().get("next"))
                        .unwrap_or_default();
                    let error = current_error(move || login.value().get(), flash);
                    view! {
                        <ActionForm action=login attr:novalidate=true attr:class="space-y-4">
                            <FormAlert message=Signal::derive(move || error.get().and_then(|e| e.form_message()))/>
                            <input type="hidden" name="next" value=next/>
                            <TextField label="Email" name="email" kind="email" autocomplete="username"
                                value=email_value error=field_error(error, "email")/>
                            <TextField label="Password" name="password" kind="password" autocomplete="current-password"
                                error=field_error(error, "password")/>
                            <button type="submit" class=BUTTON_CLASS>"Sign in"</button>
                        </ActionForm>
                    }
                })}
            </Suspense>
            <crate::passkeys::PasskeySignIn/>
            <p class="mt-6 text-sm"><a href="/forgot-password" class="link">"Forgot your password?"</a></p>
            <p class="mt-2 text-sm text-slate-700">
                "New to Fluxi? "
                <a href="/signup" class="font-medium text-indigo-700 underline focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600">"Create an account"</a>
            </p>
        </Card>
    }
}
