//! Registry access settings: credentials for a pull and which registries are spoken to over
//! plain `http` (insecure registries). Pure data and matching; no network I/O here.

use std::fmt;

/// Credentials for one pull.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum RegistryAuth {
    /// No credentials (public images; anonymous bearer tokens are still fetched if offered).
    #[default]
    Anonymous,
    /// HTTP basic credentials, also used to obtain a bearer token when the registry asks.
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: String,
    },
    /// A ready bearer token, sent as is.
    Bearer {
        /// The token.
        token: String,
    },
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            RegistryAuth::Bearer { .. } => f
                .debug_struct("Bearer")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl RegistryAuth {
    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        use oci_client::secrets::RegistryAuth as O;
        match self {
            RegistryAuth::Anonymous => O::Anonymous,
            RegistryAuth::Basic { username, password } => {
                O::Basic(username.clone(), password.clone())
            }
            RegistryAuth::Bearer { token } => O::Bearer(token.clone()),
        }
    }
}

/// Registry settings shared by all pulls of a [`crate::Puller`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySettings {
    /// Registries reached over plain `http`, as `host:port` patterns where the port may be `*`
    /// (`127.0.0.1:*`) and a pattern without port matches the host on any port.
    pub insecure_registries: Vec<String>,
}

impl Default for RegistrySettings {
    /// Loopback registries are insecure by default (a local registry rarely has a certificate
    /// and traffic never leaves the host).
    fn default() -> RegistrySettings {
        RegistrySettings {
            insecure_registries: vec!["127.0.0.1:*".into(), "localhost:*".into(), "[::1]:*".into()],
        }
    }
}

impl RegistrySettings {
    /// True if `registry` (`host[:port]`) is to be reached over plain `http`.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure_registries
            .iter()
            .any(|pattern| registry_matches(pattern, registry))
    }
}

/// The registry host (`host[:port]`) a reference pulls from, as the client resolves it
/// (`busybox` → `index.docker.io`); `None` if the reference does not parse.
pub fn registry_of(reference: &str) -> Option<String> {
    let parsed: oci_client::Reference = reference.parse().ok()?;
    Some(parsed.resolve_registry().to_owned())
}

/// Splits `host[:port]` (host may be a bracketed IPv6 address) into host and optional port.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host_end = end + 2;
            let port = s[host_end..].strip_prefix(':');
            return (&s[..host_end], port);
        }
    }
    match s.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    }
}

fn registry_matches(pattern: &str, registry: &str) -> bool {
    let (phost, pport) = split_host_port(pattern);
    let (rhost, rport) = split_host_port(registry);
    if !phost.eq_ignore_ascii_case(rhost) {
        return false;
    }
    match pport {
        None | Some("*") => true,
        Some(p) => rport == Some(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_insecure_by_default_and_others_are_not() {
        let s = RegistrySettings::default();
        assert!(s.is_insecure("127.0.0.1:5000"));
        assert!(s.is_insecure("localhost:41234"));
        assert!(s.is_insecure("localhost"));
        assert!(s.is_insecure("[::1]:5000"));
        assert!(!s.is_insecure("127.0.0.2:5000"));
        assert!(!s.is_insecure("index.docker.io"));
        assert!(!s.is_insecure("localhost.example.com:5000"));
    }

    #[test]
    fn references_resolve_to_their_registry() {
        assert_eq!(registry_of("busybox").as_deref(), Some("index.docker.io"));
        assert_eq!(
            registry_of("127.0.0.1:5000/a/b:v1").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(registry_of("BAD//ref"), None);
    }

    #[test]
    fn explicit_ports_must_match() {
        let s = RegistrySettings {
            insecure_registries: vec!["reg.lan:5000".into(), "other.lan".into()],
        };
        assert!(s.is_insecure("reg.lan:5000"));
        assert!(!s.is_insecure("reg.lan:5001"));
        assert!(!s.is_insecure("reg.lan"));
        assert!(s.is_insecure("other.lan:443"));
    }

    #[test]
    fn credentials_are_redacted_in_debug_output() {
        let a = RegistryAuth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
