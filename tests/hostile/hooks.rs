//! Hostile-neighbour tests: hooks.

#[allow(unused_imports)]
use crate::common::*;
