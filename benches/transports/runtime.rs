//! Runtimes, threads and time bounds: each peer of a pair on its own thread (pinned to its own
//! core when there are two) with its own single-threaded runtime ([`pair`]), bounded waits
//! ([`within`]), and the file descriptor limit.

use std::{
    cell::Cell,
    fmt::Display,
    future::Future,
    pin::pin,
    sync::{mpsc::SyncSender, OnceLock},
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use futures::future::{select, Either};
use libp2p::core::Multiaddr;

use crate::WAIT;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rt {
    Tokio,
    AsyncIo,
}

thread_local! {
    pub(crate) static RUNTIME: Cell<Rt> = const { Cell::new(Rt::AsyncIo) };
}

/// Runs `future` to completion on this thread: a tokio current-thread runtime, or async-io's
/// `block_on` (which drives the async-io reactor from this thread while it waits).
pub(crate) fn block_on<F: Future>(rt: Rt, future: F) -> F::Output {
    RUNTIME.with(|c| c.set(rt));
    match rt {
        Rt::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(future),
        Rt::AsyncIo => async_io::block_on(future),
    }
}

pub(crate) async fn sleep(duration: Duration) {
    match RUNTIME.with(Cell::get) {
        Rt::Tokio => tokio::time::sleep(duration).await,
        Rt::AsyncIo => {
            async_io::Timer::after(duration).await;
        }
    }
}

/// `future`, or an error naming `what` after `limit`.
pub(crate) async fn within<F: Future>(
    limit: Duration,
    what: impl Display,
    future: F,
) -> Result<F::Output> {
    let future = pin!(future);
    let timer = pin!(sleep(limit));
    match select(future, timer).await {
        Either::Left((output, _)) => Ok(output),
        Either::Right(_) => bail!("timed out after {limit:?}: {what}"),
    }
}

/// The CPUs this process may run on.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bitmask that sched_getaffinity fills; CPU_ISSET only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// The two CPUs the listener and the dialer are pinned to, if there are at least two.
pub(crate) fn pinning() -> Option<(usize, usize)> {
    static CPUS: OnceLock<Option<(usize, usize)>> = OnceLock::new();
    *CPUS.get_or_init(|| match allowed_cpus()[..] {
        [a, b, ..] => Some((a, b)),
        _ => None,
    })
}

pub(crate) fn pin_current_thread(cpu: usize) {
    // SAFETY: as above; sched_setaffinity(0, ..) applies to the calling thread only.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    if !ok {
        eprintln!("warning: could not pin a thread to CPU {cpu}");
    }
}

/// Raises RLIMIT_NOFILE to at least `want` if possible; returns the soft limit in force.
pub(crate) fn raise_nofile(want: libc::rlim_t) -> libc::rlim_t {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        // Not allowed to raise the hard limit: take all of it.
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}

/// The result of a scoped thread, with its panic as an error.
pub(crate) fn joined<T>(handle: thread::ScopedJoinHandle<'_, Result<T>>, name: &str) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the {name} thread panicked")))
        .with_context(|| format!("{name} side"))
}

/// Runs a listener and a dialer, each on its own (pinned) thread with its own runtime. The
/// listener sends its address through the channel it is given; the dialer gets it.
pub(crate) fn pair<A, B, L, D, FL, FD>(rt: Rt, listener: L, dialer: D) -> Result<(A, B)>
where
    L: FnOnce(SyncSender<Multiaddr>) -> FL + Send,
    FL: Future<Output = Result<A>>,
    A: Send,
    D: FnOnce(Multiaddr) -> FD + Send,
    FD: Future<Output = Result<B>>,
    B: Send,
{
    let cpus = pinning();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    thread::scope(|scope| {
        let listener = thread::Builder::new()
            .name("listener".into())
            .spawn_scoped(scope, move || {
                if let Some((cpu, _)) = cpus {
                    pin_current_thread(cpu);
                }
                block_on(rt, listener(tx))
            })
            .context("spawning the listener thread")?;
        let dialer = thread::Builder::new()
            .name("dialer".into())
            .spawn_scoped(scope, move || {
                if let Some((_, cpu)) = cpus {
                    pin_current_thread(cpu);
                }
                let addr = rx
                    .recv_timeout(WAIT)
                    .map_err(|_| anyhow!("the listener never reported its address"))?;
                block_on(rt, dialer(addr))
            })
            .context("spawning the dialer thread")?;
        let dialer = joined(dialer, "dialer");
        let listener = joined(listener, "listener");
        match (listener, dialer) {
            (Ok(l), Ok(d)) => Ok((l, d)),
            (Err(l), Ok(_)) => Err(l),
            (Ok(_), Err(d)) => Err(d),
            (Err(l), Err(d)) => Err(anyhow!("{l:#}; {d:#}")),
        }
    })
}
