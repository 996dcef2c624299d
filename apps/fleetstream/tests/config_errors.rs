//! Issue 12, defect 5: configuration errors are refused the same way by every command: exit 2
//! (README: "2 on bad flags or a bad topology"), one message naming the flag and what is wrong,
//! before any cluster is contacted.

use std::path::Path;
use std::process::{Command, Output};

/// The binary with a clean `FLEETSTREAM_*` environment (so the caller's settings cannot leak).
fn fleetstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FLEETSTREAM_") {
            c.env_remove(k);
        }
    }
    c
}

/// The `error: ...` line the binary printed.
fn error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {err}"))
        .to_string()
}

/// The three commands that load a routing file, each with `routes` and a state dir in `dir`.
fn with_routes(routes: &Path, dir: &Path) -> Vec<(&'static str, Command)> {
    let state = dir.join("state");
    let mut serve = fleetstream();
    serve
        .args([
            "dispatch",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&state)
        .arg("--routes")
        .arg(routes);
    let mut worker = fleetstream();
    worker
        .args(["worker", "--state-dir"])
        .arg(&state)
        .arg("--routes")
        .arg(routes);
    let mut demo = fleetstream();
    demo.args(["demo", "--quiet", "--duration", "1s", "--routes"])
        .arg(routes);
    vec![
        ("dispatch serve", serve),
        ("worker", worker),
        ("demo", demo),
    ]
}

#[test]
fn a_bad_routes_file_exits_2_with_the_same_message_from_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("routes.toml");
    std::fs::write(&bad, "[routes]\n\"300\" = [\"nowhere\"]\n").unwrap();
    let missing = dir.path().join("missing-routes.toml");
    for routes in [&bad, &missing] {
        let mut lines = Vec::new();
        for (name, mut cmd) in with_routes(routes, dir.path()) {
            let out = cmd.output().unwrap();
            let line = error_line(&out);
            assert_eq!(out.status.code(), Some(2), "{name}: {line}");
            assert!(line.contains("--routes"), "{name}: {line}");
            lines.push((name, line));
        }
        for (name, line) in &lines[1..] {
            assert_eq!(line, &lines[0].1, "{name} and {} differ", lines[0].0);
        }
    }
}

#[test]
fn a_missing_topology_file_exits_2_naming_the_flag() {
    let commands: [&[&str]; 4] = [
        &["demo", "--quiet", "--duration", "1s"],
        &["produce", "--embedded", "--quiet", "--count", "1"],
        &["worker"],
        &["topics", "apply"],
    ];
    for args in commands {
        let out = fleetstream()
            .args(args)
            .args(["--topology", "/nonexistent.toml"])
            .output()
            .unwrap();
        let line = error_line(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {line}");
        assert!(
            line.contains("--topology") && line.contains("/nonexistent.toml"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn negative_rates_are_refused_naming_the_flag() {
    let commands: [&[&str]; 3] = [
        &["demo", "--quiet", "--rate", "-1"],
        &[
            "produce",
            "--embedded",
            "--quiet",
            "--count",
            "1",
            "--rate",
            "-1",
        ],
        &[
            "produce",
            "--embedded",
            "--quiet",
            "--count",
            "1",
            "--poison-rate",
            "-0.5",
        ],
    ];
    for args in commands {
        let out = fleetstream().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let flag = args[args.len() - 2];
        assert!(
            err.contains(&format!("{flag} (FLEETSTREAM_")),
            "{args:?} should name {flag} and what it accepts: {err}"
        );
    }
}

/// Integer flags and durations too: `--count -1` was "unexpected argument '-1'", and a zero
/// drain timeout was accepted (the demo then reported every record lost).
#[test]
fn negative_counts_and_zero_drain_timeouts_are_refused_naming_the_flag() {
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "dispatch",
                "serve",
                "--state-dir",
                "/nonexistent/x",
                "--retention",
                "0s",
            ],
            "--retention (FLEETSTREAM_DISPATCH_RETENTION)",
        ),
        (
            &["produce", "--embedded", "--quiet", "--count", "-1"],
            "'--count <COUNT>'",
        ),
        (
            &["demo", "--quiet", "--workers", "-2"],
            "'--workers <WORKERS>'",
        ),
        (
            &[
                "produce",
                "--embedded",
                "--quiet",
                "--count",
                "1",
                "--rate-bytes",
                "-5",
            ],
            "--rate-bytes (FLEETSTREAM_RATE_BYTES)",
        ),
        (
            &["demo", "--quiet", "--drain-timeout", "0s"],
            "--drain-timeout (FLEETSTREAM_DRAIN_TIMEOUT)",
        ),
    ];
    for (args, named) in cases {
        let out = fleetstream().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?} should name {named}: {err}");
    }
    // A negative number from a config file goes through the same check.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("p.toml");
    std::fs::write(&config, "rate = -1\ncount = 1\n").unwrap();
    let out = fleetstream()
        .args(["produce", "--embedded", "--quiet", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--rate (FLEETSTREAM_RATE)"), "{err}");
}

/// The producer's client settings are checked by the library (`ProducerSettings::validate`)
/// and named by their flag.
#[test]
fn producer_settings_out_of_range_are_named_by_their_flag() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--delivery-timeout", "0s"],
            "--delivery-timeout (FLEETSTREAM_DELIVERY_TIMEOUT)",
        ),
        (
            &["--batch-bytes", "0"],
            "--batch-bytes (FLEETSTREAM_BATCH_BYTES)",
        ),
        (&["--linger", "6m"], "--linger (FLEETSTREAM_LINGER)"),
    ];
    for (flags, named) in cases {
        let out = fleetstream()
            .args(["produce", "--embedded", "--quiet", "--count", "1"])
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(named), "{flags:?} should name {named}: {err}");
    }
}
