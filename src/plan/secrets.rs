//! Inline secrets: credentials written literally in a plan, which would end up in version
//! control, shared plans and anything that quotes the plan.
//!
//! The scan is generic: it walks every string value of the parsed source tree (not the typed
//! model), so it covers fields it knows nothing about (headers, query parameters, message
//! templates). It flags
//! - literal values under keys that name a secret (`authorization`, `api_key`, `token`,
//!   `password`, `x-api-key`, …),
//! - values that look like credentials wherever they are (`Bearer …`, `sk-…`, `AKIA…`,
//!   `ghp_…`, JSON web tokens, long high-entropy tokens),
//! - URLs with a password in their userinfo or a token-like query parameter.
//!
//! Environment interpolations (`{{ env.OPENAI_API_KEY }}`) are the recommended form and are
//! never flagged. Warnings never quote the secret: the source snippet is redacted.

use std::path::Path;

use super::diag::{Diagnostic, LocChildren, LocNode, Seg, Warning, locate_tree, source_line};

/// Key words (whole `_`/`-`/`.`-separated parts of a key, case-insensitive) that name a secret.
const SECRET_WORDS: &[&str] = &[
    "authorization",
    "auth",
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "credential",
    "credentials",
    "cookie",
];

/// Multi-word keys that name a secret, compared after normalising separators to `_`.
const SECRET_KEYS: &[&str] = &[
    "api_key",
    "x_api_key",
    "access_key",
    "secret_key",
    "private_key",
    "client_secret",
    "access_token",
    "refresh_token",
    "auth_token",
    "session_key",
];

/// Query parameter names that carry a credential in a URL.
const SECRET_QUERY: &[&str] = &["key", "sig", "signature", "code"];

/// Why a value was flagged.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finding {
    /// A literal under a secret-looking key.
    Key,
    /// The value itself looks like a credential of this kind.
    Value(&'static str),
    /// A URL with a password in its userinfo.
    UrlPassword,
    /// A URL with a token-like query parameter of this name.
    UrlQuery(String),
}

/// Scan plan text (YAML, or TOML when `toml_format`) for inline secrets. Text that does not
/// parse gives no warnings (the parser reports it).
pub fn scan_source(source: &str, file: &Path, toml_format: bool) -> Vec<Warning> {
    let Some(tree) = locate_tree(source, toml_format) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&tree, &mut Vec::new(), &mut |node, path| {
        let Some(value) = &node.value else { return };
        let key = path.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        });
        // Keys of these maps are metric names and event fields, not credentials.
        let names_only = path.first() == Some(&Seg::Key("thresholds".into()))
            || path.contains(&Seg::Key("capture".into()));
        let key = key.filter(|_| !names_only);
        if let Some(finding) = classify(key, value) {
            out.push(warning(source, file, node, path, value, &finding));
        }
    });
    out
}

/// Scan a plan file for inline secrets (nothing when it cannot be read: loading reports that).
pub fn scan_file(file: &Path) -> Vec<Warning> {
    let toml_format = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    match std::fs::read_to_string(file) {
        Ok(source) => scan_source(&source, file, toml_format),
        Err(_) => Vec::new(),
    }
}

fn walk<'a>(node: &'a LocNode, path: &mut Vec<Seg>, f: &mut dyn FnMut(&'a LocNode, &[Seg])) {
    f(node, path);
    match &node.children {
        LocChildren::Map(entries) => {
            for (k, child) in entries {
                path.push(Seg::Key(k.clone()));
                walk(child, path, f);
                path.pop();
            }
        }
        LocChildren::Seq(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                walk(child, path, f);
                path.pop();
            }
        }
        LocChildren::Scalar => {}
    }
}

/// The value with every `{{ … }}` interpolation removed.
fn literal_part(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => rest = &rest[start + end + 2..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn normalise_key(key: &str) -> String {
    key.trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Whether a key (header name, field name, query parameter) names a secret.
fn secret_key(key: &str) -> bool {
    let k = normalise_key(key);
    SECRET_KEYS
        .iter()
        .any(|s| k == *s || k.ends_with(&format!("_{s}")))
        || k.split('_').any(|part| SECRET_WORDS.contains(&part))
}

fn classify(key: Option<&str>, value: &str) -> Option<Finding> {
    let literal = literal_part(value);
    let literal = literal.trim();
    if literal.is_empty() {
        return None;
    }
    if let Some(f) = url_finding(literal) {
        return Some(f);
    }
    if let Some(kind) = credential_kind(literal) {
        return Some(Finding::Value(kind));
    }
    if key.is_some_and(secret_key) && looks_like_literal_secret(literal) {
        return Some(Finding::Key);
    }
    None
}

/// A literal under a secret key: anything but a bare auth scheme left over after removing
/// interpolations (`Bearer {{ env.TOKEN }}`), a boolean, a number or a very short word.
fn looks_like_literal_secret(literal: &str) -> bool {
    let schemes = ["bearer", "basic", "token", "bot", "apikey"];
    let lower = literal.to_ascii_lowercase();
    if schemes.contains(&lower.trim_end_matches(':')) {
        return false;
    }
    if ["true", "false", "null", "none", "~"].contains(&lower.as_str()) {
        return false;
    }
    if literal.parse::<f64>().is_ok() || literal.contains(char::is_whitespace) {
        return false;
    }
    literal.chars().count() >= 4
}

/// What kind of credential a value looks like, whatever its key.
fn credential_kind(literal: &str) -> Option<&'static str> {
    let word_chars = |s: &str, min: usize| {
        s.len() >= min
            && s.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/' | '=')
            })
    };
    for (scheme, kind) in [
        ("Bearer ", "a bearer token"),
        ("Basic ", "basic-auth credentials"),
    ] {
        if let Some(rest) = literal.get(..scheme.len())
            && rest.eq_ignore_ascii_case(scheme)
            && word_chars(literal[scheme.len()..].trim(), 8)
        {
            return Some(kind);
        }
    }
    let prefixed: &[(&str, usize, &'static str)] = &[
        ("sk-", 20, "an API secret key (`sk-…`)"),
        ("AKIA", 20, "an AWS access key id"),
        ("ASIA", 20, "an AWS access key id"),
        ("ghp_", 36, "a GitHub token"),
        ("gho_", 36, "a GitHub token"),
        ("github_pat_", 40, "a GitHub token"),
        ("xoxb-", 20, "a Slack token"),
        ("xoxp-", 20, "a Slack token"),
        ("AIza", 39, "a Google API key"),
    ];
    for (prefix, min_len, kind) in prefixed {
        if literal.starts_with(prefix) && word_chars(literal, *min_len) {
            return Some(kind);
        }
    }
    let parts: Vec<&str> = literal.split('.').collect();
    if literal.starts_with("eyJ") && parts.len() == 3 && parts.iter().all(|p| word_chars(p, 4)) {
        return Some("a JSON web token");
    }
    if high_entropy_token(literal) {
        return Some("a long random token");
    }
    None
}

/// A single word of at least 32 token characters mixing letters and digits with high
/// per-character entropy, that is not a file path.
fn high_entropy_token(s: &str) -> bool {
    if s.len() < 32
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '='))
    {
        return false;
    }
    let has_digit = s.chars().any(|c| c.is_ascii_digit());
    let has_alpha = s.chars().any(|c| c.is_ascii_alphabetic());
    if !(has_digit && has_alpha) {
        return false;
    }
    let mut counts = [0usize; 128];
    for b in s.bytes() {
        counts[usize::from(b & 0x7f)] += 1;
    }
    let n = s.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    entropy >= 3.5
}

/// A URL (`scheme://…`) with a userinfo password or a secret query parameter.
fn url_finding(literal: &str) -> Option<Finding> {
    let (_, rest) = literal.split_once("://")?;
    if literal.contains(char::is_whitespace) {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        return Some(Finding::UrlPassword);
    }
    let query = rest[authority_end..].split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let lower = normalise_key(name);
        if !value.is_empty() && (secret_key(name) || SECRET_QUERY.contains(&lower.as_str())) {
            return Some(Finding::UrlQuery(name.to_string()));
        }
    }
    None
}

/// `target.headers.Authorization`, `scenarios[0].steps[2].send_json.token`.
fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// An environment variable name suggested for a secret at `path`.
fn env_name(path: &[Seg], finding: &Finding) -> String {
    let key = match finding {
        Finding::UrlQuery(name) => Some(name.as_str()),
        _ => path.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        }),
    };
    let name: String = key
        .unwrap_or("SECRET")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_matches('_');
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        "API_KEY".into()
    } else if matches!(finding, Finding::UrlPassword) {
        format!("{name}_PASSWORD")
    } else {
        name.to_string()
    }
}

fn warning(
    source: &str,
    file: &Path,
    node: &LocNode,
    path: &[Seg],
    value: &str,
    finding: &Finding,
) -> Warning {
    let place = dotted(path);
    let what = match finding {
        Finding::Key => "a literal secret".to_string(),
        Finding::Value(kind) => format!("what looks like {kind}"),
        Finding::UrlPassword => "a URL with a password in it".to_string(),
        Finding::UrlQuery(name) => format!("a URL whose `{name}` query parameter looks secret"),
    };
    let env = env_name(path, finding);
    let hint = match finding {
        Finding::UrlPassword | Finding::UrlQuery(_) => format!(
            "put the secret part in an environment variable and write `{{{{ env.{env} }}}}` in \
             its place in the URL"
        ),
        _ => format!("read it from the environment: `{{{{ env.{env} }}}}`"),
    };
    Warning(Diagnostic {
        file: file.to_path_buf(),
        line: node.line,
        column: node.column,
        message: format!(
            "`{place}` holds {what} written inline ({} characters, not shown): it will be in \
             every copy of this plan",
            value.chars().count()
        ),
        hint: Some(hint),
        source_line: source_line(source, node.line).map(|l| redact(&l, value)),
    })
}

/// The source line with the secret replaced (the literal parts of the value, whatever quoting
/// the line uses).
fn redact(line: &str, value: &str) -> String {
    if !value.is_empty() && line.contains(value) {
        return line.replace(value, "***");
    }
    // Escaped or multi-line values: hide everything after the key.
    match line.find([':', '=']) {
        Some(i) => format!("{} ***", &line[..=i]),
        None => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(key: &str, value: &str) -> bool {
        classify(Some(key), value).is_some()
    }

    #[test]
    fn secret_keys_with_literals_are_flagged() {
        assert!(flags("Authorization", "Bearer abcdefgh12345678"));
        assert!(flags("x-api-key", "hunter22"));
        assert!(flags("api_key", "mysecretvalue"));
        assert!(flags("password", "hunter2"));
        assert!(flags("OPENAI_API_KEY", "something-secret"));
        assert!(flags("access_token", "abcd1234"));
    }

    #[test]
    fn interpolations_and_harmless_values_are_not() {
        assert!(!flags("authorization", "{{ env.OPENAI_API_KEY }}"));
        assert!(!flags("authorization", "Bearer {{ env.OPENAI_API_KEY }}"));
        assert!(!flags("api_key", "{{env.KEY}}"));
        assert!(!flags("token", ""));
        assert!(!flags("max_tokens", "2048"));
        assert!(!flags("send_audio", "audio_files/book_flight.wav"));
        assert!(!flags("name", "weather"));
        assert!(!flags("tool_keywords", "password reset"));
        assert!(!flags(
            "url",
            "wss://agent.example.com/v1/realtime?model=gpt-4o"
        ));
        assert!(!flags("url", "wss://{{ env.USER }}:{{ env.PASS }}@host/x"));
        assert!(!flags("url", "wss://host/x?token={{ env.TOKEN }}"));
        assert!(!flags(
            "description",
            "Set the Authorization header from the environment"
        ));
        assert!(!flags("token_latency", "p95 < 1s"));
        let src = "thresholds:\n  token_ms: p95 < 1s\ncapture:\n  usage.token_ms: tokens\n";
        assert!(scan_source(src, Path::new("p.yaml"), false).is_empty());
    }

    #[test]
    fn credential_shapes_are_flagged_under_any_key() {
        assert!(flags("x", "sk-proj-abcdefghijklmnopqrstuvwx"));
        assert!(flags("x", "AKIAIOSFODNN7EXAMPLE"));
        assert!(flags("x", "Bearer abcdefgh12345678"));
        assert!(flags(
            "x",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
        ));
        assert!(flags("x", "9f8e7d6c5b4a39281726354f4e3d2c1b0a99887766"));
        assert!(!flags("x", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn urls_with_passwords_or_token_queries_are_flagged() {
        assert_eq!(
            classify(Some("url"), "wss://bot:s3cret@agent.example.com/ws"),
            Some(Finding::UrlPassword)
        );
        assert_eq!(
            classify(
                Some("url"),
                "wss://agent.example.com/ws?model=x&api_key=abc123"
            ),
            Some(Finding::UrlQuery("api_key".into()))
        );
        assert_eq!(
            classify(Some("url"), "wss://agent.example.com/ws?key=abc123"),
            Some(Finding::UrlQuery("key".into()))
        );
        assert_eq!(
            classify(Some("url"), "wss://user@agent.example.com/ws"),
            None
        );
    }

    #[test]
    fn warnings_are_positioned_and_never_show_the_secret() {
        let src = "name: t\ntarget:\n  url: builtin\n  headers:\n    Authorization: Bearer abcdefgh12345678\n";
        let w = scan_source(src, Path::new("p.yaml"), false);
        assert_eq!(w.len(), 1);
        let text = w[0].to_string();
        assert!(
            text.starts_with("p.yaml:5:20: warning: `target.headers.Authorization`"),
            "{text}"
        );
        assert!(text.contains("{{ env.AUTHORIZATION }}"), "{text}");
        assert!(!text.contains("abcdefgh12345678"), "{text}");
        assert!(text.contains("Authorization: ***"), "{text}");
    }
}
