//! Amazon MSK IAM authentication: SASL/OAUTHBEARER with a token that is a SigV4-presigned URL
//! for the `kafka-cluster:Connect` action, the scheme of AWS's own signers
//! (aws-msk-iam-sasl-signer for Go, Python, JavaScript, .NET).
//!
//! The token: `https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect&...`,
//! presigned with the service name `kafka-cluster`, the hash of an empty body and an expiry of
//! 900 s, then `User-Agent` appended (unsigned), the whole URL base64url-encoded without
//! padding. librdkafka asks for a new token at 80% of its lifetime.
//!
//! Credentials come from AWS's default chain (environment, profile, web identity, ECS task role,
//! EC2 instance role), resolved on a thread of its own: librdkafka asks for tokens from inside
//! `poll`, which may run on an async runtime's thread, where blocking on another runtime is not
//! allowed.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The SASL mechanism name fleetstream accepts for MSK IAM (librdkafka sees `OAUTHBEARER`).
pub const MECHANISM: &str = "AWS_MSK_IAM";

/// How long a token is valid, as AWS's signers set it.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// The IAM action a token grants.
const ACTION: &str = "kafka-cluster:Connect";

/// The service name the signature is for.
const SIGNING_NAME: &str = "kafka-cluster";

/// How long a token request waits for credentials before librdkafka is told it failed (and
/// retries): the instance metadata service answers in milliseconds, STS in well under this.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(10);

/// A signed token and when it expires. `Debug` leaves the token out: it is a bearer credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The base64url-encoded presigned URL.
    pub value: String,
    /// Expiry, milliseconds since the epoch (what librdkafka takes as the token's lifetime).
    pub expires_ms: i64,
}

/// Signs a token for `region` with `credentials`, as of `now`.
pub fn sign_token(
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<Token, String> {
    if region.is_empty() {
        return Err("the AWS region is empty".into());
    }
    let url = format!(
        "https://kafka.{region}.amazonaws.com/?Action={}",
        encode(ACTION)
    );
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| format!("the request to sign: {e}"))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    let mut signed = url;
    for (name, value) in instructions.params() {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.push_str(&encode(value));
    }
    signed.push_str("&User-Agent=");
    signed.push_str(&encode(concat!("fleetstream/", env!("CARGO_PKG_VERSION"))));
    let signed_at = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_owned())?;
    // X-Amz-Date has whole seconds: the token expires TOKEN_LIFETIME after them, or with the
    // credentials that signed it, whichever comes first.
    let mut expires_ms = (signed_at.as_secs() + TOKEN_LIFETIME.as_secs()) as i64 * 1000;
    if let Some(until) = credentials.expiry() {
        let until = until
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the credentials expired before 1970".to_owned())?;
        expires_ms = expires_ms.min(until.as_millis() as i64);
    }
    Ok(Token {
        value: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed),
        expires_ms,
    })
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"***")
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as SigV4 does.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type Reply = mpsc::SyncSender<Result<Credentials, String>>;

/// Credentials kept this long before they expire are fetched again: a token signed with them
/// stays valid for its whole life.
const REFRESH_BEFORE: Duration = TOKEN_LIFETIME;

/// Resolves AWS credentials on a thread of its own and keeps them until [`REFRESH_BEFORE`] their
/// expiry (long-term keys never expire), so token requests do not each run the whole chain
/// (an STS call for a web identity, the instance metadata service on EC2).
struct CredentialSource {
    requests: Mutex<mpsc::Sender<Reply>>,
}

impl CredentialSource {
    fn start(
        make: impl FnOnce(&tokio::runtime::Runtime) -> Result<SharedCredentialsProvider, String>
            + Send
            + 'static,
    ) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel::<Reply>();
        std::thread::Builder::new()
            .name("fs-msk-iam".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        return answer_all(&rx, &format!("no runtime for AWS credentials: {e}"))
                    }
                };
                let provider = match make(&runtime) {
                    Ok(p) => p,
                    Err(e) => return answer_all(&rx, &e),
                };
                let mut kept: Option<Credentials> = None;
                while let Ok(first) = rx.recv() {
                    // Requests that waited (a slow chain, librdkafka's retries) get one answer.
                    let replies: Vec<Reply> = std::iter::once(first).chain(rx.try_iter()).collect();
                    let fresh = kept
                        .as_ref()
                        .filter(|c| still_fresh(c, SystemTime::now()))
                        .cloned();
                    let got = match fresh {
                        Some(c) => Ok(c),
                        None => {
                            let got = runtime
                                .block_on(provider.provide_credentials())
                                .map_err(|e| format!("AWS credentials: {}", error_chain(&e)));
                            kept = got.as_ref().ok().cloned();
                            got
                        }
                    };
                    for reply in replies {
                        let _ = reply.send(got.clone());
                    }
                }
            })
            .map_err(|e| format!("could not start the MSK IAM credentials thread: {e}"))?;
        Ok(CredentialSource {
            requests: Mutex::new(tx),
        })
    }

    fn credentials(&self) -> Result<Credentials, String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(reply)
            .map_err(|_| "the MSK IAM credentials thread has stopped".to_owned())?;
        answer
            .recv_timeout(CREDENTIALS_TIMEOUT)
            .map_err(|_| format!("AWS credentials: no answer within {CREDENTIALS_TIMEOUT:?}"))?
    }
}

/// Whether credentials kept from before can still sign a token that lives its whole life.
fn still_fresh(c: &Credentials, now: SystemTime) -> bool {
    c.expiry().is_none_or(|e| e > now + REFRESH_BEFORE)
}

/// The credentials thread of each region, shared by every client of the process.
fn shared_source(region: &str) -> Result<Arc<CredentialSource>, String> {
    static SOURCES: OnceLock<Mutex<HashMap<String, Arc<CredentialSource>>>> = OnceLock::new();
    let mut sources = SOURCES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s) = sources.get(region) {
        return Ok(s.clone());
    }
    let owned = region.to_owned();
    let source = Arc::new(CredentialSource::start(move |rt| {
        rt.block_on(fleetstream_aws::credentials(&owned))
    })?);
    sources.insert(region.to_owned(), source.clone());
    Ok(source)
}

/// Signs tokens for one client, asked from its poll. Clients of one region share the thread
/// that resolves credentials.
pub struct MskIamTokens {
    region: String,
    source: Arc<CredentialSource>,
    asked: AtomicU64,
    signed: AtomicU64,
    failed: AtomicU64,
}

impl std::fmt::Debug for MskIamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MskIamTokens")
            .field("region", &self.region)
            .field("signed", &self.signed())
            .finish()
    }
}

impl MskIamTokens {
    /// Tokens for `region`, from AWS's default credentials chain.
    pub fn start(region: &str) -> Result<Self, String> {
        if region.is_empty() {
            return Err("the AWS region is empty".into());
        }
        Ok(Self::new(region, shared_source(region)?))
    }

    /// Tokens for `region` from the provider `make` builds on a credentials thread of their
    /// own (tests, and callers with their own provider).
    pub fn with_provider(
        region: &str,
        make: impl FnOnce(&tokio::runtime::Runtime) -> Result<SharedCredentialsProvider, String>
            + Send
            + 'static,
    ) -> Result<Self, String> {
        if region.is_empty() {
            return Err("the AWS region is empty".into());
        }
        Ok(Self::new(region, Arc::new(CredentialSource::start(make)?)))
    }

    fn new(region: &str, source: Arc<CredentialSource>) -> Self {
        MskIamTokens {
            region: region.to_owned(),
            source,
            asked: AtomicU64::new(0),
            signed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// A fresh token: current credentials, signed now.
    pub fn token(&self) -> Result<Token, String> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let token = self
            .source
            .credentials()
            .and_then(|c| sign_token(&self.region, &c, SystemTime::now()));
        let counter = if token.is_ok() {
            &self.signed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        token
    }

    /// Tokens asked for so far, signed or not.
    pub fn asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    /// Token requests that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Tokens signed so far.
    pub fn signed(&self) -> u64 {
        self.signed.load(Ordering::Relaxed)
    }

    /// The region tokens are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }
}

fn answer_all(rx: &mpsc::Receiver<Reply>, error: &str) {
    for reply in rx {
        let _ = reply.send(Err(error.to_owned()));
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(token: &str) -> String {
        String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .expect("base64url without padding"),
        )
        .expect("UTF-8")
    }

    fn query(url: &str) -> Vec<(String, String)> {
        let (_, q) = url.split_once('?').expect("a query");
        q.split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("k=v");
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
        q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// 2026-11-30T08:00:00Z.
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_025_600)
    }

    #[test]
    fn a_token_is_a_presigned_connect_url_for_the_region() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let t = sign_token("sa-east-1", &creds, at()).unwrap();
        assert!(!t.value.contains('=') && !t.value.contains('+') && !t.value.contains('/'));
        let url = decode(&t.value);
        assert!(
            url.starts_with("https://kafka.sa-east-1.amazonaws.com/?"),
            "{url}"
        );
        let q = query(&url);
        assert_eq!(get(&q, "Action"), Some("kafka-cluster%3AConnect"));
        assert_eq!(get(&q, "X-Amz-Algorithm"), Some("AWS4-HMAC-SHA256"));
        assert_eq!(
            get(&q, "X-Amz-Credential"),
            Some("AKIDEXAMPLE%2F20261130%2Fsa-east-1%2Fkafka-cluster%2Faws4_request")
        );
        assert_eq!(get(&q, "X-Amz-Date"), Some("20261130T080000Z"));
        assert_eq!(get(&q, "X-Amz-Expires"), Some("900"));
        assert_eq!(get(&q, "X-Amz-SignedHeaders"), Some("host"));
        assert_eq!(get(&q, "X-Amz-Security-Token"), None);
        let sig = get(&q, "X-Amz-Signature").unwrap();
        assert!(
            sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_hexdigit()),
            "{sig}"
        );
        assert!(get(&q, "User-Agent").unwrap().starts_with("fleetstream%2F"));
        assert_eq!(t.expires_ms, (1_796_025_600 + 900) * 1000);
    }

    #[test]
    fn a_session_token_is_signed_into_the_url_and_changes_the_signature() {
        let plain = Credentials::new("AKID", "secret", None, None, "test");
        let session = Credentials::new("AKID", "secret", Some("tok+en/=".into()), None, "test");
        let a = query(&decode(
            &sign_token("us-east-1", &plain, at()).unwrap().value,
        ));
        let b = query(&decode(
            &sign_token("us-east-1", &session, at()).unwrap().value,
        ));
        assert_eq!(get(&b, "X-Amz-Security-Token"), Some("tok%2Ben%2F%3D"));
        assert_ne!(get(&a, "X-Amz-Signature"), get(&b, "X-Amz-Signature"));
    }

    #[test]
    fn the_signature_depends_on_secret_region_and_time() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        let other = Credentials::new("AKID", "other", None, None, "test");
        let sig = |c: &Credentials, r: &str, t: SystemTime| {
            let q = query(&decode(&sign_token(r, c, t).unwrap().value));
            get(&q, "X-Amz-Signature").unwrap().to_owned()
        };
        let base = sig(&creds, "us-east-1", at());
        assert_eq!(base, sig(&creds, "us-east-1", at()), "deterministic");
        assert_ne!(base, sig(&other, "us-east-1", at()));
        assert_ne!(base, sig(&creds, "us-west-2", at()));
        assert_ne!(
            base,
            sig(&creds, "us-east-1", at() + Duration::from_secs(1))
        );
    }

    #[test]
    fn an_empty_region_is_refused() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        assert!(sign_token("", &creds, at()).is_err());
        assert!(MskIamTokens::start("").is_err());
    }

    #[test]
    fn tokens_come_from_the_provider_on_its_thread() {
        let tokens = MskIamTokens::with_provider("eu-west-1", |_| {
            Ok(SharedCredentialsProvider::new(Credentials::new(
                "AKIDTHREAD",
                "secret",
                None,
                None,
                "test",
            )))
        })
        .unwrap();
        let t = tokens.token().unwrap();
        let q = query(&decode(&t.value));
        assert!(get(&q, "X-Amz-Credential")
            .unwrap()
            .starts_with("AKIDTHREAD%2F"));
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(t.expires_ms > now_ms + 890_000 && t.expires_ms <= now_ms + 900_000);
        assert_eq!(tokens.signed(), 1);
    }

    #[test]
    fn a_provider_that_fails_is_reported_on_every_request() {
        let tokens =
            MskIamTokens::with_provider("eu-west-1", |_| Err("no chain here".into())).unwrap();
        assert_eq!(tokens.token().unwrap_err(), "no chain here");
        assert_eq!(tokens.token().unwrap_err(), "no chain here");
        assert_eq!(
            (tokens.asked(), tokens.signed(), tokens.failed()),
            (2, 0, 2)
        );
    }

    #[derive(Debug)]
    struct NoCredentials;

    impl ProvideCredentials for NoCredentials {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                aws_credential_types::provider::error::CredentialsError::not_loaded(
                    "nothing in the environment",
                ),
            ))
        }
    }

    /// Counts its calls; hands out credentials that expire `lifetime` from each call.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicU64>,
        lifetime: Option<Duration>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let expiry = self.lifetime.map(|l| SystemTime::now() + l);
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                "AKID",
                "secret",
                Some("session".into()),
                expiry,
                "test",
            )))
        }
    }

    fn counting(lifetime: Option<Duration>) -> (MskIamTokens, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let provider = Counting {
            calls: calls.clone(),
            lifetime,
        };
        let tokens = MskIamTokens::with_provider("us-east-1", move |_| {
            Ok(SharedCredentialsProvider::new(provider))
        })
        .unwrap();
        (tokens, calls)
    }

    #[test]
    fn credentials_are_kept_until_they_would_expire_within_a_token_lifetime() {
        let (tokens, calls) = counting(None);
        for _ in 0..3 {
            tokens.token().unwrap();
        }
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1,
            "long-term keys: fetched once"
        );

        let (tokens, calls) = counting(Some(Duration::from_secs(3600)));
        tokens.token().unwrap();
        tokens.token().unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1, "an hour left: kept");

        let (tokens, calls) = counting(Some(Duration::from_secs(600)));
        let t = tokens.token().unwrap();
        tokens.token().unwrap();
        assert_eq!(
            calls.load(Ordering::Relaxed),
            2,
            "10 minutes left: fetched again"
        );
        // And the token does not outlive the credentials that signed it.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            t.expires_ms <= now_ms + 600_000 && t.expires_ms > now_ms + 590_000,
            "{t:?}"
        );
    }

    #[test]
    fn a_token_does_not_print() {
        let creds = Credentials::new("AKID", "secret", None, None, "test");
        let t = sign_token("us-east-1", &creds, at()).unwrap();
        let printed = format!("{t:?}");
        assert!(!printed.contains(&t.value[..20]), "{printed}");
        assert!(printed.contains("***"), "{printed}");
    }

    #[test]
    fn missing_credentials_say_so() {
        let tokens = MskIamTokens::with_provider("eu-west-1", |_| {
            Ok(SharedCredentialsProvider::new(NoCredentials))
        })
        .unwrap();
        let err = tokens.token().unwrap_err();
        assert!(
            err.starts_with("AWS credentials: ") && err.contains("nothing in the environment"),
            "{err}"
        );
    }
}
