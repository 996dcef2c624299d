//! AWS Lambda transport: `Invoke` through the AWS SDK, synchronous (RequestResponse), the batch
//! as a Lambda Kafka event. An endpoint override points it at a runtime emulator or at
//! `fleetstream dispatch serve`, which expose the same Invoke path.

use crate::http::parse_response;
use crate::transport::{DispatchFuture, Transport, TransportError};
use aws_sdk_lambda::error::SdkError;
use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_sdk_lambda::primitives::Blob;
use fleetstream_dispatcher::{event::to_event_json, BatchRecord, DispatchResponse};

/// Invokes a Lambda function with each batch.
pub struct LambdaInvoke {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaInvoke {
    /// A client for `function`. Region and credentials come from the usual AWS sources
    /// (`AWS_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profile). With `endpoint`
    /// (an `http://` URL of an emulator or `fleetstream dispatch serve`) calls go there.
    ///
    /// Without an endpoint the SDK calls AWS's own HTTPS endpoint for the region, which needs a
    /// build with the `lambda-tls` feature (`fleetstream` `--features tls`); the default build
    /// speaks plain HTTP to an emulator or `fleetstream dispatch serve`.
    pub async fn new(function: &str, endpoint: Option<&str>) -> Result<Self, String> {
        let config = fleetstream_aws::sdk_config(endpoint, "--lambda-endpoint").await?;
        Ok(LambdaInvoke {
            client: aws_sdk_lambda::Client::new(&config),
            function: function.to_string(),
        })
    }

    async fn call(&self, records: &[BatchRecord]) -> Result<DispatchResponse, TransportError> {
        let body = serde_json::to_vec(&to_event_json(records))
            .map_err(|e| TransportError::Failed(e.to_string()))?;
        let out = self
            .client
            .invoke()
            .function_name(&self.function)
            .payload(Blob::new(body))
            .send()
            .await
            .map_err(|e| match e {
                SdkError::ServiceError(se)
                    if matches!(se.err(), InvokeError::TooManyRequestsException(_)) =>
                {
                    TransportError::Throttled(format!("{:?}", se.err()))
                }
                other => TransportError::Failed(format!(
                    "invoke: {}",
                    aws_sdk_lambda::error::DisplayErrorContext(&other)
                )),
            })?;
        let payload = out.payload().map(|b| b.as_ref()).unwrap_or_default();
        if let Some(kind) = out.function_error() {
            return Err(TransportError::Failed(format!(
                "function error {kind}: {}",
                String::from_utf8_lossy(payload)
            )));
        }
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| TransportError::Failed(format!("payload is not JSON: {e}")))?;
        parse_response(&value, records)
    }
}

impl Transport for LambdaInvoke {
    fn dispatch(&self, records: Vec<BatchRecord>) -> DispatchFuture<'_> {
        Box::pin(async move { self.call(&records).await })
    }
}
