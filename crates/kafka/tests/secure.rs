//! TLS and SASL against the real broker's SASL_SSL listener, as on MSK's port 9096 (a broker
//! certificate from a test CA, SCRAM-SHA-512), and mutual TLS against its SSL listener that
//! requires a client certificate, as on MSK's port 9094. scripts/kafka starts both next to the
//! plaintext one. Needs the `tls` feature (librdkafka with OpenSSL) and the listeners' settings,
//! and is skipped with a printed reason without them:
//!
//!   scripts/kafka start
//!   eval "$(scripts/kafka secure-env)"
//!   cargo test -p fleetstream-kafka --features tls --test secure
#![cfg(feature = "tls")]

use fleetstream_kafka::config::SecurityProtocol;
use fleetstream_kafka::{
    read_topic_to_end, Admin, ClusterHandle, ConnectionSettings, DeliveryHandler, DeliveryReport,
    KafkaProducer, OutRecord, ProducerSettings, Secret,
};
use fleetstream_testkit::{one_topic_topology, unique};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Listener {
    bootstrap: String,
    ca: String,
    user: String,
    password: String,
    mtls_bootstrap: String,
    client_cert: String,
    client_key: String,
    client_key_password: String,
}

fn listener() -> Option<Listener> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let names = [
        "FLEETSTREAM_TEST_SECURE_BOOTSTRAP",
        "FLEETSTREAM_TEST_CA",
        "FLEETSTREAM_TEST_SCRAM_USER",
        "FLEETSTREAM_TEST_SCRAM_PASSWORD",
        "FLEETSTREAM_TEST_MTLS_BOOTSTRAP",
        "FLEETSTREAM_TEST_CLIENT_CERT",
        "FLEETSTREAM_TEST_CLIENT_KEY",
        "FLEETSTREAM_TEST_CLIENT_KEY_PASSWORD",
    ];
    match names.map(var) {
        [Some(bootstrap), Some(ca), Some(user), Some(password), Some(mtls_bootstrap), Some(client_cert), Some(client_key), Some(client_key_password)] => {
            Some(Listener {
                bootstrap,
                ca,
                user,
                password,
                mtls_bootstrap,
                client_cert,
                client_key,
                client_key_password,
            })
        }
        _ => {
            let why = "the SASL_SSL and mTLS listeners' settings are unset (scripts/kafka start, then eval \"$(scripts/kafka secure-env)\")";
            // CI sets this, so a lost `eval` fails instead of passing with nothing run.
            assert!(
                std::env::var_os("FLEETSTREAM_TEST_REQUIRE_SECURE").is_none(),
                "FLEETSTREAM_TEST_REQUIRE_SECURE is set but {why}"
            );
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// SASL_SSL with SCRAM-SHA-512, as `--security-protocol sasl_ssl --sasl-mechanism
/// SCRAM-SHA-512` sets it.
fn scram(l: &Listener, password: &str, ca: Option<&str>) -> ConnectionSettings {
    let mut c = ConnectionSettings::plaintext(&l.bootstrap);
    c.security_protocol = SecurityProtocol::SaslSsl;
    c.sasl_mechanism = Some("SCRAM-SHA-512".into());
    c.sasl_username = Some(l.user.clone());
    c.sasl_password = Some(Secret::new(password));
    c.ssl_ca_location = ca.map(str::to_owned);
    c
}

/// SSL with a client certificate, as `--security-protocol ssl --ssl-certificate-location ...
/// --ssl-key-location ... --ssl-key-password ...` sets it.
fn mtls(l: &Listener, key_password: &str) -> ConnectionSettings {
    let mut c = ConnectionSettings::plaintext(&l.mtls_bootstrap);
    c.security_protocol = SecurityProtocol::Ssl;
    c.ssl_ca_location = Some(l.ca.clone());
    c.ssl_certificate_location = Some(l.client_cert.clone());
    c.ssl_key_location = Some(l.client_key.clone());
    c.ssl_key_password = Some(Secret::new(key_password));
    c
}

#[derive(Default)]
struct Acks(Mutex<Vec<Result<(), String>>>);

impl DeliveryHandler for Acks {
    type Token = ();
    fn delivered(&self, _: (), report: DeliveryReport<'_>) {
        let r = report.result.map_err(|e| e.message);
        self.0.lock().unwrap().push(r);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_over_tls_creates_a_topic_produces_and_reads_back() {
    let Some(l) = listener() else { return };
    round_trip(scram(&l, &l.password, Some(&l.ca))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_creates_a_topic_produces_and_reads_back() {
    let Some(l) = listener() else { return };
    round_trip(mtls(&l, &l.client_key_password)).await;
}

/// Creates a topic, produces 100 records and reads them back by id over `connection`.
async fn round_trip(connection: ConnectionSettings) {
    let cluster = ClusterHandle::external(connection.clone());
    let topic = unique("secure");
    let topology = one_topic_topology(&topic, 3);
    let report = Admin::new(&cluster)
        .unwrap()
        .apply(&topology)
        .await
        .unwrap();
    assert_eq!(report.created, vec![topic.clone()]);

    let acks = Arc::new(Acks::default());
    let producer =
        KafkaProducer::new_polled(&ProducerSettings::new(connection.clone()), acks.clone())
            .unwrap();
    for i in 0..100 {
        let id = format!("id-{i}");
        let payload = format!(r#"{{"codigo":300,"truck_id":"T{i}"}}"#);
        let record = OutRecord {
            topic: &topic,
            key: Some(id.as_bytes()),
            payload: payload.as_bytes(),
            headers: &[("fs-message-id", id.as_bytes())],
            timestamp_ms: None,
        };
        producer.send(record, ()).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let acks = acks.0.lock().unwrap().clone();
    assert_eq!(acks.len(), 100);
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");

    let records = read_topic_to_end(&connection, &topic, Duration::from_secs(30)).unwrap();
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.header("fs-message-id").unwrap().to_vec()).unwrap())
        .collect();
    ids.sort();
    let mut wanted: Vec<String> = (0..100).map(|i| format!("id-{i}")).collect();
    wanted.sort();
    assert_eq!(ids, wanted);
}

/// What `Admin` says when it cannot read the cluster's metadata over `connection`.
fn admin_refusal(connection: ConnectionSettings) -> String {
    let err = Admin::new(&ClusterHandle::external(connection))
        .unwrap()
        .broker_count()
        .unwrap_err()
        .to_string();
    eprintln!("what a user sees: {err}");
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_naming_the_authentication() {
    let Some(l) = listener() else { return };
    let wrong = scram(&l, "not-the-password", Some(&l.ca));
    let err = admin_refusal(wrong.clone());
    assert!(err.contains("Authentication failed"), "{err}");
    assert!(err.contains("SCRAM-SHA-512"), "{err}");
    // The audit reader (a consumer client) explains itself the same way.
    let err = read_topic_to_end(&wrong, "any-topic", Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    eprintln!("what a user sees: {err}");
    assert!(err.contains("Authentication failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_an_untrusted_ca_fails_naming_the_verification() {
    let Some(l) = listener() else { return };
    // No CA: the system store, which does not hold the test CA.
    let err = admin_refusal(scram(&l, &l.password, None));
    assert!(err.contains("certificate verify failed"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_without_a_client_certificate_is_refused() {
    let Some(l) = listener() else { return };
    let mut anonymous = mtls(&l, &l.client_key_password);
    anonymous.ssl_certificate_location = None;
    anonymous.ssl_key_location = None;
    anonymous.ssl_key_password = None;
    let err = admin_refusal(anonymous);
    // The broker's TLS alert, as librdkafka reports it: 42 `bad certificate` from the JDKs of
    // today, 116 `certificate required` from those with JDK-8311644.
    assert!(err.contains("ssl://127.0.0.1:929"), "{err}");
    assert!(
        err.contains("bad certificate") || err.contains("certificate required"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_pass_phrase_fails_naming_the_key() {
    let Some(l) = listener() else { return };
    let err = match Admin::new(&ClusterHandle::external(mtls(&l, "not-the-phrase"))) {
        Ok(admin) => admin.broker_count().unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    eprintln!("what a user sees: {err}");
    assert!(err.contains("ssl.key.location failed"), "{err}");
    assert!(err.contains("missing or wrong pass phrase"), "{err}");
}
