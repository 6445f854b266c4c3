//! "Passkeys" on `/account/security` and "Sign in with a passkey" on `/login`. Adding a
//! passkey and signing in with one run in the browser once the page is hydrated; before
//! that (and without JavaScript) the page says what to do instead. Removing one is a
//! plain form that works either way.

use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::api::{passkeys, RemovePasskey};
use crate::auth::api::take_flash;
use crate::components::{
    field_message, form_message, submission_error, FormAlert, StepUpFields, TextField, BUTTON_CLASS,
};
use crate::error::AppError;
use crate::page_data::page_data;

/// True once the page runs in the browser with its code loaded (effects run only there).
fn hydrated() -> ReadSignal<bool> {
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    hydrated
}

/// "Passkeys" on `/account/security`; `mfa` and `fresh` as for [`StepUpFields`].
#[component]
pub fn PasskeysSection(mfa: bool, fresh: bool) -> impl IntoView {
    let hydrated = hydrated();
    let remove = ServerAction::<RemovePasskey>::new();
    let (added, set_added) = signal(0u32);
    let list = page_data(move || (added.get(), remove.version().get()), |_| passkeys());
    let flash = page_data(|| (), |_| async { take_flash("remove_passkey".into()).await.ok().flatten() });
    let query = use_query_map();
    let removed = move || query.read().get("passkey").as_deref() == Some("removed");
    let (add_error, set_add_error) = signal(None::<AppError>);
    let (busy, set_busy) = signal(false);
    let add_error = Signal::from(add_error);
    // While a ceremony runs the buttons stay focusable (a disabled button would drop focus
    // to the page) and further clicks do nothing.
    let on_add = move |ev: SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        #[cfg(feature = "hydrate")]
        {
            use js_sys::wasm_bindgen::JsCast;
            use leptos::web_sys::{FormData, HtmlFormElement};
            let form = ev.target().and_then(|t| t.dyn_into::<HtmlFormElement>().ok());
            let data = form.as_ref().and_then(|f| FormData::new_with_form(f).ok());
            let value = |key: &str| data.as_ref().and_then(|d| d.get(key).as_string()).unwrap_or_default();
            let (name, password, code) = (value("name"), value("password"), value("code"));
            set_busy.set(true);
            set_add_error.set(None);
            leptos::task::spawn_local(async move {
                let code = Some(code).filter(|c| !c.trim().is_empty());
                let result = async {
                    let options = super::api::start_passkey_registration(name.clone(), password, code).await?;
                    let answer = super::browser::run(super::browser::Ceremony::Create, &options)
                        .await
                        .map_err(AppError::Rejected)?;
                    super::api::finish_passkey_registration(name, answer).await
                }
                .await;
                match result {
                    Ok(()) => {
                        if let Some(form) = form {
                            form.reset();
                        }
                        set_added.update(|n| *n += 1);
                    }
                    Err(e) => set_add_error.set(Some(e)),
                }
                set_busy.set(false);
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (set_busy, set_add_error, set_added);
    };
    view! {
        <section id="passkeys" aria-labelledby="passkeys-heading" class="mt-10">
            <h2 id="passkeys-heading" class="mb-3 text-lg font-semibold">"Passkeys"</h2>
            <p class="mb-3 text-sm text-slate-700">"A passkey signs you in with this device's screen lock or a security key, instead of your password and code. Anyone who can unlock a device holding one can sign in as you."</p>
            {move || removed().then(|| view! { <p role="status" class="mb-3 text-sm text-slate-800">"The passkey was removed."</p> })}
            {move || (added.get() > 0).then(|| view! { <p role="status" class="mb-3 text-sm text-slate-800">"Passkey added. You can now sign in with it."</p> })}
            <Suspense>
                {move || Suspend::new(async move {
                    let error = submission_error(remove, flash.await.map(|f| f.error));
                    match list.await {
                        Ok(keys) if keys.is_empty() => view! { <p class="mb-4 text-sm text-slate-700">"You have no passkeys."</p> }.into_any(),
                        Ok(keys) => {
                            let options = keys.iter().map(|k| view! { <option value=k.id.clone()>{format!("{} (added {})", k.name, k.added)}</option> }).collect_view();
                            let items = keys
                                .into_iter()
                                .map(|k| view! {
                                    <li class="py-2">
                                        <span class="font-medium text-slate-900">{k.name}</span>
                                        <span class="block text-sm text-slate-700">"Added " {k.added} ", " {k.last_used.map(|at| format!("last used {at}")).unwrap_or_else(|| "never used".into())}</span>
                                    </li>
                                })
                                .collect_view();
                            view! {
                                <ul aria-label="Your passkeys" class="mb-4 divide-y divide-slate-200">{items}</ul>
                                <ActionForm action=remove attr:aria-label="Remove a passkey" attr:class="mb-6 max-w-md space-y-3" attr:novalidate=true>
                                    <FormAlert message=form_message(error)/>
                                    <div>
                                        <label for="remove-passkey" class="block text-sm font-medium text-slate-800">"Passkey to remove"</label>
                                        <select id="remove-passkey" name="passkey" class="mt-1 block w-full rounded-md border border-slate-400 px-3 py-2 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600">{options}</select>
                                    </div>
                                    <StepUpFields password_label="Current password" password_id="remove-passkey-password" code_id="remove-passkey-code" mfa=mfa fresh=fresh password_error=field_message(error, "password") code_error=field_message(error, "code")/>
                                    <button type="submit" class="btn-sm">"Remove passkey"</button>
                                </ActionForm>
                            }
                            .into_any()
                        }
                        Err(e) => view! { <p role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
            {move || if hydrated.get() {
                view! {
                    <form aria-label="Add a passkey" class="max-w-md space-y-3" novalidate=true on:submit=on_add>
                        <FormAlert message=form_message(add_error)/>
                        <TextField label="Passkey name" name="name" id="passkey-name" hint="For example the device it is on." error=field_message(add_error, "name")/>
                        <StepUpFields password_label="Current password" password_id="add-passkey-password" code_id="add-passkey-code" mfa=mfa fresh=false password_error=field_message(add_error, "password") code_error=field_message(add_error, "code")/>
                        <button type="submit" class=BUTTON_CLASS aria-disabled=move || busy.get().to_string()>"Add a passkey"</button>
                    </form>
                }
                .into_any()
            } else {
                view! { <p class="text-sm text-slate-700">"Adding a passkey needs JavaScript, which is off or still loading. Your password and two-factor authentication keep working without it."</p> }.into_any()
            }}
        </section>
    }
}

/// "Sign in with a passkey" under the sign-in form.
#[component]
pub fn PasskeySignIn() -> impl IntoView {
    let hydrated = hydrated();
    let query = use_query_map();
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let sign_in = move |_| {
        if busy.get_untracked() {
            return;
        }
        let next = crate::auth::api::safe_next_path(query.read_untracked().get("next").as_deref())
            .unwrap_or_else(|| "/account".into());
        #[cfg(feature = "hydrate")]
        {
            set_busy.set(true);
            set_error.set(None);
            leptos::task::spawn_local(async move {
                let result = async {
                    let options = super::api::start_passkey_sign_in().await.map_err(|e| e.to_string())?;
                    let answer = super::browser::run(super::browser::Ceremony::Get, &options).await?;
                    super::api::finish_passkey_sign_in(answer).await.map_err(|e| e.to_string())
                }
                .await;
                match result {
                    // A full load: every part of the page then knows who is signed in.
                    Ok(()) => {
                        let _ = window().location().set_href(&next);
                    }
                    Err(message) => {
                        set_error.set(Some(message));
                        set_busy.set(false);
                    }
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (next, set_busy, set_error);
    };
    view! {
        <div class="mt-6 border-t border-slate-200 pt-6">
            {move || if hydrated.get() {
                view! {
                    <FormAlert message=error/>
                    <button type="button" class="btn-sm w-full" on:click=sign_in aria-disabled=move || busy.get().to_string()>"Sign in with a passkey"</button>
                }
                .into_any()
            } else {
                view! { <p class="text-sm text-slate-700">"Signing in with a passkey needs JavaScript; sign in with your email and password instead."</p> }.into_any()
            }}
        </div>
    }
}

/// "Use a passkey" on the second step of a password sign-in (`/login/mfa`), for accounts
/// that have one.
#[component]
pub fn PasskeySecondStep() -> impl IntoView {
    let hydrated = hydrated();
    let (error, set_error) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let use_passkey = move |_| {
        if busy.get_untracked() {
            return;
        }
        #[cfg(feature = "hydrate")]
        {
            use crate::mfa::api::{finish_passkey_second_step, start_passkey_second_step};
            set_busy.set(true);
            set_error.set(None);
            leptos::task::spawn_local(async move {
                let result = async {
                    let options = start_passkey_second_step().await.map_err(|e| e.to_string())?;
                    let answer = super::browser::run(super::browser::Ceremony::Get, &options).await?;
                    finish_passkey_second_step(answer).await.map_err(|e| e.to_string())
                }
                .await;
                match result {
                    Ok(next) => {
                        let _ = window().location().set_href(&next);
                    }
                    Err(message) => {
                        set_error.set(Some(message));
                        set_busy.set(false);
                    }
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (set_busy, set_error);
    };
    view! {
        <div class="mt-6 border-t border-slate-200 pt-6">
            {move || if hydrated.get() {
                view! {
                    <FormAlert message=error/>
                    <button type="button" class="btn-sm w-full" on:click=use_passkey aria-disabled=move || busy.get().to_string()>"Use a passkey"</button>
                }
                .into_any()
            } else {
                view! { <p class="text-sm text-slate-700">"With JavaScript on, you can also use one of your passkeys here."</p> }.into_any()
            }}
        </div>
    }
}
