//! The gRPC services: the agent stream and the operator API.

pub mod agent_input;
pub mod agents;
pub mod error;
pub mod failovers;
pub mod operator;
