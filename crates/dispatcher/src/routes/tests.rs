use super::*;

const STATE: &str = "/var/lib/fleetstream";

fn table(text: &str) -> Result<RoutingTable, RoutesError> {
    RoutingTable::from_toml_str(text, STATE)
}

fn err(text: &str) -> String {
    table(text).expect_err("must be rejected").to_string()
}

#[test]
fn checked_in_routes_file_is_valid() {
    let t =
        table(include_str!("../../../../config/routes.toml")).expect("config/routes.toml is valid");
    assert_eq!(
        t.route(Code(300)),
        Route::Targets(&["alerts".to_owned(), "archive".to_owned()])
    );
    assert_eq!(t.route(Code(999)), Route::Targets(&["archive".to_owned()]));
    let archive = t
        .targets()
        .find(|(n, _)| *n == "archive")
        .map(|(_, k)| k.clone());
    assert_eq!(
        archive,
        Some(TargetKind::Jsonl(
            PathBuf::from(STATE).join("dispatch/archive.jsonl")
        ))
    );
}

#[test]
fn demo_routes_file_is_valid() {
    let t = table(include_str!("../../../../config/routes-demo.toml"))
        .expect("config/routes-demo.toml is valid");
    assert_eq!(t.route(Code(300)), Route::Targets(&["alerts".to_owned()]));
}

#[test]
fn unknown_code_policy_applies_without_default() {
    let base = "[routes]\n\"300\" = [\"m\"]\n[targets.m]\nkind = \"memory\"\n";
    assert_eq!(table(base).unwrap().route(Code(1)), Route::DeadLetter);
    let skip = format!("unknown_code = \"skip\"\n{base}");
    assert_eq!(table(&skip).unwrap().route(Code(1)), Route::Skip);
    assert_eq!(
        table(&skip).unwrap().route(Code(300)),
        Route::Targets(&["m".to_owned()])
    );
}

#[test]
fn default_for_state_dir_sends_everything_to_one_file() {
    let t = RoutingTable::default_for_state_dir("/tmp/s");
    assert_eq!(
        t.route(Code(12345)),
        Route::Targets(&[DEFAULT_TARGET.to_owned()])
    );
    let kinds: Vec<_> = t.targets().map(|(_, k)| k.clone()).collect();
    assert_eq!(
        kinds,
        vec![TargetKind::Jsonl(PathBuf::from("/tmp/s/dispatched.jsonl"))]
    );
}

#[test]
fn errors_name_the_bad_key() {
    assert!(err("defualt = []").contains("defualt"));
    assert!(err("[targets.a]\nkind = \"memory\"\npath = \"x\"").contains("path"));
    assert!(err("[targets.a]\nkind = \"jsonl\"\npath = \"x\"\nsize = 1").contains("size"));
    assert!(err("[targets.a]\nkind = \"sqs\"").contains("sqs"));
    assert!(err("unknown_code = \"drop\"").contains("drop"));
    let e = err("[routes]\n\"300\" = [\"nope\"]");
    assert!(e.contains("routes.\"300\"[0]") && e.contains("nope"), "{e}");
    assert!(err("default = [\"nope\"]").contains("default[0]"));
    assert!(err("[routes]\n\"3x\" = []").contains("routes.\"3x\""));
    assert!(err("[routes]\n\"300\" = []\n").contains("empty target list"));
    let twice = "[routes]\n\"300\" = [\"m\"]\n\"0300\" = [\"m\"]\n[targets.m]\nkind = \"memory\"";
    assert!(err(twice).contains("routed twice"));
    let dup = "default = [\"m\", \"m\"]\n[targets.m]\nkind = \"memory\"";
    assert!(err(dup).contains("default[1]"));
}

#[test]
fn http_targets_are_validated() {
    let http = "default = [\"api\"]\n[targets.api]\nkind = \"http\"\nurl = \"http://127.0.0.1:1/x\"\ntimeout = \"2s\"\nmax_attempts = 5\nconcurrency = 2\ninitial_backoff = \"10ms\"";
    let table = RoutingTable::from_toml_str(http, "/s").unwrap();
    let (_, kind) = table.targets().next().unwrap();
    let TargetKind::Http(c) = kind else {
        panic!("{kind:?}")
    };
    assert_eq!(c.url, "http://127.0.0.1:1/x");
    assert_eq!(c.timeout, std::time::Duration::from_secs(2));
    assert_eq!((c.max_attempts, c.concurrency), (5, 2));
    assert_eq!(c.initial_backoff, std::time::Duration::from_millis(10));
    // Defaults.
    let c: RoutesConfig = toml::from_str("[targets.api]\nkind = \"http\"\nurl = \"u\"").unwrap();
    assert_eq!(
        c.targets["api"],
        TargetSpec::Http {
            url: "u".into(),
            timeout: std::time::Duration::from_secs(5),
            max_attempts: 3,
            concurrency: 4,
            initial_backoff: std::time::Duration::from_millis(100),
        }
    );
    let base = "[targets.api]\nkind = \"http\"\n";
    for (extra, key, words) in [
        ("url = \"u\"", "targets.api.url", "http://"),
        (
            "url = \"https://x/y\"",
            "targets.api.url",
            "https is not supported",
        ),
        (
            "url = \"http://h/\"\nmax_attempts = 0",
            "targets.api.max_attempts",
            "at least 1",
        ),
        (
            "url = \"http://h/\"\nconcurrency = 0",
            "targets.api.concurrency",
            "at least 1",
        ),
        (
            "url = \"http://h/\"\ntimeout = \"0s\"",
            "targets.api.timeout",
            "more than 0",
        ),
    ] {
        let e = err(&format!("{base}{extra}"));
        assert!(e.contains(key) && e.contains(words), "{extra}: {e}");
    }
}

#[test]
fn kafka_target_parses_and_validates_its_topic() {
    let ok =
        table("default = [\"f\"]\n[targets.f]\nkind = \"kafka\"\ntopic = \"fleet.fan-out_1\"\n")
            .unwrap();
    let kinds: Vec<_> = ok.targets().map(|(_, k)| k.clone()).collect();
    assert_eq!(
        kinds,
        vec![TargetKind::Kafka {
            topic: "fleet.fan-out_1".into()
        }]
    );
    assert_eq!(kinds[0].kind_name(), "kafka");
    let e = err("[targets.f]\nkind = \"kafka\"\ntopic = \"\"\n");
    assert!(e.contains("targets.f.topic") && e.contains("empty"), "{e}");
    let e = err("[targets.f]\nkind = \"kafka\"\ntopic = \"a b\"\n");
    assert!(e.contains("targets.f.topic"), "{e}");
    let e = err(&format!(
        "[targets.f]\nkind = \"kafka\"\ntopic = \"{}\"\n",
        "t".repeat(250)
    ));
    assert!(e.contains("249"), "{e}");
    let e = err("[targets.f]\nkind = \"kafka\"\n");
    assert!(e.contains("topic"), "missing topic: {e}");
}
