//! ddb-relay's pure core: everything that decides, nothing that does I/O.
//!
//! - [`event`]: a stream record reduced to a [`event::ChangeEvent`];
//! - [`stream`]: the forwarder's reading of a stream batch, images kept as
//!   the stream's DynamoDB JSON;
//! - [`envelope`]: the versioned wire format on the queue;
//! - [`group`] and [`pack`]: FIFO groups, dedup ids, packing under a size cap;
//! - [`send_plan`]: the forwarder's ordering-safe send rounds and failure report;
//! - [`apply`]: cutoff, TTL policy, coalescing and failure planning for the applier;
//! - [`control`]: the control item (cutoff, mode, pause fence, consumption
//!   high-water mark, restart bookkeeping);
//! - [`decide`]: the operator's decisions (preflight checks, replay points,
//!   cutover GO/NO-GO);
//! - [`diff`]: table comparison by canonical encoding;
//! - [`failure`]: the stream failure queue's records, and when one is covered;
//! - [`work`]: the tasks and part checkpoints of a copy fanned out over workers;
//! - [`lease`]: the lease an in-process copy run holds on its checkpoint;
//! - [`ttl`]: which target items `TtlDeletes=skip` keeps on purpose;
//! - [`place`]: a target in another region or account; [`plan`]: a migration
//!   plan for a set of table pairs;
//! - [`config`], [`metrics`], [`retry`].
//!
//! **Boundary:** this crate depends on no AWS client, no Lambda runtime and no
//! async runtime. Adapters and handlers call into it; it never calls out.

pub mod apply;
pub mod chart;
pub mod config;
pub mod control;
pub mod decide;
pub mod diff;
pub mod envelope;
pub mod event;
pub mod export;
pub mod failure;
pub mod group;
pub mod iac;
pub mod item;
pub mod lease;
pub mod metrics;
pub mod pack;
pub mod place;
pub mod plan;
pub mod retry;
pub mod send_plan;
pub mod stream;
pub mod transform;
pub mod ttl;
pub mod work;

#[cfg(test)]
mod testgen;
