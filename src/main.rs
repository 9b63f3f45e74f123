//! The `lite-apiserver` daemon: flags in, [`lite_apiserver`] runs.
fn main() {}
