//! Where the binary looks for models: `--models-dir`, the environment, the
//! config file, `./models`, else the platform's data directory; and errors
//! that say where it looked.

use std::path::{Path, PathBuf};
use std::process::Command;

use discord_indexer::embed::tiny::{self, TinySpec};

/// A home of its own (nothing of the real one is read or written) and a
/// working directory without `models/` or a config file, as an installed
/// binary run from anywhere would have.
struct Place {
    _dir: tempfile::TempDir,
    home: PathBuf,
    xdg: PathBuf,
    work: PathBuf,
}

impl Place {
    fn new() -> Place {
        let dir = tempfile::tempdir().unwrap();
        let (home, xdg, work) = (dir.path().join("home"), dir.path().join("xdg"), dir.path().join("work"));
        for d in [&home, &xdg, &work] {
            std::fs::create_dir_all(d).unwrap();
        }
        Place { _dir: dir, home, xdg, work }
    }

    /// The default an installed binary uses here: `$XDG_DATA_HOME/discord-indexer/models`.
    fn data_models(&self) -> PathBuf {
        self.xdg.join("discord-indexer/models")
    }

    fn bin(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_discord-indexer"));
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("DISCORD_") || key.starts_with("QDRANT_") || key == "RUST_LOG" {
                c.env_remove(&*key);
            }
        }
        c.current_dir(&self.work).env("HOME", &self.home).env("XDG_DATA_HOME", &self.xdg).args(args);
        c
    }
}

fn run(mut c: Command) -> (Option<i32>, String, String) {
    let out = c.output().expect("binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn model(dir: &Path, name: &str) {
    tiny::write(&dir.join(name), &TinySpec::default()).unwrap();
}

/// `models --json`: each model's name and directory.
fn listed(c: Command) -> (Vec<(String, PathBuf)>, String) {
    let (code, out, err) = run(c);
    assert_eq!(code, Some(0), "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let list = list.as_array().unwrap().iter();
    let list = list.map(|m| (m["name"].as_str().unwrap().to_owned(), PathBuf::from(m["dir"].as_str().unwrap())));
    (list.collect(), err)
}

#[test]
fn an_installed_binary_finds_models_in_the_data_directory_from_anywhere() {
    let p = Place::new();
    model(&p.data_models(), "tiny");
    let (models, err) = listed(p.bin(&["models", "--json"]));
    assert_eq!(models, [("tiny".to_owned(), p.data_models().join("tiny"))]);
    assert!(err.contains(&p.data_models().display().to_string()), "says where it looked: {err}");
    assert!(err.contains("the default when ./models does not exist"), "{err}");

    // Without XDG_DATA_HOME: ~/.local/share.
    let home_models = p.home.join(".local/share/discord-indexer/models");
    model(&home_models, "home-tiny");
    let mut c = p.bin(&["models", "--json"]);
    c.env_remove("XDG_DATA_HOME");
    assert_eq!(listed(c).0, [("home-tiny".to_owned(), home_models.join("home-tiny"))]);

    // A working directory with models/ (a checkout) uses that one.
    model(&p.work.join("models"), "local");
    let (models, err) = listed(p.bin(&["models", "--json"]));
    assert_eq!(models, [("local".to_owned(), PathBuf::from("models/local"))]);
    assert!(err.contains("the default, ./models"), "{err}");
    // The model is found by name for indexing too (the archive is what is missing).
    let (code, _, err) = run(p.bin(&["index", "--guild", "900000000000000001", "--model", "local"]));
    assert_eq!(code, Some(2));
    assert!(!err.contains("no model") && err.contains("archive.db"), "{err}");
}

#[test]
fn the_models_dir_flag_wins_over_the_environment_the_config_file_and_the_defaults() {
    let p = Place::new();
    model(&p.data_models(), "default");
    model(&p.work.join("models"), "local");
    let (flag, env, file) = (p.work.join("flag"), p.work.join("env"), p.work.join("file"));
    for (dir, name) in [(&flag, "from-flag"), (&env, "from-env"), (&file, "from-file")] {
        model(dir, name);
    }
    std::fs::write(p.work.join("discord-indexer.toml"), format!("[index]\nmodels_dir = {:?}\n", file)).unwrap();

    let mut c = p.bin(&["--models-dir", flag.to_str().unwrap(), "models", "--json"]);
    c.env("DISCORD_INDEXER_MODELS_DIR", &env);
    let (models, err) = listed(c);
    assert_eq!(models, [("from-flag".to_owned(), flag.join("from-flag"))]);
    assert!(err.contains("set by --models-dir"), "{err}");
    // The flag is global: after the subcommand too.
    let mut c = p.bin(&["models", "--json", "--models-dir", flag.to_str().unwrap()]);
    c.env("DISCORD_INDEXER_MODELS_DIR", &env);
    assert_eq!(listed(c).0, [("from-flag".to_owned(), flag.join("from-flag"))]);

    let mut c = p.bin(&["models", "--json"]);
    c.env("DISCORD_INDEXER_MODELS_DIR", &env);
    assert_eq!(listed(c).0, [("from-env".to_owned(), env.join("from-env"))]);
    assert_eq!(listed(p.bin(&["models", "--json"])).0, [("from-file".to_owned(), file.join("from-file"))]);
}

#[test]
fn a_missing_model_names_where_it_was_looked_for_and_how_to_choose_and_fill_it() {
    let p = Place::new();
    let data_models = p.data_models().display().to_string();
    let (code, _, err) = run(p.bin(&["index", "--guild", "900000000000000001", "--model", "all-MiniLM-L6-v2"]));
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.matches("no model").count(), 1, "the cause is said once: {err}");
    for part in [
        "no model \"all-MiniLM-L6-v2\"",
        &format!("in {data_models} (installed: none; {data_models} does not exist)"),
        "./models if it exists (it does not here)",
        "--models-dir DIR",
        "DISCORD_INDEXER_MODELS_DIR",
        "[index] models_dir",
        &format!("scripts/fetch-model.sh NAME {data_models}"),
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }

    // Another directory, named by the flag: that one is named, with what it holds.
    let other = p.work.join("my models");
    model(&other, "tiny");
    let mut c = p.bin(&["index", "--guild", "900000000000000001", "--model", "missing"]);
    c.arg("--models-dir").arg(&other);
    let (code, _, err) = run(c);
    assert_eq!(code, Some(2), "{err}");
    let other = other.display().to_string();
    for part in
        [&format!("no model \"missing\" in {other} (installed: tiny)"), &format!("fetch-model.sh NAME '{other}'")]
    {
        assert!(err.contains(part.as_str()), "{part:?} in {err}");
    }

    // `models` with none says where it looked, as the errors do.
    let (code, out, _) = run(p.bin(&["models"]));
    assert_eq!(code, Some(0));
    for part in [
        format!("no models in {data_models}, which does not exist (the default when ./models does not exist)"),
        "--models-dir DIR".to_owned(),
        format!("scripts/fetch-model.sh all-MiniLM-L6-v2 {data_models}"),
    ] {
        assert!(out.contains(&part), "{part:?} in {out}");
    }
}
