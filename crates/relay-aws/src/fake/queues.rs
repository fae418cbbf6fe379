//! The fakes' SQS as the operator sees it: the FIFO queue's DLQ (from
//! [`super::FakeFifo`]) and standard queues (the copy workers' work queue),
//! on [`FakeAws`].

use std::collections::{HashMap, VecDeque};

use super::{lock, FakeAws};
use crate::operator::{QueueAttrs, Queues, RawMessage};
use crate::AwsError;

/// Standard queues by URL: visible bodies, and received ones by receipt
/// (until deleted, or released back).
#[derive(Debug, Default)]
pub(crate) struct StandardQueues {
    visible: HashMap<String, VecDeque<String>>,
    received: HashMap<String, (String, String)>,
    next_receipt: u64,
}

impl StandardQueues {
    fn counts(&self, url: &str) -> (u64, u64) {
        (
            self.visible.get(url).map_or(0, |q| q.len() as u64),
            self.received.values().filter(|(u, _)| u == url).count() as u64,
        )
    }

    fn receive(&mut self, url: &str, max: usize) -> Vec<RawMessage> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(body) = self.visible.get_mut(url).and_then(VecDeque::pop_front) else {
                break;
            };
            self.next_receipt += 1;
            let receipt = format!("r-{}", self.next_receipt);
            self.received
                .insert(receipt.clone(), (url.to_string(), body.clone()));
            out.push(RawMessage {
                id: receipt.clone(),
                receipt,
                body,
                group: None,
                receive_count: 1,
                sent_ms: None,
            });
        }
        out
    }

    fn send(&mut self, url: &str, body: &str) {
        self.visible
            .entry(url.to_string())
            .or_default()
            .push_back(body.to_string());
    }

    fn release(&mut self, receipt: &str) {
        if let Some((url, body)) = self.received.remove(receipt) {
            self.visible.entry(url).or_default().push_back(body);
        }
    }
}

impl Queues for FakeAws {
    async fn queue_attrs(&self, url: &str) -> Result<QueueAttrs, AwsError> {
        tokio::task::yield_now().await;
        let (visible, in_flight) = if url == self.queue_url {
            self.queue.counts()
        } else if url == self.dlq_url {
            self.queue.dlq_counts()
        } else {
            lock(&self.standard).counts(url)
        };
        Ok(QueueAttrs {
            visible,
            in_flight,
            visibility_s: 360,
            retention_s: 1_209_600,
        })
    }

    async fn receive(
        &self,
        url: &str,
        max: i32,
        _visibility_s: i32,
    ) -> Result<Vec<RawMessage>, AwsError> {
        tokio::task::yield_now().await;
        let max = max.clamp(1, 10) as usize;
        if url != self.dlq_url {
            return Ok(lock(&self.standard).receive(url, max));
        }
        Ok(self
            .queue
            .receive_dlq(max)
            .into_iter()
            .map(|m| RawMessage {
                id: m.message_id.clone(),
                receipt: m.message_id,
                body: m.body,
                group: Some(m.group_id),
                receive_count: u64::from(m.receive_count),
                sent_ms: None,
            })
            .collect())
    }

    async fn delete_message(&self, url: &str, receipt: &str) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        if url == self.dlq_url {
            self.queue.delete_dlq(receipt);
        } else {
            lock(&self.standard).received.remove(receipt);
        }
        Ok(())
    }

    async fn send_message(&self, url: &str, body: &str) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        lock(&self.standard).send(url, body);
        Ok(())
    }

    async fn release_message(&self, url: &str, receipt: &str) -> Result<(), AwsError> {
        tokio::task::yield_now().await;
        if url == self.dlq_url {
            self.queue.release_dlq(receipt);
        } else {
            lock(&self.standard).release(receipt);
        }
        Ok(())
    }
}
