//! The integration tests, one binary: the real model against `../shared/reference/`, the engine
//! on the real model, the CLI.

mod cli;
mod common;
mod engine;
mod model_reference;
mod tokenizer_reference;
