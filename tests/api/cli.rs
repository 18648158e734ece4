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
