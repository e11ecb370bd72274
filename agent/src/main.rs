//! Keel device agent.
fn main() {}
