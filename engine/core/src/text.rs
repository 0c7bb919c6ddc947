//! Helpers for messages shown to authors: positions in a source text and
//! "did you mean" suggestions. Shared by every loader (config, features,
//! rules, model manifests) so all of them locate and suggest alike.

/// 1-based line and column (in characters) of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate to a misspelt name, if one is close enough.
/// A candidate whose last dotted segment equals the name (a forgotten
/// `device.` prefix) always qualifies.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (name.chars().count() / 3).clamp(1, 4);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        // A forgotten prefix (`distinct_users_24h`) or a cut-off word
        // (`highest` for `highest_severity`) counts as one edit.
        let d = if c != name
            && (c.rsplit('.').next() == Some(name) || (name.chars().count() >= 4 && c.starts_with(name)))
        {
            1
        } else {
            edit_distance(name, c)
        };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

/// `suggest` phrased as a hint.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    suggest(name, candidates).map(|s| format!("did you mean `{s}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        assert_eq!(line_col("ab\ncé d\n", 0), (1, 1));
        assert_eq!(line_col("ab\ncé d\n", 3), (2, 1));
        assert_eq!(line_col("ab\ncé d\n", 7), (2, 4));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("devise", ["device", "user"]).as_deref(), Some("did you mean `device`?"));
        assert_eq!(
            suggest("distinct_users_24h", ["device.distinct_users_24h"]).as_deref(),
            Some("device.distinct_users_24h")
        );
        assert_eq!(suggest("zzz", ["device"]), None);
    }
}
