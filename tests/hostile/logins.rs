//! Hostile-neighbour tests: logins.

#[allow(unused_imports)]
use crate::common::*;
