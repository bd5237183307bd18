//! One job over several machines: `--shard i/N` item assignment and job
//! identity ([`shard`]), the JSON outputs of sharded commands as types
//! ([`output`]), their merge ([`merge`]), and the parallel map per-point
//! jobs run on.

pub mod merge;
pub mod output;
pub mod shard;

/// `f` on every index in `items`, in parallel on `threads` workers (all
/// cores when `None`), in order; the first error stops the job.
pub fn par_map<T: Send>(
    threads: Option<usize>,
    items: &[usize],
    f: impl Fn(usize) -> crate::Result<T> + Sync,
) -> crate::Result<Vec<T>> {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .build()
        .map_err(|e| crate::Error::param("threads", e.to_string()))?;
    pool.install(|| items.par_iter().map(|&i| f(i)).collect())
}
