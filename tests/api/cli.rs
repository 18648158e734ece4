//! The binary's command line: `serve` prints where it listens and stops cleanly
//! on SIGTERM/SIGINT; `schema` prints the SDL; `migrate` prepares the database.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/app.toml");

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    out
}

fn serve_then_signal(signal: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--app",
            APP,
            "--database-url",
        ])
        .arg(format!(
            "sqlite://{}",
            dir.path().join("data/live.db").display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    let url = line
        .trim()
        .strip_prefix("livegate listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr = url.strip_suffix("/graphql").expect("URL ends in /graphql");
    assert!(
        http_get(addr, "/healthz").starts_with("HTTP/1.0 200"),
        "healthz answers"
    );
    let mut second = String::new();
    stdout.read_line(&mut second).expect("read");
    assert_eq!(second, format!("playground: http://{addr}/playground\n"));
    assert!(
        http_get(addr, "/playground").starts_with("HTTP/1.0 200"),
        "the playground answers"
    );
    assert!(
        dir.path().join("data/live.db").exists(),
        "the SQLite file and its folder are created on first run"
    );

    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(code) = child.try_wait().expect("wait") {
            assert!(
                code.success(),
                "{signal} ends the server with success, got {code}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the server did not stop within 15 s of {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_prints_its_url_and_stops_on_sigterm() {
    serve_then_signal("-TERM");
}

#[test]
fn serve_stops_on_sigint() {
    serve_then_signal("-INT");
}

#[test]
fn schema_and_migrate_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args(["schema", "--app", APP])
        .output()
        .expect("run");
    assert!(out.status.success());
    let sdl = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        sdl,
        include_str!("../../schema/schema.graphql"),
        "`livegate schema` prints the committed SDL"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("m.db");
    let out = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args(["migrate", "--app", APP, "--database-url"])
        .arg(format!("sqlite://{}", db.display()))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    assert!(db.exists());
    let again = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args(["migrate", "--app", APP, "--database-url"])
        .arg(format!("sqlite://{}", db.display()))
        .output()
        .expect("run");
    assert!(
        again.status.success(),
        "migrate is idempotent: {}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// Runs `livegate schema --app APP --diff OLD`: (exit code, stdout, stderr).
fn schema_diff(app: &std::path::Path, old: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .arg("schema")
        .arg("--app")
        .arg(app)
        .arg("--diff")
        .arg(old)
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn schema_diff_reports_a_removed_field_as_breaking() {
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/schema.graphql");
    let example = std::fs::read_to_string(APP).expect("example app");
    let dir = tempfile::tempdir().expect("temp dir");

    // Unchanged: the committed schema is what the example app produces.
    let same = dir.path().join("same.toml");
    std::fs::write(&same, &example).expect("write");
    let (code, stdout, stderr) = schema_diff(&same, committed);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("no changes"), "{stdout}");

    // A copy without `posts.rating`: every client that selects or filters by it breaks.
    let line = "rating = { type = \"float\", description = \"Average reader rating, 0 to 5.\" }\n";
    assert!(
        example.contains(line),
        "the example app declares posts.rating"
    );
    let removed = dir.path().join("removed.toml");
    std::fs::write(&removed, example.replacen(line, "", 1)).expect("write");
    let (code, stdout, stderr) = schema_diff(&removed, committed);
    assert_eq!(
        code,
        Some(1),
        "a breaking change exits with 1: {stdout}{stderr}"
    );
    let breaking = stdout
        .split("\nsafe:")
        .next()
        .and_then(|s| s.split("breaking:\n").nth(1))
        .unwrap_or_else(|| panic!("a breaking section: {stdout}"));
    for expected in [
        "Field `Post.rating` was removed.",
        "Input field `PostCreateInput.rating` was removed.",
        "Input field `PostWhere.rating` was removed.",
        "Enum value `PostField.RATING` was removed.",
    ] {
        assert!(breaking.contains(expected), "{expected} in {stdout}");
    }
    assert!(
        stderr.contains("breaking change(s)"),
        "stderr says why it failed: {stderr}"
    );

    // Adding an optional field is safe.
    let added = dir.path().join("added.toml");
    std::fs::write(
        &added,
        example.replacen(line, &format!("{line}subtitle = \"string\"\n"), 1),
    )
    .expect("write");
    let (code, stdout, stderr) = schema_diff(&added, committed);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("breaking:"), "{stdout}");
    assert!(
        stdout.contains("Field `Post.subtitle` was added."),
        "{stdout}"
    );

    // An OLD file that is not SDL is an error naming it, not a report.
    let junk = dir.path().join("junk.graphql");
    std::fs::write(&junk, "type {").expect("write");
    let (code, _, stderr) = schema_diff(&same, &junk.display().to_string());
    assert_eq!(code, Some(1));
    assert!(stderr.contains("junk.graphql"), "{stderr}");
}

#[test]
fn log_format_json_writes_one_json_object_a_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No JWT secret: serving starts with a warning that one was generated.
    let mut child = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--app",
            APP,
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("data/live.db").display()
        ))
        .env_remove("LIVEGATE_JWT_SECRET")
        .env_remove("LIVEGATE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read");
    assert!(line.starts_with("livegate listening on"), "{line:?}");
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "no log line");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
        assert!(v["fields"]["message"].is_string(), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"level\":\"WARN\"") && l.contains("secret")),
        "the generated-secret warning: {stderr}"
    );
}
