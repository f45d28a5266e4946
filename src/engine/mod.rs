//! The engine: sampling now; the continuous-batching scheduler and worker come with the engine
//! issue.

pub mod sampling;
