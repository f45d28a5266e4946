//! `wick serve`'s model flags: `--model` (repeatable, `name=path-or-id` or a bare spec),
//! `--default-model`, `--max-loaded-models`, `--max-model-memory`, `--model-load-timeout`, and
//! their resolution into the registry's [`ModelSpec`]s and [`RegistryLimits`]. Parsed on the
//! main thread; nothing here loads anything.

use std::path::Path;
use std::time::Duration;

use clap::{ArgAction, Args};

use super::{parse_bytes, DEFAULT_MODEL};
use crate::api::registry::{ModelSpec, RegistryLimits, UNLOAD_GRACE};

/// The models `wick serve` serves, on which device, and when they load and unload.
#[derive(Debug, Clone, Args)]
pub struct ServeModelArgs {
    /// A model to serve: `name=SPEC`, or a bare SPEC (a .gguf file, a Hugging Face model
    /// directory, or a hub id `org/name[:file]`) named by --served-model-name when it is the
    /// first, else by itself. Repeat to serve several; the first is the default.
    #[arg(long, short, env = "WICK_MODEL", default_value = DEFAULT_MODEL, action = ArgAction::Append)]
    pub model: Vec<String>,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, env = "WICK_DEVICE", default_value = "cpu")]
    pub device: String,
    /// The model (a --model name) requests that omit `model` get; default: the first --model.
    /// It loads at start; the others load on their first request.
    #[arg(long, env = "WICK_DEFAULT_MODEL", value_name = "NAME")]
    pub default_model: Option<String>,
    /// Most models loaded at once: loading one more first unloads the least recently used,
    /// once its running requests have finished. Default: no limit.
    #[arg(long, env = "WICK_MAX_LOADED_MODELS", value_name = "N")]
    pub max_loaded_models: Option<usize>,
    /// Most memory the loaded models may take together (weights, as their file sizes, plus
    /// each one's KV cache), e.g. `8GiB`: loading one more first unloads the least recently
    /// used until it fits. Default: no limit.
    #[arg(long, env = "WICK_MAX_MODEL_MEMORY", value_name = "BYTES", value_parser = parse_bytes)]
    pub max_model_memory: Option<u64>,
    /// Seconds a request waits for its model to load before a 503 (with Retry-After).
    #[arg(
        long,
        env = "WICK_MODEL_LOAD_TIMEOUT",
        value_name = "SECS",
        default_value_t = 120
    )]
    pub model_load_timeout: u64,
}

/// What `--model` values, `--served-model-name` and `--default-model` resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedModels {
    pub models: Vec<ModelSpec>,
    /// The index of the default model in `models`.
    pub default: usize,
}

impl ServeModelArgs {
    /// The models and the default one, checked: names unique, `--served-model-name` only for
    /// a bare first model, `--default-model` one of the names. One-line errors.
    pub fn resolve(&self, served_model_name: Option<&str>) -> Result<ServedModels, String> {
        let mut models: Vec<ModelSpec> = Vec::with_capacity(self.model.len());
        for (i, value) in self.model.iter().enumerate() {
            let spec = match (split_named(value), i, served_model_name) {
                (Some(_), 0, Some(n)) => {
                    return Err(format!(
                        "--served-model-name {n} and --model {value}: the first model is named \
                         twice; give one"
                    ))
                }
                (Some(spec), _, _) => spec,
                (None, 0, Some(n)) => ModelSpec {
                    name: n.to_string(),
                    source: value.clone(),
                },
                (None, _, _) => ModelSpec {
                    name: value.clone(),
                    source: value.clone(),
                },
            };
            if models.iter().any(|m| m.name == spec.name) {
                return Err(format!(
                    "--model: the name `{}` is given twice (use name=SPEC to tell them apart)",
                    spec.name
                ));
            }
            models.push(spec);
        }
        if models.is_empty() {
            return Err("--model: at least one model is needed".into());
        }
        let default = match &self.default_model {
            None => 0,
            Some(d) => models.iter().position(|m| &m.name == d).ok_or_else(|| {
                let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                format!(
                    "--default-model {d} is not a --model name (served: {})",
                    names.join(", ")
                )
            })?,
        };
        Ok(ServedModels { models, default })
    }

    /// The loading and unloading limits, checked.
    pub fn limits(&self) -> Result<RegistryLimits, String> {
        if self.max_loaded_models == Some(0) {
            return Err("--max-loaded-models must be at least 1, got 0".into());
        }
        if self.model_load_timeout == 0 {
            return Err("--model-load-timeout must be at least 1 second, got 0".into());
        }
        Ok(RegistryLimits {
            max_loaded: self.max_loaded_models,
            max_memory: self.max_model_memory,
            load_timeout: Duration::from_secs(self.model_load_timeout),
            unload_grace: UNLOAD_GRACE,
        })
    }
}

/// `name=SPEC` as a named spec; `None` for a bare spec: one that exists as a path (a file may
/// have `=` in its name), or whose part before the first `=` is not a plain name.
fn split_named(value: &str) -> Option<ModelSpec> {
    if Path::new(value).exists() {
        return None;
    }
    let (name, source) = value.split_once('=')?;
    let plain = !name.is_empty()
        && !source.is_empty()
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_whitespace);
    plain.then(|| ModelSpec {
        name: name.to_string(),
        source: source.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        m: ServeModelArgs,
    }

    fn parse(args: &[&str]) -> ServeModelArgs {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .expect("flags parse")
            .m
    }

    fn spec(name: &str, source: &str) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            source: source.into(),
        }
    }

    #[test]
    fn one_bare_model_keeps_todays_names() {
        let m = parse(&[]).resolve(None).expect("default");
        assert_eq!(m.models, [spec(DEFAULT_MODEL, DEFAULT_MODEL)]);
        let m = parse(&["-m", "a.gguf"])
            .resolve(Some("smol"))
            .expect("named");
        assert_eq!((m.models, m.default), (vec![spec("smol", "a.gguf")], 0));
        let m = parse(&["--model", "org/repo:f.gguf"])
            .resolve(None)
            .expect("hub");
        assert_eq!(m.models, [spec("org/repo:f.gguf", "org/repo:f.gguf")]);
    }

    #[test]
    fn repeated_models_are_named_and_the_first_is_the_default() {
        let a = parse(&[
            "--model",
            "qwen=q.gguf",
            "--model",
            "org/x",
            "-m",
            "l=org/l:f",
        ]);
        let m = a.resolve(None).expect("several");
        assert_eq!(
            m.models,
            [
                spec("qwen", "q.gguf"),
                spec("org/x", "org/x"),
                spec("l", "org/l:f")
            ]
        );
        assert_eq!(m.default, 0);
        let a = parse(&["-m", "a=x.gguf", "-m", "b=y.gguf", "--default-model", "b"]);
        assert_eq!(a.resolve(None).expect("default b").default, 1);
        // The bare first model takes --served-model-name; the others keep their own.
        let a = parse(&["-m", "x.gguf", "-m", "b=y.gguf"]);
        let m = a.resolve(Some("smol")).expect("mixed");
        assert_eq!(m.models, [spec("smol", "x.gguf"), spec("b", "y.gguf")]);
    }

    #[test]
    fn bad_model_flags_are_refused_in_one_line() {
        let e = parse(&["-m", "a=x.gguf", "-m", "a=y.gguf"]).resolve(None);
        assert!(e.expect_err("twice").contains("`a` is given twice"));
        let e = parse(&["-m", "a=x.gguf"]).resolve(Some("smol"));
        assert!(e.expect_err("named twice").contains("--served-model-name"));
        let e = parse(&["-m", "a=x.gguf", "--default-model", "zz"]).resolve(None);
        let e = e.expect_err("unknown default");
        assert!(e.contains("zz") && e.contains("served: a"), "{e}");
        let e = parse(&["--max-loaded-models", "0"]).limits();
        assert!(e.expect_err("zero").contains("--max-loaded-models"));
        assert!(T::try_parse_from(["t", "--max-model-memory", "lots"]).is_err());
    }

    #[test]
    fn a_path_with_an_equals_sign_is_bare_and_limits_parse() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a=b.gguf");
        std::fs::write(&path, b"x").expect("write");
        let p = path.to_str().expect("utf-8");
        let m = parse(&["-m", p]).resolve(None).expect("bare path");
        assert_eq!(m.models, [spec(p, p)]);
        // `./x=y` names no model: its part before `=` is a path.
        let m = parse(&["-m", "./x=y"]).resolve(None).expect("bare");
        assert_eq!(m.models, [spec("./x=y", "./x=y")]);
        let l = parse(&[
            "--max-loaded-models",
            "2",
            "--max-model-memory",
            "1GiB",
            "--model-load-timeout",
            "5",
        ])
        .limits()
        .expect("limits");
        assert_eq!((l.max_loaded, l.max_memory), (Some(2), Some(1 << 30)));
        assert_eq!(l.load_timeout, Duration::from_secs(5));
        assert_eq!(parse(&[]).limits().expect("defaults").max_loaded, None);
    }
}
