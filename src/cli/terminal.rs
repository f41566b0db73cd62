//! Text from elsewhere (the token service, a database) made safe to print
//! on a terminal.

/// Control characters (newlines, escape sequences) from the token service
/// would break the layout or drive the terminal, and format characters
/// (zero-width, bidirectional overrides) would make text look like other
/// text: both are shown escaped, as `\u{1b}`.
pub use crate::tokens::unicode::escape as clean;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_format_characters_are_escaped() {
        assert_eq!(
            clean("a\nb\u{1b}[31m\u{202e}c"),
            "a\\u{a}b\\u{1b}[31m\\u{202e}c"
        );
        assert_eq!(clean("plain – text"), "plain – text");
    }
}
