//! AWS SDK client set-up shared by the worker's Lambda transport and the dispatcher's DynamoDB
//! store.
//!
//! Region and credentials come from the usual AWS sources (`AWS_REGION`, `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`, a profile, the Lambda or EC2 role). An endpoint override points a
//! client elsewhere:
//!
//! - `http://...`: a local emulator (AWS's runtime interface emulator, moto,
//!   `fleetstream dispatch serve`). Plain HTTP. Emulators ignore the region and accept any
//!   signature, so when none is set a placeholder region (`us-east-1`) and placeholder
//!   credentials are used instead of failing.
//! - `https://...` or no override: HTTPS, which needs the `tls` feature (`fleetstream`'s
//!   `--features tls`; the Lambda function is always built with it).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;

/// What the placeholder credentials call their provider (visible in the SDK's debug logs).
const LOCAL_PROVIDER: &str = "fleetstream-local-endpoint";

/// How a client reaches its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// AWS's own endpoint for the region (HTTPS).
    Aws,
    /// A local emulator over plain HTTP.
    Local(&'a str),
    /// Another HTTPS endpoint (a VPC endpoint, a proxy).
    Https(&'a str),
}

impl<'a> Endpoint<'a> {
    /// Classifies an optional override. `setting` names the flag or variable in the error,
    /// for a URL that is neither `http://` nor `https://`.
    pub fn parse(url: Option<&'a str>, setting: &str) -> Result<Self, String> {
        match url {
            None => Ok(Endpoint::Aws),
            Some(u) if u.starts_with("http://") => Ok(Endpoint::Local(u)),
            Some(u) if u.starts_with("https://") => Ok(Endpoint::Https(u)),
            Some(u) => Err(format!(
                "{setting} {u:?} must be an http:// or https:// URL"
            )),
        }
    }
}

/// Loads the SDK configuration for `endpoint` (see the module docs). `setting` names the
/// endpoint's flag or variable in errors.
pub async fn sdk_config(endpoint: Option<&str>, setting: &str) -> Result<SdkConfig, String> {
    let endpoint = Endpoint::parse(endpoint, setting)?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    match endpoint {
        Endpoint::Local(url) => {
            loader = loader
                .endpoint_url(url)
                .http_client(aws_smithy_http_client::Builder::new().build_http());
            if !has_env("AWS_REGION") && !has_env("AWS_DEFAULT_REGION") {
                loader = loader.region(Region::new("us-east-1"));
            }
            if !has_env("AWS_ACCESS_KEY_ID") {
                loader = loader.credentials_provider(Credentials::new(
                    "fleetstream-local",
                    "fleetstream-local",
                    None,
                    None,
                    LOCAL_PROVIDER,
                ));
            }
        }
        Endpoint::Https(url) => loader = https(loader, setting)?.endpoint_url(url),
        Endpoint::Aws => loader = https(loader, setting)?,
    }
    Ok(loader.load().await)
}

/// The credentials AWS's default chain finds for `region`: the environment
/// (`AWS_ACCESS_KEY_ID`, ...), a profile, a web identity, the ECS task role or the EC2 instance
/// role. The ones fetched over HTTPS (web identity, SSO) need the `tls` feature; the others work
/// in any build.
pub async fn credentials(region: &str) -> Result<SharedCredentialsProvider, String> {
    let loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_owned()));
    #[cfg(feature = "tls")]
    let loader = https(loader, "AWS credentials")?;
    // Without TLS, plain HTTP still reaches the instance and container metadata endpoints.
    #[cfg(not(feature = "tls"))]
    let loader = loader.http_client(aws_smithy_http_client::Builder::new().build_http());
    loader
        .load()
        .await
        .credentials_provider()
        .ok_or_else(|| "AWS's default credentials chain found no provider".to_owned())
}

fn has_env(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// The SDK's HTTPS client: rustls with ring.
#[cfg(feature = "tls")]
fn https(
    loader: aws_config::ConfigLoader,
    _setting: &str,
) -> Result<aws_config::ConfigLoader, String> {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    Ok(loader.http_client(
        aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https(),
    ))
}

#[cfg(not(feature = "tls"))]
fn https(
    _loader: aws_config::ConfigLoader,
    setting: &str,
) -> Result<aws_config::ConfigLoader, String> {
    Err(needs_tls(setting))
}

/// What a build without the `tls` feature says when asked for HTTPS.
#[cfg_attr(feature = "tls", allow(dead_code))]
fn needs_tls(setting: &str) -> String {
    format!(
        "AWS's HTTPS endpoints need a build with TLS (`cargo build --release -p fleetstream \
         --features tls`, which turns on fleetstream-consumer's `lambda-tls` and \
         fleetstream-dispatcher's `dynamodb-tls`; the Lambda function always has it). This build \
         speaks plain HTTP only: give {setting} an http:// URL (a local emulator or \
         `fleetstream dispatch serve`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_classified_and_bad_ones_name_their_setting() {
        assert_eq!(Endpoint::parse(None, "--x").unwrap(), Endpoint::Aws);
        assert_eq!(
            Endpoint::parse(Some("http://127.0.0.1:9001"), "--x").unwrap(),
            Endpoint::Local("http://127.0.0.1:9001")
        );
        assert_eq!(
            Endpoint::parse(Some("https://vpce.example"), "--x").unwrap(),
            Endpoint::Https("https://vpce.example")
        );
        let err = Endpoint::parse(Some("127.0.0.1:9001"), "--lambda-endpoint").unwrap_err();
        assert!(
            err.contains("--lambda-endpoint") && err.contains("127.0.0.1:9001"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_local_endpoint_gets_a_region_and_credentials() {
        let c = sdk_config(Some("http://127.0.0.1:1"), "--x").await.unwrap();
        assert!(c.region().is_some());
        assert!(c.credentials_provider().is_some());
        assert_eq!(c.endpoint_url(), Some("http://127.0.0.1:1"));
    }

    #[test]
    fn a_build_without_tls_says_how_to_get_it() {
        let err = needs_tls("--lambda-endpoint");
        assert!(
            err.contains("--features tls") && err.contains("--lambda-endpoint"),
            "{err}"
        );
    }

    /// The workspace's own test build has the feature on (the Lambda function needs it), so
    /// this runs only in `cargo test -p fleetstream-aws`.
    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn https_without_the_tls_feature_is_refused() {
        let err = sdk_config(None, "--lambda-endpoint").await.unwrap_err();
        assert_eq!(err, needs_tls("--lambda-endpoint"));
    }
}
