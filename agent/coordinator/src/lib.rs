//! `podmesh-coordinator`: verifies TEE evidence against a manifest and issues mesh certificates.
//!
//! - The HTTP API and its client are the `wire` crate (`wire::api`, `wire::client`), shared with the guest.
//! - [`manifest`]: manifest schema and validation.
//! - [`service`]: the coordinator without transport; [`server`]: HTTPS serving.
//! - [`admission`]: connection and verification bounds; [`nonce`]: the nonce store.
//! - [`state`]: the persisted state directory; [`owner`]: the owner credential.
//! - [`reference`], [`reference_tdx`]: launch measurements computed before boot (reference values).
//! - [`watch`]: the `/v1/generation` long poll through which pods notice manifest updates.
//! - [`contrast`]: Contrast's mesh annotations rewritten into Kata initdata (host side).

#![cfg_attr(test, allow(unused_crate_dependencies))] // unit tests see the dev-dependencies too

// Only the binary (src/main.rs) uses these; cargo has no per-target dependencies.
use {anyhow as _, clap as _, tracing_subscriber as _};

pub mod admission;
pub mod contrast;
pub mod manifest;
pub mod nonce;
pub mod owner;
pub mod reference;
pub mod reference_tdx;
pub mod server;
pub mod service;
pub mod state;
pub mod verify;
pub mod watch;
