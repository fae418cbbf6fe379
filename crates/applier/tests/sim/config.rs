//! What a simulated migration is made of: the transform's shape, the
//! settings and the faults.

/// What the transform does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Items are copied unchanged.
    Identity,
    /// An attribute is renamed (the key stays).
    Rename,
    /// The target key is a UUIDv5 of a non-key attribute that changes (items move).
    KeyByEmail,
}

impl Shape {
    pub fn spec(self) -> Option<&'static str> {
        match self {
            Shape::Identity => None,
            Shape::Rename => Some(r#"{"rename":{"v":"value"}}"#),
            Shape::KeyByEmail => {
                Some(r#"{"key":[{"attribute":"id","uuidv5":{"from":["email"]}}]}"#)
            }
        }
    }

    pub fn target_key(self) -> &'static str {
        match self {
            Shape::KeyByEmail => "id",
            _ => "pk",
        }
    }
}

/// The settings and faults of one simulated migration.
#[derive(Clone, Debug)]
pub struct Config {
    pub shape: Shape,
    pub buckets: u32,
    pub cap: usize,
    pub forward_old_image: bool,
    pub stream_batch: usize,
    pub applier_batch: usize,
    pub margin_s: i64,
    pub max_receive: u32,
    pub seed: u64,
    /// Percent chances.
    pub sqs_entry_fault: u32,
    pub sqs_call_fault: u32,
    pub db_unprocessed: u32,
    pub db_throttle: u32,
    pub latency: u32,
    pub crash: u32,
    pub replay: u32,
    /// How far the operator's machine's clock is from AWS's (ms, ahead
    /// when positive). The commands follow AWS's clock (the `Date` of its
    /// responses); this is what they would get wrong if they did not.
    pub operator_clock_ms: i64,
    /// `TtlDeletes=skip`, with TTL on the source's `expires` attribute.
    pub ttl_skip: bool,
}

impl Config {
    pub fn quiet(shape: Shape, seed: u64) -> Self {
        Config {
            shape,
            buckets: 4,
            cap: 16 * 1024,
            forward_old_image: true,
            stream_batch: 10,
            applier_batch: 5,
            margin_s: 4,
            max_receive: 4,
            seed,
            sqs_entry_fault: 0,
            sqs_call_fault: 0,
            db_unprocessed: 0,
            db_throttle: 0,
            latency: 0,
            crash: 0,
            replay: 0,
            operator_clock_ms: 0,
            ttl_skip: false,
        }
    }
}
