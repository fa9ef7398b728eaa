//! Placeholder: the transport benchmark comes later in this branch.
fn main() {}
