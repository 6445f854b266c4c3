//! Fluxi's Leptos application: pages, components and server functions, shared by the
//! server (feature `ssr`) and the wasm frontend (feature `hydrate`).
// Deeply nested view types of the larger pages exceed the default limit.
#![recursion_limit = "512"]

pub mod account;
pub mod assistant;
pub mod audit;
pub mod auth;
pub mod components;
pub mod email_change;
pub mod error;
pub mod integrations;
pub mod mfa;
pub mod page_data;
pub mod passkeys;
pub mod passwords;
pub mod render;
pub mod sessions;
#[cfg(feature = "ssr")]
pub mod ssr;
pub mod verification;
pub mod workspaces;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags};
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::{path, SsrMode};

use auth::api::{Login, Logout};
use auth::AuthContext;
use page_data::page_data;

pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    ssr::set_page_csp();
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                // Plain head elements (not leptos_meta components): they need no hydration,
                // and <Stylesheet/> in App caused a hydration mismatch with leptos_meta 0.8.7.
                <link rel="stylesheet" href="/pkg/fluxi.css"/>
                <link rel="icon" href="/favicon.svg" type="image/svg+xml"/>
                <title>"Fluxi"</title>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            <body class="min-h-screen bg-slate-50 text-slate-900 antialiased">
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let confirm_sign_up = ServerAction::<auth::api::ConfirmSignUp>::new();
    let login = ServerAction::<Login>::new();
    let logout = ServerAction::<Logout>::new();
    let verify = ServerAction::<mfa::api::VerifySignIn>::new();
    let verify_email = ServerAction::<verification::api::VerifyEmail>::new();
    let reset_password = ServerAction::<passwords::api::ResetPassword>::new();
    let confirm_email = ServerAction::<email_change::api::ConfirmEmailChange>::new();
    let revert_email = ServerAction::<email_change::api::RevertEmailChange>::new();
    let user = page_data(
        move || {
            (
                confirm_sign_up.version().get(),
                login.version().get(),
                logout.version().get(),
                verify.version().get(),
                verify_email.version().get(),
                reset_password.version().get(),
                confirm_email.version().get(),
                revert_email.version().get(),
            )
        },
        |_| auth::api::fetch_current_user(),
    );
    provide_context(AuthContext {
        confirm_sign_up,
        login,
        logout,
        verify,
        verify_email,
        reset_password,
        confirm_email,
        revert_email,
        user,
    });
    // Effects run only in the browser, after hydration: mark the page as interactive
    // (end-to-end tests wait for this instead of guessing with timeouts).
    Effect::new(move |_| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });

    view! {
        <Router>
            <Nav/>
            <verification::VerifyEmailBanner/>
            <main class="px-4 pb-16">
                <Routes fallback=NotFound>
                    <Route path=path!("/") view=HomePage ssr=SsrMode::Async/>
                    <Route path=path!("/signup") view=auth::SignupPage ssr=SsrMode::Async/>
                    <Route path=path!("/confirm-sign-up/:token") view=auth::ConfirmSignUpPage ssr=SsrMode::Async/>
                    <Route path=path!("/login") view=auth::LoginPage ssr=SsrMode::Async/>
                    <Route path=path!("/login/mfa") view=mfa::SecondStepPage ssr=SsrMode::Async/>
                    <Route path=path!("/account/security") view=mfa::SecurityPage ssr=SsrMode::Async/>
                    <Route path=path!("/account") view=account::AccountPage ssr=SsrMode::Async/>
                    <Route path=path!("/workspaces") view=workspaces::WorkspacesPage ssr=SsrMode::Async/>
                    <Route path=path!("/w/:slug") view=workspaces::WorkspaceHomePage ssr=SsrMode::Async/>
                    <Route path=path!("/w/:slug/settings/members") view=workspaces::MembersSettingsPage ssr=SsrMode::Async/>
                    <Route path=path!("/w/:slug/audit") view=audit::AuditLogPage ssr=SsrMode::Async/>
                    <Route path=path!("/w/:slug/integrations") view=integrations::IntegrationsPage ssr=SsrMode::Async/>
                    <Route path=path!("/w/:slug/assistant") view=assistant::AssistantPage ssr=SsrMode::Async/>
                    <Route path=path!("/account/activity") view=audit::ActivityLogPage ssr=SsrMode::Async/>
                    <Route path=path!("/invite/:token") view=workspaces::InvitePage ssr=SsrMode::Async/>
                    <Route path=path!("/verify-email/:token") view=verification::VerifyEmailPage ssr=SsrMode::Async/>
                    <Route path=path!("/forgot-password") view=passwords::ForgotPasswordPage ssr=SsrMode::Async/>
                    <Route path=path!("/reset-password/:token") view=passwords::ResetPasswordPage ssr=SsrMode::Async/>
                    <Route path=path!("/confirm-email/:token") view=email_change::ConfirmEmailPage ssr=SsrMode::Async/>
                    <Route path=path!("/revert-email/:token") view=email_change::RevertEmailPage ssr=SsrMode::Async/>
                </Routes>
            </main>
        </Router>
    }
}

const NAV_LINK: &str = "rounded px-2 py-1 text-sm font-medium text-slate-700 hover:text-slate-950 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600";

#[component]
fn Nav() -> impl IntoView {
    let AuthContext { logout, user, .. } = expect_context::<AuthContext>();
    view! {
        <header class="border-b border-slate-200 bg-white">
            <nav aria-label="Main" class="mx-auto flex max-w-5xl flex-wrap items-center justify-between gap-2 px-4 py-3">
                <A href="/" attr:class="text-lg font-bold text-indigo-800 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600">"Fluxi"</A>
                <div class="flex items-center gap-2">
                    <Transition>
                        {move || Suspend::new(async move {
                            match user.await {
                                Ok(Some(_)) => view! {
                                    <A href="/workspaces" attr:class=NAV_LINK>"Workspaces"</A>
                                    <A href="/account" attr:class=NAV_LINK>"Account"</A>
                                    <ActionForm action=logout>
                                        <button type="submit" class="rounded-md border border-slate-300 px-3 py-1 text-sm font-medium text-slate-800 hover:bg-slate-100 focus:outline-none focus-visible:ring-2 focus-visible:ring-indigo-600">
                                            "Sign out"
                                        </button>
                                    </ActionForm>
                                }
                                .into_any(),
                                _ => view! {
                                    <A href="/login" attr:class=NAV_LINK>"Sign in"</A>
                                    <A href="/signup" attr:class=NAV_LINK>"Create account"</A>
                                }
                                .into_any(),
                            }
                        })}
                    </Transition>
                </div>
            </nav>
        </header>
    }
}

#[component]
fn HomePage() -> impl IntoView {
    view! {
        <section class="mx-auto mt-16 max-w-2xl text-center">
            <h1 class="text-3xl font-bold text-slate-900 sm:text-4xl">"Fluxi"</h1>
            <p class="mt-4 text-lg text-slate-700">
                "The secure workspace backbone for your team: sign-in with strong passwords, isolated workspaces and an audit trail you can trust."
            </p>
        </section>
    }
}

#[component]
fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
            res.set_status(axum::http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <section class="mx-auto mt-16 max-w-xl text-center">
            <h1 class="text-2xl font-bold">"Page not found"</h1>
            <p class="mt-2 text-slate-700">"There is nothing at this address."</p>
        </section>
    }
}
