//! Secrets: `{{ env.NAME }}` interpolation in connection settings, and redaction of the values
//! it produced from everything planrun writes (reports, console, logs).
//!
//! Every value read from the environment through interpolation is registered here; report
//! writers and console output pass their text through [`redact`], which replaces each
//! registered value by `***`. Header values are treated as secrets even when written inline.

use std::sync::{OnceLock, RwLock};

fn registry() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

/// Shortest value treated as a secret (shorter ones would redact ordinary words).
const MIN_SECRET_LEN: usize = 4;

/// Register a value that must never appear in output.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    if let Ok(mut list) = registry().write()
        && !list.iter().any(|s| s == secret)
    {
        list.push(secret.to_string());
        // Longest first, so a secret containing another is replaced whole.
        list.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> String {
    let Ok(list) = registry().read() else {
        return text.to_string();
    };
    let mut out = text.to_string();
    for s in list.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
        // URLs carry query values percent-encoded.
        let encoded = percent_encode(s);
        if encoded != *s && out.contains(&encoded) {
            out = out.replace(&encoded, "***");
        }
    }
    out
}

/// Percent-encode a query component (RFC 3986 unreserved characters stay).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Replace each `{{ env.NAME }}` in `text` by the environment variable's value, registering
/// the values as secrets. Anything else between `{{ }}` is an error, as is an unset variable.
pub fn interpolate_env(text: &str) -> Result<String, InterpolateError> {
    interpolate_with(text, |name| std::env::var(name).ok())
}

/// Why `{{ env.NAME }}` interpolation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    #[error("`{{{{` without a closing `}}}}` in `{0}`")]
    Unclosed(String),
    #[error("`{{{{ {0} }}}}`: only `{{{{ env.NAME }}}}` can be interpolated here")]
    NotEnv(String),
    #[error("`{0}` is not an environment variable name")]
    BadName(String),
    #[error("environment variable `{0}` is not set")]
    Unset(String),
}

fn interpolate_with(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(InterpolateError::Unclosed(text.to_string()));
        };
        let expr = after[..close].trim();
        let Some(name) = expr.strip_prefix("env.") else {
            return Err(InterpolateError::NotEnv(expr.to_string()));
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(InterpolateError::BadName(name.to_string()));
        }
        let Some(value) = lookup(name) else {
            return Err(InterpolateError::Unset(name.to_string()));
        };
        register(&value);
        out.push_str(&value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_and_redacts() {
        let v = interpolate_with("Bearer {{ env.TOK }}!", |n| {
            (n == "TOK").then(|| "s3cr3t-value/x".to_string())
        })
        .unwrap();
        assert_eq!(v, "Bearer s3cr3t-value/x!");
        assert_eq!(redact("auth: Bearer s3cr3t-value/x"), "auth: Bearer ***");
        assert_eq!(redact("ws://h/?k=s3cr3t-value%2Fx"), "ws://h/?k=***");
    }

    #[test]
    fn errors_are_specific() {
        let none = |_: &str| None;
        assert!(
            interpolate_with("{{ env.NOPE }}", none)
                .unwrap_err()
                .to_string()
                .contains("NOPE")
        );
        assert!(
            interpolate_with("{{ vars.x }}", none)
                .unwrap_err()
                .to_string()
                .contains("only")
        );
        assert!(
            interpolate_with("{{ env.X", none)
                .unwrap_err()
                .to_string()
                .contains("closing")
        );
        assert_eq!(interpolate_with("plain", none).unwrap(), "plain");
    }

    #[test]
    fn short_values_are_not_secrets() {
        register("ab");
        assert_eq!(redact("abc"), "abc");
    }
}
