//! Empty: the check is the build script (see build.rs).
