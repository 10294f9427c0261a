//! Integration tests of the serving layer over real HTTP, fed by a real
//! speed worker through the embedded broker.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod compare;
mod dashboard;
mod queries;
mod seam;
