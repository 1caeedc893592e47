//! Registry credentials from a Docker config, as Kubernetes' `imagePullSecrets` carry them
//! (`kubernetes.io/dockerconfigjson`: `{"auths": {...}}`; the older `kubernetes.io/dockercfg`:
//! the `auths` map alone). Pure parsing and matching; the entry for the image's registry
//! wins, with Docker Hub's aliases treated as one registry.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use crate::registry::RegistryAuth;

/// One registry's entry.
#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// base64 of `user:password`.
    #[serde(default)]
    auth: String,
    /// A ready bearer token.
    #[serde(default, rename = "registrytoken")]
    registry_token: String,
}

#[derive(Debug, Deserialize)]
struct Config {
    auths: BTreeMap<String, Entry>,
}

/// Why a Docker config could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    /// Not JSON of either shape.
    #[error("not a Docker config: {0}")]
    Malformed(String),
    /// An entry's `auth` is not base64 of `user:password`.
    #[error("registry {0:?}: auth is not base64 of user:password")]
    BadAuth(String),
}

const DOCKER_HUB: &[&str] = &[
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// The `host[:port]` of a config key (`https://index.docker.io/v1/` → `index.docker.io`),
/// with Docker Hub's aliases mapped to one name.
fn key_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    if DOCKER_HUB.contains(&host.as_str()) {
        "index.docker.io".into()
    } else {
        host
    }
}

/// The credentials `config` (a `.dockerconfigjson` or `.dockercfg` value) holds for
/// `registry` (`host[:port]`, as [`crate::registry::registry_of`] gives it); `None` when it
/// has no entry for that registry.
pub fn auth_for(config: &[u8], registry: &str) -> Result<Option<RegistryAuth>, DockerConfigError> {
    let auths = match serde_json::from_slice::<Config>(config) {
        Ok(c) => c.auths,
        Err(_) => serde_json::from_slice::<BTreeMap<String, Entry>>(config)
            .map_err(|e| DockerConfigError::Malformed(e.to_string()))?,
    };
    let wanted = key_host(registry);
    let Some((key, entry)) = auths.iter().find(|(k, _)| key_host(k) == wanted) else {
        return Ok(None);
    };
    if !entry.registry_token.is_empty() {
        return Ok(Some(RegistryAuth::Bearer {
            token: entry.registry_token.clone(),
        }));
    }
    if !entry.username.is_empty() {
        return Ok(Some(RegistryAuth::Basic {
            username: entry.username.clone(),
            password: entry.password.clone(),
        }));
    }
    if entry.auth.is_empty() {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| DockerConfigError::BadAuth(key.clone()))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| DockerConfigError::BadAuth(key.clone()))?;
    Ok(Some(RegistryAuth::Basic {
        username: username.to_owned(),
        password: password.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_match_their_registry_and_docker_hub_aliases() {
        let cfg = br#"{"auths": {
            "127.0.0.1:5000": {"auth": "dXNlcjpzM2NyZXQ="},
            "https://index.docker.io/v1/": {"username": "hub", "password": "pw"},
            "ghcr.io": {"registrytoken": "tok"}
        }}"#;
        let basic = |u: &str, p: &str| {
            Some(RegistryAuth::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        assert_eq!(
            auth_for(cfg, "127.0.0.1:5000").unwrap(),
            basic("user", "s3cret")
        );
        assert_eq!(
            auth_for(cfg, "index.docker.io").unwrap(),
            basic("hub", "pw")
        );
        assert_eq!(auth_for(cfg, "docker.io").unwrap(), basic("hub", "pw"));
        assert_eq!(
            auth_for(cfg, "ghcr.io").unwrap(),
            Some(RegistryAuth::Bearer {
                token: "tok".into()
            })
        );
        assert_eq!(auth_for(cfg, "127.0.0.1:5001").unwrap(), None);
        // The legacy .dockercfg shape: the map alone.
        let legacy = br#"{"quay.io": {"auth": "YTpi"}}"#;
        assert_eq!(auth_for(legacy, "quay.io").unwrap(), basic("a", "b"));
    }

    #[test]
    fn malformed_configs_and_auth_fields_are_errors() {
        assert!(matches!(
            auth_for(b"nope", "quay.io"),
            Err(DockerConfigError::Malformed(_))
        ));
        let bad = br#"{"auths": {"quay.io": {"auth": "!!!"}}}"#;
        assert_eq!(
            auth_for(bad, "quay.io"),
            Err(DockerConfigError::BadAuth("quay.io".into()))
        );
    }
}
