//! Tokenizer (in progress).
