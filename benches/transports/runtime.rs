//! Runtimes, threads and time bounds: each peer of a pair on its own thread (pinned to its own
//! core when there are two) with its own single-threaded runtime ([`pair`]), bounded waits
//! ([`within`]), and the file descriptor limit.

use std::{
    cell::Cell,
    fmt::Display,
    future::Future,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{SyncSender, TryRecvError},
        OnceLock,
    },
    task::{Context, Poll},
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

/// Set by the instruction-count child (`instructions.rs`): [`pair`] runs both peers on the calling
/// thread, on one runtime, so that a run under callgrind does the same work every time.
static SINGLE_THREAD: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_single_thread() {
    SINGLE_THREAD.store(true, Ordering::Relaxed);
}

/// Polls the listener's side of a single-threaded pair. Never inlined, so that callgrind's
/// inclusive cost of this function is what the listener's side did (see `instructions.rs`).
#[inline(never)]
pub(crate) fn poll_listener_side<F: Future>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    future.poll(cx)
}

/// The dialer's counterpart of [`poll_listener_side`].
#[inline(never)]
pub(crate) fn poll_dialer_side<F: Future>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    future.poll(cx)
}

/// Both peers of a pair on this thread, on one runtime: polled in turn (listener first) until both
/// are done.
fn pair_on_one_thread<A, B, L, D, FL, FD>(rt: Rt, listener: L, dialer: D) -> Result<(A, B)>
where
    L: FnOnce(SyncSender<Multiaddr>) -> FL,
    FL: Future<Output = Result<A>>,
    D: FnOnce(Multiaddr) -> FD,
    FD: Future<Output = Result<B>>,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    block_on(rt, async move {
        let mut listener = pin!(listener(tx));
        let mut dialer = pin!(async move {
            // The listener sends its address in its first polls; until then, yield.
            let addr = std::future::poll_fn(|cx| match rx.try_recv() {
                Ok(addr) => Poll::Ready(Ok(addr)),
                Err(TryRecvError::Empty) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Err(TryRecvError::Disconnected) => {
                    Poll::Ready(Err(anyhow!("the listener never reported its address")))
                }
            })
            .await?;
            dialer(addr).await
        });
        let (mut l, mut d) = (None, None);
        std::future::poll_fn(|cx| {
            if l.is_none() {
                if let Poll::Ready(out) = poll_listener_side(listener.as_mut(), cx) {
                    l = Some(out);
                }
            }
            if d.is_none() {
                if let Poll::Ready(out) = poll_dialer_side(dialer.as_mut(), cx) {
                    d = Some(out);
                }
            }
            if l.is_some() && d.is_some() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        match (l.expect("done"), d.expect("done")) {
            (Ok(l), Ok(d)) => Ok((l, d)),
            (Err(l), Ok(_)) => Err(l.context("listener side")),
            (Ok(_), Err(d)) => Err(d.context("dialer side")),
            (Err(l), Err(d)) => Err(anyhow!("listener side: {l:#}; dialer side: {d:#}")),
        }
    })
}

/// Runs a listener and a dialer, each on its own (pinned) thread with its own runtime (or both on
/// this thread, see [`set_single_thread`]). The listener sends its address through the channel it
/// is given; the dialer gets it.
pub(crate) fn pair<A, B, L, D, FL, FD>(rt: Rt, listener: L, dialer: D) -> Result<(A, B)>
where
    L: FnOnce(SyncSender<Multiaddr>) -> FL + Send,
    FL: Future<Output = Result<A>>,
    A: Send,
    D: FnOnce(Multiaddr) -> FD + Send,
    FD: Future<Output = Result<B>>,
    B: Send,
{
    if SINGLE_THREAD.load(Ordering::Relaxed) {
        return pair_on_one_thread(rt, listener, dialer);
    }
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
