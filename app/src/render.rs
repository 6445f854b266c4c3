//! Rendering helpers.

use leptos::tachys::html::attribute::any_attribute::AnyAttribute;
use leptos::tachys::html::attribute::Attribute;
use leptos::tachys::hydration::Cursor;
use leptos::tachys::view::add_attr::AddAnyAttr;
use leptos::tachys::view::{Position, PositionState, Render, RenderHtml};

/// Server-renders a view that has nothing left to wait for in one pass into the page
/// buffer.
///
/// Once a `Suspend` has resolved, tachys keeps rendering its view on the streaming
/// (async) path, where every element first writes its opening tag and attributes into a
/// fresh `String` and then copies it into the stream — two allocations and a copy per
/// element. For a large, fully resolved view (the members table) that was about a
/// quarter of the page's server time. `SyncHtml` takes the synchronous path instead,
/// which writes straight into the page buffer and produces the same HTML.
///
/// Use it only around views without `Suspense`/`Suspend` inside (they would be
/// rendered without waiting). In the browser (build, hydrate) it changes nothing.
pub struct SyncHtml<T>(pub T);

impl<T: Render> Render for SyncHtml<T> {
    type State = T::State;

    fn build(self) -> Self::State {
        self.0.build()
    }

    fn rebuild(self, state: &mut Self::State) {
        self.0.rebuild(state)
    }
}

impl<T: RenderHtml> RenderHtml for SyncHtml<T> {
    // Stays wrapped after resolving, so the resolved view is still rendered in one pass.
    type AsyncOutput = SyncHtml<T::AsyncOutput>;
    type Owned = SyncHtml<T::Owned>;

    const MIN_LENGTH: usize = T::MIN_LENGTH;
    const EXISTS: bool = T::EXISTS;

    fn dry_resolve(&mut self) {
        self.0.dry_resolve();
    }

    async fn resolve(self) -> Self::AsyncOutput {
        SyncHtml(self.0.resolve().await)
    }

    fn html_len(&self) -> usize {
        self.0.html_len()
    }

    fn to_html_with_buf(
        self,
        buf: &mut String,
        position: &mut Position,
        escape: bool,
        mark_branches: bool,
        extra_attrs: Vec<AnyAttribute>,
    ) {
        self.0.to_html_with_buf(buf, position, escape, mark_branches, extra_attrs);
    }

    // `to_html_async_with_buf` is deliberately not overridden: the trait's default
    // renders through `to_html_with_buf` into the stream's buffer.

    fn hydrate<const FROM_SERVER: bool>(self, cursor: &Cursor, position: &PositionState) -> Self::State {
        self.0.hydrate::<FROM_SERVER>(cursor, position)
    }

    async fn hydrate_async(self, cursor: &Cursor, position: &PositionState) -> Self::State {
        self.0.hydrate_async(cursor, position).await
    }

    fn into_owned(self) -> Self::Owned {
        SyncHtml(self.0.into_owned())
    }
}

impl<T: AddAnyAttr> AddAnyAttr for SyncHtml<T> {
    type Output<SomeNewAttr: Attribute> = SyncHtml<T::Output<SomeNewAttr>>;

    fn add_any_attr<NewAttr: Attribute>(self, attr: NewAttr) -> Self::Output<NewAttr>
    where
        Self::Output<NewAttr>: RenderHtml,
    {
        SyncHtml(self.0.add_any_attr(attr))
    }
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::SyncHtml;
    use leptos::either::Either;
    use leptos::prelude::*;
    use leptos::tachys::ssr::{StreamBuilder, StreamChunk};
    use leptos::tachys::view::{Position, RenderHtml};

    /// Renders like a resolved `Suspend` does during server-side rendering (the stream
    /// path) and returns the HTML; every chunk must be ready.
    fn render_streaming(view: impl RenderHtml) -> String {
        let mut builder = StreamBuilder::new(None);
        view.to_html_async_with_buf::<false>(&mut builder, &mut Position::FirstChild, true, false, vec![]);
        builder
            .take_chunks()
            .into_iter()
            .map(|chunk| match chunk {
                StreamChunk::Sync(html) => html,
                _ => panic!("a resolved view produced an async chunk"),
            })
            .collect()
    }

    /// The kinds of markup the members table uses: attributes that need escaping, optional
    /// and alternative children, a list, a reactive text node.
    fn table(rows: Vec<(String, bool)>) -> impl IntoView {
        view! {
            <table class="data-table">
                <tbody>
                    {rows.into_iter().map(|(name, admin)| {
                        let (label, hidden) = (name.clone(), name.clone());
                        view! {
                        <tr aria-label=label>
                            <td>{name}</td>
                            <td>{admin.then(|| view! {
                                <form action="/api/change" method="post" class="row-controls">
                                    <input type="hidden" name="who" value=hidden/>
                                    <select name="role" aria-label="Role">
                                        <option value="admin" selected=true>"admin"</option>
                                        <option value="viewer">"viewer"</option>
                                    </select>
                                    <button type="submit">"Change"</button>
                                </form>
                            })}</td>
                            <td>{if admin { Either::Left(view! { <strong>"admin"</strong> }) } else { Either::Right("member") }}</td>
                        </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            <p>{move || "reactive <text> & more"}</p>
        }
    }

    #[test]
    fn sync_rendering_writes_the_same_html_as_streaming() {
        let owner = Owner::new();
        owner.with(|| {
            let rows = || {
                vec![
                    ("Ada \"<script>\" & Co".to_string(), true),
                    ("Grace".to_string(), false),
                    ("O'Brien".to_string(), true),
                ]
            };
            let streamed = render_streaming(table(rows()));
            let synced = render_streaming(SyncHtml(table(rows())));
            assert!(streamed.contains("&lt;script&gt;") && streamed.contains("<option"), "{streamed}");
            assert_eq!(synced, streamed);
        });
    }
}
