//! The Lambda binary (work in progress, see issue 5).

fn main() {}
