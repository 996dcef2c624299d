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
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        match endpoint {
            Some(e) if e.starts_with("http://") => {
                loader = loader
                    .endpoint_url(e)
                    .http_client(aws_smithy_http_client::Builder::new().build_http());
            }
            Some(e) if e.starts_with("https://") => {
                loader = loader.endpoint_url(e).http_client(https_client()?);
            }
            Some(e) => {
                return Err(format!(
                    "--lambda-endpoint {e:?} must be an http:// or https:// URL"
                ))
            }
            None => loader = loader.http_client(https_client()?),
        }
        let local = endpoint.is_some_and(|e| e.starts_with("http://"));
        if local
            && std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            // A local emulator ignores the region; AWS itself needs AWS_REGION.
            loader = loader.region(aws_config::Region::new("us-east-1"));
        }
        if local && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
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

/// The SDK's HTTPS client (rustls with ring), in builds with the `lambda-tls` feature.
#[cfg(feature = "lambda-tls")]
fn https_client() -> Result<aws_sdk_lambda::config::SharedHttpClient, String> {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https())
}

#[cfg(not(feature = "lambda-tls"))]
fn https_client() -> Result<aws_sdk_lambda::config::SharedHttpClient, String> {
    Err("AWS's HTTPS endpoint needs a build with TLS (`cargo build --release -p fleetstream --features tls`); \
         this build speaks plain HTTP to an http:// --lambda-endpoint (an emulator or `fleetstream dispatch serve`)"
        .into())
}
