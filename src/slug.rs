//! One rule for turning a name (a plan, a scenario) into a file-name part.

/// `name` with every character other than ASCII letters, digits, `-` and `_` replaced by `_`:
/// safe in a file or folder name on every platform, and stable across runs.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::slug;

    #[test]
    fn keeps_safe_characters_and_replaces_the_rest() {
        assert_eq!(slug("quick start/v2.é"), "quick_start_v2__");
        assert_eq!(slug("a-b_C9"), "a-b_C9");
        assert_eq!(slug(""), "");
    }
}
