//! Plan diagnostics: errors as data (file, line, column, message, hint), rendered separately.
//!
//! Also the *locator*: the plan source re-read as a tree of positioned nodes, so checks that run
//! after deserialization (cross-references, file existence) can still point at a line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// One problem in a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
    /// The source line, for the snippet.
    pub source_line: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.render(f, "error")
    }
}

/// A problem that does not stop the plan (e.g. a secret written inline): same data as a
/// [`Diagnostic`], rendered as `warning:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning(pub Diagnostic);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.render(f, "warning")
    }
}

impl Diagnostic {
    fn render(&self, f: &mut fmt::Formatter<'_>, level: &str) -> fmt::Result {
        let file = self.file.display();
        if self.line > 0 {
            writeln!(
                f,
                "{file}:{}:{}: {level}: {}",
                self.line, self.column, self.message
            )?;
        } else {
            writeln!(f, "{file}: {level}: {}", self.message)?;
        }
        if let Some(src) = &self.source_line {
            let gutter = self.line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", self.line, src)?;
            writeln!(
                f,
                "{:gutter$} | {}^",
                "",
                " ".repeat(self.column.saturating_sub(1))
            )?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "  = help: {hint}")?;
        }
        Ok(())
    }
}

/// All the problems found in one plan (at least one).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanError(pub Vec<Diagnostic>);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanError {}

/// The nearest candidate within edit distance 2 (and less than the word's length).
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let sorted = |s: &str| {
        let mut v: Vec<char> = s.chars().collect();
        v.sort_unstable();
        v
    };
    let letters = sorted(word);
    candidates
        .iter()
        .map(|c| {
            // Among equally near candidates prefer an anagram (`p59` → `p95`, not `p50`).
            let anagram = sorted(c) == letters;
            (strsim::damerau_levenshtein(word, c), !anagram, *c)
        })
        .filter(|(d, _, _)| *d <= 2 && *d < word.len().max(1))
        .min_by_key(|(d, not_anagram, _)| (*d, *not_anagram))
        .map(|(_, _, c)| c)
}

/// Turn serde's "unknown field `x`, expected one of a, b" (either crate's wording) into a hint.
pub fn hint_for_serde_message(message: &str) -> Option<String> {
    if message.starts_with("invalid value: integer `-") && message.contains("expected u") {
        return Some("this value cannot be negative".into());
    }
    let rest = message
        .strip_prefix("unknown field ")
        .or_else(|| message.strip_prefix("unknown variant "))?;
    let mut parts = rest.splitn(2, ", expected ");
    let word = parts.next()?.trim().trim_matches('`');
    let expected = parts.next()?;
    let expected = expected.strip_prefix("one of ").unwrap_or(expected);
    let candidates: Vec<&str> = expected
        .split([',', ' '])
        .map(|s| s.trim().trim_matches('`'))
        .filter(|s| !s.is_empty() && *s != "or")
        .collect();
    did_you_mean(word, &candidates).map(|c| format!("did you mean `{c}`?"))
}

/// 1-based (line, column) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The text of a 1-based line.
pub fn source_line(source: &str, line: usize) -> Option<String> {
    (line > 0)
        .then(|| {
            source
                .lines()
                .nth(line - 1)
                .map(|l| l.trim_end().to_string())
        })
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// Locator

/// One step of a path into the plan document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// Build a path: `path!["scenarios", 0, "steps", 2]`.
#[macro_export]
macro_rules! plan_path {
    ($($seg:expr),* $(,)?) => { [$($crate::plan::diag::Seg::from($seg)),*] };
}

/// A document node with the position of its value.
#[derive(Debug, Clone, Default)]
pub struct LocNode {
    pub line: usize,
    pub column: usize,
    pub children: LocChildren,
    /// The text of a string scalar (None for numbers, booleans, maps and lists).
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub enum LocChildren {
    Map(Vec<(String, LocNode)>),
    Seq(Vec<LocNode>),
    #[default]
    Scalar,
}

impl LocNode {
    /// The deepest node along `path` (the parent's position when a key is absent).
    pub fn find(&self, path: &[Seg]) -> (usize, usize) {
        let mut node = self;
        for seg in path {
            let next = match (&node.children, seg) {
                (LocChildren::Map(entries), Seg::Key(k)) => {
                    entries.iter().find(|(name, _)| name == k).map(|(_, n)| n)
                }
                (LocChildren::Seq(items), Seg::Index(i)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        (node.line, node.column)
    }
}

/// Children of a node, generic over how each format wraps a positioned child.
enum Inner<C> {
    Map(Vec<(String, C)>),
    Seq(Vec<C>),
    Scalar,
    Text(String),
}

struct AnyKey(String);

impl<'de> Deserialize<'de> for AnyKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AnyKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AnyKey, E> {
                Ok(AnyKey(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AnyKey, E> {
                Ok(AnyKey(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AnyKey, E> {
                Ok(AnyKey(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AnyKey, E> {
                Ok(AnyKey(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<AnyKey, E> {
                Ok(AnyKey("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de, C: Deserialize<'de>> Deserialize<'de> for Inner<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<C>(std::marker::PhantomData<C>);
        macro_rules! scalar {
            ($($name:ident: $t:ty),*) => {$(
                fn $name<E: de::Error>(self, _: $t) -> Result<Self::Value, E> { Ok(Inner::Scalar) }
            )*};
        }
        impl<'de, C: Deserialize<'de>> Visitor<'de> for V<C> {
            type Value = Inner<C>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64,
                    visit_bytes: &[u8], visit_i128: i128, visit_u128: u128);
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Inner::Text(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Inner::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Inner::Scalar)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Inner::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Inner::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(AnyKey(k)) = map.next_key()? {
                    entries.push((k, map.next_value()?));
                }
                Ok(Inner::Map(entries))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

struct YamlNode(serde_saphyr::Spanned<Inner<YamlNode>>);
impl<'de> Deserialize<'de> for YamlNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_saphyr::Spanned::deserialize(d).map(YamlNode)
    }
}

struct TomlNode(toml::Spanned<Inner<TomlNode>>);
impl<'de> Deserialize<'de> for TomlNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        toml::Spanned::deserialize(d).map(TomlNode)
    }
}

fn convert<C>(line: usize, column: usize, inner: Inner<C>, f: &dyn Fn(C) -> LocNode) -> LocNode {
    let mut value = None;
    let children = match inner {
        Inner::Map(entries) => {
            LocChildren::Map(entries.into_iter().map(|(k, v)| (k, f(v))).collect())
        }
        Inner::Seq(items) => LocChildren::Seq(items.into_iter().map(f).collect()),
        Inner::Scalar => LocChildren::Scalar,
        Inner::Text(text) => {
            value = Some(text);
            LocChildren::Scalar
        }
    };
    LocNode {
        line,
        column,
        children,
        value,
    }
}

fn yaml_node(n: YamlNode) -> LocNode {
    let loc = n.0.referenced;
    convert(
        loc.line() as usize,
        loc.column() as usize,
        n.0.value,
        &yaml_node,
    )
}

fn toml_node(source: &str, n: TomlNode) -> LocNode {
    let (line, column) = line_col(source, n.0.span().start);
    convert(line, column, n.0.into_inner(), &|c| toml_node(source, c))
}

/// Deepest nesting of lists and maps a plan may use (real plans stay under 20 even with nested
/// `repeat`s); deeper input is refused by the parser instead of recursing ever deeper.
pub const MAX_DEPTH: usize = 32;

/// How plan YAML is read: at most [`MAX_DEPTH`] levels of nesting, and at most 10,000 nodes
/// replayed from aliases in all (the default of a million lets a few lines of nested anchors
/// take seconds and build a million-node tree).
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    let mut limits = serde_saphyr::options::AliasLimits::default();
    limits.max_total_replayed_events = 10_000;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.alias_limits = limits;
    options.budget = Some(budget);
    options
}

/// How deeply lists and tables nest in TOML text (brackets and braces outside strings and
/// comments, plus the parts of dotted keys), so over-deep input can be refused before parsing
/// (the `toml` crate limits brackets to 80 levels but not dotted keys). An estimate that may
/// count a level too many, never too few.
pub fn toml_depth(source: &str) -> usize {
    let (mut depth, mut max, mut dots) = (0usize, 0usize, 0usize);
    let mut chars = source.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == '\\' && q == '"' {
                    chars.next();
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '[' | '{' => {
                    depth += 1;
                    max = max.max(depth);
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                '.' => {
                    dots += 1;
                    max = max.max(depth + dots + 1);
                }
                '\n' | '=' | ',' => dots = 0,
                _ => {}
            },
        }
    }
    max
}

/// Re-read a syntactically valid plan as a positioned tree (None if it cannot be read).
pub fn locate_tree(source: &str, toml_format: bool) -> Option<LocNode> {
    if toml_format {
        if toml_depth(source) > MAX_DEPTH {
            return None;
        }
        toml::from_str::<TomlNode>(source)
            .ok()
            .map(|n| toml_node(source, n))
    } else {
        serde_saphyr::from_str_with_options::<YamlNode>(source, yaml_options())
            .ok()
            .map(yaml_node)
    }
}

/// A diagnostic at `path` inside a plan.
pub fn at(
    file: &Path,
    source: &str,
    tree: Option<&LocNode>,
    path: &[Seg],
    message: impl Into<String>,
    hint: Option<String>,
) -> Diagnostic {
    let (line, column) = tree.map_or((0, 0), |t| t.find(path));
    Diagnostic {
        file: file.to_path_buf(),
        line,
        column,
        message: message.into(),
        hint,
        source_line: source_line(source, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("usres", &["users", "iterations"]),
            Some("users")
        );
        assert_eq!(did_you_mean("zzzzzz", &["users", "iterations"]), None);
        assert_eq!(
            hint_for_serde_message("unknown field `usres`, expected one of users, iterations"),
            Some("did you mean `users`?".into())
        );
        assert_eq!(
            hint_for_serde_message("unknown field `usres`, expected `users` or `iterations`"),
            Some("did you mean `users`?".into())
        );
    }

    #[test]
    fn toml_depth_counts_brackets_and_dotted_keys() {
        assert_eq!(toml_depth("a = 1\n"), 0);
        assert_eq!(toml_depth("[[scenarios.steps]]\nwait = '1s'\n"), 4);
        assert_eq!(toml_depth("a = [[[1]]]\n# [[[[[[\nb = \"[[[[[[[\"\n"), 3);
        assert_eq!(toml_depth("a.b.c.d = 1\n"), 4);
        assert_eq!(
            toml_depth(&format!("x = {}1{}\n", "[".repeat(40), "]".repeat(40))),
            40
        );
    }

    #[test]
    fn locates_yaml_and_toml_paths() {
        let yaml =
            "name: x\nscenarios:\n  - name: a\n    steps:\n      - wait: 1s\n      - send: boo\n";
        let tree = locate_tree(yaml, false).unwrap();
        let path = plan_path!["scenarios", 0, "steps", 1, "send"];
        assert_eq!(tree.find(&path), (6, 15));
        let toml = "name = 'x'\n[[scenarios]]\nname = 'a'\n[[scenarios.steps]]\nwait = '1s'\n[[scenarios.steps]]\nsend = 'boo'\n";
        let tree = locate_tree(toml, true).unwrap();
        assert_eq!(tree.find(&path), (7, 8));
    }
}
