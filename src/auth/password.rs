//! Passwords (argon2id, hashed off the async runtime, a bounded number at once)
//! and email normalisation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::HashMetrics;

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes (hashing cost must stay bounded).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Lowercases and trims `email`, and checks its shape; the error says what is wrong.
pub fn normalize_email(email: &str) -> Result<String, String> {
    let email = email.trim().to_lowercase();
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must be an email address like name@example.com".into());
    };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..");
    if local.is_empty()
        || !domain_ok
        || domain.contains('@')
        || email.len() > 254
        || email.chars().any(char::is_whitespace)
    {
        return Err("must be an email address like name@example.com".into());
    }
    Ok(email)
}

/// The password policy: 8 to 1024 bytes' worth of characters, not the email itself.
pub fn check_password(password: &str, email: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "must be at least {MIN_PASSWORD_CHARS} characters long"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("must be at most {MAX_PASSWORD_BYTES} bytes long"));
    }
    if password.trim().to_lowercase() == email {
        return Err("must not be your email address".into());
    }
    Ok(())
}

/// Hashes `password` with argon2id and a random salt (on a blocking thread).
/// Callers go through [`Hasher`], which bounds how many run at once.
async fn hash_password(password: String, slot: Slot) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
    })
    .await?
}

/// A well-formed argon2id hash of nothing anyone knows: checked when a user has no
/// hash, so an unknown email costs as much time as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0VwGh6x3n0n0S6d3+o4mKzZb0ojC0kBv7yQq9u1t3dA";

/// Whether `password` matches `hash` (on a blocking thread). No hash never matches.
async fn verify_password(password: String, hash: Option<String>, slot: Slot) -> bool {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let real = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
        let ok = PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        });
        ok && real
    })
    .await
    .unwrap_or(false)
}

/// Every argon2 run (sign-up hashes and sign-in checks alike) costs a core and
/// about 19 MiB for tens of milliseconds, and anyone can ask for one. The
/// hasher runs at most `concurrency` at once; up to `queue` more wait (at most
/// [`HASH_WAIT`]); past that a request is refused with [`Busy`] at once instead
/// of piling up memory and starving every other request of the cores.
pub struct Hasher {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    metrics: HashMetrics,
}

/// How long a request may wait for a hashing slot before it is refused.
pub const HASH_WAIT: Duration = Duration::from_secs(5);

/// All hashing slots are taken and the queue is full (or the wait ran out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A hashing slot: held by the blocking task until its argon2 run ends, so a
/// request that goes away mid-hash still counts until the hash is done.
struct Slot {
    _permit: OwnedSemaphorePermit,
    running: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.dec();
    }
}

/// Counts one waiter while it lives.
struct Waiting<'a>(&'a Hasher);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.waiting.dec();
    }
}

impl Hasher {
    /// A hasher running `concurrency` hashes at once (at least one) with `queue`
    /// waiting, reporting to `metrics`.
    pub fn new(concurrency: usize, queue: usize, metrics: HashMetrics) -> Hasher {
        Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            queue,
            metrics,
        }
    }

    /// The number of cores, the default concurrency.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    async fn slot(&self) -> Result<Slot, Busy> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
                self.metrics.waiting.inc();
                let _waiting = Waiting(self);
                if ahead >= self.queue {
                    self.metrics.refused.inc();
                    return Err(Busy);
                }
                match tokio::time::timeout(HASH_WAIT, self.permits.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        self.metrics.refused.inc();
                        return Err(Busy);
                    }
                }
            }
        };
        self.metrics.running.inc();
        self.metrics.runs.inc();
        Ok(Slot {
            _permit: permit,
            running: self.metrics.running.clone(),
        })
    }

    /// Hashes `password` with argon2id and a random salt.
    pub async fn hash(&self, password: String) -> Result<anyhow::Result<String>, Busy> {
        let slot = self.slot().await?;
        Ok(hash_password(password, slot).await)
    }

    /// Whether `password` matches `hash`; no hash never matches (but costs the same).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, Busy> {
        let slot = self.slot().await?;
        Ok(verify_password(password, hash, slot).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised() {
        assert_eq!(
            normalize_email("  Ada@Example.COM "),
            Ok("ada@example.com".into())
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@example.com",
            "ada@ex..com",
            "a@b@c.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_policy() {
        assert!(check_password("short", "a@b.co").is_err());
        assert!(check_password("a@b.com!", "a@b.com!").is_err());
        assert!(check_password(&"x".repeat(2000), "a@b.co").is_err());
        assert!(check_password("correct horse", "a@b.co").is_ok());
    }

    #[tokio::test]
    async fn hashes_verify() {
        let hasher = Hasher::new(2, 4, HashMetrics::default());
        let h = hasher
            .hash("correct horse".into())
            .await
            .expect("a slot")
            .expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(
            hasher.verify("correct horse".into(), Some(h.clone())).await,
            Ok(true)
        );
        assert_eq!(
            hasher.verify("wrong horse".into(), Some(h)).await,
            Ok(false)
        );
        assert_eq!(
            hasher.verify("anything".into(), None).await,
            Ok(false),
            "no hash never verifies"
        );
        assert!(
            PasswordHash::new(DUMMY_HASH).is_ok(),
            "the dummy hash is well-formed, so it costs a real check"
        );
    }

    #[tokio::test]
    async fn past_the_queue_hashing_is_refused() {
        let metrics = HashMetrics::default();
        let hasher = Arc::new(Hasher::new(1, 1, metrics.clone()));
        let held = hasher.slot().await.expect("the only slot is free");
        let waiter = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.verify("correct horse".into(), None).await }
        });
        while metrics.waiting.get() < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            hasher.verify("correct horse".into(), None).await,
            Err(Busy),
            "one runs, one waits: the third is refused"
        );
        assert_eq!(metrics.running.get(), 1);
        drop(held);
        assert_eq!(waiter.await.expect("join"), Ok(false), "the waiter ran");
        assert_eq!(
            (
                metrics.running.get(),
                metrics.waiting.get(),
                metrics.runs.get(),
                metrics.refused.get()
            ),
            (0, 0, 2, 1)
        );
    }
}
