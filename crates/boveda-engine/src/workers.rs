//! A pool of worker threads for one operation.
//!
//! Everything parallel in boveda runs on rayon. Work started from outside
//! a pool goes to the process's shared pool, and a rayon worker takes new
//! work from outside only once it has nothing of its own left: a disk
//! backup's one long parallel read keeps the shared pool busy to its end,
//! and a short read queued behind it (the catalog listing a server request
//! needs) waits as long. A long operation therefore runs in a pool of its
//! own, and the shared pool stays free for the short ones.

/// Runs `op` in a new pool of one thread per core (and a deep stack for
/// tree recursion), named `name-N`; every parallel step inside it stays in
/// that pool. When the threads cannot be started (a limit on the number
/// of tasks), `op` runs all the same, its parallel steps in the shared
/// pool. A panic in `op` is raised again here.
pub fn in_own_pool<R: Send>(name: &str, op: impl FnOnce() -> R + Send) -> R {
    let name = name.to_string();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
        .stack_size(32 << 20)
        .thread_name(move |n| format!("{name}-{n}"))
        .build();
    match pool {
        Ok(pool) => pool.install(op),
        Err(_) => op(),
    }
}
