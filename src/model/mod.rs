//! Model (in progress).
