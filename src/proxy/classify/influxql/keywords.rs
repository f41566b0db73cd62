//! The words InfluxQL scans as keywords, and the lookup the lexer makes
//! for every word of every query.

/// Words InfluxDB scans as keywords (looked up once for every word of
/// every query, through [`GROUPS`]). A keyword is never an identifier,
/// which is what makes `FROM where` invalid and `FROM "where"` valid.
// One line per few keywords: the list is long and only ever read whole.
#[rustfmt::skip]
const KEYWORDS: &[&str] = &[
    "ALL", "ALTER", "ANALYZE", "AND", "ANY", "AS", "ASC", "BEGIN", "BY", "CARDINALITY",
    "CONTINUOUS", "CREATE", "DATABASE", "DATABASES", "DEFAULT", "DELETE", "DESC", "DESTINATIONS",
    "DIAGNOSTICS", "DISTINCT", "DROP", "DURATION", "END", "EVERY", "EXACT", "EXPLAIN", "FALSE",
    "FIELD", "FOR", "FROM", "FUTURE", "GRANT", "GRANTS", "GROUP", "GROUPS", "IN", "INF", "INSERT",
    "INTO", "KEY", "KEYS", "KILL", "LIMIT", "MEASUREMENT", "MEASUREMENTS", "NAME", "OFFSET", "ON",
    "OR", "ORDER", "PASSWORD", "PAST", "POLICIES", "POLICY", "PRIVILEGES", "QUERIES", "QUERY",
    "READ", "REPLICATION", "RESAMPLE", "RETENTION", "REVOKE", "SELECT", "SERIES", "SET", "SHARD",
    "SHARDS", "SHOW", "SLIMIT", "SOFFSET", "STATS", "SUBSCRIPTION", "SUBSCRIPTIONS", "TAG", "TO",
    "TRUE", "USER", "USERS", "VALUES", "VERBOSE", "WHERE", "WITH", "WRITE",
];

/// A word of up to 16 ASCII letters as one number (its uppercase bytes,
/// right-aligned): letters are never zero, so different words never share
/// a number, and the keyword lookup compares integers, not strings.
const fn code(word: &[u8]) -> u128 {
    let mut code = 0u128;
    let mut i = 0;
    while i < word.len() {
        code = (code << 8) | word[i].to_ascii_uppercase() as u128;
        i += 1;
    }
    code
}

/// The longest keyword's length.
const LONGEST: usize = 13;

/// [`KEYWORDS`] as codes, grouped by first letter and length (within a
/// group, in list order): the keywords a word could be are the few of its
/// group, found through [`GROUPS`], compared as integers.
const BY_GROUP: [(u128, &str); KEYWORDS.len()] = {
    let mut sorted = [(0u128, ""); KEYWORDS.len()];
    let mut n = 0;
    let mut group = 0;
    while group < 26 * (LONGEST + 1) {
        let mut i = 0;
        while i < KEYWORDS.len() {
            if group_of(KEYWORDS[i].as_bytes()) == group {
                sorted[n] = (code(KEYWORDS[i].as_bytes()), KEYWORDS[i]);
                n += 1;
            }
            i += 1;
        }
        group += 1;
    }
    sorted
};

/// For each group (first letter, length), where its keywords start in
/// [`BY_GROUP`]; they end where the next group's start.
const GROUPS: [u8; 26 * (LONGEST + 1) + 1] = {
    let mut starts = [0u8; 26 * (LONGEST + 1) + 1];
    let mut i = 0;
    while i < KEYWORDS.len() {
        starts[group_of(KEYWORDS[i].as_bytes()) + 1] += 1;
        i += 1;
    }
    let mut g = 1;
    while g < starts.len() {
        starts[g] += starts[g - 1];
        g += 1;
    }
    starts
};

/// A word's group: its first letter (any case) and its length. Only
/// called with ASCII letters and lengths up to [`LONGEST`].
const fn group_of(word: &[u8]) -> usize {
    (word[0].to_ascii_uppercase() - b'A') as usize * (LONGEST + 1) + word.len()
}

/// The keyword `word` is, in any ASCII case, as listed in [`KEYWORDS`]
/// (upper case); `None` for an identifier. Most identifiers are told apart
/// by their first letter and length alone.
pub(super) fn keyword(word: &str) -> Option<&'static str> {
    let bytes = word.as_bytes();
    if bytes.len() > LONGEST || !bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    let group = group_of(bytes);
    let (start, end) = (GROUPS[group], GROUPS[group + 1]);
    if start == end || !bytes.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    let code = code(bytes);
    BY_GROUP[usize::from(start)..usize::from(end)]
        .iter()
        .find(|(listed, _)| *listed == code)
        .map(|&(_, listed)| listed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyword_list_is_sorted_and_found() {
        assert!(
            KEYWORDS.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert!(KEYWORDS.iter().all(|k| k.len() <= LONGEST));
        for k in KEYWORDS {
            assert_eq!(keyword(k), Some(*k));
            assert_eq!(keyword(&k.to_ascii_lowercase()), Some(*k));
        }
        for word in [
            "cpu", "SELECTX", "ALTE", "selec", "WRITES", "a", "xSELECT", "ELECT", "", "_", "9",
            "é", "SHOW_", "AND1", "ALLx",
        ] {
            assert_eq!(keyword(word), None, "{word}");
        }
    }

    proptest::proptest! {
        #[test]
        fn keywords_are_the_listed_words_in_any_case(word in "[a-zA-Z_0-9]{0,15}") {
            let upper = word.to_ascii_uppercase();
            let listed = KEYWORDS.iter().find(|k| **k == upper).copied();
            proptest::prop_assert_eq!(keyword(&word), listed);
        }
    }
}
