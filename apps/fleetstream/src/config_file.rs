//! Configuration files for subcommands, layered under flags and the environment:
//! **flags > `FLEETSTREAM_*` environment > `--config` file > defaults**.
//!
//! Generic over any clap `Args` struct: a file key is a flag's long name (`rate`,
//! `key-strategy` or `key_strategy`). Keys are applied only to arguments whose
//! [`clap::parser::ValueSource`] is not the command line or the environment, by appending them
//! to the subcommand's own arguments and parsing again, so the file goes through exactly the
//! same parsers and validators as the flags. An unknown key is an error that names it.
//!
//! ```toml
//! # produce.toml
//! rate = 13000
//! duration = "60s"
//! key-strategy = "composite"
//! embedded = true
//! ```

use crate::ConfigError;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, Command, FromArgMatches};
use std::ffi::OsString;
use std::path::Path;

/// The subcommand's arguments with a config file applied under flags and environment.
///
/// `name` is the subcommand (`produce`, `worker`); `argv` is the whole process command line;
/// `config_id` is the id of the `--config` argument. When `argv` does not contain the
/// subcommand (a library caller), `args` is returned unchanged.
pub fn layered<T: Args + FromArgMatches>(
    name: &str,
    argv: &[OsString],
    config_id: &str,
    args: T,
) -> anyhow::Result<T> {
    let Some(at) = argv.iter().position(|a| a == name) else {
        return Ok(args);
    };
    let own: Vec<OsString> = argv[at + 1..].to_vec();
    let cmd = command::<T>();
    let first = parse(&cmd, name, &own)?;
    let Some(path) = first.get_raw(config_id).and_then(|mut v| v.next()) else {
        return Ok(args);
    };
    let path = Path::new(path).to_path_buf();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError(format!("--config {}: cannot read it: {e}", path.display())))?;
    let extra = file_args(&cmd, &first, &text, &path, config_id)?;
    let mut all = own;
    all.extend(extra);
    let matches = parse(&cmd, name, &all)?;
    T::from_arg_matches(&matches).map_err(|e| ConfigError(e.to_string()).into())
}

/// The subcommand as clap sees it, plus the global flags `fleetstream` accepts anywhere.
fn command<T: Args>() -> Command {
    let cmd = T::augment_args(Command::new("fleetstream").no_binary_name(true)).arg(
        clap::Arg::new("log_json")
            .long("log-json")
            .action(ArgAction::SetTrue)
            .hide(true),
    );
    // As `main` parses: a negative number is a value, refused by the flag's own check.
    crate::cli::negative_numbers_as_values(cmd)
}

fn parse(cmd: &Command, name: &str, args: &[OsString]) -> anyhow::Result<ArgMatches> {
    cmd.clone()
        .try_get_matches_from(args)
        .map_err(|e| ConfigError(format!("{name}: {e}")).into())
}

/// Command-line arguments for every file key whose argument was not set by a flag or the
/// environment.
fn file_args(
    cmd: &Command,
    matches: &ArgMatches,
    text: &str,
    path: &Path,
    config_id: &str,
) -> anyhow::Result<Vec<OsString>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError(format!("--config {}: not valid TOML: {e}", path.display()))
    })?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let wanted = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(wanted.as_str()) && a.get_id() != config_id && !a.is_hide_set()
            })
            .ok_or_else(|| {
                let known: Vec<&str> = cmd
                    .get_arguments()
                    .filter(|a| a.get_id() != config_id && !a.is_hide_set())
                    .filter_map(|a| a.get_long())
                    .collect();
                ConfigError(format!(
                    "--config {}: unknown key `{key}` (known keys: {})",
                    path.display(),
                    known.join(", ")
                ))
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = format!("--{wanted}");
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    out.push(OsString::from(long));
                }
            }
            toml::Value::String(s) if takes_value => out.push(format!("{long}={s}").into()),
            toml::Value::Integer(i) if takes_value => out.push(format!("{long}={i}").into()),
            toml::Value::Float(f) if takes_value => out.push(format!("{long}={f}").into()),
            toml::Value::Boolean(b) if takes_value => out.push(format!("{long}={b}").into()),
            other => {
                return Err(ConfigError(format!(
                    "--config {}: key `{key}` has the wrong type ({}): {}",
                    path.display(),
                    other.type_str(),
                    if takes_value {
                        "expected a string or a number"
                    } else {
                        "expected true or false"
                    }
                ))
                .into())
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, clap::Args)]
    struct Demo {
        #[arg(long, default_value_t = 1)]
        rate: u32,
        #[arg(long, env = "FS_CONFIG_FILE_TEST_NAME", default_value = "d")]
        name: String,
        #[arg(long)]
        fast: bool,
        #[arg(long)]
        config: Option<String>,
    }

    fn run(cli: &[&str], file: &str) -> anyhow::Result<Demo> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = ["fleetstream", "demo"].iter().map(Into::into).collect();
        argv.extend(cli.iter().map(Into::into));
        argv.push(format!("--config={}", path.display()).into());
        let first = command::<Demo>().try_get_matches_from(&argv[2..]).unwrap();
        layered(
            "demo",
            &argv,
            "config",
            Demo::from_arg_matches(&first).unwrap(),
        )
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let d = run(&["--rate", "7"], "rate = 9\nname = \"file\"\nfast = true").unwrap();
        assert_eq!(d.rate, 7);
        assert_eq!(d.name, "file");
        assert!(d.fast);
        let d = run(&[], "rate = 9").unwrap();
        assert_eq!(d.rate, 9);
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let e = run(&[], "rte = 9").unwrap_err().to_string();
        assert!(e.contains("unknown key `rte`"), "{e}");
        let e = run(&[], "fast = 3").unwrap_err().to_string();
        assert!(e.contains("`fast`"), "{e}");
        let e = run(&[], "rate = \"many\"").unwrap_err().to_string();
        assert!(e.contains("--rate"), "{e}");
    }
}
