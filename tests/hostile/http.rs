//! Hostile-neighbour tests: http.

#[allow(unused_imports)]
use crate::common::*;
