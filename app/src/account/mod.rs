//! `/account`: the signed-in person's own details.

use leptos::prelude::*;
use leptos_router::components::Redirect;
use leptos_router::hooks::use_query_map;

use crate::auth::AuthContext;
use crate::verification::ResendVerificationForm;

#[component]
pub fn AccountPage() -> impl IntoView {
    let user = expect_context::<AuthContext>().user;
    let query = use_query_map();
    view! {
        <Suspense>
            {move || {
                // Where a verification form sent the person back to (tracked: with
                // JavaScript the form's redirect changes only the query).
                let note = query.read().get("email");
                Suspend::new(async move {
                match user.await {
                    Ok(Some(me)) => {
                        let email_state = if me.email_verified {
                            let just = match note.as_deref() {
                                Some("verified") => Some("Thank you: your email address is confirmed."),
                                Some("changed") => Some("Your email address was changed."),
                                Some("restored") => Some("Your email address was restored and your password replaced. Every other session was signed out."),
                                _ => None,
                            };
                            view! {
                                <p class="text-sm text-emerald-800">"Confirmed"</p>
                                {just.map(|message| view! { <p role="status" class="mt-1 text-sm text-slate-800">{message}</p> })}
                            }
                            .into_any()
                        } else {
                            view! {
                                <p class="text-sm text-amber-900">"Not confirmed yet. Open the link we mailed you, or send a new one."</p>
                                <ResendVerificationForm sent=note.as_deref() == Some("sent")/>
                            }
                            .into_any()
                        };
                        view! {
                            <section class="mx-auto mt-10 w-full max-w-xl rounded-xl bg-white p-6 shadow-sm ring-1 ring-slate-200 sm:p-8">
                                <h1 class="mb-6 text-2xl font-bold text-slate-900">"Your account"</h1>
                                <dl class="grid grid-cols-1 gap-4 sm:grid-cols-3">
                                    <dt class="text-sm font-medium text-slate-600">"Display name"</dt>
                                    <dd class="text-slate-900 sm:col-span-2">{me.display_name}</dd>
                                    <dt class="text-sm font-medium text-slate-600">"Email"</dt>
                                    <dd id="email" class="break-all text-slate-900 sm:col-span-2">{me.email}{email_state}</dd>
                                </dl>
                                <p class="mt-6"><a href="/account/security" class="link">"Security and two-factor authentication"</a></p>
                                <p class="mt-2"><a href="/account/activity" class="link">"Your account activity"</a></p>
                            </section>
                        }
                        .into_any()
                    }
                    _ => view! { <Redirect path="/login?next=%2Faccount"/> }.into_any(),
                }
            })}}
        </Suspense>
    }
}
