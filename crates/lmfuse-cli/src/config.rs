//! Experiment files: `lmfuse compare --config exp.toml` and `lmfuse tune --config exp.json`.
//!
//! The file holds the same settings as the flags, keyed by the flags' names with underscores
//! (`c_grid = [0.1, 1]`, `folds = 5`, `train = "data/train.jsonl"`, `json = true`). Its
//! settings are turned into `--flag=value` arguments and parsed by clap with the command line,
//! so they are checked exactly as flags are. A flag given on the command line wins over the
//! file, the file over environment variables and defaults. Paths are relative to the file's
//! folder. An unknown key, or a value of the wrong shape, is an error naming key and file.

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, ValueHint};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The settings of an experiment file: key and value, in file order for JSON, sorted for TOML.
fn read(path: &Path) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the experiment file {}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let value: serde_json::Value = if is_json {
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display()))?
    } else {
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not valid TOML: {}", path.display(), e.message()))?;
        serde_json::to_value(table)?
    };
    match value {
        serde_json::Value::Object(map) => Ok(map.into_iter().collect()),
        _ => anyhow::bail!("{}: expected an object of settings", path.display()),
    }
}

/// One scalar setting as the text of a flag value.
fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The arguments the experiment file `path` adds to the subcommand `cmd` (a built command)
/// whose command-line matches are `matches`: `--flag=value` for every setting whose flag was
/// not given on the command line.
pub(crate) fn file_args(
    path: &Path,
    cmd: &Command,
    matches: &ArgMatches,
) -> anyhow::Result<Vec<OsString>> {
    let settings = read(path)?;
    let folder = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let file = path.display();
    let keys = || -> String {
        let mut k: Vec<String> = cmd
            .get_arguments()
            .filter(|a| is_setting(a))
            .map(|a| a.get_id().to_string())
            .collect();
        k.sort();
        k.join(", ")
    };
    let mut out = Vec::new();
    for (key, value) in settings {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == key.as_str() && is_setting(a))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{file}: unknown key {key:?} (the keys are the flags of `lmfuse {}` with \
                     underscores: {})",
                    cmd.get_name(),
                    keys()
                )
            })?;
        let long = arg.get_long().expect("settings have a long flag");
        if key == "config" {
            anyhow::bail!("{file}: key \"config\": an experiment file cannot name another");
        }
        if matches.value_source(&key) == Some(ValueSource::CommandLine) {
            continue;
        }
        let bad = |what: &str| anyhow::anyhow!("{file}: key {key:?}: expected {what}");
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value {
                serde_json::Value::Bool(true) => out.push(OsString::from(format!("--{long}"))),
                serde_json::Value::Bool(false) => {}
                _ => return Err(bad("true or false")),
            }
            continue;
        }
        let is_path = arg.get_value_hint() == ValueHint::AnyPath;
        let resolve = |s: String| -> String {
            let p = Path::new(&s);
            // `model` may be a hub id: a folder only when it exists next to the file.
            let relative = p.is_relative() && !s.is_empty() && s != "-";
            if relative && (is_path || (key == "model" && folder.join(p).exists())) {
                folder.join(p).display().to_string()
            } else {
                s
            }
        };
        let text = match &value {
            serde_json::Value::Array(items) => {
                if !matches!(arg.get_action(), ArgAction::Append) {
                    return Err(bad("a single value, not a list"));
                }
                let parts: Vec<String> = items
                    .iter()
                    .map(|v| scalar(v).map(&resolve))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("a list of strings or numbers"))?;
                parts.join(",")
            }
            v => resolve(scalar(v).ok_or_else(|| bad("a string, a number or a list"))?),
        };
        out.push(OsString::from(format!("--{long}={text}")));
    }
    Ok(out)
}

/// Whether `arg` is a flag an experiment file may set (not help, not version).
fn is_setting(arg: &clap::Arg) -> bool {
    arg.get_long().is_some()
        && matches!(
            arg.get_action(),
            ArgAction::Set | ArgAction::Append | ArgAction::SetTrue
        )
}

/// The command line `argv` with the settings of the subcommand's `--config` file inserted
/// after the subcommand's name (none when there is no `--config`). `cli` is the built command, `matches` its matches.
pub(crate) fn expand(
    argv: Vec<OsString>,
    cli: &Command,
    matches: &ArgMatches,
) -> anyhow::Result<(Vec<OsString>, Option<PathBuf>)> {
    let Some((name, sub)) = matches.subcommand() else {
        return Ok((argv, None));
    };
    let Ok(Some(path)) = sub.try_get_one::<PathBuf>("config") else {
        return Ok((argv, None));
    };
    let cmd = cli
        .find_subcommand(name)
        .expect("the matched subcommand exists");
    let extra = file_args(path, cmd, sub)?;
    // Right after the subcommand's name, before the command line's own flags: where a file
    // setting and a flag of the command line override each other (`normalize = true` and
    // `--no-normalize`), the later one, the command line's, wins.
    let at = argv
        .iter()
        .skip(1)
        .position(|a| a.as_os_str() == name)
        .map_or(argv.len(), |i| i + 2);
    let mut argv = argv;
    argv.splice(at..at, extra);
    Ok((argv, Some(path.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> Command {
        let mut c = Command::new("lmfuse").subcommand(
            Command::new("tune")
                .arg(clap::arg!(--train <PATH>).value_parser(clap::value_parser!(PathBuf)))
                .arg(clap::arg!(--out <PATH>).value_parser(clap::value_parser!(PathBuf)))
                .arg(clap::arg!(--model <MODEL>))
                .arg(
                    clap::arg!(--"c-grid" <C>)
                        .id("c_grid")
                        .value_delimiter(',')
                        .action(ArgAction::Append)
                        .value_parser(clap::value_parser!(f64)),
                )
                .arg(
                    clap::arg!(--folds <N>)
                        .value_parser(clap::value_parser!(usize))
                        .default_value("5"),
                )
                .arg(clap::arg!(--json).action(ArgAction::SetTrue))
                .arg(
                    clap::arg!(--normalize)
                        .action(ArgAction::SetTrue)
                        .overrides_with("no_normalize"),
                )
                .arg(
                    clap::arg!(--"no-normalize")
                        .id("no_normalize")
                        .action(ArgAction::SetTrue),
                )
                .arg(clap::arg!(--config <PATH>).value_parser(clap::value_parser!(PathBuf))),
        );
        c.build();
        c
    }

    fn expanded(argv: &[&str]) -> anyhow::Result<Vec<String>> {
        let cli = command();
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let m = cli.clone().try_get_matches_from(&argv)?;
        let (all, _) = expand(argv, &cli, &m)?;
        Ok(all.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn toml_and_json_files_give_the_same_flags_with_paths_from_the_file_folder() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("exp");
        std::fs::create_dir(&sub).unwrap();
        std::fs::create_dir(sub.join("local-model")).unwrap();
        let toml = sub.join("a.toml");
        std::fs::write(
            &toml,
            "train = \"data/train.jsonl\"\nout = \"/abs/out\"\nc_grid = [0.1, 1, 10]\n\
             folds = 3\njson = true\nmodel = \"owner/name\"\n",
        )
        .unwrap();
        let json = sub.join("a.json");
        std::fs::write(
            &json,
            r#"{"train": "data/train.jsonl", "out": "/abs/out", "c_grid": [0.1, 1, 10],
                "folds": 3, "json": true, "model": "owner/name"}"#,
        )
        .unwrap();
        let d = sub.display();
        let mut want = vec![
            format!("--c-grid=0.1,1,10"),
            "--folds=3".into(),
            "--json".into(),
            "--model=owner/name".into(),
            "--out=/abs/out".into(),
            format!("--train={d}/data/train.jsonl"),
        ];
        for f in [&toml, &json] {
            let got = expanded(&["lmfuse", "tune", "--config", f.to_str().unwrap()]).unwrap();
            assert_eq!(&got[..2], ["lmfuse", "tune"]);
            assert_eq!(&got[8..], ["--config", f.to_str().unwrap()]);
            let mut tail = got[2..8].to_vec();
            tail.sort();
            want.sort();
            assert_eq!(tail, want, "{}", f.display());
        }
        // A model folder next to the file is resolved; a hub id is left alone.
        std::fs::write(&toml, "model = \"local-model\"\n").unwrap();
        let got = expanded(&["lmfuse", "tune", "--config", toml.to_str().unwrap()]).unwrap();
        assert_eq!(got[2], format!("--model={d}/local-model"));
    }

    #[test]
    fn the_command_line_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("e.toml");
        std::fs::write(&f, "folds = 3\njson = true\nc_grid = [1, 2]\n").unwrap();
        let got = expanded(&[
            "lmfuse",
            "tune",
            "--folds",
            "7",
            "--config",
            f.to_str().unwrap(),
            "--c-grid",
            "5",
        ])
        .unwrap();
        assert_eq!(got[2..3], ["--json"]);
        // And clap then sees every setting once.
        let m = command().try_get_matches_from(&got).unwrap();
        let t = m.subcommand_matches("tune").unwrap();
        assert_eq!(t.get_one::<usize>("folds"), Some(&7));
        assert!(t.get_flag("json"));
        assert_eq!(
            t.get_many::<f64>("c_grid")
                .unwrap()
                .copied()
                .collect::<Vec<_>>(),
            [5.0]
        );
    }

    #[test]
    fn a_command_line_flag_beats_the_file_setting_it_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("e.toml");
        std::fs::write(&f, "normalize = true\n").unwrap();
        let got = expanded(&[
            "lmfuse",
            "tune",
            "--no-normalize",
            "--config",
            f.to_str().unwrap(),
        ])
        .unwrap();
        let m = command().try_get_matches_from(&got).unwrap();
        let t = m.subcommand_matches("tune").unwrap();
        assert!(
            t.get_flag("no_normalize") && !t.get_flag("normalize"),
            "{got:?}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("u.toml", "fold = 3\n", "unknown key \"fold\""),
            (
                "u.json",
                r#"{"folds": 3, "trials": 5}"#,
                "unknown key \"trials\"",
            ),
            (
                "b.toml",
                "json = \"yes\"\n",
                "key \"json\": expected true or false",
            ),
            (
                "l.toml",
                "folds = [1, 2]\n",
                "key \"folds\": expected a single value",
            ),
            ("n.toml", "[train]\nx = 1\n", "key \"train\""),
            ("c.toml", "config = \"other.toml\"\n", "key \"config\""),
            ("s.toml", "folds = \n", "not valid TOML"),
        ];
        for (name, text, needle) in cases {
            let f = dir.path().join(name);
            std::fs::write(&f, text).unwrap();
            let e = expanded(&["lmfuse", "tune", "--config", f.to_str().unwrap()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{name}: {e}");
            assert!(e.contains(f.to_str().unwrap()), "{name}: {e}");
        }
        // A missing file is an error naming it.
        let f = dir.path().join("missing.toml");
        let e = expanded(&["lmfuse", "tune", "--config", f.to_str().unwrap()]).unwrap_err();
        assert!(format!("{e:#}").contains("missing.toml"), "{e:#}");
    }
}
