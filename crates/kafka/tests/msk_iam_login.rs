//! MSK IAM (`--sasl-mechanism AWS_MSK_IAM`) against the real broker's SASL_SSL listener. This
//! broker cannot check an AWS signature (only MSK can; `msk_iam_signer.rs` checks the tokens
//! against AWS's own signer), so what this shows is the client side, for every kind of client
//! fleetstream makes: the token request is served from the client's own poll, librdkafka
//! accepts the token and logs in with OAUTHBEARER, and the broker answers that it does not
//! enable that mechanism. Without credentials, the error names them.
//!
//! Its own test binary: it sets the process's AWS variables, which no other test may read
//! meanwhile. Needs the `tls` feature and the listener's settings (as `secure.rs`):
//!
//!   scripts/kafka start
//!   eval "$(scripts/kafka secure-env)"
//!   cargo test -p fleetstream-kafka --features tls --test msk_iam_login
#![cfg(feature = "tls")]

use fleetstream_kafka::config::SecurityProtocol;
use fleetstream_kafka::{
    read_topic_to_end, Admin, ClusterHandle, ConnectionSettings, ConsumerSettings, DeliveryHandler,
    DeliveryReport, GroupConsumer, KafkaProducer, OutRecord, ProducerSettings,
};
use std::sync::Arc;
use std::time::Duration;

/// What librdkafka says when the broker does not enable OAUTHBEARER: the login was attempted
/// with a token.
const ATTEMPTED: &str = "SASL OAUTHBEARER mechanism handshake failed";

fn iam() -> Option<ConnectionSettings> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (Some(bootstrap), Some(ca)) = (
        var("FLEETSTREAM_TEST_SECURE_BOOTSTRAP"),
        var("FLEETSTREAM_TEST_CA"),
    ) else {
        assert!(
            std::env::var_os("FLEETSTREAM_TEST_REQUIRE_SECURE").is_none(),
            "FLEETSTREAM_TEST_REQUIRE_SECURE is set but the SASL_SSL listener's settings are not"
        );
        eprintln!("skipped: eval \"$(scripts/kafka secure-env)\" first");
        return None;
    };
    let mut c = ConnectionSettings::plaintext(bootstrap);
    c.security_protocol = SecurityProtocol::SaslSsl;
    c.sasl_mechanism = Some(fleetstream_kafka::msk_iam::MECHANISM.into());
    c.aws_region = Some("us-east-1".into());
    c.ssl_ca_location = Some(ca);
    Some(c)
}

fn admin_refusal(connection: &ConnectionSettings) -> String {
    let err = Admin::new(&ClusterHandle::external(connection.clone()))
        .unwrap()
        .broker_count()
        .unwrap_err()
        .to_string();
    eprintln!("admin: {err}");
    err
}

struct Ignore;

impl DeliveryHandler for Ignore {
    type Token = ();
    fn delivered(&self, _: (), _: DeliveryReport<'_>) {}
}

/// What a producer's client reported while it failed to deliver one record.
fn producer_errors(connection: &ConnectionSettings, threaded: bool) -> String {
    let settings = ProducerSettings::new(connection.clone());
    let producer = if threaded {
        KafkaProducer::new(&settings, Arc::new(Ignore))
    } else {
        KafkaProducer::new_polled(&settings, Arc::new(Ignore))
    }
    .unwrap();
    let record = OutRecord {
        topic: "msk-iam-login",
        key: None,
        payload: b"{}",
        headers: &[],
        timestamp_ms: None,
    };
    producer.send(record, ()).map_err(|(e, _)| e).unwrap();
    assert!(producer.flush(Duration::from_secs(3)).is_err());
    let seen = producer.errors().recent(Duration::from_secs(60)).join("; ");
    eprintln!("producer (threaded: {threaded}): {seen}");
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn msk_iam_logs_in_with_a_signed_token_or_names_the_missing_credentials() {
    let Some(iam) = iam() else { return };
    // Only the environment: no profile files, no instance metadata.
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/fleetstream-test");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/fleetstream-test",
    );
    std::env::remove_var("AWS_PROFILE");

    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    std::env::remove_var("AWS_SESSION_TOKEN");
    let err = admin_refusal(&iam);
    assert!(
        err.contains("Failed to acquire SASL OAUTHBEARER token"),
        "{err}"
    );
    assert!(err.contains("AWS credentials"), "{err}");

    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDFLEETSTREAMTEST");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "not-a-real-secret");
    // The metadata client (topics apply, the worker's start-up check).
    let err = admin_refusal(&iam);
    assert!(
        err.contains(ATTEMPTED) && err.contains("Unsupported SASL mechanism"),
        "{err}"
    );
    assert!(!err.contains("AWS credentials"), "{err}");
    // The send loop's producer (polled by its caller) and the dead-letter producer (polled by a
    // thread of its own).
    for threaded in [false, true] {
        let seen = producer_errors(&iam, threaded);
        assert!(seen.contains(ATTEMPTED), "{seen}");
    }
    // The audit and lag reader, which blocks on watermarks before it polls.
    let err = read_topic_to_end(&iam, "msk-iam-login", Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    eprintln!("reader: {err}");
    assert!(err.contains(ATTEMPTED), "{err}");
    // The worker's group member, whose token requests its `recv` serves.
    let member = GroupConsumer::subscribe(
        &ConsumerSettings::new(iam.clone(), "msk-iam-login"),
        &["msk-iam-login"],
    )
    .unwrap();
    // recv ends in an error (the failed login, surfaced by the consumer) or waits.
    let waited = tokio::time::timeout(Duration::from_secs(3), member.recv()).await;
    let returned = match waited {
        Ok(Ok(r)) => panic!("a record without a login: {r:?}"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => String::new(),
    };
    let seen = format!(
        "{returned}; {}",
        member.errors().recent(Duration::from_secs(60)).join("; ")
    );
    eprintln!("member: {seen}");
    assert!(seen.contains(ATTEMPTED), "{seen}");
}
