//! The one-way flow of lib.rs's layout map: a module imports only from layers
//! below it, so transports never reach into the server that routes to them,
//! and the fan-out engine (realtime) knows nothing of GraphQL or protocols.

use std::path::Path;

/// Each top-level module's layer: a module may use `crate::m` only for an `m`
/// of a lower layer (or itself).
const LAYERS: &[(&str, u8)] = &[
    ("values", 0),
    ("catalog", 1),
    ("metrics", 1),
    ("access", 2),
    ("schema_diff", 2),
    ("store", 3),
    ("realtime", 4),
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

#[test]
fn modules_import_only_from_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    let mut seen = 0;
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let module = first.as_os_str().to_string_lossy();
        let module = module.trim_end_matches(".rs");
        if matches!(module, "lib" | "main") {
            continue;
        }
        let own = layer(module).unwrap_or_else(|| {
            panic!("src/{module} has no layer in LAYERS: give it one (and a row in lib.rs's map)")
        });
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let used: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let Some(theirs) = layer(&used) else { continue };
                seen += 1;
                if used != module && theirs >= own {
                    upward.push(format!(
                        "{}:{}: {module} uses crate::{used}",
                        rel.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        seen > 100,
        "found only {seen} crate:: paths: is the scan reading src/?"
    );
    assert!(
        upward.is_empty(),
        "imports against the flow:\n{}",
        upward.join("\n")
    );
}
