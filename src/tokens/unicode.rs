//! Unicode format characters (general category Cf): zero-width spaces and
//! joiners, bidirectional controls, the byte-order mark, tag characters.
//! They render as nothing (or reorder what follows), so a name holding one
//! lists as a different name: `x\u{200B}` shows as `x`. Database names
//! refuse them.
//!
//! The table is the whole of category Cf in Unicode 15.1 (170 code points
//! in 21 ranges), copied from the standard's `DerivedGeneralCategory.txt`;
//! a small table instead of a Unicode-tables dependency for one question.

/// Every Cf code point, as sorted, disjoint, inclusive ranges.
pub const FORMAT_RANGES: [(u32, u32); 21] = [
    (0x00AD, 0x00AD),   // SOFT HYPHEN
    (0x0600, 0x0605),   // ARABIC NUMBER SIGN..ARABIC NUMBER MARK ABOVE
    (0x061C, 0x061C),   // ARABIC LETTER MARK
    (0x06DD, 0x06DD),   // ARABIC END OF AYAH
    (0x070F, 0x070F),   // SYRIAC ABBREVIATION MARK
    (0x0890, 0x0891),   // ARABIC POUND MARK ABOVE..ARABIC PIASTRE MARK ABOVE
    (0x08E2, 0x08E2),   // ARABIC DISPUTED END OF AYAH
    (0x180E, 0x180E),   // MONGOLIAN VOWEL SEPARATOR
    (0x200B, 0x200F),   // ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),   // LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x2064),   // WORD JOINER..INVISIBLE PLUS
    (0x2066, 0x206F),   // LEFT-TO-RIGHT ISOLATE..NOMINAL DIGIT SHAPES
    (0xFEFF, 0xFEFF),   // ZERO WIDTH NO-BREAK SPACE (byte-order mark)
    (0xFFF9, 0xFFFB),   // INTERLINEAR ANNOTATION ANCHOR..TERMINATOR
    (0x110BD, 0x110BD), // KAITHI NUMBER SIGN
    (0x110CD, 0x110CD), // KAITHI NUMBER SIGN ABOVE
    (0x13430, 0x1343F), // EGYPTIAN HIEROGLYPH VERTICAL JOINER..END WALLED ENCLOSURE
    (0x1BCA0, 0x1BCA3), // SHORTHAND FORMAT LETTER OVERLAP..STEP
    (0x1D173, 0x1D17A), // MUSICAL SYMBOL BEGIN BEAM..END PHRASE
    (0xE0001, 0xE0001), // LANGUAGE TAG
    (0xE0020, 0xE007F), // TAG SPACE..CANCEL TAG
];

/// `text` with control and format characters spelled as `\u{…}`: what a
/// terminal, a log line or an error message shows of a name or description
/// that holds them, so it can neither drive the terminal nor pass for other
/// text.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_format(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// True when `c` is a format character (category Cf).
pub fn is_format(c: char) -> bool {
    let c = u32::from(c);
    // Binary search over the ranges: the first range ending at or after `c`.
    let i = FORMAT_RANGES.partition_point(|&(_, end)| end < c);
    FORMAT_RANGES.get(i).is_some_and(|&(start, _)| start <= c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_disjoint_and_complete_in_size() {
        for pair in FORMAT_RANGES.windows(2) {
            assert!(pair[0].0 <= pair[0].1 && pair[0].1 < pair[1].0, "{pair:?}");
        }
        let count: u32 = FORMAT_RANGES.iter().map(|(a, b)| b - a + 1).sum();
        assert_eq!(count, 170, "Unicode 15.1 has 170 Cf code points");
    }

    #[test]
    fn the_characters_that_make_listings_lie_are_format_characters() {
        for c in [
            '\u{00AD}', // soft hyphen
            '\u{200B}', // zero width space
            '\u{200C}', // zero width non-joiner
            '\u{200D}', // zero width joiner
            '\u{200E}', // left-to-right mark
            '\u{200F}', // right-to-left mark
            '\u{202A}', // LRE
            '\u{202E}', // RLO
            '\u{2060}', // word joiner
            '\u{2066}', // LRI
            '\u{2069}', // PDI
            '\u{FEFF}', // byte-order mark
            '\u{E0001}',
            '\u{E0041}', // tag latin capital A
            '\u{E007F}',
            '\u{1343F}',
        ] {
            assert!(is_format(c), "{:04X}", u32::from(c));
        }
    }

    #[test]
    fn neighbours_and_ordinary_text_are_not() {
        for c in [
            'a',
            'Z',
            '0',
            '_',
            '-',
            '.',
            '/',
            '*',
            ' ',
            'é',
            'ж',
            '中',
            '😀',
            '\u{00AC}',
            '\u{00AE}',
            '\u{200A}',
            '\u{2010}',
            '\u{2029}',
            '\u{202F}',
            '\u{2065}',
            '\u{2070}',
            '\u{FEFE}',
            '\u{FF00}',
            '\u{FFFC}',
            '\u{E0000}',
            '\u{E0002}',
            '\u{E0080}',
            '\u{10FFFF}',
        ] {
            assert!(!is_format(c), "{:04X}", u32::from(c));
        }
    }
}
