//! Small accessible building blocks shared by the pages.

use leptos::prelude::*;

/// A labelled input whose error (if any) is shown right under it and announced through
/// `aria-describedby` / `aria-invalid`. Its element id is `id`, else `name`: a page with
/// two fields of the same name gives them distinct ids, or the second one's label names
/// the first one and the second has none.
#[component]
pub fn TextField(
    label: &'static str,
    name: &'static str,
    #[prop(optional)] id: Option<&'static str>,
    #[prop(default = "text")] kind: &'static str,
    #[prop(optional)] autocomplete: Option<&'static str>,
    #[prop(optional)] hint: Option<&'static str>,
    #[prop(into)] error: Signal<Option<String>>,
    #[prop(into, optional)] value: Signal<String>,
) -> impl IntoView {
    let id = id.unwrap_or(name);
    let error_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described_by = {
        let (error_id, hint_id) = (error_id.clone(), hint_id.clone());
        move || {
            let mut ids = Vec::new();
            if hint.is_some() {
                ids.push(hint_id.clone());
            }
            if error.get().is_some() {
                ids.push(error_id.clone());
            }
            (!ids.is_empty()).then(|| ids.join(" "))
        }
    };
    view! {
        <div class="space-y-1">
            <label for=id class="block text-sm font-medium text-slate-800">
                {label}
            </label>
            <input
                id=id
                name=name
                type=kind
                autocomplete=autocomplete
                value=move || value.get()
                aria-invalid=move || error.get().map(|_| "true")
                aria-describedby=described_by
                class="block w-full rounded-md border border-slate-300 bg-white px-3 py-2 text-slate-900 shadow-sm focus:border-indigo-600 focus:outline-none focus:ring-2 focus:ring-indigo-600 aria-[invalid=true]:border-red-600"
            />
            {hint.map(|h| view! { <p id=hint_id class="text-xs text-slate-600">{h}</p> })}
            {move || {
                error
                    .get()
                    .map(|message| {
                        view! {
                            <p id=error_id.clone() class="text-sm font-medium text-red-700">
                                {message}
                            </p>
                        }
                    })
            }}
        </div>
    }
}

/// A form-level message (errors that belong to no single field).
#[component]
pub fn FormAlert(#[prop(into)] message: Signal<Option<String>>) -> impl IntoView {
    move || {
        message.get().map(|m| {
            view! {
                <div role="alert" class="rounded-md border border-red-300 bg-red-50 px-3 py-2 text-sm text-red-800">
                    {m}
                </div>
            }
        })
    }
}

pub const BUTTON_CLASS: &str = "inline-flex w-full justify-center rounded-md bg-indigo-700 px-4 py-2 font-semibold text-white hover:bg-indigo-800 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600 focus-visible:ring-offset-2";

/// The centred card the sign-in and sign-up pages sit in.
#[component]
pub fn Card(title: &'static str, children: Children) -> impl IntoView {
    view! {
        <div class="mx-auto mt-10 w-full max-w-md rounded-xl bg-white p-6 shadow-sm ring-1 ring-slate-200 sm:p-8">
            <h1 class="mb-6 text-2xl font-bold text-slate-900">{title}</h1>
            {children()}
        </div>
    }
}

/// The second factor of a step-up, for people with two-factor authentication: a code from
/// their app, or one of their recovery codes (the server tells them apart).
#[component]
pub fn StepUpCodeField(id: &'static str, #[prop(into)] error: Signal<Option<String>>) -> impl IntoView {
    view! {
        <TextField
            label="Authentication code"
            name="code"
            id=id
            autocomplete="one-time-code"
            hint="The 6-digit code from your authenticator app, or a recovery code."
            error=error
        />
    }
}

/// The step-up of a sensitive form: the current password, and for people with two-factor
/// authentication a code — or, when this session confirmed who it is within the last
/// minutes (the step-up window), a note instead: the action goes ahead without asking.
#[component]
pub fn StepUpFields(
    password_label: &'static str,
    password_id: &'static str,
    code_id: &'static str,
    mfa: bool,
    fresh: bool,
    #[prop(into)] password_error: Signal<Option<String>>,
    #[prop(into)] code_error: Signal<Option<String>>,
) -> impl IntoView {
    if fresh {
        return view! {
            <input type="hidden" name="password" value=""/>
            <p class="text-sm text-slate-700">"You confirmed it's you a few minutes ago: no password needed."</p>
        }
        .into_any();
    }
    view! {
        <TextField label=password_label name="password" id=password_id kind="password" autocomplete="current-password" error=password_error/>
        {mfa.then(|| view! { <StepUpCodeField id=code_id error=code_error/> })}
    }
    .into_any()
}

/// The error a form shows: its hydrated submission's, else the plain post's flash.
pub fn submission_error<A>(
    action: ServerAction<A>,
    flash: Option<crate::error::AppError>,
) -> Signal<Option<crate::error::AppError>>
where
    A: leptos::server_fn::ServerFn<Output = (), Error = crate::error::AppError> + Clone + Send + Sync + 'static,
    A::Output: Send + Sync,
{
    // `value()` builds a new mapped signal on every call: take it once, not on every read.
    let value = action.value();
    Signal::derive(move || match value.get() {
        Some(Err(e)) => Some(e),
        Some(Ok(_)) => None,
        None => flash.clone(),
    })
}

/// The message of `error` that belongs next to the field `name`.
pub fn field_message(error: Signal<Option<crate::error::AppError>>, name: &'static str) -> Signal<Option<String>> {
    Signal::derive(move || error.get().and_then(|e| e.message_for(name)))
}

/// The message of `error` for the top of its form.
pub fn form_message(error: Signal<Option<crate::error::AppError>>) -> Signal<Option<String>> {
    Signal::derive(move || error.get().and_then(|e| e.form_message()))
}
