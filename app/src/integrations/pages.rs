//! `/w/{slug}/integrations`: one card per provider of the catalogue. Members and admins
//! connect and manage their own; owners and admins also see (and can disconnect) every
//! member's; viewers see the catalogue only. Every control is a plain form (works without
//! JavaScript); each action comes back to this page with what happened in its address.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use super::api::*;
use crate::auth::api::take_flash;
use crate::components::{form_message, submission_error, FormAlert};
use crate::page_data::page_data;
use crate::workspaces::problem_view;

/// The sentence for what an action reported in the page's address.
fn outcome_message(
    query: &leptos_router::params::ParamsMap,
    provider_name: &str,
    revocation_help: &str,
) -> Option<String> {
    let get = |k: &str| query.get(k);
    if let Some(refused) = get("refused") {
        return Some(refusal_words(&refused).to_string());
    }
    if get("connected").as_deref() == Some("1") {
        return Some(format!("{provider_name} is connected."));
    }
    if let Some(key) = get("key") {
        return Some(match key.as_str() {
            "replaced" => format!("Your {provider_name} key was replaced."),
            _ => format!("Your {provider_name} key was saved."),
        });
    }
    if let Some(checked) = get("checked") {
        return Some(match checked.as_str() {
            "ok" => format!("The {provider_name} connection works."),
            "needs-reconnecting" => format!("{provider_name} no longer accepts this connection: reconnect it."),
            _ => format!("{provider_name} could not be reached. Try again in a few minutes."),
        });
    }
    let disconnected = get("disconnected")?;
    Some(match disconnected.as_str() {
        "revoked" => format!("Disconnected. {provider_name} confirmed that Fluxi's access is revoked."),
        "key-deleted" => format!("The key was deleted from Fluxi. To stop it working anywhere, delete it at {provider_name} too."),
        "shared" => format!("Disconnected, and Fluxi deleted its access here. Your connection of the same {provider_name} account elsewhere in Fluxi still uses its authorization there, so it was not revoked."),
        "not-offered" => format!("Disconnected, and Fluxi deleted its access. {provider_name} offers no way for Fluxi to revoke it there: {revocation_help}"),
        _ => format!(
            "Disconnected, and Fluxi deleted its access here, but {provider_name} could not be reached to revoke it. Fluxi keeps trying for 7 days; to finish now: {revocation_help}"
        ),
    })
}

fn refusal_words(reason: &str) -> &'static str {
    match reason {
        "expired" => "That connection attempt took longer than 10 minutes. Start again.",
        "other_session" => "That connection attempt was started in another browser session. Start again from this one.",
        "not_allowed" => "Your role no longer allows connecting integrations in this workspace.",
        "provider_denied" => "The provider did not grant access, so nothing was connected.",
        "code_refused" => "The provider refused to complete the connection, so nothing was connected. Start again.",
        "scope_escalation" => "The provider granted more permissions than Fluxi asked for, so the connection was refused and nothing was stored.",
        "provider_unavailable" => "The provider could not be reached. Try again in a few minutes.",
        _ => "That connection attempt is not known or was already used. Start again.",
    }
}

#[component]
pub fn IntegrationsPage() -> impl IntoView {
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let connect = ServerAction::<ConnectIntegration>::new();
    let save = ServerAction::<SaveApiKey>::new();
    let disconnect = ServerAction::<DisconnectIntegration>::new();
    let check = ServerAction::<CheckIntegration>::new();
    let page = page_data(
        move || (slug(), save.version().get(), disconnect.version().get(), check.version().get()),
        |(slug, ..)| get_integrations_page(slug),
    );
    let flashes = page_data(
        || (),
        |_| async {
            let mut found = Vec::new();
            for form in ["connect_integration", "save_api_key", "disconnect_integration", "check_integration"] {
                if let Ok(Some(f)) = take_flash(form.into()).await {
                    found.push((form.to_string(), f));
                }
            }
            found
        },
    );
    let query = use_query_map();
    // Which card the last "Save key" came from (the action's input is gone once it ends).
    let last_saved = RwSignal::new(None::<String>);
    let save_input = save.input();
    Effect::new(move |_| {
        if let Some(input) = save_input.get() {
            last_saved.set(Some(input.provider));
        }
    });
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let flashes = flashes.await;
                let flash_of = |form: &str| flashes.iter().find(|(f, _)| *f == form).map(|(_, f)| f.clone());
                // A plain post's error belongs to the card of the provider it was for.
                let save_flash = flash_of("save_api_key");
                let other_flash = flash_of("connect_integration").or(flash_of("disconnect_integration")).or(flash_of("check_integration"));
                match page.await {
                    Err(e) => problem_view(e),
                    Ok(p) => {
                        let q = query.read_untracked();
                        let about = q.get("provider");
                        let slug = p.slug.clone();
                        let save_error = submission_error(save, save_flash.as_ref().map(|f| f.error.clone()));
                        let save_for = {
                            let flashed = save_flash.as_ref().and_then(|f| f.values.iter().find(|(k, _)| k == "provider").map(|(_, v)| v.clone()));
                            Signal::derive(move || last_saved.get().or_else(|| flashed.clone()))
                        };
                        let other_error = {
                            let (c, d, k) = (connect.value(), disconnect.value(), check.value());
                            let flashed = other_flash.map(|f| f.error);
                            Signal::derive(move || {
                                let live = [c.get().and_then(|r| r.err()), d.get().and_then(|r| r.err()), k.get().and_then(|r| r.err())];
                                live.into_iter().flatten().next().or_else(|| flashed.clone())
                            })
                        };
                        let cards = p
                            .providers
                            .into_iter()
                            .map(|card| {
                                let message = (about.as_deref() == Some(card.id.as_str()))
                                    .then(|| outcome_message(&q, &card.name, card.revocation_help.as_deref().unwrap_or("")))
                                    .flatten();
                                view! { <ProviderCardView card slug=slug.clone() can_connect=p.can_connect message save_error save_for connect disconnect check save/> }
                            })
                            .collect_view();
                        let refused = (about.is_none()).then(|| q.get("refused")).flatten().map(|r| refusal_words(&r));
                        view! {
                            <section class="mx-auto mt-8 max-w-3xl" aria-labelledby="integrations-heading">
                                <p class="text-sm"><a href=format!("/w/{}", p.slug) class="link">{p.name.clone()}</a></p>
                                <h1 id="integrations-heading" class="mt-1 text-2xl font-bold">"Integrations"</h1>
                                <p class="mt-2 text-slate-700">{if p.can_connect {
                                    "Connect the tools you use. Fluxi asks only for the permissions listed on each card, keeps what the provider gives it encrypted, and you can disconnect at any time."
                                } else {
                                    "The tools members of this workspace can connect. Your role does not allow connecting them."
                                }}</p>
                                {refused.map(|r| view! { <p role="alert" class="mt-4 rounded-md border border-red-300 bg-red-50 px-3 py-2 text-sm text-red-800">{r}</p> })}
                                <FormAlert message=form_message(other_error)/>
                                <div class="mt-6 space-y-6">{cards}</div>
                            </section>
                        }
                        .into_any()
                    }
                }
            })}
        </Suspense>
    }
}

#[component]
#[allow(clippy::too_many_arguments)]
fn ProviderCardView(
    card: ProviderCard,
    slug: String,
    can_connect: bool,
    message: Option<String>,
    save_error: Signal<Option<crate::error::AppError>>,
    save_for: Signal<Option<String>>,
    connect: ServerAction<ConnectIntegration>,
    disconnect: ServerAction<DisconnectIntegration>,
    check: ServerAction<CheckIntegration>,
    save: ServerAction<SaveApiKey>,
) -> impl IntoView {
    let slug = StoredValue::new(slug);
    let heading = format!("{}-heading", card.id);
    let provider = card.id.clone();
    let is_alert =
        message.as_deref().is_some_and(|m| m.contains("could not") || m.contains("refused") || m.contains("no longer"));
    let body = if !card.configured {
        view! { <p class="mt-3 text-sm text-slate-700">"Not configured by your administrator."</p> }.into_any()
    } else if card.api_key {
        let id = format!("api-key-{}", card.id);
        let error_id = format!("{id}-error");
        let mine_for = provider.clone();
        let error_here =
            Signal::derive(
                move || if save_for.get().as_deref() == Some(mine_for.as_str()) { save_error.get() } else { None },
            );
        let field_error = Signal::derive(move || error_here.get().and_then(|e| e.message_for("api_key")));
        let current = card.mine.clone().map(|c| {
            let connection = c.id.clone();
            view! {
                <p class="mt-3 text-sm text-slate-800">"Your key " <span class="font-mono">{c.masked_key.clone().unwrap_or_default()}</span> ", saved " {c.updated_on.clone()} " by " {c.saved_by.clone()} "."</p>
                <ActionForm action=disconnect attr:class="mt-2">
                    <input type="hidden" name="slug" value=slug.get_value()/>
                    <input type="hidden" name="connection" value=connection/>
                    <button type="submit" class="btn-sm">"Delete key"</button>
                </ActionForm>
            }
        });
        let form = can_connect.then(|| {
            let described = move || field_error.get().map(|_| error_id.clone());
            view! {
                <ActionForm action=save attr:class="mt-3 max-w-md space-y-2" attr:novalidate=true>
                    <FormAlert message=form_message(error_here)/>
                    <input type="hidden" name="slug" value=slug.get_value()/>
                    <input type="hidden" name="provider" value=provider.clone()/>
                    <label for=id.clone() class="block text-sm font-medium text-slate-800">"API key"</label>
                    <input id=id.clone() name="api_key" type="password" autocomplete="off" spellcheck="false"
                        aria-invalid=move || field_error.get().map(|_| "true") aria-describedby=described
                        class="block w-full rounded-md border border-slate-300 bg-white px-3 py-2 font-mono text-slate-900 focus:outline-none focus:ring-2 focus:ring-indigo-600"/>
                    {move || field_error.get().map(|m| view! { <p id=format!("api-key-{}-error", provider.clone()) class="text-sm font-medium text-red-700">{m}</p> })}
                    <p class="text-xs text-slate-600">{card.key_help.clone().unwrap_or_default()}</p>
                    <button type="submit" class="btn-sm">"Save key"</button>
                </ActionForm>
            }
        });
        view! { {current} {form} }.into_any()
    } else {
        let scopes = card.scopes.clone();
        let asks = view! {
            <ul class="mt-1 list-disc pl-5 text-sm text-slate-800">
                {if scopes.is_empty() {
                    view! { <li>"No permissions beyond what you choose at the provider."</li> }.into_any()
                } else {
                    scopes.into_iter().map(|s| view! { <li>{s.means}</li> }).collect_view().into_any()
                }}
            </ul>
        };
        let connect_form = |label: &'static str| {
            view! {
                <ActionForm action=connect attr:class="mt-3">
                    <input type="hidden" name="slug" value=slug.get_value()/>
                    <input type="hidden" name="provider" value=provider.clone()/>
                    <button type="submit" class="btn-sm">{label}</button>
                </ActionForm>
            }
        };
        match card.mine.clone() {
            Some(c) => {
                let connection = StoredValue::new(c.id.clone());
                view! {
                <p class="mt-3 text-sm font-medium text-slate-900">
                    {if c.needs_reconnect { "Needs reconnecting: the provider no longer accepts Fluxi's access.".to_string() } else { format!("Connected as {}", c.account.clone().unwrap_or_else(|| "an unnamed account".into())) }}
                </p>
                <p class="mt-1 text-sm text-slate-700">"Permissions granted:"</p>
                <ul class="mt-1 list-disc pl-5 text-sm text-slate-800">{c.scopes.iter().map(|s| view! { <li>{s.clone()}</li> }).collect_view()}</ul>
                <p class="mt-1 text-sm text-slate-700">"Connected on " {c.connected_on.clone()} ", " {c.last_used.clone().map(|at| format!("last used {at}")).unwrap_or_else(|| "not used yet".into())} "."</p>
                <div class="mt-3 flex flex-wrap gap-3">
                    {(!c.needs_reconnect).then(|| view! {
                        <ActionForm action=check>
                            <input type="hidden" name="slug" value=slug.get_value()/>
                            <input type="hidden" name="connection" value=connection.get_value()/>
                            <button type="submit" class="btn-sm">"Check connection"</button>
                        </ActionForm>
                    })}
                    {c.needs_reconnect.then(|| connect_form("Reconnect"))}
                    <ActionForm action=disconnect>
                        <input type="hidden" name="slug" value=slug.get_value()/>
                        <input type="hidden" name="connection" value=connection.get_value()/>
                        <button type="submit" class="btn-sm">"Disconnect"</button>
                    </ActionForm>
                </div>
                }
                .into_any()
            }
            None if can_connect => view! {
                <p class="mt-3 text-sm text-slate-700">"Connecting asks " {card.name.clone()} " for:"</p>
                {asks}
                {connect_form("Connect")}
            }
            .into_any(),
            None => view! { <p class="mt-3 text-sm text-slate-700">"Connecting asks for:"</p> {asks} }.into_any(),
        }
    };
    let provider_name = card.name.clone();
    let others = (!card.others.is_empty()).then(|| {
        let items = card
            .others
            .clone()
            .into_iter()
            .map(|c| {
                let what = c.account.clone().map(|a| format!("connected as {a}")).or_else(|| c.masked_key.clone().map(|k| format!("key {k}"))).unwrap_or_default();
                let label = format!("Disconnect {}'s {}", c.owner, provider_name);
                view! {
                    <li class="flex items-center justify-between gap-3 py-2 text-sm">
                        <span>{c.owner.clone()} ", " {what} {c.needs_reconnect.then_some(" (needs reconnecting)")}</span>
                        <ActionForm action=disconnect>
                            <input type="hidden" name="slug" value=slug.get_value()/>
                            <input type="hidden" name="connection" value=c.id.clone()/>
                            <button type="submit" class="btn-sm" aria-label=label>"Disconnect"</button>
                        </ActionForm>
                    </li>
                }
            })
            .collect_view();
        view! {
            <h3 class="mt-4 text-sm font-semibold text-slate-900">"Other members' connections"</h3>
            <ul class="divide-y divide-slate-200">{items}</ul>
        }
    });
    let labelled_by = heading.clone();
    view! {
        <section id=card.id.clone() aria-labelledby=labelled_by class="rounded-xl bg-white p-5 shadow-sm ring-1 ring-slate-200">
            <h2 id=heading class="text-lg font-semibold">{card.name.clone()}</h2>
            <p class="mt-1 text-sm text-slate-700">{card.description.clone()}</p>
            {message.map(|m| if is_alert {
                view! { <p role="alert" class="mt-3 rounded-md border border-red-300 bg-red-50 px-3 py-2 text-sm text-red-800">{m}</p> }.into_any()
            } else {
                view! { <p role="status" class="mt-3 rounded-md border border-emerald-300 bg-emerald-50 px-3 py-2 text-sm text-emerald-900">{m}</p> }.into_any()
            })}
            {body}
            {others}
        </section>
    }
}
