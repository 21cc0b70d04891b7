//! The dashboard page: one self-contained HTML file (styles, script and the first snapshot
//! embedded; the charts arrive as inline SVG in each snapshot). Nothing is fetched from
//! anywhere but this server.

/// The page's source.
const PAGE: &str = include_str!("page.html");

/// The page with the latest snapshot and the Stop token filled in.
pub(super) fn render(snapshot: &str, token: &str) -> String {
    // Inside <script>, `<` only ever appears in JSON strings, where `\u003c` means the same.
    let embedded = snapshot.replace('<', "\\u003c");
    PAGE.replacen("__PLANRUN_TOKEN__", token, 1)
        .replacen("__PLANRUN_SNAPSHOT__", &embedded, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_snapshot_and_token_safely() {
        let html = render(r#"{"plan":"</script><b>x"}"#, "abc123");
        assert!(html.contains(r#"{"plan":"\u003c/script>\u003cb>x"}"#));
        assert!(html.contains("abc123"));
        assert!(!html.contains("__PLANRUN_"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external fetch"
        );
    }
}
