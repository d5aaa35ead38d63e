//! What the user typed to name a model or dataset.
use crate::config::expand_tilde;
use crate::HubError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A Hub repo (`org/name`, `org/name@revision`) or a local directory. Used for datasets too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Hub {
        repo_id: String,
        /// Branch, tag or 40-hex commit sha; `None` means `main`.
        revision: Option<String>,
    },
    Local(PathBuf),
}

impl FromStr for ModelRef {
    type Err = HubError;

    /// A string starting with `/`, `./`, `../` or `~`, `.`, `..`, or naming an existing
    /// directory, is a local directory (`~` is expanded with `HOME`). Anything else must be
    /// `org/name[@revision]` with Hub naming rules.
    fn from_str(input: &str) -> Result<Self, HubError> {
        let looks_local = ["/", "./", "../", "~"]
            .iter()
            .any(|prefix| input.starts_with(prefix))
            || input == "."
            || input == "..";
        if looks_local || Path::new(input).is_dir() {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            return Ok(Self::Local(expand_tilde(input, home.as_deref())));
        }
        let invalid = |reason| HubError::InvalidRef {
            input: input.to_owned(),
            reason,
        };
        let (repo_id, revision) = match input.split_once('@') {
            Some((repo_id, revision)) => (repo_id, Some(revision)),
            None => (input, None),
        };
        check_repo_id(repo_id).map_err(invalid)?;
        if let Some(revision) = revision {
            check_revision(revision).map_err(invalid)?;
        }
        Ok(Self::Hub {
            repo_id: repo_id.to_owned(),
            revision: revision.map(str::to_owned),
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hub {
                repo_id,
                revision: Some(revision),
            } => write!(f, "{repo_id}@{revision}"),
            Self::Hub { repo_id, .. } => f.write_str(repo_id),
            Self::Local(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// The 40-hex lowercase form the Hub uses for commits (`REGEX_COMMIT_HASH` in huggingface_hub).
pub(crate) fn is_commit_sha(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// huggingface_hub's `validate_repo_id`, restricted to the `org/name` form: the cache folder
/// `models--org--name` is only unambiguous because names cannot contain `--`.
fn check_repo_id(repo_id: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = repo_id.split('/').collect();
    if parts.len() != 2 {
        return Err("expected exactly one `/` between organisation and name");
    }
    for part in parts {
        if part.is_empty() || part.len() > 96 {
            return Err("organisation and name must have 1 to 96 characters");
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err("only letters, digits, `-`, `_` and `.` are allowed");
        }
        if part.contains("--") || part.contains("..") {
            return Err("`--` and `..` are not allowed");
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err("organisation and name cannot start or end with `-` or `.`");
        }
    }
    Ok(())
}

/// Git ref-name rules that matter here: the revision becomes a path below `refs/`.
fn check_revision(revision: &str) -> Result<(), &'static str> {
    if revision.is_empty() {
        return Err("empty revision after `@`");
    }
    if revision.contains("..")
        || revision.starts_with('/')
        || revision.ends_with('/')
        || revision.contains("//")
        || revision
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\@".contains(c))
    {
        return Err("not a valid branch, tag or commit name");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(repo_id: &str, revision: Option<&str>) -> ModelRef {
        ModelRef::Hub {
            repo_id: repo_id.to_owned(),
            revision: revision.map(str::to_owned),
        }
    }

    #[test]
    fn hub_refs() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            "org/name".parse::<ModelRef>().unwrap(),
            hub("org/name", None)
        );
        assert_eq!(
            "Qwen/Qwen1.5-MoE-A2.7B@v1.0".parse::<ModelRef>().unwrap(),
            hub("Qwen/Qwen1.5-MoE-A2.7B", Some("v1.0"))
        );
        let pinned: ModelRef = format!("org/name@{sha}").parse().unwrap();
        assert_eq!(pinned, hub("org/name", Some(sha)));
        assert_eq!(pinned.to_string(), format!("org/name@{sha}"));
        assert_eq!(
            "org/name@refs/pr/1".parse::<ModelRef>().unwrap(),
            hub("org/name", Some("refs/pr/1"))
        );
        assert!(is_commit_sha(sha));
        assert!(!is_commit_sha(&sha.to_uppercase()));
        assert!(!is_commit_sha(&sha[1..]));
    }

    #[test]
    fn local_refs() {
        for input in ["/abs/model", "./model", "../model", ".", ".."] {
            assert_eq!(
                input.parse::<ModelRef>().unwrap(),
                ModelRef::Local(input.into())
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().to_str().unwrap();
        assert_eq!(
            existing.parse::<ModelRef>().unwrap(),
            ModelRef::Local(existing.into())
        );
        if let Some(home) = std::env::var_os("HOME") {
            let expanded = Path::new(&home).join("m");
            assert_eq!(
                "~/m".parse::<ModelRef>().unwrap(),
                ModelRef::Local(expanded)
            );
        }
    }

    #[test]
    fn invalid_refs() {
        for input in [
            "gpt2",
            "a/b/c",
            "org/",
            "org/na me",
            "org/a--b",
            "org/-a",
            "org/a.",
            "org/name@",
            "org/name@../../etc",
            "org/name@a b",
            "org/name@/main",
        ] {
            let error = input.parse::<ModelRef>().unwrap_err();
            assert!(matches!(error, HubError::InvalidRef { .. }), "{input}");
            assert!(error.to_string().contains(input), "{error}");
        }
    }
}
