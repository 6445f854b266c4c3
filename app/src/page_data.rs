//! How a page's server-loaded data reaches the browser.
//!
//! A server-rendered page carries the values of its resources inside the HTML, so that
//! hydration does not load them again. Leptos writes a JSON-encoded value as a
//! `Debug`-escaped JavaScript string: every `"` of the JSON becomes `\"`, which made
//! escaping the members page's data about a tenth of the server's work for that page.
//! Binary-encoded values (postcard) are written as base64 instead, which has nothing to
//! escape, and are smaller to start with.

use std::future::Future;

use codee::binary::PostcardCodec;
use leptos::prelude::*;
use serde::{de::DeserializeOwned, Serialize};

/// A resource whose value travels to the browser postcard-encoded (see the module docs).
pub type PageData<T> = Resource<T, PostcardCodec>;

/// [`Resource::new`], with the postcard codec: `source` is tracked, `fetcher` loads the
/// value for it on the server (and in the browser after the first render).
#[track_caller]
pub fn page_data<T, S, Fut>(
    source: impl Fn() -> S + Send + Sync + 'static,
    fetcher: impl Fn(S) -> Fut + Send + Sync + 'static,
) -> PageData<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
    S: Send + Sync + Clone + PartialEq + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    Resource::new_with_options(source, fetcher, false)
}

#[cfg(test)]
mod tests {
    use codee::binary::PostcardCodec;
    use codee::{Decoder, Encoder};
    use leptos::server::{FromEncodedStr, IntoEncodedString};

    use serde::{Deserialize, Serialize};

    use crate::error::AppError;

    /// Page data of the usual shape: strings that need escaping in HTML and JavaScript,
    /// flags, a list of records, an enum.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Page {
        name: String,
        can_manage: bool,
        rows: Vec<(String, String, bool)>,
        state: Option<AppError>,
    }

    fn sample_page() -> Page {
        Page {
            name: "Team \"Quotes\" & <script>".into(),
            can_manage: true,
            rows: (0..3)
                .map(|i| (format!("Member \\ {i} </script>"), format!("member{i}@example.test"), i > 0))
                .collect(),
            state: Some(AppError::Rejected("It's \"quoted\"".into())),
        }
    }

    type PageResult = Result<Page, AppError>;

    /// What the server embeds in the page for `value`, and what the browser decodes from it.
    fn embed_and_decode(value: &PageResult) -> (String, PageResult) {
        let embedded = <PostcardCodec as Encoder<PageResult>>::encode(value).expect("encodes").into_encoded_string();
        let bytes = <[u8] as FromEncodedStr>::from_encoded_str(&embedded).expect("base64");
        let decoded = <PostcardCodec as Decoder<PageResult>>::decode(&bytes).expect("decodes");
        (embedded, decoded)
    }

    #[test]
    fn page_data_is_embedded_as_base64_and_decodes_to_the_same_value() {
        let value: PageResult = Ok(sample_page());
        let (embedded, decoded) = embed_and_decode(&value);
        // Nothing Leptos would have to escape in a JS string or the HTML around it.
        assert!(
            embedded.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
            "not plain base64: {embedded}"
        );
        assert_eq!(decoded, value);
    }

    #[test]
    fn errors_round_trip_too() {
        for error in [AppError::NotFound, AppError::field("email", "Bad"), AppError::Internal("ref".into())] {
            let value: PageResult = Err(error);
            assert_eq!(embed_and_decode(&value).1, value);
        }
    }
}
