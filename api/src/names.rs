//! Syntax rules for names, label keys and values, environment variable names and port
//! names, as Kubernetes defines them. Pure predicates; each returns the reason a value
//! is rejected so callers can attach it to a field path.

/// Reason a value does not fit a syntax rule.
pub(crate) type Check = std::result::Result<(), String>;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const IANA_SVC_NAME_MAX: usize = 15;

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A DNS-1123 label: at most 63 lowercase alphanumerics or '-', starting and ending
/// alphanumeric (namespace and container names).
pub(crate) fn dns1123_label(s: &str) -> Check {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be no more than {DNS1123_LABEL_MAX} characters"
        ));
    }
    let ok = s.chars().all(|c| lower_alnum(c) || c == '-')
        && s.starts_with(lower_alnum)
        && s.ends_with(lower_alnum);
    if !ok {
        return Err(format!(
            "{s:?} is not a DNS-1123 label: use lowercase alphanumerics or '-', \
             starting and ending with an alphanumeric (e.g. \"my-name\")"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters
/// (pod and node names).
pub(crate) fn dns1123_subdomain(s: &str) -> Check {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    let ok = s.split('.').all(|part| {
        !part.is_empty()
            && part.chars().all(|c| lower_alnum(c) || c == '-')
            && part.starts_with(lower_alnum)
            && part.ends_with(lower_alnum)
    });
    if !ok {
        return Err(format!(
            "{s:?} is not a DNS-1123 subdomain: use lowercase alphanumerics, '-' or '.', \
             starting and ending with an alphanumeric (e.g. \"example.com\")"
        ));
    }
    Ok(())
}

/// Alphanumerics with '-', '_' or '.' inside, starting and ending alphanumeric; empty is
/// accepted here and length is checked by the caller.
fn label_chars(s: &str) -> bool {
    s.is_empty()
        || (s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A qualified name, as used for label and annotation keys: `[prefix/]name` where the
/// prefix is a DNS-1123 subdomain and the name at most 63 label characters.
pub(crate) fn qualified_name(s: &str) -> Check {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        dns1123_subdomain(p).map_err(|e| format!("prefix part {e}"))?;
    }
    if name.is_empty() {
        return Err(format!("{s:?}: name part must not be empty"));
    }
    if name.len() > QUALIFIED_NAME_MAX {
        return Err(format!(
            "{s:?}: name part must be no more than {QUALIFIED_NAME_MAX} characters"
        ));
    }
    if !label_chars(name) {
        return Err(format!(
            "{s:?}: name part must consist of alphanumerics, '-', '_' or '.', \
             starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 label characters.
pub(crate) fn label_value(s: &str) -> Check {
    if s.len() > LABEL_VALUE_MAX {
        return Err(format!(
            "{s:?}: must be no more than {LABEL_VALUE_MAX} characters"
        ));
    }
    if !label_chars(s) {
        return Err(format!(
            "{s:?}: must be empty or consist of alphanumerics, '-', '_' or '.', \
             starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// An environment variable name: letters, digits, '_', '-' or '.', not starting with a
/// digit (Kubernetes' IsEnvVarName).
pub(crate) fn env_var_name(s: &str) -> Check {
    let ok = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err(format!(
            "{s:?} is not a valid environment variable name: use letters, digits, '_', '-' \
             or '.', not starting with a digit"
        ));
    }
    Ok(())
}

/// An IANA service name (port names): at most 15 lowercase alphanumerics or '-', with
/// at least one letter and no leading, trailing or doubled '-'.
pub(crate) fn iana_svc_name(s: &str) -> Check {
    let ok = !s.is_empty()
        && s.len() <= IANA_SVC_NAME_MAX
        && s.chars().all(|c| lower_alnum(c) || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if !ok {
        return Err(format!(
            "{s:?} is not an IANA service name: at most {IANA_SVC_NAME_MAX} lowercase \
             alphanumerics or '-', with a letter and no leading, trailing or double '-'"
        ));
    }
    Ok(())
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter (Service names).
pub(crate) fn dns1035_label(s: &str) -> Check {
    dns1123_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "{s:?} is not a DNS-1035 label: it must start with a lowercase letter"
        ));
    }
    Ok(())
}

/// A name usable as one URL path segment (RBAC object names): not empty, not `.` or
/// `..`, and without '/' or '%'.
pub(crate) fn path_segment(s: &str) -> Check {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s == "." || s == ".." {
        return Err(format!("{s:?} may not be used as a name"));
    }
    if s.contains(['/', '%']) {
        return Err(format!("{s:?} must not contain '/' or '%'"));
    }
    Ok(())
}

/// A ConfigMap or Secret key: at most 253 alphanumerics, '-', '_' or '.', not `.` or
/// `..` (they would escape the volume directory).
pub(crate) fn config_map_key(s: &str) -> Check {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    if s == "." || s == ".." || s.starts_with("..") {
        return Err(format!("{s:?} must not be '.' or '..' or start with '..'"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{s:?} is not a valid config key: use alphanumerics, '-', '_' or '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "web-1", "0abc", &"a".repeat(63)] {
            assert!(dns1123_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Hello_World",
            "-a",
            "a-",
            "a.b",
            "UPPER",
            &"a".repeat(64),
        ] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_subdomains() {
        for ok in ["a", "web.example.com", "node-1.local"] {
            assert!(dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Hello_World",
            "a..b",
            ".a",
            "a.",
            "a_b",
            &"a".repeat(254),
        ] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for ok in ["app", "app.kubernetes.io/name", "A_b-c.d", "x/y"] {
            assert!(qualified_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "-a",
            "a b",
            "Bad_Prefix/x",
            "a/b/c",
            &"a".repeat(64),
        ] {
            assert!(qualified_name(bad).is_err(), "{bad}");
        }
        for ok in ["", "v1", "a.b_c-D"] {
            assert!(label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["-a", "a b", "a/b", &"a".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_rbac_and_config_key_names() {
        assert!(dns1035_label("web").is_ok());
        assert!(dns1035_label("1web").is_err());
        assert!(path_segment("system:controller:deployment").is_ok());
        for bad in ["", ".", "..", "a/b", "a%2f"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
        for ok in ["app.properties", "KEY_1", "tls.crt", ".hidden"] {
            assert!(config_map_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "..x", "a/b", "a b", "k=v"] {
            assert!(config_map_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_and_port_names() {
        for ok in ["PATH", "_x", "my.var-1"] {
            assert!(env_var_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1X", "A=B", "A B"] {
            assert!(env_var_name(bad).is_err(), "{bad}");
        }
        for ok in ["http", "web-8080", "h2c"] {
            assert!(iana_svc_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "8080", "a--b", "-a", "HTTP", "averyveryverylongname"] {
            assert!(iana_svc_name(bad).is_err(), "{bad}");
        }
    }
}
