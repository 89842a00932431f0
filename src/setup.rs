//! What every binary sets up the same way: logging, the runtime and its end, the allocator,
//! the shutdown signal, and the switch flag's value ([`OnOff`]). The node's flags are
//! [`crate::node::cli`]'s, the load flags [`crate::bench::LoadArgs`].

use clap::ValueEnum;
use serde::Serialize;

/// A switch flag's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

/// Sets up logging to stderr (`RUST_LOG`, default `info`), coloured only on a terminal.
pub fn init_logging() {
    let from_env = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !from_env.contains("openraft") {
        // openraft warns about every stale vote response of an election: not news to an operator.
        filter = filter.add_directive("openraft=error".parse().expect("a valid directive"));
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Ends a binary's runtime once its work has returned, without waiting for blocking threads:
/// the one reading standard input for `--parent-watch` never returns by itself, and waiting
/// for it (as `shutdown_timeout` does) only delays the exit. Everything the process had to
/// finish (the store's shutdown, a peer's unregistration) was awaited before.
pub fn stop_runtime(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_background();
}

/// The async runtime of every binary: one thread runs all tasks (network I/O, the protocol,
/// the stress test's clients); image work runs on the blocking pool, at most two threads per
/// core. Three nodes and a load generator share two cores in the demo, and a scheduler thread
/// per core in every process only adds hand-offs between them (DESIGN.md, "One runtime thread
/// per process"). Also tunes the allocator ([`tune_allocator`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tune_allocator();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2 * cores + 2)
        .build()
}

/// Keeps freed memory in the process. By default glibc gives a thread's free heap top back to
/// the kernel as soon as it passes 128 KiB, which with 10-100 KB request and reply buffers
/// meant one `madvise` per request and page faults to take the memory back for the next:
/// 40 % of the CPU per request in the demo (DESIGN.md, "Memory allocator"). Here memory is
/// returned only past 256 MiB of free space, and blocks under 32 MiB come from the heap, not
/// from fresh `mmap`s.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's malloc parameters; any value is valid to pass, and a
    // refused one leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// Gives the allocator's free memory back to the system now (after a burst of big payloads:
/// [`crate::node::budget::Budget::drained_after_load`]). Takes a few milliseconds.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
