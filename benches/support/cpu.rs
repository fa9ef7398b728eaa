//! CPU time of the whole process, shared by the cluster bench and the scale example
//! through `#[path]`.

/// CPU seconds (user + system) this process has used so far, over all its threads.
pub fn cpu_secs() -> f64 {
    // SAFETY: `rusage` is plain data (all-zero is a valid value), getrusage only writes
    // into the struct it is given, and RUSAGE_SELF with a valid pointer cannot fail.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}
