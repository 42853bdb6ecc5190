//! Controllers: what the leaders of this node's groups do on their own,
//! each tick, from applied state and raft-rs progress (ISR upkeep,
//! membership changes, replica moves).

use super::*;

mod handoff;
mod isr;
mod leadership;
mod membership;
mod moves;
mod preferred;
mod rebalance;
mod replicate;
mod sizes;
mod steps;

pub(in crate::engine) use handoff::{tick_group, Leaving};
pub(in crate::engine) use leadership::PartitionDuties;
pub(in crate::engine) use preferred::PreferredBackoff;
pub(in crate::engine) use rebalance::RebalanceDuties;
pub use replicate::{MemberReplication, ReplicateNow};
pub(in crate::engine) use steps::StepGate;
