//! Support of `linux_docker`: a Docker engine of the test's own ([`engine`]) and the seed's
//! scenario lines on namespaced hosts with its containers as workloads ([`seed`]).

pub mod engine;
pub mod seed;

pub use engine::DockerEngine;
pub use seed::DockerSeed;
