//! The API's integration tests: each test spawns the real application on
//! port 0 over a fresh database (`helpers::spawn_app`) and talks HTTP to it,
//! setting up and checking state through the store the way a worker would.

mod helpers;

mod agent;
mod auth;
mod enqueue;
mod events;
mod keys_cli;
mod long_poll;
mod openapi;
mod operations;
mod schedules;
mod telemetry;
mod ui;
