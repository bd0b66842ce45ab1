//! Shared by the crash-safety, model and planted-bug tests: a simulated disk with crash
//! images and fault injection, opening what it holds, a small seeded RNG, and the model
//! that tracks committed states and answers range reads.
#![allow(dead_code)]

pub mod model;
pub mod recovery;
pub mod rng;
pub mod simdisk;
