//! fleetstream's MSK IAM tokens against AWS's own signer (aws-msk-iam-sasl-signer-python, run by
//! `scripts/msk-iam-signer`). There is no MSK here to accept or refuse a token, so the check is
//! that both signers, given the same credentials, region and second, sign the same request: the
//! same signed parameters and the same signature. Only `User-Agent` (unsigned) differs.
//!
//! Needs `FLEETSTREAM_TEST_MSK_SIGNER=scripts/msk-iam-signer` (from the workspace root); CI sets
//! it and `FLEETSTREAM_TEST_REQUIRE_MSK_SIGNER`, so a lost setting fails instead of skipping.

use base64::Engine as _;
use fleetstream_kafka::msk_iam::{sign_token, TOKEN_LIFETIME};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

fn signer() -> Option<PathBuf> {
    match std::env::var_os("FLEETSTREAM_TEST_MSK_SIGNER") {
        Some(p) => {
            let p = PathBuf::from(p);
            // Relative to the workspace root, where CI runs.
            Some(if p.is_absolute() {
                p
            } else {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(p)
            })
        }
        None => {
            assert!(
                std::env::var_os("FLEETSTREAM_TEST_REQUIRE_MSK_SIGNER").is_none(),
                "FLEETSTREAM_TEST_REQUIRE_MSK_SIGNER is set but FLEETSTREAM_TEST_MSK_SIGNER is not"
            );
            eprintln!("skipped: FLEETSTREAM_TEST_MSK_SIGNER is unset (scripts/msk-iam-signer)");
            None
        }
    }
}

fn decode(token: &str) -> String {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .unwrap_or_else(|e| panic!("{token:?} is not base64url without padding: {e}"));
    String::from_utf8(bytes).expect("a URL")
}

/// The URL before the query, and the query's pairs sorted, `User-Agent` left out.
fn signed_parts(url: &str) -> (String, Vec<(String, String)>) {
    let (base, query) = url.split_once('?').expect("a query");
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("k=v");
            (k.to_owned(), v.to_owned())
        })
        .filter(|(k, _)| k != "User-Agent")
        .collect();
    pairs.sort();
    (base.to_owned(), pairs)
}

/// `X-Amz-Date` (`20261130T080000Z`) as seconds since the epoch.
fn signing_secs(pairs: &[(String, String)]) -> u64 {
    let d = &pairs
        .iter()
        .find(|(k, _)| k == "X-Amz-Date")
        .expect("X-Amz-Date")
        .1;
    let n = |r: std::ops::Range<usize>| d[r].parse::<i64>().expect("digits");
    let (y, m, day) = (n(0..4), n(4..6), n(6..8));
    let (hh, mm, ss) = (n(9..11), n(11..13), n(13..15));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hh * 3600 + mm * 60 + ss) as u64
}

fn check(script: &PathBuf, region: &str, key: &str, secret: &str, session: Option<&str>) {
    let mut cmd = Command::new(script);
    cmd.args(["token", region, key, secret]);
    if let Some(s) = session {
        cmd.arg(s);
    }
    let out = cmd.output().expect("run scripts/msk-iam-signer");
    assert!(
        out.status.success(),
        "scripts/msk-iam-signer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let mut fields = stdout.split_whitespace();
    let (theirs, their_expiry) = (
        fields.next().expect("a token"),
        fields
            .next()
            .expect("an expiry")
            .parse::<i64>()
            .expect("ms"),
    );
    let their_url = decode(theirs);
    let (their_base, their_pairs) = signed_parts(&their_url);
    let at = UNIX_EPOCH + Duration::from_secs(signing_secs(&their_pairs));

    let credentials = aws_credential_types::Credentials::new(
        key,
        secret,
        session.map(str::to_owned),
        None,
        "test",
    );
    let ours = sign_token(region, &credentials, at).expect("sign");
    let (our_base, our_pairs) = signed_parts(&decode(&ours.value));
    assert_eq!(our_base, their_base);
    assert_eq!(
        our_pairs, their_pairs,
        "the signed parameters (and so the signature) differ from AWS's signer; theirs: {their_url}"
    );
    assert_eq!(ours.expires_ms, their_expiry);
    assert_eq!(
        their_expiry,
        (signing_secs(&their_pairs) + TOKEN_LIFETIME.as_secs()) as i64 * 1000
    );
}

#[test]
fn tokens_match_aws_signer_with_long_term_keys() {
    let Some(script) = signer() else { return };
    check(
        &script,
        "us-east-1",
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        None,
    );
}

#[test]
fn tokens_match_aws_signer_with_a_session_token_in_another_region() {
    let Some(script) = signer() else { return };
    check(
        &script,
        "sa-east-1",
        "ASIAEXAMPLE",
        "secret/with+symbols=",
        Some("FwoGZXIvYXdzEJr//////////wEaDKey+session/token=="),
    );
}
