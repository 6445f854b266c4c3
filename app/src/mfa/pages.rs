//! `/login/mfa` (the second step of signing in) and `/account/security` (setting up and
//! managing two-factor authentication). Every form works as a plain HTML post (errors
//! come back through a one-time flash that keeps no value) and, hydrated, as a
//! server-function call.

use leptos::either::Either;
use leptos::prelude::*;
use leptos_router::components::Redirect;
use leptos_router::hooks::use_query_map;

use super::api::{
    second_step, security_page, ConfirmTotpSetup, DisableTwoFactor, RegenerateRecoveryCodes, SecurityView,
    StartTotpSetup,
};
use crate::auth::api::take_flash;
use crate::components::{
    field_message as field, form_message, submission_error as current_error, Card, FormAlert, StepUpFields, TextField,
    BUTTON_CLASS,
};
use crate::error::AppError;
use crate::page_data::page_data;

const LINK: &str =
    "font-medium text-indigo-700 underline focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600";

#[component]
pub fn SecondStepPage() -> impl IntoView {
    // Shared with the navigation, whose signed-in person refetches when it completes.
    let verify = expect_context::<crate::auth::AuthContext>().verify;
    let query = use_query_map();
    let recovery = move || query.read().get("recovery").is_some();
    let page = page_data(|| (), |_| async { (second_step().await, take_flash("verify_sign_in".into()).await) });
    view! {
        <Card title="Two-factor authentication">
            <Suspense>
                {move || Suspend::new(async move {
                    let (step, flash) = page.await;
                    let flash = flash.ok().flatten().map(|f| f.error);
                    let (waiting, passkeys) = step.map(|s| (s.waiting, s.passkeys)).unwrap_or_default();
                    let error = current_error(verify, flash.clone());
                    if !waiting {
                        let message = flash.and_then(|e| e.form_message());
                        return Either::Left(view! {
                            <FormAlert message=Signal::derive(move || message.clone())/>
                            <p class="mt-4 text-slate-700">"No sign-in is waiting for a code."</p>
                            <p class="mt-4"><a href="/login" class=LINK>"Sign in"</a></p>
                        });
                    }
                    Either::Right(view! {
                        <ActionForm action=verify attr:novalidate=true attr:class="space-y-4">
                            <FormAlert message=form_message(error)/>
                            {move || if recovery() {
                                Either::Left(view! {
                                    <TextField label="Recovery code" name="recovery_code" autocomplete="off"
                                        hint="One of the codes you saved when you set up two-factor authentication, like abcde-12345."
                                        error=field(error, "recovery_code")/>
                                })
                            } else {
                                Either::Right(view! {
                                    <TextField label="Authentication code" name="code" autocomplete="one-time-code"
                                        hint="The 6-digit code your authenticator app shows for Fluxi."
                                        error=field(error, "code")/>
                                })
                            }}
                            <button type="submit" class=BUTTON_CLASS>"Verify"</button>
                        </ActionForm>
                        <p class="mt-6 text-sm">
                            {move || if recovery() {
                                Either::Left(view! { <a href="/login/mfa" class=LINK>"Use your authenticator app"</a> })
                            } else {
                                Either::Right(view! { <a href="/login/mfa?recovery=1" class=LINK>"Use a recovery code"</a> })
                            }}
                        </p>
                        {passkeys.then(|| view! { <crate::passkeys::PasskeySecondStep/> })}
                    })
                })}
            </Suspense>
        </Card>
    }
}

#[component]
pub fn SecurityPage() -> impl IntoView {
    let query = use_query_map();
    let next = StoredValue::new(crate::auth::api::safe_next_path(query.read_untracked().get("next").as_deref()));
    let start = ServerAction::<StartTotpSetup>::new();
    let confirm = ServerAction::<ConfirmTotpSetup>::new();
    let regenerate = ServerAction::<RegenerateRecoveryCodes>::new();
    let disable = ServerAction::<DisableTwoFactor>::new();
    let page = page_data(
        move || (start.version().get(), confirm.version().get(), regenerate.version().get(), disable.version().get()),
        |_| async {
            let mut flash = None;
            for form in ["start_totp_setup", "confirm_totp_setup", "regenerate_recovery_codes", "disable_two_factor"] {
                if let Ok(Some(f)) = take_flash(form.into()).await {
                    flash = Some((form.to_string(), f.error));
                }
            }
            (security_page().await, flash)
        },
    );
    view! {
        <section class="mx-auto mt-10 w-full max-w-2xl rounded-xl bg-white p-6 shadow-sm ring-1 ring-slate-200 sm:p-8">
            <h1 class="mb-6 text-2xl font-bold text-slate-900">"Security"</h1>
            <Suspense>
                {move || Suspend::new(async move {
                    let (data, flash) = page.await;
                    let flash_for = |form: &str| flash.as_ref().filter(|(f, _)| f == form).map(|(_, e)| e.clone());
                    match data {
                        Err(AppError::Unauthenticated) => {
                            Either::Left(view! { <Redirect path="/login?next=%2Faccount%2Fsecurity"/> }.into_any())
                        }
                        Err(e) => Either::Left(view! { <p role="alert">{e.to_string()}</p> }.into_any()),
                        Ok(p) => {
                            let (mfa, fresh, email) = (p.mfa_enabled, p.step_up_fresh, p.email.clone());
                            let two_factor = two_factor_section(
                                p,
                                next.get_value(),
                                [
                                    current_error(start, flash_for("start_totp_setup")),
                                    current_error(confirm, flash_for("confirm_totp_setup")),
                                    current_error(regenerate, flash_for("regenerate_recovery_codes")),
                                    current_error(disable, flash_for("disable_two_factor")),
                                ],
                                (start, confirm, regenerate, disable),
                            );
                            Either::Right(view! {
                                {two_factor}
                                <crate::passwords::ChangePasswordSection mfa=mfa fresh=fresh/>
                                <crate::email_change::ChangeEmailSection mfa=mfa fresh=fresh current=email/>
                                <crate::passkeys::PasskeysSection mfa=mfa fresh=fresh/>
                            })
                        }
                    }
                })}
            </Suspense>
            <crate::sessions::SessionsSection/>
        </section>
    }
}

fn two_factor_section(
    p: SecurityView,
    next: Option<String>,
    [start_error, confirm_error, regenerate_error, disable_error]: [Signal<Option<AppError>>; 4],
    (start, confirm, regenerate, disable): (
        ServerAction<StartTotpSetup>,
        ServerAction<ConfirmTotpSetup>,
        ServerAction<RegenerateRecoveryCodes>,
        ServerAction<DisableTwoFactor>,
    ),
) -> impl IntoView {
    let fresh = p.fresh_codes.clone().map(recovery_codes_view);
    let p_enabled = p.mfa_enabled;
    let stepped_up = p.step_up_fresh;
    let next_for_forms = next.clone();
    let hidden_next = move || next_for_forms.clone().map(|n| view! { <input type="hidden" name="next" value=n/> });
    let (hidden_next_start, hidden_next_confirm) = (hidden_next.clone(), hidden_next.clone());
    let body = if p.mfa_enabled {
        let left = p.recovery_codes_left;
        let warning = (left <= fluxi_core_low()).then(|| {
            view! {
                <p role="status" class="mt-2 rounded-md border border-amber-300 bg-amber-50 px-3 py-2 text-sm text-amber-900">
                    {format!("Only {left} recovery code{} left. Make new ones so you are not locked out.", if left == 1 { "" } else { "s" })}
                </p>
            }
        });
        view! {
            <p class="text-slate-800"><strong>"On."</strong>" Signing in asks for a code from your authenticator app."</p>
            <p class="mt-2 text-sm text-slate-700">{format!("Recovery codes left: {left}")}</p>
            {warning}
            <h3 class="mt-6 font-semibold">"Regenerate recovery codes"</h3>
            <p class="text-sm text-slate-700">"Replaces all your recovery codes. Confirm it's you."</p>
            <ActionForm action=regenerate attr:class="mt-2 max-w-md space-y-3" attr:novalidate=true>
                <FormAlert message=form_message(regenerate_error)/>
                <StepUpFields password_label="Current password" password_id="regenerate-password" code_id="regenerate-code" mfa=true fresh=stepped_up password_error=field(regenerate_error, "password") code_error=field(regenerate_error, "code")/>
                <button type="submit" class=BUTTON_CLASS>"Regenerate recovery codes"</button>
            </ActionForm>
            <h3 class="mt-6 font-semibold">"Turn off two-factor authentication"</h3>
            <p class="text-sm text-slate-700">"Signing in will ask for your password only. Confirm it's you."</p>
            <ActionForm action=disable attr:class="mt-2 max-w-md space-y-3" attr:novalidate=true>
                <FormAlert message=form_message(disable_error)/>
                <StepUpFields password_label="Current password" password_id="disable-password" code_id="disable-code" mfa=true fresh=stepped_up password_error=field(disable_error, "password") code_error=field(disable_error, "code")/>
                <button type="submit" class="inline-flex w-full justify-center rounded-md bg-red-700 px-4 py-2 font-semibold text-white hover:bg-red-800 focus:outline-none focus-visible:ring-2 focus-visible:ring-red-600 focus-visible:ring-offset-2">"Turn off two-factor authentication"</button>
            </ActionForm>
        }
        .into_any()
    } else if let Some(setup) = p.pending {
        view! {
            <ol class="list-decimal space-y-4 pl-5 text-slate-800">
                <li>
                    <p>"Scan this QR code with your authenticator app:"</p>
                    <div class="mt-2 w-52" inner_html=setup.qr_svg></div>
                    <p class="mt-2 text-sm">"Or enter this key by hand (time-based, 6 digits):"</p>
                    <label for="text-key" class="mt-1 block text-sm font-medium text-slate-800">"Text key"</label>
                    <input id="text-key" readonly value=setup.text_key class="mt-1 block w-full rounded-md border border-slate-300 bg-slate-50 px-3 py-2 font-mono tracking-wide focus:outline-none focus:ring-2 focus:ring-indigo-600"/>
                </li>
                <li>
                    <p>{format!("Enter the code the app shows (this set-up expires at {}).", setup.expires_at_utc)}</p>
                    <ActionForm action=confirm attr:class="mt-2 max-w-md space-y-3" attr:novalidate=true>
                        <FormAlert message=form_message(confirm_error)/>
                        {hidden_next_confirm()}
                        <TextField label="Authentication code" name="code" id="setup-code" autocomplete="one-time-code" error=field(confirm_error, "code")/>
                        <StepUpFields password_label="Current password" password_id="setup-password" code_id="setup-step-up-code" mfa=false fresh=stepped_up password_error=field(confirm_error, "password") code_error=field(confirm_error, "step_up_code")/>
                        <button type="submit" class=BUTTON_CLASS>"Enable two-factor authentication"</button>
                    </ActionForm>
                </li>
            </ol>
        }
        .into_any()
    } else {
        view! {
            <p class="text-slate-800"><strong>"Off."</strong>" Add a second step to signing in: a code from an authenticator app on your phone."</p>
            <ActionForm action=start attr:class="mt-4 max-w-md">
                <FormAlert message=form_message(start_error)/>
                {hidden_next_start()}
                <button type="submit" class=BUTTON_CLASS>"Set up authenticator app"</button>
            </ActionForm>
        }
        .into_any()
    };
    let carry_on = next.filter(|_| p_enabled).map(|n| {
        view! { <p class="mt-6"><a href=n class=LINK>"Continue where you were"</a></p> }
    });
    view! {
        <section aria-labelledby="two-factor-heading">
            <h2 id="two-factor-heading" class="mb-3 text-lg font-semibold">"Two-factor authentication"</h2>
            {fresh}
            {body}
            {carry_on}
        </section>
    }
}

/// The `fluxi_core::mfa::RECOVERY_CODES_LOW` threshold (the UI crate cannot see the
/// domain crate in the browser build).
const fn fluxi_core_low() -> i64 {
    2
}

/// New recovery codes, shown once, with "Copy" (when hydrated) and "Download".
fn recovery_codes_view(codes: Vec<String>) -> impl IntoView {
    let text = codes.join("\n");
    let download = format!("data:text/plain;charset=utf-8,{}", text.replace('\n', "%0A"));
    let copy_text = text.clone();
    let copied = RwSignal::new(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        if write_clipboard(&copy_text) {
            copied.set(true);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (&copy_text, copied);
    };
    view! {
        <div id="recovery-codes" class="mb-6 rounded-md border border-indigo-200 bg-indigo-50 p-4">
            <h3 class="font-semibold">"Your recovery codes"</h3>
            <p class="mt-1 text-sm text-slate-800">
                "Each works once, if you lose your authenticator app. Save them somewhere safe now: they will not be shown again."
            </p>
            <ul class="mt-3 grid grid-cols-2 gap-1 font-mono" aria-label="Recovery codes">
                {codes.into_iter().map(|c| view! { <li>{c}</li> }).collect_view()}
            </ul>
            <div class="mt-3 flex gap-3">
                <button type="button" on:click=copy class="rounded-md bg-white px-3 py-1 text-sm font-medium ring-1 ring-slate-300 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600">"Copy"</button>
                <a href=download download="fluxi-recovery-codes.txt" class=LINK>"Download"</a>
                <span role="status" class="text-sm text-slate-700">{move || copied.get().then_some("Copied.")}</span>
            </div>
        </div>
    }
}

/// `navigator.clipboard.writeText(text)`, looked up at run time (no extra bindings).
#[cfg(feature = "hydrate")]
fn write_clipboard(text: &str) -> bool {
    use js_sys::wasm_bindgen::{JsCast, JsValue};
    let get = |target: &JsValue, key: &str| js_sys::Reflect::get(target, &JsValue::from_str(key)).ok();
    let Some(navigator) = get(&js_sys::global().into(), "navigator") else { return false };
    let Some(clipboard) = get(&navigator, "clipboard").filter(|c| !c.is_undefined()) else { return false };
    let Some(write) = get(&clipboard, "writeText").and_then(|f| f.dyn_into::<js_sys::Function>().ok()) else {
        return false;
    };
    write.call1(&clipboard, &JsValue::from_str(text)).is_ok()
}
