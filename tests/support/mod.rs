//! Shared by the crash-safety, model, corruption and planted-bug tests: a simulated disk
//! with crash images and fault injection, opening what it holds, a small seeded RNG, the
//! model that tracks committed states and answers range reads, and a hand editor of
//! database images for crafted corruptions.
#![allow(dead_code)]

pub mod heap;
pub mod image;
pub mod model;
pub mod recovery;
pub mod rng;
pub mod simdisk;
