//! The workspace assistant: `/w/{slug}/assistant`. Every rule lives in
//! `fluxi_core::assistant`; this module is the server functions and the page.

pub mod api;
mod pages;

pub use pages::AssistantPage;
