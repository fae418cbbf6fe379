//! AWS's clock, read from the `Date` header of every response the
//! operator's clients receive ([`ServerTime`]).

use aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

use crate::runtime::ServerTime;

/// Records each response's `Date` into a [`ServerTime`]. One type serves
/// every service's client: their interceptor traits are the same.
#[derive(Debug)]
pub(crate) struct DateHeader(pub(crate) ServerTime);

impl Intercept for DateHeader {
    fn name(&self) -> &'static str {
        "ddb-relay DateHeader"
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(ms) = context
            .response()
            .headers()
            .get("date")
            .and_then(http_date_ms)
        {
            self.0.observe(ms);
        }
        Ok(())
    }
}

/// An HTTP date (`Sun, 29 Nov 2026 01:23:48 GMT`) in epoch ms.
pub fn http_date_ms(s: &str) -> Option<i64> {
    aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::HttpDate)
        .ok()?
        .to_millis()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::http_date_ms;

    #[test]
    fn an_http_date_is_read_to_the_second() {
        assert_eq!(
            http_date_ms("Sun, 01 Nov 2026 00:00:01 GMT"),
            Some(1_793_491_201_000)
        );
        assert_eq!(http_date_ms("yesterday"), None);
    }
}
