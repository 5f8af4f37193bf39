//! Integration tests of the live pool: real tasks, real timers, the
//! in-process generator, WebSocket and HTTP upstreams written for the
//! tests, and a real RabbitMQ for STOMP.

mod config;
mod hostile;
mod pool;
mod rest;
mod stomp;
mod support;
mod websocket;
