//! The mapkv command-line tool (being written).
fn main() {}
