//! Keel host command line.
fn main() {}
