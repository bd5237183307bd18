//! One job over several machines: `--shard i/N` item assignment and job
//! identity ([`shard`]), the JSON outputs of sharded commands as types
//! ([`output`]), their merge ([`merge`]), and the thread pool per-point
//! jobs run on.

pub mod merge;
pub mod output;
pub mod shard;

/// A pool of `threads` workers (all cores when `None`) for per-point jobs.
pub fn thread_pool(threads: Option<usize>) -> crate::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(|e| crate::Error::param("threads", e.to_string()))
}
