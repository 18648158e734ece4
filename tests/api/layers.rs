//! The one-way flow of lib.rs's layout map (keep its layer column and
//! `LAYERS` alike): a module imports only from layers
//! below it, so transports never reach into the server that routes to them,
//! and the fan-out engine (realtime) knows nothing of GraphQL or protocols.

use std::path::Path;

/// Each top-level module's layer: a module may use `crate::m` only for an `m`
/// of a lower layer (or itself).
const LAYERS: &[(&str, u8)] = &[
    ("values", 0),
    ("catalog", 1),
    ("metrics", 1),
    ("telemetry", 1),
    ("access", 2),
    ("schema_diff", 2),
    ("store", 3),
    ("realtime", 4),
    ("triggers", 4),
    ("auth", 4),
    ("graphql", 5),
    ("app", 6),
    ("transport", 7),
    ("server", 8),
    ("cli", 9),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` without its comments (line and block; string contents are kept,
/// which only ever errs towards a stricter check).
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if c == '\\' {
                let two: usize = rest.chars().take(2).map(char::len_utf8).sum();
                out.push_str(&rest[..two]);
                rest = &rest[two..];
                continue;
            }
            in_string = c != '"';
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |at| &rest[at..]);
            continue;
        } else if rest.starts_with("/*") {
            rest = rest.find("*/").map_or("", |at| &rest[at + 2..]);
            continue;
        } else if c == '"' && !out.ends_with('\'') {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The name at the start of `s` (after blanks).
fn name(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The first segments of the path that starts `rest`: one name, or each name
/// of a `{...}` group.
fn roots(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    let Some(group) = rest.strip_prefix('{') else {
        return vec![name(rest)];
    };
    let mut found = Vec::new();
    let mut depth = 1;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => start = true,
            c if c.is_whitespace() => {}
            _ if start && depth == 1 => {
                found.push(name(&group[i..]));
                start = false;
            }
            _ => {}
        }
    }
    found
}

/// The module path of a file under `src/` (`realtime/rooms/shared.rs` is
/// `realtime::rooms::shared`, `realtime/mod.rs` is `realtime`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Where each standalone `word` (not part of a longer name or path) starts
/// in `code`, with what follows it.
fn words<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    code.match_indices(word).filter_map(move |(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        let joined = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        (!joined(before) && !joined(after) && before != Some(':')).then(|| &code[at..])
    })
}

/// The top-level modules `code` (the file at module path `path`) names:
/// through `crate::` (a root that is no module lands in `unknown`), and
/// through `super::` chains that climb out of its top-level module.
fn used_modules(code: &str, path: &[String], unknown: &mut Vec<String>) -> Vec<String> {
    let mut used = Vec::new();
    for rest in words(code, "crate") {
        let Some(rest) = rest["crate".len()..].trim_start().strip_prefix("::") else {
            continue;
        };
        for root in roots(rest) {
            if layer(&root).is_some() {
                used.push(root);
            } else {
                unknown.push(format!("crate::{root}"));
            }
        }
    }
    for mut rest in words(code, "super") {
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super") {
            let Some(r) = r.trim_start().strip_prefix("::") else {
                break;
            };
            climbs += 1;
            rest = r.trim_start();
        }
        // Out of its top-level module only when it climbs past it (an inline
        // `mod tests` climbing to its file names no module: skipped).
        if climbs >= path.len() {
            used.extend(roots(rest).into_iter().filter(|r| layer(r).is_some()));
        }
    }
    used
}

#[test]
fn modules_import_only_from_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    let mut unknown = Vec::new();
    let mut seen = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let path = module_path(rel);
        let module = path.first().expect("a module").as_str();
        if matches!(module, "lib" | "main") {
            continue;
        }
        let own = layer(module).unwrap_or_else(|| {
            panic!("src/{module} has no layer in LAYERS: give it one (and a row in lib.rs's map)")
        });
        let code = without_comments(&std::fs::read_to_string(file).expect("read source"));
        for used in used_modules(&code, &path, &mut unknown) {
            seen += 1;
            if used != module && layer(&used).is_some_and(|theirs| theirs >= own) {
                upward.push(format!("{}: {module} uses {used}", rel.display()));
            }
        }
    }
    assert!(
        seen > 100,
        "found only {seen} crate:: paths: is the scan reading src/?"
    );
    assert!(
        unknown.is_empty(),
        "paths into no known module: {unknown:?}"
    );
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports against the flow:\n{}",
        upward.join("\n")
    );
}
