//! What text we accept from people, in one place: no control characters and no invisible
//! formatting characters that disguise text, in any field of any form (checked at the
//! server-function edge, before any rule or query sees the value); names and emails
//! stored in Unicode normalization form C, so that one name has one spelling.
//!
//! Refused, besides control characters (tab, line feed and carriage return are allowed in
//! multi-line fields only; passwords are exempt, see `server::server_fns`): text-direction
//! overrides, embeddings, isolates and marks (they make `exe.txt` of `txt.exe`), line and
//! paragraph separators, and zero-width or invisible characters (spaces, word joiner,
//! invisible operators, byte-order mark, soft hyphen, combining grapheme joiner, Hangul
//! fillers, the blank Braille pattern, tag characters). The zero-width joiner and
//! non-joiner and the variation selectors are allowed: scripts such as Persian and
//! Devanagari, and emoji sequences, need them.

use unicode_normalization::UnicodeNormalization;

/// The first character of `text` that no field accepts, if any.
pub fn disallowed_char(text: &str, multi_line: bool) -> Option<char> {
    text.chars().find(|&c| is_disallowed(c, multi_line))
}

fn is_disallowed(c: char, multi_line: bool) -> bool {
    if c.is_control() {
        return !(multi_line && matches!(c, '\t' | '\n' | '\r'));
    }
    is_invisible(c)
}

/// Characters that show nothing yet change what text says or how it is read: zero-width
/// spaces, direction controls, line and paragraph separators, the byte-order mark,
/// Hangul and Braille blanks, tag characters (they can carry hidden ASCII). The
/// zero-width joiner and non-joiner are not among them: scripts and emoji need them.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// `text` in normalization form C (composed: "é" as one character, however it was typed).
pub fn nfc(text: &str) -> String {
    text.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_disguising_characters_are_refused() {
        for bad in [
            "a\0b",
            "a\u{7}",
            "a\u{85}",
            "file\u{202E}txt.exe",
            "a\u{2066}b",
            "a\u{200B}b",
            "\u{FEFF}a",
            "a\u{E0041}",
            "a\u{2028}b",
            "\u{3164}",
            "\u{2800}",
        ] {
            assert!(disallowed_char(bad, true).is_some(), "{bad:?}");
        }
        assert_eq!(disallowed_char("one\ntwo", false), Some('\n'));
        assert_eq!(disallowed_char("one\r\n\ttwo", true), None);
    }

    #[test]
    fn ordinary_text_in_any_script_is_accepted() {
        for good in [
            "Ada Lovelace",
            "Zoë",
            "مهر\u{200C}داد",
            "क्\u{200D}ष",
            "👩\u{200D}💻",
            "\u{2764}\u{FE0F}",
            "李小龍",
            "O'Brien-Smith",
        ] {
            assert_eq!(disallowed_char(good, false), None, "{good:?}");
        }
    }

    #[test]
    fn nfc_composes() {
        assert_eq!(nfc("Zoe\u{0308}"), "Zoë");
        assert_eq!(nfc("Zoë"), "Zoë");
    }
}
