//! The integration tests, one binary: the real model against `../shared/reference/`, the CLI.

mod cli;
mod common;
mod model_reference;
mod tokenizer_reference;
