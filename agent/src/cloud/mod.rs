//! Managed services' control planes: the AWS calls a managed store's
//! failover (`stores/`) and a managed restore drill (`engine/drill/`) both
//! make, each bounded and retried (`seawall_common::aws`), each refusal
//! naming the IAM statement it needs.

pub mod access;
pub mod aurora;
pub mod elasticache;
pub mod metric;
pub mod rds;
pub mod view;
