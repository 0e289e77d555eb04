//! The multi-host simulator: a world of hosts sharing one store, scenario files, property tests.
