//! The Responses API (temporary module file of the `ws` branch until `responses` is merged:
//! R1's `mod.rs` replaces it and keeps the `ws` line).

pub mod ws;
