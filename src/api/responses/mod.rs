//! The Responses API. This branch has only its stored-response routes ([`stored`]); the create
//! path (`POST /v1/responses`) arrives with the `responses` branch, whose `mod.rs` replaces
//! this one and keeps the `mod` line.

pub mod stored;
