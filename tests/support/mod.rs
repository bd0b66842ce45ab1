//! Shared by the crash-safety tests: a simulated disk with crash images and fault
//! injection, a small seeded RNG, the model that tracks committed states, and a hand
//! editor of database images for crafted corruptions.
#![allow(dead_code)]

pub mod image;
pub mod model;
pub mod rng;
pub mod simdisk;
