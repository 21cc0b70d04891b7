//! Interop bots stay off the network (issue 17).
//!
//! Silero VAD in the Pipecat bot runs on onnxruntime, whose Linux wheel has built-in
//! telemetry: a few seconds after each model load it looks its host up in DNS. Only
//! `ORT_DISABLE_TELEMETRY=1` set before onnxruntime is imported stops it.
//!
//! * Fast (always): a source check over every `.py` file under `interop/`: a file that
//!   imports `pipecat` or `onnxruntime` (anywhere: indented, conditional, after `;`, via
//!   `importlib.import_module`/`__import__`) must first force the variable with an
//!   unindented `os.environ["ORT_DISABLE_TELEMETRY"] = "1"`. The checker is tested on
//!   inline sources too, so it cannot silently pass everything.
//! * Slow, opt-in (`PLANRUN_TRACE_NET=1`, needs `strace` and the venv from
//!   `interop/pipecat/setup.sh`): runs `bot.py` under
//!   `strace -f -e trace=connect,sendto,sendmsg,sendmmsg` for `PLANRUN_TRACE_NET_SECS`
//!   (default 40) seconds, with `ORT_DISABLE_TELEMETRY` removed from its environment so the
//!   bot's own setting is what is tested, and fails on any AF_INET/AF_INET6 address other
//!   than loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104), and on port 53 anywhere (a
//!   local stub resolver forwards the lookup). AF_UNIX, AF_NETLINK etc. are local and
//!   ignored.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const VAR: &str = "ORT_DISABLE_TELEMETRY";
/// Top-level modules whose import can load onnxruntime.
const TRIGGERS: [&str; 2] = ["pipecat", "onnxruntime"];
/// The one accepted setter, after removing whitespace and turning `'` into `"`.
const SETTER: &str = r#"os.environ["ORT_DISABLE_TELEMETRY"]="1""#;

// ---------------------------------------------------------------------------------------
// Source check
// ---------------------------------------------------------------------------------------

/// One logical line of Python code: comments removed, triple-quoted strings replaced by
/// `""`, backslash continuations joined. `top_level` = unindented and not the tail of a
/// multi-line string.
struct CodeLine {
    no: usize,
    top_level: bool,
    code: String,
}

fn code_lines(src: &str) -> Vec<CodeLine> {
    let mut out: Vec<CodeLine> = Vec::new();
    let mut triple: Option<[char; 3]> = None;
    let mut carry: Option<CodeLine> = None;
    for (i, raw) in src.lines().enumerate() {
        let starts_in_string = triple.is_some();
        let chars: Vec<char> = raw.chars().collect();
        let mut code = String::new();
        let mut single: Option<char> = None;
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            let is_triple = |q: char| chars.len() >= k + 3 && chars[k..k + 3] == [q, q, q];
            if let Some(q) = triple {
                if c == '\\' {
                    k += 2;
                } else if is_triple(q[0]) {
                    triple = None;
                    code.push_str("\"\"");
                    k += 3;
                } else {
                    k += 1;
                }
                continue;
            }
            if let Some(q) = single {
                code.push(c);
                if c == '\\' && k + 1 < chars.len() {
                    code.push(chars[k + 1]);
                    k += 2;
                    continue;
                }
                if c == q {
                    single = None;
                }
                k += 1;
                continue;
            }
            match c {
                '#' => break,
                '"' | '\'' if is_triple(c) => {
                    triple = Some([c; 3]);
                    k += 3;
                }
                '"' | '\'' => {
                    single = Some(c);
                    code.push(c);
                    k += 1;
                }
                _ => {
                    code.push(c);
                    k += 1;
                }
            }
        }
        let top_level = !starts_in_string && !raw.starts_with([' ', '\t']);
        let line = match carry.take() {
            Some(mut prev) => {
                prev.code.push(' ');
                prev.code.push_str(&code);
                prev
            }
            None => CodeLine {
                no: i + 1,
                top_level,
                code,
            },
        };
        if triple.is_none() && line.code.trim_end().ends_with('\\') {
            let mut line = line;
            let keep = line.code.trim_end().len() - 1;
            line.code.truncate(keep);
            carry = Some(line);
        } else {
            out.push(line);
        }
    }
    out.extend(carry);
    out
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Punct(char),
}

/// Identifiers (dotted names kept whole), string literals (content only) and punctuation.
fn tokens(stmt: &str) -> Vec<Tok> {
    let chars: Vec<char> = stmt.chars().collect();
    let mut toks = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        if c == '"' || c == '\'' {
            let mut s = String::new();
            k += 1;
            while k < chars.len() && chars[k] != c {
                if chars[k] == '\\' {
                    k += 1;
                }
                if k < chars.len() {
                    s.push(chars[k]);
                }
                k += 1;
            }
            k += 1;
            // A string prefix (r, b, f, ...) was read as a word just before: drop it.
            if let Some(Tok::Word(w)) = toks.last()
                && w.len() <= 2
                && w.chars().all(|c| "rRbBfFuU".contains(c))
            {
                toks.pop();
            }
            toks.push(Tok::Str(s));
        } else if c.is_alphanumeric() || c == '_' || c == '.' {
            let mut w = String::new();
            while k < chars.len()
                && (chars[k].is_alphanumeric() || chars[k] == '_' || chars[k] == '.')
            {
                w.push(chars[k]);
                k += 1;
            }
            toks.push(Tok::Word(w));
        } else {
            if !c.is_whitespace() {
                toks.push(Tok::Punct(c));
            }
            k += 1;
        }
    }
    toks
}

fn is_trigger(module: &str) -> bool {
    TRIGGERS.contains(&module.split('.').next().unwrap_or(""))
}

/// The module a statement imports that can load onnxruntime, if any. Conservative: a
/// false alarm is cheap, a miss is not.
fn trigger_import(stmt: &str) -> Option<String> {
    let toks = tokens(stmt);
    let word = |i: usize| match toks.get(i) {
        Some(Tok::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let mut i = 0;
    while i < toks.len() {
        match word(i) {
            Some("from") => {
                if let Some(m) = word(i + 1).filter(|m| is_trigger(m)) {
                    return Some(m.to_string());
                }
                // `from x import a, b`: the names after `import` are not top-level modules.
                if word(i + 2) == Some("import") {
                    return None;
                }
            }
            Some("import") => {
                // import a.b as c, d, ...
                let mut j = i + 1;
                while let Some(m) = word(j) {
                    if is_trigger(m) {
                        return Some(m.to_string());
                    }
                    j += 1;
                    if word(j) == Some("as") {
                        j += 2;
                    }
                    if toks.get(j) == Some(&Tok::Punct(',')) {
                        j += 1;
                    } else {
                        break;
                    }
                }
            }
            Some(w) if w == "__import__" || w.ends_with("import_module") => {
                if toks.get(i + 1) == Some(&Tok::Punct('('))
                    && let Some(Tok::Str(m)) = toks.get(i + 2)
                    && is_trigger(m)
                {
                    return Some(m.clone());
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_setter(stmt: &str) -> bool {
    let norm: String = stmt
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '\'' { '"' } else { c })
        .collect();
    norm == SETTER
}

/// Why this Python source may let onnxruntime telemetry out, or `None` if it is fine.
fn telemetry_problem(src: &str) -> Option<String> {
    let mut weak: Option<(usize, String)> = None;
    for line in code_lines(src) {
        for stmt in line.code.split(';') {
            if let Some(module) = trigger_import(stmt) {
                return Some(match weak {
                    Some((n, s)) => format!(
                        "line {}: imports `{module}`, and the only {VAR} setting before it \
                         (line {n}: `{}`) is not an unconditional \
                         `os.environ[\"{VAR}\"] = \"1\"` at top level (setdefault would let \
                         the caller's environment turn telemetry back on)",
                        line.no,
                        s.trim()
                    ),
                    None => format!(
                        "line {}: imports `{module}` without first setting \
                         `os.environ[\"{VAR}\"] = \"1\"` (at top level, before any pipecat \
                         or onnxruntime import)",
                        line.no
                    ),
                });
            }
            if is_setter(stmt) && line.top_level {
                // Everything after this runs with telemetry off.
                return None;
            }
            if stmt.contains(VAR) && weak.is_none() {
                weak = Some((line.no, stmt.to_string()));
            }
        }
    }
    None
}

/// Does the source import pipecat/onnxruntime at all? (To show the guard checks something.)
fn imports_trigger(src: &str) -> bool {
    code_lines(src)
        .iter()
        .any(|l| l.code.split(';').any(|s| trigger_import(s).is_some()))
}

fn python_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            // A venv or cache made inside interop/ is not ours to check.
            let skip = name.starts_with('.')
                || ["__pycache__", "venv", "site-packages", "node_modules"].contains(&&*name);
            if !skip {
                python_files(&p, out);
            }
        } else if name.ends_with(".py") {
            out.push(p);
        }
    }
}

#[test]
fn interop_python_sets_ort_disable_telemetry_before_importing_onnxruntime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    python_files(&root.join("interop"), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("interop/pipecat/bot.py")),
        "the walk should find interop/pipecat/bot.py: {files:?}"
    );
    let mut importing = Vec::new();
    let mut problems = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        if imports_trigger(&src) {
            importing.push(rel.clone());
        }
        if let Some(p) = telemetry_problem(&src) {
            problems.push(format!("{rel}: {p}"));
        }
    }
    assert!(
        importing.iter().any(|f| f.ends_with("bot.py")),
        "bot.py imports pipecat, but the checker did not see it: {importing:?}"
    );
    assert!(
        problems.is_empty(),
        "onnxruntime telemetry would reach the network (issue 17):\n{}",
        problems.join("\n")
    );
    eprintln!(
        "interop guard: {} Python files, {} import pipecat/onnxruntime, all set {VAR}=1 first",
        files.len(),
        importing.len()
    );
}

#[test]
fn checker_catches_bad_sources_and_passes_good_ones() {
    let good_header = "#!/usr/bin/env python3\n\"\"\"Doc.\n\nimport pipecat  (in a docstring)\n\"\"\"\n\nfrom __future__ import annotations\n\nimport os\n\n# comment: import onnxruntime\nos.environ[\"ORT_DISABLE_TELEMETRY\"] = \"1\"\n\nimport argparse\n";
    let good = [
        // bot.py's shape: docstring, __future__, the setter, then pipecat.
        format!("{good_header}from pipecat.audio.vad.silero import SileroVADAnalyzer\n"),
        format!("{good_header}def f():\n    if x:\n        import onnxruntime\n"),
        // single quotes, semicolon form
        "import os; os.environ['ORT_DISABLE_TELEMETRY'] = '1'\nimport pipecat\n".into(),
        // No pipecat/onnxruntime at all: nothing to set.
        "import argparse\nimport websockets\nprint('import pipecat')\n# from onnxruntime import x\n"
            .into(),
        // Lookalike names are other modules.
        "import pipecat_helpers\nfrom onnxruntime_tools_x import y\nfrom foo import bar\n".into(),
        // Long docstring with code-looking lines, then the setter.
        "'''\nimport pipecat\n'''\nimport os\nos.environ[\"ORT_DISABLE_TELEMETRY\"]=\"1\"\nimport onnxruntime as ort\n".into(),
    ];
    for src in &good {
        assert_eq!(telemetry_problem(src), None, "should pass:\n{src}");
    }

    let bad: &[(&str, &str)] = &[
        ("import pipecat\n", "line 1: imports `pipecat`"),
        (
            "from pipecat.frames.frames import Frame\n",
            "imports `pipecat.frames.frames`",
        ),
        (
            "import os\nimport onnxruntime\nos.environ[\"ORT_DISABLE_TELEMETRY\"] = \"1\"\n",
            "line 2: imports `onnxruntime`",
        ),
        (
            "import os, sys, onnxruntime.capi as c\n",
            "imports `onnxruntime.capi`",
        ),
        (
            "import os\nif True:\n    from onnxruntime import InferenceSession\n",
            "line 3",
        ),
        (
            "import os\ntry:\n    import pipecat\nexcept ImportError:\n    pass\n",
            "line 3",
        ),
        ("import os\nif x: import pipecat\n", "line 2"),
        ("x = 1; import pipecat\n", "line 1"),
        ("import os, \\\n    pipecat\n", "line 1"),
        (
            "import importlib\nm = importlib.import_module(\"pipecat.audio\")\n",
            "line 2: imports `pipecat.audio`",
        ),
        ("ort = __import__('onnxruntime')\n", "imports `onnxruntime`"),
        // setdefault: the caller's environment could turn telemetry back on.
        (
            "import os\nos.environ.setdefault(\"ORT_DISABLE_TELEMETRY\", \"1\")\nimport pipecat\n",
            "setdefault",
        ),
        // Conditional setter.
        (
            "import os\nif not os.environ.get('CI'):\n    os.environ['ORT_DISABLE_TELEMETRY'] = '1'\nimport pipecat\n",
            "line 4",
        ),
        // Wrong value.
        (
            "import os\nos.environ['ORT_DISABLE_TELEMETRY'] = '0'\nimport pipecat\n",
            "line 3",
        ),
        // Setter only in a comment or a docstring.
        (
            "# os.environ['ORT_DISABLE_TELEMETRY'] = '1'\nimport pipecat\n",
            "line 2",
        ),
        (
            "\"\"\"\nos.environ['ORT_DISABLE_TELEMETRY'] = '1'\n\"\"\"\nimport pipecat\n",
            "line 4",
        ),
    ];
    for (src, want) in bad {
        let got = telemetry_problem(src).unwrap_or_else(|| panic!("should be caught:\n{src}"));
        assert!(got.contains(want), "{src:?}: {got:?} lacks {want:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Network trace (opt-in)
// ---------------------------------------------------------------------------------------

/// A forbidden internet address in one strace line: (family, address, port).
type Remote = (String, String, String);

/// Every AF_INET/AF_INET6 address in an strace line that is not loopback, plus port 53 on
/// any address (a local stub resolver such as systemd-resolved's 127.0.0.53 forwards the
/// lookup off the machine; the bot has no name to look up). Addresses strace prints in a
/// form this does not understand count as forbidden (fail closed).
fn forbidden_addresses(line: &str) -> Vec<Remote> {
    let mut found = Vec::new();
    for (at, _) in line.match_indices("sa_family=") {
        let rest = &line[at + "sa_family=".len()..];
        let family: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let sockaddr = &rest[..rest.find('}').unwrap_or(rest.len())];
        let between = |open: &str, close: char| {
            sockaddr.find(open).map(|i| {
                let s = &sockaddr[i + open.len()..];
                s[..s.find(close).unwrap_or(s.len())].to_string()
            })
        };
        let (addr, port) = match family.as_str() {
            "AF_INET" => (
                between("inet_addr(\"", '"'),
                between("sin_port=htons(", ')'),
            ),
            "AF_INET6" => (
                between("inet_pton(AF_INET6, \"", '"'),
                between("sin6_port=htons(", ')'),
            ),
            _ => continue, // AF_UNIX, AF_NETLINK, AF_UNSPEC, ...: not the network
        };
        let loopback = match addr.as_deref().map(str::parse::<IpAddr>) {
            Some(Ok(IpAddr::V4(a))) => a.is_loopback(),
            Some(Ok(IpAddr::V6(a))) => {
                a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            _ => false,
        };
        if !loopback || port.as_deref() == Some("53") {
            found.push((
                family,
                addr.unwrap_or_else(|| "?".into()),
                port.unwrap_or_else(|| "?".into()),
            ));
        }
    }
    found
}

#[test]
fn trace_parser_flags_only_non_loopback_inet() {
    // Lines as strace 6.1 printed them for the bot without the variable (issue 17).
    let remote = [
        r#"13758 connect(13, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0"#,
        r#"1700000000.123456 13 connect(5, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "2603:1030::1", &sin6_addr), sin6_scope_id=0}, 28 <unfinished ...>"#,
        r#"14 sendto(6, "\x12\x34", 2, MSG_NOSIGNAL, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("8.8.8.8")}, 16) = 2"#,
        r#"15 sendmsg(7, {msg_name={sa_family=AF_INET6, sin6_port=htons(53), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::ffff:10.0.0.1", &sin6_addr), sin6_scope_id=0}, msg_namelen=28}, 0) = 30"#,
        r#"16 connect(3, {sa_family=AF_INET, sin_port=htons(80), sin_addr=something_new(0x1)}, 16) = 0"#,
        // systemd-resolved's stub: loopback, but a name lookup all the same.
        r#"17 connect(3, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("127.0.0.53")}, 16) = 0"#,
    ];
    for l in remote {
        assert_eq!(forbidden_addresses(l).len(), 1, "should be remote: {l}");
    }
    assert_eq!(
        forbidden_addresses(remote[0]),
        vec![("AF_INET".into(), "10.255.255.53".into(), "53".into())]
    );
    let local = [
        r#"13423 connect(11, {sa_family=AF_INET, sin_port=htons(39793), sin_addr=inet_addr("127.0.0.1")}, 16) = -1 EINPROGRESS (Operation now in progress)"#,
        r#"13423 connect(11, {sa_family=AF_INET, sin_port=htons(8), sin_addr=inet_addr("127.3.2.1")}, 16) = 0"#,
        r#"13758 connect(13, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT (No such file or directory)"#,
        r#"9 connect(4, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = 0"#,
        r#"9 connect(4, {sa_family=AF_INET6, sin6_port=htons(80), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6_addr), sin6_scope_id=0}, 28) = 0"#,
        r#"9 sendto(4, {{len=20, type=RTM_GETADDR, flags=NLM_F_REQUEST|NLM_F_DUMP, seq=1, pid=0}, {ifa_family=AF_UNSPEC}}, 20, 0, {sa_family=AF_NETLINK, nl_pid=0, nl_groups=00000000}, 12) = 20"#,
        r#"13423 sendto(11, "GET /ws HTTP/1.1\r\nHost: 127.0.0."..., 267, 0, NULL, 0) = 267"#,
        r#"13560 <... sendto resumed>)             = 1"#,
    ];
    for l in local {
        assert_eq!(forbidden_addresses(l), vec![], "should be local: {l}");
    }
}

/// Kills strace (and so the traced bot) if the test panics.
struct Traced(Child);

impl Drop for Traced {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn venv_python(root: &Path) -> String {
    let setup = Command::new("bash")
        .arg(root.join("interop/pipecat/setup.sh"))
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .expect("run interop/pipecat/setup.sh");
    assert!(setup.status.success(), "interop/pipecat/setup.sh failed");
    String::from_utf8_lossy(&setup.stdout)
        .lines()
        .last()
        .expect("setup.sh prints the venv python")
        .trim()
        .to_string()
}

#[test]
fn interop_bot_talks_only_to_loopback_under_strace() {
    if std::env::var("PLANRUN_TRACE_NET").as_deref() != Ok("1") {
        eprintln!(
            "PLANRUN_TRACE_NET is not 1: skipping the network trace of the interop bot \
             (the source check still ran)"
        );
        return;
    }
    let has_strace = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_strace {
        eprintln!("PLANRUN_TRACE_NET=1 but `strace` is not installed: skipping the network trace");
        return;
    }
    let secs: u64 = std::env::var("PLANRUN_TRACE_NET_SECS")
        .ok()
        .map(|s| s.parse().expect("PLANRUN_TRACE_NET_SECS is whole seconds"))
        .unwrap_or(40);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = venv_python(root);

    let dir = std::env::temp_dir().join(format!(
        "planrun-test-tracenet-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("strace.txt");
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // `timeout` bounds the bot's life (SIGTERM: it exits 0) even if this test dies.
    let mut child = Command::new("strace")
        .args(["-f", "-qq", "-ttt", "-s", "64"])
        .args(["-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o"])
        .arg(&trace)
        .args(["--", "timeout", "-s", "TERM", "-k", "10", &secs.to_string()])
        .arg(&python)
        .arg(root.join("interop/pipecat/bot.py"))
        .args(["--port", "0"])
        .current_dir(root)
        // What is tested is the bot's own setting, not this environment.
        .env_remove(VAR)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start strace");
    let out = child.stdout.take().unwrap();
    let mut traced = Traced(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("READY port=") {
                let _ = tx.send(line);
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(secs)).ok();
    let deadline = Instant::now() + Duration::from_secs(secs + 60);
    while traced.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "strace/bot did not end within {secs} + 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ready = ready.expect("the bot printed READY within the trace window");

    let text = std::fs::read_to_string(&trace).expect("strace output");
    let mut remote = Vec::new();
    let mut loopback_connects = 0;
    for line in text.lines() {
        let found = forbidden_addresses(line);
        if found.is_empty() && line.contains("connect(") && line.contains("sa_family=AF_INET") {
            loopback_connects += 1;
        }
        // `PID SECONDS.MICROS syscall(...)`: show the time since the bot started.
        let at = line
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.parse::<f64>().ok())
            .map(|t| format!("+{:.1}s", t - started))
            .unwrap_or_default();
        for (family, addr, port) in found {
            remote.push(format!("{at} {family} {addr} port {port}: {line}"));
        }
    }
    // The bot's warm-up call connects to itself over 127.0.0.1: seeing it proves the trace
    // caught the bot's socket calls at all.
    assert!(
        loopback_connects >= 1,
        "no loopback connect in the trace (the warm-up call should make one); is the trace \
         empty? {}",
        trace.display()
    );
    let port53 = remote.iter().filter(|r| r.contains(" port 53:")).count();
    assert!(
        remote.is_empty(),
        "the interop bot reached beyond loopback in {secs} s ({port53} to port 53; \
         onnxruntime telemetry? see issue 17):\n{}",
        remote.join("\n")
    );
    eprintln!(
        "trace net: {ready}; {} traced socket calls in {secs} s, {loopback_connects} loopback \
         connects, 0 to other addresses",
        text.lines().count()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
