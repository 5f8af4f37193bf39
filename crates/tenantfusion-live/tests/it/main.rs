//! Integration tests of the live pool: real tasks, real timers, the
//! in-process generator and a WebSocket upstream written for the tests.

mod pool;
mod stomp;
mod support;
mod upstream;
mod websocket;
