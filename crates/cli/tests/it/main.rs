//! Integration tests against the real `niyet` binary over real HTTP (one test binary).

mod access;
mod admin;
mod analytics;
mod attribution;
mod bad_input;
mod common;
mod crash;
mod demo;
mod hostile;
mod import;
mod journeys;
mod overload;
mod privacy;
mod profiles;
mod segments;
