//! Integration tests: kube's typed clients and runtime against the fake server over real HTTP.
//! One test binary (modules below) keeps link time down on small CI machines.

mod common;
mod crud;
mod lifecycle;
mod ssa;
mod watch;
