//! `planrun completions SHELL` and `planrun man`: shell completions and man pages generated from
//! the clap definitions, so they never drift from the real options.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::{Cli, exit};

/// Print the completion script of `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> u8 {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "planrun", &mut out);
    match out.flush() {
        Ok(()) => exit::PASSED,
        Err(_) => exit::CANNOT_RUN,
    }
}

/// The man page of `planrun` (roff), or of one subcommand (`planrun-validate`).
pub fn man_page(sub: Option<&str>) -> Option<Vec<u8>> {
    let cmd = Cli::command();
    let cmd = match sub {
        None => cmd,
        Some(name) => {
            let sub = cmd.find_subcommand(name)?.clone();
            // clap names are `&'static str` (no `string` feature); a man page is made once per
            // process.
            let full: &'static str = Box::leak(format!("planrun-{name}").into_boxed_str());
            sub.name(full)
        }
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf).ok()?;
    Some(buf)
}

/// `planrun man`: print `planrun.1`, or with `out`, write `planrun.1` and one
/// `planrun-SUBCOMMAND.1` per subcommand into that folder.
pub fn man(out: Option<&Path>) -> u8 {
    let Some(dir) = out else {
        let page = man_page(None).unwrap_or_default();
        return match std::io::stdout().write_all(&page) {
            Ok(()) => exit::PASSED,
            Err(_) => exit::CANNOT_RUN,
        };
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("planrun man: cannot create {}: {e}", dir.display());
        return exit::CANNOT_RUN;
    }
    let mut pages = vec![("planrun.1".to_string(), man_page(None))];
    for sub in Cli::command().get_subcommands() {
        let name = sub.get_name().to_string();
        pages.push((format!("planrun-{name}.1"), man_page(Some(&name))));
    }
    for (file, page) in pages {
        let path = dir.join(&file);
        if let Err(e) = std::fs::write(&path, page.unwrap_or_default()) {
            eprintln!("planrun man: cannot write {}: {e}", path.display());
            return exit::CANNOT_RUN;
        }
    }
    println!("wrote man pages into {}", dir.display());
    exit::PASSED
}
