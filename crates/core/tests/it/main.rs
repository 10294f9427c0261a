//! Integration tests of braid-core, one binary so the build links once.

mod aggregates;
mod model;
mod views_file;
