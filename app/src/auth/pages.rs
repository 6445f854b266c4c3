//! `/signup` and `/login`. Both work as plain HTML form posts (errors come back through
//! a one-time flash) and, once hydrated, as server-function calls.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::api::{take_flash, FormFlash};
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
    let signup = expect_context::<AuthContext>().signup;
    let flash = page_data(|| (), |_| take_flash("signup".into()));
    view! {
        <Card title="Create your account">
            <Suspense>
                {move || Suspend::new(async move {
                    let flash = flash.await.ok().flatten();
                    let name_value = flash.as_ref().and_then(|f| f.value("display_name")).unwrap_or_default();
                    let email_value = flash.as_ref().and_then(|f| f.value("email")).unwrap_or_default();
                    let error = current_error(move || signup.value().get(), flash);
                    view! {
                        <ActionForm action=signup attr:novalidate=true attr:class="space-y-4">
                            <FormAlert message=Signal::derive(move || error.get().and_then(|e| e.form_message()))/>
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
