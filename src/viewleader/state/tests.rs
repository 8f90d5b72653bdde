//! Unit tests of the view leader state machine, with explicit time.
use super::*;
