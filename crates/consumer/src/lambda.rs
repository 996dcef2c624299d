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
    /// This build speaks plain HTTP only: AWS's own HTTPS endpoint is reached through an
    /// endpoint override to a local proxy, or a build with TLS for the SDK (not yet wired).
    pub async fn new(function: &str, endpoint: Option<&str>) -> Result<Self, String> {
        let Some(endpoint) = endpoint else {
            return Err("an http:// --lambda-endpoint is required: this build has no TLS client for AWS's HTTPS endpoint".into());
        };
        if !endpoint.starts_with("http://") {
            return Err(format!(
                "--lambda-endpoint {endpoint:?} must be an http:// URL"
            ));
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .http_client(aws_smithy_http_client::Builder::new().build_http());
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            // Emulators accept any signature; real endpoints need real credentials.
            loader = loader.credentials_provider(aws_sdk_lambda::config::Credentials::new(
                "fleetstream-local",
                "fleetstream-local",
                None,
                None,
                "fleetstream-local-endpoint",
            ));
        }
        let config = loader.load().await;
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
