//! `/w/{slug}/audit` (owners and admins) and `/account/activity`. The filter is a GET
//! form and paging is links, so both work without JavaScript; hydrated, the router
//! follows them without reloading the page.

use leptos::prelude::*;
use leptos_router::components::{Form, Redirect};
use leptos_router::hooks::{use_params_map, use_query_map};

use super::api::*;
use crate::components::FormAlert;
use crate::error::AppError;
use crate::page_data::page_data;

const LINK: &str = "link";
const INPUT: &str =
    "block w-full rounded-md border border-slate-300 px-3 py-2 focus:outline-none focus:ring-2 focus:ring-indigo-600";
const LABEL: &str = "block text-sm font-medium text-slate-800";

/// The query parameters the viewer understands, in order.
const PARAMS: [&str; 9] = ["action", "actor", "from", "to", "outcome", "before", "after", "event", ""];

/// A time shown in UTC by the server; the browser rewrites it in the reader's own zone.
#[component]
fn LocalTime(at_ms: i64, utc: String) -> impl IntoView {
    let text = RwSignal::new(utc.clone());
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        {
            let date = js_sys::Date::new(&leptos::wasm_bindgen::JsValue::from_f64(at_ms as f64));
            text.set(String::from(date.to_locale_string("default", &leptos::wasm_bindgen::JsValue::UNDEFINED)));
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = at_ms;
    });
    view! { <time datetime=utc>{move || text.get()}</time> }
}

/// `?key=value&…` of the current filter with some keys replaced (and empty ones dropped).
fn link_with(query: &[(String, String)], set: &[(&str, String)]) -> String {
    let mut pairs: Vec<(String, String)> =
        query.iter().filter(|(k, _)| !set.iter().any(|(s, _)| s == k)).cloned().collect();
    pairs.extend(set.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let encoded: Vec<String> =
        pairs.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", encode(&v))).collect();
    format!("?{}", encoded.join("&"))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn outcome_badge(outcome: String) -> impl IntoView {
    let class = match outcome.as_str() {
        "succeeded" => "rounded bg-emerald-100 px-2 py-0.5 text-xs font-medium text-emerald-900",
        "denied" => "rounded bg-amber-100 px-2 py-0.5 text-xs font-medium text-amber-900",
        _ => "rounded bg-red-100 px-2 py-0.5 text-xs font-medium text-red-900",
    };
    view! { <span class=class>{outcome}</span> }
}

/// Events per day as bars (succeeded, denied, failed stacked), drawn as SVG by the server;
/// each day is a link that filters to it. Sized for the 30 days it shows, 20 units each, by
/// classes, not style attributes (the pages' CSP allows no inline style).
fn chart_view(days: Vec<ChartDay>, query: Vec<(String, String)>) -> impl IntoView {
    let max = days.iter().map(|d| d.succeeded + d.denied + d.failed).max().unwrap_or(0).max(1);
    let (w, h) = (20.0_f64, 80.0_f64);
    let width = w * days.len() as f64;
    let bars = days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let x = i as f64 * w + 2.0;
            let scale = |n: i64| n as f64 / max as f64 * h;
            let (s, de, f) = (scale(d.succeeded), scale(d.denied), scale(d.failed));
            view! {
                <g>
                    <rect x=x y=h - s width=w - 4.0 height=s fill="#059669"></rect>
                    <rect x=x y=h - s - de width=w - 4.0 height=de fill="#d97706"></rect>
                    <rect x=x y=h - s - de - f width=w - 4.0 height=f fill="#dc2626"></rect>
                </g>
            }
        })
        .collect_view();
    let links = days
        .into_iter()
        .map(|d| {
            let label = format!("{}: {} succeeded, {} denied, {} failed", d.day, d.succeeded, d.denied, d.failed);
            let href = link_with(&query, &[("from", d.day.clone()), ("to", d.day.clone()), ("before", String::new()), ("after", String::new()), ("event", String::new())]);
            view! { <a href=href aria-label=label.clone() title=label class="block h-full focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600"></a> }
        })
        .collect_view();
    view! {
        <figure class="mb-6 rounded-xl bg-white p-4 ring-1 ring-slate-200">
            <figcaption class="mb-2 text-sm text-slate-700">
                "Events per day (UTC), last 30 days of the filter: "
                <span class="text-emerald-800">"succeeded"</span>", "
                <span class="text-amber-800">"denied"</span>", "
                <span class="text-red-800">"failed"</span>". Choose a day to filter to it."
            </figcaption>
            <div class="relative max-w-[600px]">
                <svg viewBox=format!("0 0 {width} {h}") class="h-24 w-full" role="img" aria-label="Events per day">
                    {bars}
                </svg>
                <nav aria-label="Days" class="absolute inset-0 grid grid-cols-[repeat(30,minmax(0,1fr))]">
                    {links}
                </nav>
            </div>
        </figure>
    }
}

fn rows_table(rows: Vec<AuditRow>, detail_link: Option<Vec<(String, String)>>) -> impl IntoView {
    view! {
        <div class="overflow-x-auto rounded-xl bg-white ring-1 ring-slate-200">
            <table class="w-full text-left text-sm">
                <thead class="bg-slate-100 text-slate-700">
                    <tr>
                        <th scope="col" class="px-3 py-2">"Time"</th>
                        <th scope="col" class="px-3 py-2">"Actor"</th>
                        <th scope="col" class="px-3 py-2">"Action"</th>
                        <th scope="col" class="px-3 py-2">"Target"</th>
                        <th scope="col" class="px-3 py-2">"Outcome"</th>
                        <th scope="col" class="px-3 py-2">"Network"</th>
                    </tr>
                </thead>
                <tbody class="divide-y divide-slate-200">
                    {rows.into_iter().map(|r| {
                        let action = match &detail_link {
                            Some(q) => {
                                let href = link_with(q, &[("event", r.seq.to_string())]);
                                view! { <a href=href class=LINK aria-label=format!("Details of event {}: {}", r.seq, r.action)>{r.action.clone()}</a> }.into_any()
                            }
                            None => view! { <span>{r.action.clone()}</span> }.into_any(),
                        };
                        view! {
                            <tr>
                                <td class="whitespace-nowrap px-3 py-2"><LocalTime at_ms=r.at_ms utc=r.at_utc/></td>
                                <td class="px-3 py-2">{r.actor}</td>
                                <td class="px-3 py-2">{action}</td>
                                <td class="px-3 py-2">{r.target}</td>
                                <td class="px-3 py-2">{outcome_badge(r.outcome)}</td>
                                <td class="px-3 py-2 font-mono text-xs">{r.network}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

fn pager(query: &[(String, String)], older: Option<i64>, newer: Option<i64>) -> impl IntoView {
    let clear = |k: &'static str| (k, String::new());
    let older = older.map(|seq| link_with(query, &[("before", seq.to_string()), clear("after"), clear("event")]));
    let newer = newer.map(|seq| link_with(query, &[("after", seq.to_string()), clear("before"), clear("event")]));
    view! {
        <nav aria-label="Pages" class="mt-4 flex gap-4">
            {newer.map(|href| view! { <a href=href class=LINK rel="prev">"Newer"</a> })}
            {older.map(|href| view! { <a href=href class=LINK rel="next">"Older"</a> })}
        </nav>
    }
}

fn query_pairs() -> Memo<Vec<(String, String)>> {
    let query = use_query_map();
    Memo::new(move |_| {
        let q = query.read();
        PARAMS.iter().filter(|k| !k.is_empty()).map(|k| (k.to_string(), q.get(k).unwrap_or_default())).collect()
    })
}

fn get(pairs: &[(String, String)], key: &str) -> String {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
}

#[component]
pub fn AuditLogPage() -> impl IntoView {
    let params = use_params_map();
    let slug = move || params.read().get("slug").unwrap_or_default();
    let pairs = query_pairs();
    let data = page_data(
        move || (slug(), pairs.get()),
        |(slug, q)| {
            let g = |k: &str| get(&q, k);
            audit_page(
                slug,
                g("action"),
                g("actor"),
                g("from"),
                g("to"),
                g("outcome"),
                g("before"),
                g("after"),
                g("event"),
            )
        },
    );
    view! {
        <Suspense fallback=|| view! { <p class="mx-auto mt-10 max-w-5xl">"Loading the audit log…"</p> }>
            {move || Suspend::new(async move {
                let q = pairs.get_untracked();
                match data.await {
                    Err(e @ (AppError::Unauthenticated | AppError::NotFound)) => crate::workspaces::problem_view(e),
                    Err(e) => {
                        #[cfg(feature = "ssr")]
                        if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
                            res.set_status(axum::http::StatusCode::from_u16(e.status()).unwrap_or(axum::http::StatusCode::BAD_REQUEST));
                        }
                        let message = e.form_message().or_else(|| ["action", "actor", "from", "to", "outcome", "cursor", "event"].iter().find_map(|f| e.message_for(f))).unwrap_or_else(|| e.to_string());
                        view! {
                            <section class="mx-auto mt-8 w-full max-w-5xl px-4">
                                <h1 class="mb-4 text-2xl font-bold">"Audit log"</h1>
                                {filter_form(slug(), q.clone(), Vec::new())}
                                <FormAlert message=Signal::derive(move || Some(message.clone()))/>
                                <p class="mt-4"><a href="?" class=LINK>"Newest events, no filter"</a></p>
                            </section>
                        }.into_any()
                    }
                    Ok(page) => {
                        let export = |format: &str| format!("/w/{}/audit/export.{format}{}", page.slug, link_with(&q, &[("before", String::new()), ("after", String::new()), ("event", String::new())]));
                        let (csv, jsonl) = (export("csv"), export("jsonl"));
                        let empty = page.rows.is_empty();
                        view! {
                            <section class="mx-auto mt-8 w-full max-w-5xl px-4">
                                <p><a href=format!("/w/{}", page.slug) class=LINK>{page.name.clone()}</a></p>
                                <h1 class="mt-2 mb-2 text-2xl font-bold">"Audit log"</h1>
                                <p role="status" class=if page.status_ok { "mb-4 text-sm text-slate-700" } else { "mb-4 rounded-md bg-red-50 p-2 text-sm font-semibold text-red-900" }>{page.status.clone()}</p>
                                {filter_form(page.slug.clone(), q.clone(), page.actions.clone())}
                                <p class="mb-4 flex gap-4 text-sm">
                                    <a href=csv class=LINK download="" rel="external">"Export CSV"</a>
                                    <a href=jsonl class=LINK download="" rel="external">"Export JSON Lines"</a>
                                </p>
                                {chart_view(page.chart.clone(), q.clone())}
                                {page.detail.clone().map(|d| detail_view(d, q.clone()))}
                                {if empty {
                                    view! { <p class="rounded-xl bg-white p-4 ring-1 ring-slate-200">"No events match."</p> }.into_any()
                                } else {
                                    rows_table(page.rows.clone(), Some(q.clone())).into_any()
                                }}
                                {pager(&q, page.older, page.newer)}
                            </section>
                        }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}

fn filter_form(slug: String, q: Vec<(String, String)>, actions: Vec<(String, String, bool)>) -> impl IntoView {
    let chosen_action = get(&q, "action");
    let chosen_outcome = get(&q, "outcome");
    view! {
        <Form method="get" action=format!("/w/{slug}/audit") attr:class="mb-4 grid grid-cols-1 gap-3 rounded-xl bg-white p-4 ring-1 ring-slate-200 sm:grid-cols-3">
            <div>
                <label for="f-action" class=LABEL>"Action"</label>
                <select id="f-action" name="action" class=INPUT>
                    <option value="" selected=chosen_action.is_empty()>"Any action"</option>
                    {actions.into_iter().map(|(value, label, group)| {
                        let selected = value == chosen_action;
                        let label = if group { label } else { format!("\u{a0}\u{a0}{label}") };
                        view! { <option value=value selected=selected>{label}</option> }
                    }).collect_view()}
                </select>
            </div>
            <div>
                <label for="f-actor" class=LABEL>"Actor"</label>
                <input id="f-actor" name="actor" class=INPUT value=get(&q, "actor") aria-describedby="f-actor-hint"/>
                <p id="f-actor-hint" class="mt-1 text-xs text-slate-600">"A name, an email or an IP address."</p>
            </div>
            <div>
                <label for="f-outcome" class=LABEL>"Outcome"</label>
                <select id="f-outcome" name="outcome" class=INPUT>
                    <option value="" selected=chosen_outcome.is_empty()>"Any outcome"</option>
                    {["succeeded", "denied", "failed"].into_iter().map(|o| view! { <option value=o selected=o == chosen_outcome>{o}</option> }).collect_view()}
                </select>
            </div>
            <div>
                <label for="f-from" class=LABEL>"From"</label>
                <input id="f-from" name="from" type="date" class=INPUT value=get(&q, "from")/>
            </div>
            <div>
                <label for="f-to" class=LABEL>"To"</label>
                <input id="f-to" name="to" type="date" class=INPUT value=get(&q, "to")/>
            </div>
            <div class="flex items-end">
                <button type="submit" class="rounded-md bg-indigo-700 px-4 py-2 font-semibold text-white hover:bg-indigo-800 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600 focus-visible:ring-offset-2">"Filter"</button>
            </div>
        </Form>
    }
}

fn detail_view(d: EventDetail, q: Vec<(String, String)>) -> impl IntoView {
    let close = link_with(&q, &[("event", String::new())]);
    view! {
        <section aria-labelledby="event-detail" class="mb-6 rounded-xl bg-white p-4 ring-1 ring-slate-200">
            <h2 id="event-detail" class="mb-2 text-lg font-semibold">{format!("Event {}", d.row.seq)}</h2>
            <dl class="grid grid-cols-1 gap-x-4 gap-y-1 text-sm sm:grid-cols-4">
                <dt class="font-medium text-slate-600">"Time"</dt><dd class="sm:col-span-3"><LocalTime at_ms=d.row.at_ms utc=d.row.at_utc.clone()/></dd>
                <dt class="font-medium text-slate-600">"Actor"</dt><dd class="sm:col-span-3">{d.row.actor.clone()}" ("{d.actor_kind.clone()}")"</dd>
                <dt class="font-medium text-slate-600">"Action"</dt><dd class="sm:col-span-3">{d.row.action.clone()}" ("<code>{d.action_name.clone()}</code>")"</dd>
                <dt class="font-medium text-slate-600">"Target"</dt><dd class="sm:col-span-3">{d.row.target.clone()}</dd>
                <dt class="font-medium text-slate-600">"Outcome"</dt><dd class="sm:col-span-3">{d.row.outcome.clone()}</dd>
                <dt class="font-medium text-slate-600">"Network"</dt><dd class="sm:col-span-3 font-mono">{d.row.network.clone()}</dd>
                <dt class="font-medium text-slate-600">"Browser"</dt><dd class="sm:col-span-3 font-mono">{d.user_agent.clone()}</dd>
                <dt class="font-medium text-slate-600">"Request"</dt><dd class="sm:col-span-3 font-mono">{d.request_id.clone()}</dd>
                {d.details.into_iter().map(|(k, v)| view! {
                    <dt class="font-medium text-slate-600">{k}</dt><dd class="sm:col-span-3">{v}</dd>
                }).collect_view()}
                <dt class="font-medium text-slate-600">"Hash"</dt><dd class="sm:col-span-3 break-all font-mono text-xs">{d.hash.clone()}</dd>
            </dl>
            <p class="mt-2"><a href=close class=LINK>"Close details"</a></p>
        </section>
    }
}

#[component]
pub fn ActivityLogPage() -> impl IntoView {
    let pairs = query_pairs();
    let data = page_data(move || pairs.get(), |q| account_activity(get(&q, "before"), get(&q, "after")));
    view! {
        <Suspense fallback=|| view! { <p class="mx-auto mt-10 max-w-5xl">"Loading your activity…"</p> }>
            {move || Suspend::new(async move {
                let q = pairs.get_untracked();
                match data.await {
                    Err(AppError::Unauthenticated) => view! { <Redirect path="/login?next=%2Faccount%2Factivity"/> }.into_any(),
                    Err(e) => {
                        #[cfg(feature = "ssr")]
                        if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
                            res.set_status(axum::http::StatusCode::from_u16(e.status()).unwrap_or(axum::http::StatusCode::BAD_REQUEST));
                        }
                        let message = e.message_for("cursor").unwrap_or_else(|| e.to_string());
                        view! {
                            <section class="mx-auto mt-8 w-full max-w-5xl px-4">
                                <h1 class="mb-4 text-2xl font-bold">"Your account activity"</h1>
                                <FormAlert message=Signal::derive(move || Some(message.clone()))/>
                                <p class="mt-4"><a href="/account/activity" class=LINK>"Newest events"</a></p>
                            </section>
                        }.into_any()
                    }
                    Ok(page) => view! {
                        <section class="mx-auto mt-8 w-full max-w-5xl px-4">
                            <h1 class="mb-2 text-2xl font-bold">"Your account activity"</h1>
                            <p class="mb-4 text-sm text-slate-700">"Sign-ins, sessions and security changes of your account. Networks are shown as pseudonyms: the same network, the same code."</p>
                            {if page.rows.is_empty() {
                                view! { <p class="rounded-xl bg-white p-4 ring-1 ring-slate-200">"Nothing yet."</p> }.into_any()
                            } else {
                                rows_table(page.rows.clone(), None).into_any()
                            }}
                            {pager(&q, page.older, page.newer)}
                        </section>
                    }.into_any(),
                }
            })}
        </Suspense>
    }
}
