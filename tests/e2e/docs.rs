//! Every `seawall` command line in README.md and docs/ must be one the
//! parser takes: each is run with `--help` appended (clap refuses unknown
//! flags and misplaced subcommands before it prints help). The README's
//! first-backup block runs for real, on scratch paths.

use crate::fixtures::bin;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents whose command lines are checked.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// The lines inside ``` fences, continuation lines joined.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((n + 1, String::new()));
        joined.push_str(line.trim_end());
        if let Some(cut) = joined.strip_suffix('\\') {
            pending = Some((start, format!("{cut} ")));
        } else {
            out.push((start, joined));
        }
    }
    out
}

/// Splits like a shell: quotes group, a `#` outside quotes starts a comment.
fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut has_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    word.push(n);
                    has_word = true;
                }
            }
            (None, '#') if !has_word => break,
            // A shell redirection or pipe ends the command.
            (None, '>' | '|' | '<') if !has_word => break,
            (None, c) if c.is_whitespace() => {
                if has_word {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(word);
    }
    words
}

/// The seawall command in a code line: the line itself, or one quoted in
/// it (`archive_command = '... seawall ... wal-push %p'`).
fn command_in(line: &str) -> Option<Vec<String>> {
    let trimmed = line.trim_start().trim_start_matches("$ ");
    if let Some(rest) = trimmed.strip_prefix("seawall ") {
        return Some(usage_to_args(rest));
    }
    let at = line.find("seawall ")?;
    let before = &line[..at];
    let quote = before.rfind(['\'', '"'])?;
    if before[..quote].ends_with('\\') {
        return None; // an escaped quote inside a string, not a command
    }
    let q = line[quote..].chars().next()?;
    let inner = &line[quote + 1..];
    let end = inner.find(q)?;
    let inner = &inner[..end];
    // The quoted text must be the command itself, by name or by path
    // (not a string that merely contains the word).
    let at = inner.find("seawall ")?;
    let program = &inner[..at];
    if !(program.is_empty() || program.ends_with('/') && !program.contains(' ')) {
        return None;
    }
    Some(usage_to_args(&inner[at + "seawall ".len()..]))
}

/// A synopsis's optional parts (`[--region R]`) written out as given, and
/// its number placeholder (`N`) as a number.
fn usage_to_args(rest: &str) -> Vec<String> {
    let mut cleaned = String::new();
    let mut quote: Option<char> = None;
    for c in rest.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cleaned.push(c);
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                cleaned.push(c);
            }
            (None, '[' | ']') => cleaned.push(' '),
            (_, c) => cleaned.push(c),
        }
    }
    split(&cleaned)
        .into_iter()
        .map(|w| if w == "N" { "1".to_string() } else { w })
        .collect()
}

#[test]
fn every_command_line_in_the_readme_and_docs_parses() {
    let mut checked = 0;
    let mut refused = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (n, line) in code_lines(&text) {
            let Some(args) = command_in(&line) else {
                continue;
            };
            let out = Command::new(bin())
                .args(&args)
                .arg("--help")
                .env_remove("SEAWALL_REPOSITORY")
                .output()
                .unwrap();
            checked += 1;
            if !out.status.success() {
                refused.push(format!(
                    "{}:{n}: {line}\n    {}",
                    doc.strip_prefix(root()).unwrap_or(&doc).display(),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .next()
                        .unwrap_or("")
                ));
            }
        }
    }
    assert!(
        checked >= 40,
        "only {checked} command lines found: is the extraction broken?"
    );
    assert!(
        refused.is_empty(),
        "command lines the parser refuses:\n{}",
        refused.join("\n")
    );
}

/// The README's "first backup of your own" block, lines as written.
fn first_backup_block() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = text
        .find("A first backup of your own:")
        .expect("README has no first-backup block");
    code_lines(&text[start..])
        .into_iter()
        .map(|(_, l)| l)
        .take_while(|l| !l.trim().is_empty())
        .take(7)
        .collect()
}

#[test]
fn the_readmes_first_backup_runs_as_written_on_scratch_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("app-data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("config.yml"), "port: 8080\n").unwrap();
    std::fs::write(data.join("sub/state.json"), "{}\n").unwrap();
    std::fs::write(data.join("scratch.tmp"), "skip me").unwrap();
    let restored = tmp.path().join("restored");
    let block = first_backup_block();
    assert!(block.len() >= 6, "{block:?}");
    let mut password = None;
    for line in &block {
        if let Some(rest) = line.strip_prefix("export SEAWALL_PASSWORD=") {
            password = Some(split(rest).join(""));
            continue;
        }
        let line = line
            .replace("/srv/app-data", &data.display().to_string())
            .replace("/tmp/restored", &restored.display().to_string());
        let args = command_in(&line).unwrap_or_else(|| panic!("not a seawall line: {line}"));
        let out = Command::new(bin())
            .args(&args)
            .current_dir(tmp.path())
            .env(
                "SEAWALL_PASSWORD",
                password
                    .as_deref()
                    .expect("the block sets no password first"),
            )
            .env_remove("SEAWALL_REPOSITORY")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The restore brought the data back (excluding what was excluded).
    let back = find_file(&restored, "config.yml").expect("config.yml not restored");
    assert_eq!(std::fs::read_to_string(back).unwrap(), "port: 8080\n");
    assert!(find_file(&restored, "scratch.tmp").is_none());
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn the_shell_splitter_keeps_quotes_and_drops_comments() {
    assert_eq!(
        split("backup --exclude '*.tmp' --dsn \"host=a b\"  # note"),
        ["backup", "--exclude", "*.tmp", "--dsn", "host=a b"]
    );
    assert_eq!(
        command_in("archive_command = 'seawall --repo R wal-push %p'").unwrap(),
        ["--repo", "R", "wal-push", "%p"]
    );
    assert_eq!(
        command_in("seawall backups [--region R [--source S]]").unwrap(),
        ["backups", "--region", "R", "--source", "S"]
    );
    assert_eq!(
        command_in("cmd = '/usr/local/bin/seawall -q wal-push %p'").unwrap(),
        ["-q", "wal-push", "%p"]
    );
    assert!(command_in("\"wrapped\": \"<seal(aad=\\\"seawall key v1\\\")>\"").is_none());
    assert_eq!(
        command_in("seawall jobs [--limit N]").unwrap(),
        ["jobs", "--limit", "1"]
    );
}
