//! Library side of kuma-dp: the parts tests drive without the binary.

pub mod probes;
