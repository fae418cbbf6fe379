//! The SQS event Lambda hands the applier, read for what the applier uses.
//!
//! Lambda's SQS event carries, for every message, a receipt handle, an MD5,
//! its attributes, message attributes, the queue's ARN and region. The
//! applier reads three things: the message id (to report a failure), the
//! message group (a failure holds back the rest of its group) and the body.
//! Read as `aws_lambda_events`' `SqsEvent`, every other field is a `String`
//! and every attribute an entry of a map: ~20 allocations a message that
//! nothing keeps. [`Messages`] reads the three and passes over the rest,
//! unread. `main.rs` takes its payload as [`Messages`]; [`From<SqsEvent>`]
//! serves callers that already hold an `SqsEvent` (moved, not copied).
//!
//! **Invariant:** a field the applier reads means what it means in
//! `SqsEvent`: a missing or `null` id or body, or a missing group, is the
//! empty string, as `SqsEvent`'s `unwrap_or_default` made it, and the
//! handler's rules for an empty id (the whole batch fails) are unchanged.
//! Texts Lambda never sends are read differently at the edges: a `null`
//! `MessageGroupId` is read as empty (`SqsEvent` refused the event), a
//! second `MessageGroupId` in one message refuses it (`SqsEvent` kept the
//! last), and fields not read are not checked (a refused event fails the
//! invocation, and Lambda retries it).

use aws_lambda_events::event::sqs::SqsEvent;
use serde::Deserialize;

/// The messages of one invocation, in the order Lambda gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Messages {
    #[serde(rename = "Records")]
    pub records: Vec<Message>,
}

/// One message: its id, its FIFO group, its body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "Wire")]
pub struct Message {
    pub id: String,
    pub group: String,
    pub body: String,
}

/// A message as Lambda writes it; fields not named are skipped.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "messageId", default)]
    id: Option<String>,
    #[serde(default)]
    attributes: Option<Attributes>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct Attributes {
    #[serde(rename = "MessageGroupId", default)]
    group: Option<String>,
}

impl From<Wire> for Message {
    fn from(w: Wire) -> Self {
        Message {
            id: w.id.unwrap_or_default(),
            group: w.attributes.and_then(|a| a.group).unwrap_or_default(),
            body: w.body.unwrap_or_default(),
        }
    }
}

impl From<SqsEvent> for Messages {
    fn from(event: SqsEvent) -> Self {
        Messages {
            records: event
                .records
                .into_iter()
                .map(|mut m| Message {
                    id: m.message_id.unwrap_or_default(),
                    group: m.attributes.remove("MessageGroupId").unwrap_or_default(),
                    body: m.body.unwrap_or_default(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
