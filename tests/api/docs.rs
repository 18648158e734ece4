//! The documentation in the repository stays true to the binary: every flag of
//! every command and every key of the app file is documented; user-facing
//! files point at nothing outside the repository; relative links (and their
//! `#anchors`) resolve; and the getting-started guide's code is the code of
//! `examples/react-apollo`, which CI builds.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use livegate::catalog::Catalog;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `README.md` and every Markdown file under `docs/`.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![Path::new(ROOT).join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// All of `docs/*.md`, as one text.
fn all_docs() -> String {
    markdown_files()
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("docs")))
        .map(|p| read(p))
        .collect::<Vec<_>>()
        .join("\n")
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run livegate --help");
    assert!(out.status.success(), "livegate {args:?} --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The long flags a `--help` text lists (`--help` and `--version` aside).
fn flags_of(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line
                .strip_prefix('-')
                .filter(|rest| !rest.starts_with('-'))
                .map_or(line, |rest| rest.split_once(", ").map_or(line, |(_, l)| l));
            let name = line.strip_prefix("--")?;
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!name.is_empty() && name != "help" && name != "version").then(|| format!("--{name}"))
        })
        .collect()
}

/// The subcommands `livegate --help` lists.
fn commands() -> Vec<String> {
    let top = help(&[]);
    top.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

/// Whether `text` mentions `flag` as a whole flag (`--max-limit` is not
/// mentioned by `--max-limits` or `--max-limit-x`).
fn mentions_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| {
        let next = text[at + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn every_flag_of_every_command_is_documented() {
    let docs = all_docs();
    let mut flags = flags_of(&help(&["serve"]));
    assert!(
        flags.contains("--database-url") && flags.contains("--listen"),
        "the help text is read: {flags:?}"
    );
    let commands = commands();
    assert!(
        commands.iter().any(|c| c == "token"),
        "commands listed: {commands:?}"
    );
    for command in &commands {
        flags.extend(flags_of(&help(&[command])));
    }
    // Documented ahead of (or beside) the code that adds them.
    flags.extend(
        [
            "--jwt-jwks-url",
            "--persisted-documents",
            "--only-persisted",
        ]
        .map(String::from),
    );
    let missing: Vec<_> = flags.iter().filter(|f| !mentions_flag(&docs, f)).collect();
    assert!(
        missing.is_empty(),
        "flags not mentioned anywhere in docs/: {missing:?}"
    );
}

/// One step of a key path: a key the app file defines, or an entry of a table
/// whose keys the user chooses (`collections.<key>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Key(String),
    Entry,
}

/// What the parser says the value at a path is.
enum Shape {
    /// A table with these keys.
    Table(Vec<String>),
    /// A table of entries named by the user.
    Entries,
    /// Anything else: a value.
    Value,
}

/// An app file holding `inner` at `path` (entries named `zz_entry`).
fn app_text(path: &[Step], inner: &str) -> String {
    let name = |s: &Step| match s {
        Step::Key(k) => k.clone(),
        Step::Entry => "zz_entry".to_string(),
    };
    match path.split_first() {
        None => inner.to_string(),
        Some((first, rest)) => {
            let mut value = format!("{{ {inner} }}");
            for step in rest.iter().rev() {
                value = format!("{{ {} = {value} }}", name(step));
            }
            format!("{} = {value}", name(first))
        }
    }
}

/// Asks the app file's parser what is at `path`, by putting a table with an
/// unknown key there and reading the error.
fn shape(path: &[Step]) -> Shape {
    let text = app_text(path, "zz_probe = 1");
    let message = match Catalog::parse("probe.toml", &text) {
        Ok(_) => return Shape::Value,
        Err(e) => e.message,
    };
    if message.contains("unknown field `zz_probe`") {
        let expected = message.split_once("expected").map_or("", |(_, e)| e);
        let keys = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        Shape::Table(keys)
    } else if message.contains("invalid type: integer `1`") {
        Shape::Entries
    } else {
        Shape::Value
    }
}

/// Every key path under `path`.
fn explore(path: Vec<Step>, out: &mut BTreeSet<Vec<Step>>) {
    assert!(
        path.len() < 10,
        "app file nested implausibly deep: {path:?}"
    );
    match shape(&path) {
        Shape::Table(keys) => {
            for key in keys {
                let mut next = path.clone();
                next.push(Step::Key(key));
                out.insert(next.clone());
                explore(next, out);
            }
        }
        Shape::Entries => {
            let mut entry = path;
            entry.push(Step::Entry);
            if !matches!(shape(&entry), Shape::Value) {
                explore(entry, out);
            }
        }
        Shape::Value => {}
    }
}

/// The text between backticks in `markdown`.
fn code_spans(markdown: &str) -> BTreeSet<String> {
    markdown
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Whether `span` writes `path`, with `<name>` (or `"<name>"`) for entries.
fn spells(span: &str, path: &[Step]) -> bool {
    let parts: Vec<&str> = span.split('.').collect();
    parts.len() == path.len()
        && parts.iter().zip(path).all(|(part, step)| match step {
            Step::Key(k) => part == k,
            Step::Entry => {
                let bare = part.trim_matches('"');
                bare.len() > 2 && bare.starts_with('<') && bare.ends_with('>')
            }
        })
}

#[test]
fn every_app_file_key_is_documented() {
    let mut keys = BTreeSet::new();
    explore(Vec::new(), &mut keys);
    let written = |path: &[Step]| {
        path.iter()
            .map(|s| match s {
                Step::Key(k) => k.as_str(),
                Step::Entry => "<…>",
            })
            .collect::<Vec<_>>()
            .join(".")
    };
    let found: Vec<String> = keys.iter().map(|k| written(k)).collect();
    for known in [
        "realtime.history_hours",
        "collections.<…>.fields.<…>.max_length",
        "rooms.match.<…>.send",
        "triggers.<…>.secret_env",
    ] {
        assert!(
            found.iter().any(|f| f == known),
            "the probe finds {known}: {found:?}"
        );
    }
    let reference = read(&Path::new(ROOT).join("docs/app-file.md"));
    let spans = code_spans(&reference);
    let missing: Vec<String> = keys
        .iter()
        .filter(|path| !spans.iter().any(|span| spells(span, path)))
        .map(|path| written(path))
        .collect();
    assert!(
        missing.is_empty(),
        "app-file keys not documented in docs/app-file.md (write them as `collections.<key>.type`): {missing:?}"
    );
}

/// Files users read: the README, docs/, the example app file, the examples.
fn user_facing_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !["node_modules", "dist", "gql"].contains(&name) {
                    walk(&path, out);
                }
            } else if name != "package-lock.json" && path.extension().is_none_or(|e| e != "png") {
                out.push(path);
            }
        }
    }
    let mut files = markdown_files();
    files.push(Path::new(ROOT).join("schema/app.toml"));
    walk(&Path::new(ROOT).join("examples"), &mut files);
    files
}

#[test]
fn nothing_user_facing_points_outside_the_repository() {
    let mut offending = Vec::new();
    for file in user_facing_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for needle in ["API.md", "../shared"] {
            if text.contains(needle) {
                offending.push(format!("{} mentions {needle}", file.display()));
            }
        }
    }
    assert!(offending.is_empty(), "{offending:#?}");
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#'));
        let n = seen.entry(base.clone()).or_default();
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of `[text](target)` links and images, outside code blocks.
fn links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            out.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn relative_links_resolve() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("parent").join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{}: {target} (no such file)", file.display()));
                continue;
            }
            if !anchor.is_empty()
                && resolved.extension().is_some_and(|e| e == "md")
                && !anchors(&read(&resolved)).contains(anchor)
            {
                broken.push(format!("{}: {target} (no such heading)", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

#[test]
fn the_getting_started_code_is_the_example_app() {
    let guide = read(&Path::new(ROOT).join("docs/getting-started.md"));
    let example = Path::new(ROOT).join("examples/react-apollo");
    let mut checked = 0;
    let mut lines = guide.lines();
    while let Some(line) = lines.next() {
        let Some((_, title)) = line
            .strip_prefix("```")
            .and_then(|info| info.split_once("title=\""))
        else {
            continue;
        };
        let name = title.trim_end_matches('"');
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let file = read(&example.join(name));
        assert_eq!(
            block.join("\n"),
            file.trim_end(),
            "docs/getting-started.md's {name} differs from examples/react-apollo/{name}"
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "the guide shows the example's files ({checked} found)"
    );
}
