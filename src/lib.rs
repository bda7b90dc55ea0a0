//! Hosts benches/ and examples/.
