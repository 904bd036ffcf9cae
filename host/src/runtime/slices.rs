//! Long calls on the node's background threads give up the CPU in short
//! slices.
//!
//! ## Why
//! The node runs the calls of realm types that burn their fuel on
//! background threads at the lowest CPU priority (`SCHED_IDLE`, see
//! `node::exec`), so that healthy threads take the CPU back whenever they
//! wake. A scheduler trace on a 2-vCPU machine (Linux 6.18, HZ=250) showed
//! that a woken normal thread still sometimes waited a whole tick
//! (2.8–4.4 ms) runnable behind a background thread running wasm, which was
//! most of the healthy appends' p99 while another plugin burned its fuel.
//!
//! ## How
//! A thread that runs such calls marks itself with [`yield_in_calls`].
//! While at least one call runs on a marked thread, one ticker thread
//! advances the epoch of every live engine every [`SLICE`]; the engines are
//! built with epoch interruption, and each store's epoch-deadline callback
//! ([`on_deadline`]) yields the CPU (`sched_yield`) on marked threads and
//! simply continues on all others. With no such call running the ticker
//! sleeps, so an idle node is not woken up every slice.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

/// How long a call on a marked thread runs before it offers the CPU.
pub const SLICE: Duration = Duration::from_micros(500);

thread_local! {
    static YIELDS: Cell<bool> = const { Cell::new(false) };
}

/// Mark the calling thread: plugin calls on it yield the CPU every
/// [`SLICE`]. For threads that run long calls at a low priority.
pub fn yield_in_calls() {
    YIELDS.with(|y| y.set(true));
}

fn marked() -> bool {
    YIELDS.with(Cell::get)
}

struct Ticker {
    engines: Mutex<Vec<EngineWeak>>,
    /// Calls running on marked threads.
    active: AtomicUsize,
    /// `None` if the thread could not be started: calls then run without
    /// slices (as before they existed), and the node carries on.
    thread: Option<Thread>,
}

static TICKER: OnceLock<Ticker> = OnceLock::new();

fn ticker() -> &'static Ticker {
    TICKER.get_or_init(|| {
        let thread = match std::thread::Builder::new()
            .name("realmhost-epoch".into())
            .spawn(tick)
        {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                tracing::warn!(error = %e, "epoch ticker not started; long calls run without slices");
                None
            }
        };
        Ticker {
            engines: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            thread,
        }
    })
}

fn tick() {
    let t = ticker();
    loop {
        if t.active.load(Ordering::Acquire) == 0 {
            std::thread::park();
            continue;
        }
        std::thread::sleep(SLICE);
        let mut engines = t.engines.lock().unwrap_or_else(|e| e.into_inner());
        engines.retain(|w| match w.upgrade() {
            Some(engine) => {
                engine.increment_epoch();
                true
            }
            None => false,
        });
    }
}

/// Advance `engine`'s epoch every slice while a marked call runs (the
/// engine must be built with epoch interruption).
pub(crate) fn register(engine: &Engine) {
    ticker()
        .engines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(engine.weak());
}

/// A call in progress on this thread; the ticker runs while any marked
/// thread holds one.
#[derive(Debug)]
pub(crate) struct Running(bool);

/// Start a call: counts it when the calling thread is marked.
pub(crate) fn enter() -> Running {
    let yields = marked();
    if yields {
        let t = ticker();
        if t.active.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = &t.thread
        {
            thread.unpark();
        }
    }
    Running(yields)
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0 {
            ticker().active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The stores' epoch-deadline callback: offer the CPU on a marked thread,
/// then run on for another slice.
pub(crate) fn on_deadline() -> wasmtime::UpdateDeadline {
    if marked() {
        std::thread::yield_now();
    }
    wasmtime::UpdateDeadline::Continue(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_on_marked_threads_count() {
        assert!(!enter().0, "an unmarked thread's call is not counted");
        std::thread::spawn(|| {
            yield_in_calls();
            assert!(enter().0, "a marked thread's call is counted");
        })
        .join()
        .unwrap();
    }
}
