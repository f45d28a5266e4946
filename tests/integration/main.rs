//! The integration tests, one binary: the real model against `../shared/reference/`, the engine
//! on the real model, the CLI, the HTTP API.

mod api;
mod api_scoring;
mod archs;
mod auth;
mod cli;
mod clients;
mod common;
mod connections;
mod constrained;
mod engine;
mod hardening;
mod hub_standin;
mod limits;
mod metrics;
mod model_reference;
mod multimodel;
mod pull;
mod responses;
mod responses_ws;
mod stored;
mod tokenize_api;
mod tokenizer_reference;
mod tool_calls;
mod traces;
mod ui;
mod usage;
