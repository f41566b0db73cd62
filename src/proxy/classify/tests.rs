//! Tests of request classification.
use super::*;
