//! `podmesh-coordinator`: verifies TEE evidence against a manifest and issues mesh certificates.
//!
//! - The HTTP API and its client are the `wire` crate (`wire::api`, `wire::client`), shared with the guest.
//! - [`manifest`]: manifest schema and validation.
//! - [`service`]: the coordinator without transport; [`server`]: HTTPS serving.
//! - [`state`]: the persisted state directory; [`owner`]: the owner credential.
//! - [`contrast`]: Contrast's mesh annotations rewritten into Kata initdata (host side).

#![deny(unsafe_code)]

pub mod contrast;
pub mod manifest;
pub mod nonce;
pub mod owner;
pub mod server;
pub mod service;
pub mod state;
pub mod verify;
