//! Validation of names that become file names under the netns root or kernel interface
//! names. Pure: it must not touch the filesystem or the kernel.

use crate::error::{Error, Result};

/// Longest accepted netns name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks that `name` can be used as a single path component under the netns root.
pub fn validate_netns_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("must be at most 64 bytes")
    } else if name.contains('/') {
        Some("must not contain '/'")
    } else if name == "." || name == ".." || name.contains("..") {
        Some("must not contain '..' or be '.'")
    } else if name.contains('\0') {
        Some("must not contain NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            field: "netns name",
            value: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1), in bytes.
pub const MAX_IFNAME_LEN: usize = 15;

/// Checks that `name` is a valid kernel interface name (e.g. a bridge name).
pub fn validate_ifname(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("must be at most 15 bytes")
    } else if name == "." || name == ".." {
        Some("must not be '.' or '..'")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some("must not contain '/', ':', whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            field: "interface name",
            value: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        for ok in ["capstan0", "cbr-1a2b", "x", "abcdefghijklmno"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "abcdefghijklmnop"] {
            assert!(
                matches!(
                    validate_ifname(bad),
                    Err(Error::InvalidName {
                        field: "interface name",
                        ..
                    })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn accepts_ordinary_pod_names() {
        for name in ["pod-a", "default_web-0", "x", &"a".repeat(MAX_NAME_LEN)] {
            assert!(validate_netns_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_names_that_escape_or_break_the_root() {
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        for name in [
            "",
            ".",
            "..",
            "a/b",
            "/abs",
            "a..b",
            "..x",
            "nul\0",
            too_long.as_str(),
        ] {
            match validate_netns_name(name) {
                Err(Error::InvalidName { field, value, .. }) => {
                    assert_eq!(field, "netns name");
                    assert_eq!(value, name);
                }
                other => panic!("{name:?} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn error_message_names_the_field() {
        let err = validate_netns_name("a/b").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid netns name \"a/b\": must not contain '/'")
        );
    }
}
