use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement, TransactionTrait, DbBackend, AccessMode, IsolationLevel};
use tokio::sync::oneshot;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS posts (id TEXT PRIMARY KEY, owner_id TEXT, account_id TEXT NOT NULL, created_at TEXT, updated_at TEXT, title TEXT, published INTEGER, views INTEGER);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL, collection TEXT, action TEXT, row_id TEXT, owner_id TEXT, at TEXT, record TEXT);";

fn id(n: u64) -> String { format!("{n:032x}") }

struct Job { n: u64, done: oneshot::Sender<i64> }

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let conc: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let path = std::env::temp_dir().join(format!("sqlite-paths-{}.db", std::process::id())).display().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let secs = 5;
    rt.block_on(async {
        let url = format!("sqlite://{path}?mode=rwc");
        match mode.as_str() {
            "seaorm" => {
                let mut o = ConnectOptions::new(url);
                o.max_connections(4).sqlx_logging(false);
                o.map_sqlx_sqlite_opts(|o| o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal).synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal).busy_timeout(Duration::from_secs(10)));
                let db = Database::connect(o).await.unwrap();
                for s in SCHEMA.split(';').filter(|s| !s.trim().is_empty()) { db.execute_unprepared(s).await.unwrap(); }
                let start = Instant::now();
                let mut tasks = vec![];
                for t in 0..conc {
                    let db = db.clone(); let count = count.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut n = t * 1_000_000;
                        while start.elapsed() < Duration::from_secs(secs) {
                            n += 1;
                            let txn = db.begin_with_config(None::<IsolationLevel>, None::<AccessMode>).await.unwrap();
                            txn.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, "INSERT INTO posts VALUES (?,?,?,?,?,?,?,?)", [id(n).into(), None::<String>.into(), "acc".into(), "2026".into(), "2026".into(), "hello world".into(), 0i32.into(), 0i32.into()])).await.unwrap();
                            let r = txn.query_one_raw(Statement::from_sql_and_values(DbBackend::Sqlite, "INSERT INTO events (account_id, collection, action, row_id, owner_id, at, record) VALUES (?,?,?,?,?,?,?) RETURNING seq", ["acc".into(), "posts".into(), "create".into(), id(n).into(), None::<String>.into(), "2026".into(), "{\"title\":\"hello world\"}".into()])).await.unwrap().unwrap();
                            let _seq: i64 = r.try_get("", "seq").unwrap();
                            txn.commit().await.unwrap();
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }));
                }
                for t in tasks { t.await.unwrap(); }
            }
            "batch" | "single" => {
                let batch = mode == "batch";
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let p2 = path.clone();
                std::thread::spawn(move || {
                    let c = rusqlite::Connection::open(&p2).unwrap();
                    c.pragma_update(None, "journal_mode", "WAL").unwrap();
                    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
                    c.execute_batch(SCHEMA).unwrap();
                    while let Ok(first) = rx.recv() {
                        let mut jobs = vec![first];
                        if batch { while jobs.len() < 64 { match rx.try_recv() { Ok(j) => jobs.push(j), Err(_) => break } } }
                        c.execute_batch("BEGIN IMMEDIATE").unwrap();
                        let mut seqs = vec![];
                        for j in &jobs {
                            if batch { c.execute_batch("SAVEPOINT w").unwrap(); }
                            c.prepare_cached("INSERT INTO posts VALUES (?,?,?,?,?,?,?,?)").unwrap().execute(rusqlite::params![id(j.n), None::<String>, "acc", "2026", "2026", "hello world", 0, 0]).unwrap();
                            let seq: i64 = c.prepare_cached("INSERT INTO events (account_id, collection, action, row_id, owner_id, at, record) VALUES (?,?,?,?,?,?,?) RETURNING seq").unwrap().query_row(rusqlite::params!["acc", "posts", "create", id(j.n), None::<String>, "2026", "{\"title\":\"hello world\"}"], |r| r.get(0)).unwrap();
                            if batch { c.execute_batch("RELEASE w").unwrap(); }
                            seqs.push(seq);
                        }
                        c.execute_batch("COMMIT").unwrap();
                        for (j, s) in jobs.into_iter().zip(seqs) { let _ = j.done.send(s); }
                    }
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
                let start = Instant::now();
                let mut tasks = vec![];
                for t in 0..conc {
                    let tx = tx.clone(); let count = count.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut n = t * 1_000_000;
                        while start.elapsed() < Duration::from_secs(secs) {
                            n += 1;
                            let (done, wait) = oneshot::channel();
                            tx.send(Job { n, done }).unwrap();
                            wait.await.unwrap();
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }));
                }
                for t in tasks { t.await.unwrap(); }
            }
            _ => panic!("mode: seaorm | single | batch"),
        }
    });
    println!("{mode} conc={conc}: {} writes/s", count.load(Ordering::Relaxed) / secs);
    let _ = std::fs::remove_file(&path);
}
