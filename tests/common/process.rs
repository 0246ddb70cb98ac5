//! Process-wide figures (resident memory, open file descriptors) and the lock that keeps the tests
//! measuring them from running beside other tests of their binary.
//!
//! Both instances of a test (`name::async_std`, `name::tokio`) go through the same lock: a test run
//! through [`exclusive`] runs beside nothing else of its test binary, on either runtime; tests run
//! through [`shared`] may run beside each other. Each test body bounds its own time (`within`), so
//! the wait for the lock does not count against it. (Test binaries run one after another, so a
//! binary's lock is all the isolation a test needs.)

use std::{
    future::Future,
    sync::RwLock,
    time::{Duration, Instant},
};

use super::{helpers, init_logging, Runtime};

static LOCK: RwLock<()> = RwLock::new(());

/// Runs a test that does not measure process-wide figures on runtime `R`: it may run beside others
/// of its kind.
pub fn shared<R: Runtime, F: Future>(test: F) -> F::Output {
    let _shared = LOCK.read().unwrap_or_else(|e| e.into_inner());
    init_logging();
    R::block_on(test)
}

/// [`shared`] under the harness's overall bound ([`WAIT`](super::WAIT), as [`run`](super::run)),
/// for a test whose body does not bound its own time.
pub fn shared_bounded<R: Runtime, F: Future>(test: F) -> F::Output {
    shared::<R, _>(super::within::<R, _>(super::WAIT, test))
}

/// Runs a test that measures RSS, file descriptors or deadlines on runtime `R`, alone.
pub fn exclusive<R: Runtime, F: Future>(test: F) -> F::Output {
    let _alone = LOCK.write().unwrap_or_else(|e| e.into_inner());
    init_logging();
    R::block_on(test)
}

/// Resident set size of this process, in bytes.
pub fn rss() -> i64 {
    helpers::rss_kib().expect("VmRSS in /proc/self/status") as i64 * 1024
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Waits (bounded) until the fd count is back at `baseline`; returns the final count.
pub async fn settle_fds<R: Runtime>(baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = fd_count();
        if now <= baseline || Instant::now() >= deadline {
            return now;
        }
        R::sleep(Duration::from_millis(20)).await;
    }
}

pub fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The environment variable `name` as a number, or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
