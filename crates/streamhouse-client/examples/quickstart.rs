//! The Quick Start of the client README, compiled and run unchanged:
//! `quickstart/readme.rs` is the README's code, verbatim (and so left
//! unformatted). Run it next to an agent of group "prod" that shares this
//! directory's metadata.db; README.md says how.

// The README keeps the result of its second send without using it.
#![allow(unused_variables)]

include!("quickstart/readme.rs");
