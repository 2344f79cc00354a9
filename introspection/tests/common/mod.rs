//! Helpers shared by the introspection tests.
#![allow(dead_code)]

pub mod rng;
