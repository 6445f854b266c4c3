//! `/w/{slug}/assistant`: the person's conversation with the workspace assistant, the
//! actions it proposed as cards to confirm or dismiss, and why anything was blocked or
//! flagged. Every control is a plain form (works without JavaScript).

use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use super::api::*;
use crate::auth::api::take_flash;
use crate::components::{form_message, FormAlert};
use crate::page_data::page_data;
use crate::workspaces::problem_view;

const FIELD: &str = "block w-full rounded-md border border-slate-300 bg-white px-3 py-2 text-slate-900 focus:outline-none focus:ring-2 focus:ring-indigo-600";

fn inline_view(i: InlineView) -> AnyView {
    match i {
        InlineView::Text(t) => view! { <span>{t}</span> }.into_any(),
        InlineView::Strong(t) => view! { <strong>{t}</strong> }.into_any(),
        InlineView::Code(t) => {
            view! { <code class="rounded bg-slate-100 px-1 font-mono text-sm">{t}</code> }.into_any()
        }
        // The output guard only lets through paths of this site; checked again here.
        InlineView::Link { text, path } if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            view! { <a class="link" href=path>{text}</a> }.into_any()
        }
        InlineView::Link { text, .. } => view! { <span>{text}</span> }.into_any(),
    }
}

fn blocks_view(blocks: Vec<BlockView>) -> impl IntoView {
    blocks
        .into_iter()
        .map(|b| match b {
            BlockView::Paragraph(items) => {
                view! { <p class="mt-1">{items.into_iter().map(inline_view).collect_view()}</p> }.into_any()
            }
            BlockView::List(items) => view! {
                <ul class="mt-1 list-disc pl-5">
                    {items.into_iter().map(|i| view! { <li>{i.into_iter().map(inline_view).collect_view()}</li> }).collect_view()}
                </ul>
            }
            .into_any(),
        })
        .collect_view()
}

#[component]
pub fn AssistantPage() -> impl IntoView {
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let send = ServerAction::<SendAssistantMessage>::new();
    let confirm = ServerAction::<ConfirmAssistantProposal>::new();
    let dismiss = ServerAction::<DismissAssistantProposal>::new();
    let switch = ServerAction::<SetAssistant>::new();
    let page = page_data(
        move || {
            (slug(), send.version().get(), confirm.version().get(), dismiss.version().get(), switch.version().get())
        },
        |(slug, ..)| get_assistant_page(slug),
    );
    let flashes = page_data(
        || (),
        |_| async {
            let mut found = Vec::new();
            for form in
                ["send_assistant_message", "confirm_assistant_proposal", "dismiss_assistant_proposal", "set_assistant"]
            {
                if let Ok(Some(f)) = take_flash(form.into()).await {
                    found.push((form.to_string(), f));
                }
            }
            found
        },
    );
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let flashes = flashes.await;
                let flash_of = |form: &str| flashes.iter().find(|(f, _)| *f == form).map(|(_, f)| f.error.clone());
                let send_flash = flash_of("send_assistant_message");
                let send_error = {
                    let value = send.value();
                    Signal::derive(move || match value.get() {
                        Some(Err(e)) => Some(e),
                        Some(Ok(())) => None,
                        None => send_flash.clone(),
                    })
                };
                let decide_flash = flash_of("confirm_assistant_proposal").or(flash_of("dismiss_assistant_proposal")).or(flash_of("set_assistant"));
                let decide_error = {
                    let (c, d, s) = (confirm.value(), dismiss.value(), switch.value());
                    Signal::derive(move || {
                        let live = [c.get().and_then(|r| r.err()), d.get().and_then(|r| r.err()), s.get().and_then(|r| r.err())];
                        live.into_iter().flatten().next().or_else(|| decide_flash.clone())
                    })
                };
                match page.await {
                    Err(e) => problem_view(e),
                    Ok(p) => {
                        let slug = StoredValue::new(p.slug.clone());
                        let has_mfa = p.has_mfa;
                        let ready = p.ready;
                        let messages = p.messages.clone().into_iter().map(|m| {
                            view! { <MessageItem message=m slug=slug.get_value() ready has_mfa confirm dismiss/> }
                        }).collect_view();
                        let message_error = Signal::derive(move || send_error.get().and_then(|e| e.message_for("message")));
                        let alerts = (!p.alerts.is_empty()).then(|| view! {
                            <div role="alert" class="mt-4 rounded-md border border-amber-300 bg-amber-50 px-3 py-2 text-sm text-amber-900">
                                <p class="font-semibold">"Unusual assistant activity"</p>
                                <ul class="list-disc pl-5">{p.alerts.iter().map(|a| view! { <li>{a.clone()}</li> }).collect_view()}</ul>
                            </div>
                        });
                        let switch_form = p.can_switch.then(|| {
                            let (value, label) = if p.on_for_workspace { ("off", "Turn the assistant off") } else { ("on", "Turn the assistant on") };
                            view! {
                                <ActionForm action=switch attr:class="mt-4">
                                    <input type="hidden" name="slug" value=slug.get_value()/>
                                    <input type="hidden" name="enabled" value=value/>
                                    <button type="submit" class="btn-sm">{label}</button>
                                </ActionForm>
                            }
                        });
                        view! {
                            <section class="mx-auto mt-8 max-w-3xl" aria-labelledby="assistant-heading">
                                <p class="text-sm"><a href=format!("/w/{}", p.slug) class="link">{p.name.clone()}</a></p>
                                <h1 id="assistant-heading" class="mt-1 text-2xl font-bold">"Assistant"</h1>
                                <p class="mt-2 text-slate-700">"Ask about this workspace's members, notes, your integrations and recent activity. The assistant can propose changes; nothing happens until you confirm exactly what it proposed."</p>
                                {p.unavailable.clone().map(|u| view! { <p role="status" class="mt-4 rounded-md border border-slate-300 bg-slate-50 px-3 py-2 text-sm text-slate-800">{u}</p> })}
                                {alerts}
                                {switch_form}
                                <FormAlert message=form_message(decide_error)/>
                                <ol aria-label="Conversation" class="mt-6 space-y-4">{messages}</ol>
                                {p.ready.then(|| view! {
                                    <ActionForm action=send attr:class="mt-6 space-y-2" attr:novalidate=true>
                                        <FormAlert message=form_message(send_error)/>
                                        <input type="hidden" name="slug" value=slug.get_value()/>
                                        <label for="assistant-message" class="block text-sm font-medium text-slate-800">"Message"</label>
                                        <textarea id="assistant-message" name="message" rows="3" maxlength="4000"
                                            aria-invalid=move || message_error.get().map(|_| "true")
                                            aria-describedby=move || message_error.get().map(|_| "assistant-message-error")
                                            class=FIELD></textarea>
                                        {move || message_error.get().map(|m| view! { <p id="assistant-message-error" class="text-sm font-medium text-red-700">{m}</p> })}
                                        <button type="submit" class="btn-sm">"Send"</button>
                                    </ActionForm>
                                })}
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
fn MessageItem(
    message: MessageView,
    slug: String,
    ready: bool,
    has_mfa: bool,
    confirm: ServerAction<ConfirmAssistantProposal>,
    dismiss: ServerAction<DismissAssistantProposal>,
) -> impl IntoView {
    let slug = StoredValue::new(slug);
    let body = match message.kind.as_str() {
        "question" => view! {
            <p class="text-sm font-semibold text-slate-900">"You"</p>
            <p class="mt-1 whitespace-pre-wrap">{message.text.clone().unwrap_or_default()}</p>
            {message.flagged.then(|| view! { <p class="mt-1 text-sm text-amber-800">"Flagged: this message looks like it may try to change the assistant's instructions. It was sent, and recorded."</p> })}
        }
        .into_any(),
        "blocked" => view! {
            <p class="text-sm font-semibold text-slate-900">"You"</p>
            <p class="mt-1 whitespace-pre-wrap text-slate-600">{message.text.clone().unwrap_or_default()}</p>
            <p role="alert" class="mt-1 rounded-md border border-red-300 bg-red-50 px-3 py-2 text-sm text-red-800">{message.reason.clone().unwrap_or_default()}</p>
        }
        .into_any(),
        _ => {
            let flagged = (!message.flagged_sources.is_empty()).then(|| {
                view! {
                    <p class="mt-2 rounded-md border border-amber-300 bg-amber-50 px-3 py-2 text-sm text-amber-900">
                        {format!(
                            "Flagged: the assistant read text that looks like instructions planted in {}. Check its answer and any proposal carefully.",
                            message.flagged_sources.join(", ")
                        )}
                    </p>
                }
            });
            let removed = (!message.removed.is_empty()).then(|| {
                view! { <p class="mt-2 text-sm text-slate-600">{format!("Removed from the answer: {}.", message.removed.join(", "))}</p> }
            });
            view! {
                <p class="text-sm font-semibold text-slate-900">"Assistant"</p>
                <div class="mt-1">{blocks_view(message.blocks.clone())}</div>
                {message.reason.clone().map(|r| view! { <p class="mt-2 text-sm text-slate-800">{r}</p> })}
                {flagged}
                {removed}
            }
            .into_any()
        }
    };
    let cards = message
        .proposals
        .clone()
        .into_iter()
        .map(|p| {
            let heading = format!("proposal-{}", p.id);
            let pending = p.status == "pending" && ready;
            let state = match p.status.as_str() {
                "done" => Some("Done."),
                "executing" => Some("Being carried out."),
                "failed" => Some("Could not be carried out."),
                "dismissed" => Some("Dismissed."),
                "cancelled" => Some("Cancelled: the assistant was turned off."),
                "expired" => Some("Expired: ask the assistant again."),
                _ => None,
            };
            let needs_password = p.sensitive;
            let password_id = format!("{heading}-password");
            let code_id = format!("{heading}-code");
            let id = StoredValue::new(p.id.clone());
            let labelled_by = heading.clone();
            view! {
                <section aria-labelledby=labelled_by class="mt-3 rounded-lg border border-slate-300 bg-white p-4">
                    <h2 id=heading class="text-base font-semibold">"Proposed action"</h2>
                    <p class="mt-1 font-medium">{p.summary.clone()}</p>
                    {p.subject_name.clone().map(|n| view! {
                        <p class="mt-1 text-sm text-slate-700">"Their display name (written by members): " <span class="rounded bg-slate-100 px-1 font-mono">{n}</span></p>
                    })}
                    {(!p.consequences.is_empty()).then(|| view! {
                        <ul class="mt-1 list-disc pl-5 text-sm text-slate-800">{p.consequences.iter().map(|c| view! { <li>{c.clone()}</li> }).collect_view()}</ul>
                    })}
                    {p.after_flagged.then(|| view! { <p class="mt-1 text-sm font-medium text-amber-800">"Proposed after the assistant read flagged text: make sure this is what you want."</p> })}
                    {state.map(|s| view! { <p role="status" class="mt-1 text-sm text-slate-700">{s}</p> })}
                    {pending.then(|| view! {
                        <div class="mt-3 flex flex-wrap items-end gap-3">
                            <ActionForm action=confirm attr:class="flex flex-wrap items-end gap-3">
                                <input type="hidden" name="slug" value=slug.get_value()/>
                                <input type="hidden" name="proposal" value=id.get_value()/>
                                {needs_password.then(|| view! {
                                    <div>
                                        <label for=password_id.clone() class="block text-sm font-medium text-slate-800">"Password"</label>
                                        <input id=password_id.clone() name="password" type="password" autocomplete="current-password" class=FIELD/>
                                    </div>
                                    {has_mfa.then(|| view! {
                                        <div>
                                            <label for=code_id.clone() class="block text-sm font-medium text-slate-800">"Authentication code"</label>
                                            <input id=code_id.clone() name="code" inputmode="numeric" autocomplete="one-time-code" class=FIELD/>
                                        </div>
                                    })}
                                })}
                                <button type="submit" class="btn-sm">"Confirm"</button>
                            </ActionForm>
                            <ActionForm action=dismiss>
                                <input type="hidden" name="slug" value=slug.get_value()/>
                                <input type="hidden" name="proposal" value=id.get_value()/>
                                <button type="submit" class="btn-sm">"Dismiss"</button>
                            </ActionForm>
                        </div>
                    })}
                </section>
            }
        })
        .collect_view();
    view! {
        <li class="rounded-xl bg-white p-4 shadow-sm ring-1 ring-slate-200">
            {body}
            {cards}
        </li>
    }
}
