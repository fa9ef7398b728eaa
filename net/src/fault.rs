//! Fault injection (todo).
