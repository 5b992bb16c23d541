//! Integration tests: one binary, real servers on 127.0.0.1:0, real SQLite files.

mod util;

mod adapt;
mod answer;
mod answer_endpoint;
mod answer_gguf;
mod attachments;
mod bot;
mod cli;
mod docs;
mod fake;
mod import;
mod index;
mod load;
mod models;
mod search;
