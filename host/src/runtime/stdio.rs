//! Guest stdout and stderr, routed to the host's log.
//!
//! Rust's std links `wasi:cli/stdout` and `wasi:cli/stderr` into every
//! `wasm32-wasip2` component, so a plugin that calls `println!` (or panics
//! with the default hook) cannot be told apart at load time from one that
//! does not. Instead of trapping, the host serves both streams: what a plugin
//! writes is split into lines and logged under the target
//! `realmhost::plugin`, tagged with the plugin, the realm in scope and the
//! stream (stdout at `info`, stderr at `warn`). Output is rate-limited per
//! call: at most [`MAX_OUTPUT_BYTES_PER_CALL`] bytes are kept and the lines
//! share the `log` budget of the call (64 lines); the rest is dropped and
//! counted in one closing line. The streams never block and never fail, so
//! output cannot change what a call computes: replay stays deterministic.
//!
//! Served: `get-stdout`, `get-stderr`, the `output-stream` methods
//! `check-write`, `write`, `flush`, `blocking-flush`,
//! `blocking-write-and-flush` and `subscribe`, and `wasi:io/poll` (every
//! pollable is ready) — what wasi-libc and Rust's std use. The other stream
//! functions (splicing, input) trap as before.

use wasmtime::component::{ComponentType, Lift, Linker, Lower, Resource, ResourceType};

use super::host_ctx::HostCtx;

/// Bytes of guest output kept per call; the rest is dropped and counted.
pub const MAX_OUTPUT_BYTES_PER_CALL: usize = 16 * 1024;
/// What `check-write` grants per write (the guest may write that much
/// without waiting).
const WRITE_PERMIT: u64 = 64 * 1024;

const STDOUT: u32 = 1;
const STDERR: u32 = 2;

/// The host side of the `output-stream` resource (its rep says which one).
pub(crate) struct OutputStream;

/// The host side of `wasi:io/poll`'s `pollable` (always ready: the streams
/// never block).
pub(crate) struct Pollable;

/// The host side of `wasi:io/error`'s `error` resource (never created: the
/// streams do not fail).
pub(crate) struct IoError;

/// `wasi:io/streams`' `stream-error`.
#[derive(ComponentType, Lift, Lower)]
#[component(variant)]
pub(crate) enum StreamError {
    #[component(name = "last-operation-failed")]
    LastOperationFailed(Resource<IoError>),
    #[component(name = "closed")]
    Closed,
}

/// Per-call output state of one store.
#[derive(Debug, Default)]
pub(crate) struct GuestOutput {
    /// Partial lines, per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
    /// Bytes accepted this call.
    bytes: usize,
    /// Bytes dropped this call (over the byte or line budget).
    dropped: usize,
}

impl GuestOutput {
    fn slot(stream: u32) -> usize {
        usize::from(stream == STDERR)
    }
}

impl HostCtx {
    fn guest_write(&mut self, stream: u32, bytes: &[u8]) {
        let room = MAX_OUTPUT_BYTES_PER_CALL.saturating_sub(self.output.bytes);
        let kept = &bytes[..bytes.len().min(room)];
        self.output.dropped += bytes.len() - kept.len();
        self.output.bytes += kept.len();
        let slot = GuestOutput::slot(stream);
        let mut rest = kept;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.output.partial[slot]);
            line.extend_from_slice(&rest[..i]);
            self.emit_output(stream, &line);
            rest = &rest[i + 1..];
        }
        self.output.partial[slot].extend_from_slice(rest);
    }

    fn emit_output(&mut self, stream: u32, line: &[u8]) {
        self.log_lines += 1;
        if self.log_lines > super::host_ctx::MAX_LOG_LINES_PER_CALL {
            self.output.dropped += line.len() + 1;
            return;
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let plugin = &*self.label;
        let realm = self.call.as_ref().map_or("", |c| c.realm());
        if stream == STDERR {
            tracing::warn!(target: "realmhost::plugin", plugin, realm, stream = "stderr", "{text}");
        } else {
            tracing::info!(target: "realmhost::plugin", plugin, realm, stream = "stdout", "{text}");
        }
    }

    /// End of a call: log partial lines and what was dropped, reset.
    pub(crate) fn flush_output(&mut self) {
        for stream in [STDOUT, STDERR] {
            let line = std::mem::take(&mut self.output.partial[GuestOutput::slot(stream)]);
            if !line.is_empty() {
                self.emit_output(stream, &line);
            }
        }
        if self.output.dropped > 0 {
            let plugin = &*self.label;
            let realm = self.call.as_ref().map_or("", |c| c.realm());
            tracing::warn!(target: "realmhost::plugin", plugin, realm, dropped_bytes = self.output.dropped, "plugin output over the per-call limit was dropped");
        }
        self.output = GuestOutput::default();
    }
}

type Write = Result<(), StreamError>;

/// Serve stdout and stderr (see the module docs) under WASI `version`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostCtx>, version: &str) -> wasmtime::Result<()> {
    let mut poll = linker.instance(&format!("wasi:io/poll@{version}"))?;
    poll.resource("pollable", ResourceType::host::<Pollable>(), |_, _| Ok(()))?;
    poll.func_wrap(
        "[method]pollable.ready",
        |_, (_p,): (Resource<Pollable>,)| Ok((true,)),
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_, (_p,): (Resource<Pollable>,)| Ok(()),
    )?;
    poll.func_wrap("poll", |_, (ps,): (Vec<Resource<Pollable>>,)| {
        Ok(((0..ps.len() as u32).collect::<Vec<u32>>(),))
    })?;
    linker
        .instance(&format!("wasi:io/error@{version}"))?
        .resource("error", ResourceType::host::<IoError>(), |_, _| Ok(()))?;
    // Instances that re-export a resource type must name the same host type
    // as the instance that defines it.
    let mut streams = linker.instance(&format!("wasi:io/streams@{version}"))?;
    streams.resource("error", ResourceType::host::<IoError>(), |_, _| Ok(()))?;
    streams.resource("pollable", ResourceType::host::<Pollable>(), |_, _| Ok(()))?;
    streams.func_wrap(
        "[method]output-stream.subscribe",
        |_, (_s,): (Resource<OutputStream>,)| Ok((Resource::<Pollable>::new_own(0),)),
    )?;
    streams.resource(
        "output-stream",
        ResourceType::host::<OutputStream>(),
        |_, _| Ok(()),
    )?;
    streams.func_wrap(
        "[method]output-stream.check-write",
        |_, (_s,): (Resource<OutputStream>,)| Ok((Ok::<u64, StreamError>(WRITE_PERMIT),)),
    )?;
    streams.func_wrap(
        "[method]output-stream.write",
        |mut store, (s, bytes): (Resource<OutputStream>, Vec<u8>)| {
            store.data_mut().guest_write(s.rep(), &bytes);
            Ok((Write::Ok(()),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store, (s, bytes): (Resource<OutputStream>, Vec<u8>)| {
            store.data_mut().guest_write(s.rep(), &bytes);
            Ok((Write::Ok(()),))
        },
    )?;
    for name in [
        "[method]output-stream.flush",
        "[method]output-stream.blocking-flush",
    ] {
        streams.func_wrap(name, |_, (_s,): (Resource<OutputStream>,)| {
            Ok((Write::Ok(()),))
        })?;
    }
    for (name, func, rep) in [
        ("stdout", "get-stdout", STDOUT),
        ("stderr", "get-stderr", STDERR),
    ] {
        let mut cli = linker.instance(&format!("wasi:cli/{name}@{version}"))?;
        cli.resource(
            "output-stream",
            ResourceType::host::<OutputStream>(),
            |_, _| Ok(()),
        )?;
        cli.func_wrap(func, move |_, (): ()| {
            Ok((Resource::<OutputStream>::new_own(rep),))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::state::{Access, CallState, StateLimits, StateMap};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn ctx() -> HostCtx {
        let mut c = HostCtx::new(Arc::from("demo@1.0.0"), wasmtime::StoreLimits::default());
        c.call = Some(CallState::new(
            Arc::from("realm-7"),
            &StateMap::new(),
            Arc::new(StateLimits::default()),
            Access::ReadOnly { max_ops: 10 },
            1024,
        ));
        c
    }

    fn logged(f: impl FnOnce()) -> String {
        let out = Captured::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_are_logged_with_plugin_realm_and_stream() {
        let text = logged(|| {
            let mut c = ctx();
            c.guest_write(STDOUT, b"hello ");
            c.guest_write(STDOUT, b"world\npartial");
            c.guest_write(STDERR, b"oops\r\n");
            c.flush_output();
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("hello world") && lines[0].contains("stdout"));
        assert!(lines[0].contains("demo@1.0.0") && lines[0].contains("realm-7"));
        assert!(lines[1].contains("oops") && lines[1].contains("stderr"));
        assert!(lines[2].contains("partial"));
    }

    #[test]
    fn output_is_limited_per_call_and_the_rest_counted() {
        let text = logged(|| {
            let mut c = ctx();
            for _ in 0..1000 {
                c.guest_write(STDOUT, b"line\n");
            }
            c.guest_write(STDOUT, &vec![b'x'; 2 * MAX_OUTPUT_BYTES_PER_CALL]);
            c.flush_output();
            // The next call starts with a fresh budget.
            c.log_lines = 0;
            c.guest_write(STDOUT, b"next call\n");
        });
        let lines: Vec<&str> = text.lines().collect();
        let kept = super::super::host_ctx::MAX_LOG_LINES_PER_CALL as usize;
        assert_eq!(lines.len(), kept + 2, "{text}");
        assert!(lines[kept].contains("dropped_bytes="), "{}", lines[kept]);
        assert!(lines[kept + 1].contains("next call"));
    }
}
