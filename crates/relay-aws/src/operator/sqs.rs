//! SQS: queue attributes, and receiving, deleting and releasing messages
//! (the DLQ tools).

use super::{e, QueueAttrs, Queues, RawMessage, Sdk};
use crate::AwsError;

impl Queues for Sdk {
    async fn queue_attrs(&self, url: &str) -> Result<QueueAttrs, AwsError> {
        use aws_sdk_sqs::types::QueueAttributeName as N;
        let a = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(N::ApproximateNumberOfMessages)
            .attribute_names(N::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(N::VisibilityTimeout)
            .attribute_names(N::MessageRetentionPeriod)
            .send()
            .await
            .map_err(e("GetQueueAttributes"))?;
        let attrs = a.attributes().cloned().unwrap_or_default();
        let n = |k: N, default: i64| {
            attrs
                .get(&k)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(default)
        };
        Ok(QueueAttrs {
            visible: n(N::ApproximateNumberOfMessages, 0).max(0) as u64,
            in_flight: n(N::ApproximateNumberOfMessagesNotVisible, 0).max(0) as u64,
            visibility_s: n(N::VisibilityTimeout, 30).max(0) as u64,
            retention_s: n(N::MessageRetentionPeriod, 345_600),
        })
    }

    async fn receive(
        &self,
        url: &str,
        max: i32,
        visibility_s: i32,
    ) -> Result<Vec<RawMessage>, AwsError> {
        use aws_sdk_sqs::types::MessageSystemAttributeName as S;
        let r = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10))
            .visibility_timeout(visibility_s)
            .message_system_attribute_names(S::All)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(e("ReceiveMessage"))?;
        Ok(r.messages()
            .iter()
            .map(|m| {
                let attrs = m.attributes();
                let get = |k: S| attrs.and_then(|a| a.get(&k)).cloned();
                RawMessage {
                    id: m.message_id().unwrap_or_default().to_string(),
                    receipt: m.receipt_handle().unwrap_or_default().to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    group: get(S::MessageGroupId),
                    receive_count: get(S::ApproximateReceiveCount)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    sent_ms: get(S::SentTimestamp).and_then(|v| v.parse().ok()),
                }
            })
            .collect())
    }

    async fn delete_message(&self, url: &str, receipt: &str) -> Result<(), AwsError> {
        self.sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(e("DeleteMessage"))?;
        Ok(())
    }

    async fn send_message(&self, url: &str, body: &str) -> Result<(), AwsError> {
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .send()
            .await
            .map_err(e("SendMessage"))?;
        Ok(())
    }

    async fn release_message(&self, url: &str, receipt: &str) -> Result<(), AwsError> {
        self.sqs
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(e("ChangeMessageVisibility"))?;
        Ok(())
    }
}
