//! Integration tests of the Kafka plumbing against the embedded broker,
//! one binary so the build links once.

mod broker;
