//! Integration tests of the live pool: real tasks, real timers, the
//! in-process generator as upstream (and a WebSocket server in `websocket`).

mod pool;
mod support;
