//! The environment contract of huggingface_hub (`huggingface_hub/constants.py`), read through an
//! injectable lookup so that tests never touch the process environment.
use crate::HubError;
use std::path::{Path, PathBuf};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where the cache is, whether the network may be used, and how to talk to the Hub.
/// The fields are public so that CLI flags can override what the environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Folder holding `models--org--name/`, `datasets--org--name/`.
    pub cache_dir: PathBuf,
    /// Resolve from the cache only and never touch the network.
    pub offline: bool,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Hub URL, without a trailing slash.
    pub endpoint: String,
}

impl HubConfig {
    /// Reads the process environment; see [`HubConfig::from_lookup`].
    pub fn from_env() -> Result<Self, HubError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `var`, as huggingface_hub does (empty values count as unset;
    /// a leading `~` is expanded with `HOME`):
    /// - cache: `HF_HUB_CACHE` > `HUGGINGFACE_HUB_CACHE` > `$HF_HOME/hub` >
    ///   `$XDG_CACHE_HOME/huggingface/hub` > `$HOME/.cache/huggingface/hub`, else
    ///   [`HubError::NoCacheDir`];
    /// - offline: `HF_HUB_OFFLINE` (else `TRANSFORMERS_OFFLINE`) is `1`, `true`, `yes` or `on`;
    /// - token: `HF_TOKEN` (else `HUGGING_FACE_HUB_TOKEN`), else the file `HF_TOKEN_PATH`
    ///   (default `$HF_HOME/token`, `HF_HOME` defaulting to `$XDG_CACHE_HOME/huggingface` or
    ///   `$HOME/.cache/huggingface`);
    /// - endpoint: `HF_ENDPOINT`, default `https://huggingface.co`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, HubError> {
        let var = |name: &str| var(name).filter(|value| !value.is_empty());
        let home = var("HOME").map(PathBuf::from);
        let path = |name: &str| var(name).map(|value| expand_tilde(&value, home.as_deref()));
        let hf_home = path("HF_HOME").or_else(|| {
            let cache = path("XDG_CACHE_HOME").or_else(|| Some(home.as_ref()?.join(".cache")))?;
            Some(cache.join("huggingface"))
        });
        let cache_dir = path("HF_HUB_CACHE")
            .or_else(|| path("HUGGINGFACE_HUB_CACHE"))
            .or_else(|| Some(hf_home.as_ref()?.join("hub")))
            .ok_or(HubError::NoCacheDir)?;
        let token = match var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")) {
            Some(token) => clean_token(&token),
            None => match path("HF_TOKEN_PATH").or_else(|| Some(hf_home?.join("token"))) {
                Some(file) => read_token(&file)?,
                None => None,
            },
        };
        let offline = var("HF_HUB_OFFLINE")
            .or_else(|| var("TRANSFORMERS_OFFLINE"))
            .is_some_and(|value| {
                matches!(
                    value.to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            });
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        Ok(Self {
            cache_dir,
            offline,
            token,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        })
    }
}

/// `~` and `~/rest` become `$HOME` and `$HOME/rest`; anything else is kept.
pub(crate) fn expand_tilde(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(path),
    }
}

fn clean_token(token: &str) -> Option<String> {
    let token = token.replace(['\r', '\n'], "");
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

fn read_token(file: &Path) -> Result<Option<String>, HubError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(clean_token(&text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HubError::Io {
            path: file.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<HubConfig, HubError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn cache_dir_precedence() {
        let mut vars = vec![("HOME", "/home/u")];
        let cache = |vars: &[(&str, &str)]| config(vars).unwrap().cache_dir;
        assert_eq!(cache(&vars), Path::new("/home/u/.cache/huggingface/hub"));
        vars.push(("XDG_CACHE_HOME", "/xdg"));
        assert_eq!(cache(&vars), Path::new("/xdg/huggingface/hub"));
        vars.push(("HF_HOME", "~/hf"));
        assert_eq!(cache(&vars), Path::new("/home/u/hf/hub"));
        vars.push(("HUGGINGFACE_HUB_CACHE", "/legacy"));
        assert_eq!(cache(&vars), Path::new("/legacy"));
        vars.push(("HF_HUB_CACHE", "/hub"));
        assert_eq!(cache(&vars), Path::new("/hub"));
    }

    #[test]
    fn empty_values_count_as_unset() {
        let vars = [("HOME", "/h"), ("HF_HUB_CACHE", ""), ("HF_HOME", "")];
        assert_eq!(
            config(&vars).unwrap().cache_dir,
            Path::new("/h/.cache/huggingface/hub")
        );
    }

    #[test]
    fn no_home_is_an_error_not_a_panic() {
        let error = config(&[]).unwrap_err();
        assert!(matches!(error, HubError::NoCacheDir));
        assert!(error.to_string().contains("HF_HUB_CACHE"));
        // Any explicit location is enough; the token file is then simply unknown.
        let config = config(&[("HF_HUB_CACHE", "/c")]).unwrap();
        assert_eq!(
            (config.cache_dir.as_path(), config.token),
            (Path::new("/c"), None)
        );
    }

    #[test]
    fn token_from_env_beats_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let hf_home = dir.path().to_str().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        let token = |vars: &[(&str, &str)]| config(vars).unwrap().token;
        assert_eq!(token(&[("HF_HOME", hf_home)]).as_deref(), Some("hf_file"));
        let env = [("HF_HOME", hf_home), ("HF_TOKEN", " hf_env\n")];
        assert_eq!(token(&env).as_deref(), Some("hf_env"));
        let legacy = [("HF_HOME", hf_home), ("HUGGING_FACE_HUB_TOKEN", "hf_old")];
        assert_eq!(token(&legacy).as_deref(), Some("hf_old"));

        std::fs::write(dir.path().join("other"), "hf_other").unwrap();
        let other = dir.path().join("other");
        let path = [
            ("HF_HOME", hf_home),
            ("HF_TOKEN_PATH", other.to_str().unwrap()),
        ];
        assert_eq!(token(&path).as_deref(), Some("hf_other"));

        std::fs::write(dir.path().join("token"), " \n").unwrap();
        assert_eq!(token(&[("HF_HOME", hf_home)]), None);
        let xdg = dir.path().join("xdg");
        assert_eq!(token(&[("XDG_CACHE_HOME", xdg.to_str().unwrap())]), None);
    }

    #[test]
    fn token_file_under_xdg_cache_home() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("huggingface")).unwrap();
        std::fs::write(dir.path().join("huggingface/token"), "hf_xdg").unwrap();
        let xdg = [("XDG_CACHE_HOME", dir.path().to_str().unwrap())];
        assert_eq!(config(&xdg).unwrap().token.as_deref(), Some("hf_xdg"));
    }

    #[test]
    fn offline_parsing() {
        let offline = |value: &str| {
            config(&[("HOME", "/h"), ("HF_HUB_OFFLINE", value)])
                .unwrap()
                .offline
        };
        for yes in ["1", "true", "TRUE", "yes", "On"] {
            assert!(offline(yes), "{yes}");
        }
        for no in ["", "0", "false", "no", "off", "2"] {
            assert!(!offline(no), "{no}");
        }
        let legacy = [("HOME", "/h"), ("TRANSFORMERS_OFFLINE", "1")];
        assert!(config(&legacy).unwrap().offline);
        let both = [
            ("HOME", "/h"),
            ("HF_HUB_OFFLINE", "0"),
            ("TRANSFORMERS_OFFLINE", "1"),
        ];
        assert!(!config(&both).unwrap().offline);
    }

    #[test]
    fn endpoint() {
        let endpoint = |vars: &[(&str, &str)]| config(vars).unwrap().endpoint;
        assert_eq!(endpoint(&[("HOME", "/h")]), DEFAULT_ENDPOINT);
        let mirror = [("HOME", "/h"), ("HF_ENDPOINT", "http://127.0.0.1:8080/")];
        assert_eq!(endpoint(&mirror), "http://127.0.0.1:8080");
    }

    #[test]
    fn tilde_expansion() {
        let home = Some(Path::new("/home/u"));
        assert_eq!(expand_tilde("~", home), Path::new("/home/u"));
        assert_eq!(expand_tilde("~/m", home), Path::new("/home/u/m"));
        assert_eq!(expand_tilde("~other/m", home), Path::new("~other/m"));
        assert_eq!(expand_tilde("~/m", None), Path::new("~/m"));
    }
}
