//! The edge to the kernel: running the `nft` binary to list a table's objects and to apply a
//! script as one transaction. It owns process handling and parsing `nft -j` output; it must
//! not decide what the rules are. `nft` acts on the network namespace of the calling thread
//! (a child inherits it), so callers pick the namespace with [`crate::run_in_netns`].

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::error::{Error, Result};
use super::rules::OwnedObjects;

/// How much of `nft`'s stderr an error keeps.
const MAX_STDERR: usize = 4096;

/// What the service proxy needs from nftables; faked in tests of the logic above it.
pub trait Nft {
    /// The chains, sets and maps of the main table `ip <table>` and of each of its shard
    /// tables (`ip <table>-s<k>`), by table; tables that do not exist are absent.
    fn list_owned(&self, table: &str) -> Result<OwnedObjects>;
    /// Applies `script` (nft syntax) as one transaction: all of it or nothing.
    fn apply(&self, script: &str) -> Result<()>;
}

impl<T: Nft + ?Sized> Nft for &T {
    fn list_owned(&self, table: &str) -> Result<OwnedObjects> {
        (**self).list_owned(table)
    }
    fn apply(&self, script: &str) -> Result<()> {
        (**self).apply(script)
    }
}

/// [`Nft`] through the `nft` command-line tool (package `nftables`).
#[derive(Debug, Clone)]
pub struct NftCommand {
    program: PathBuf,
}

impl Default for NftCommand {
    /// `nft` from `PATH`.
    fn default() -> Self {
        NftCommand {
            program: PathBuf::from("nft"),
        }
    }
}

impl NftCommand {
    /// Uses the `nft` binary at `program`.
    pub fn new(program: impl Into<PathBuf>) -> NftCommand {
        NftCommand {
            program: program.into(),
        }
    }

    fn run(&self, op: &'static str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let spawn_err = |source| Error::Spawn {
            program: self.program.clone(),
            source,
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error means nft exited early; its status and stderr say why.
            let _ = pipe.write_all(input.as_bytes());
        }
        let output = child.wait_with_output().map_err(spawn_err)?;
        if output.status.success() {
            Ok(output)
        } else {
            let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if stderr.len() > MAX_STDERR {
                let cut = (0..=MAX_STDERR)
                    .rev()
                    .find(|i| stderr.is_char_boundary(*i))
                    .unwrap_or(0);
                stderr.truncate(cut);
                stderr.push_str("...");
            }
            Err(Error::Nft {
                op,
                status: output.status.to_string(),
                stderr,
            })
        }
    }

    fn list(&self, op: &'static str, what: &str, table: &str) -> Result<Vec<(String, String)>> {
        // `-t`: without set elements, which may be many.
        let output = self.run(op, &["-j", "-t", "list", what, "ip"], None)?;
        names_in(&output.stdout, table).map_err(|source| Error::Parse { op, source })
    }
}

impl Nft for NftCommand {
    fn list_owned(&self, table: &str) -> Result<OwnedObjects> {
        let mut out = OwnedObjects::new();
        for (t, name) in self.list("list chains", "chains", table)? {
            out.entry(t).or_default().chains.insert(name);
        }
        for (t, name) in self.list("list sets", "sets", table)? {
            out.entry(t).or_default().sets.insert(name);
        }
        for (t, name) in self.list("list maps", "maps", table)? {
            out.entry(t).or_default().maps.insert(name);
        }
        Ok(out)
    }

    fn apply(&self, script: &str) -> Result<()> {
        self.run("apply ruleset", &["-f", "-"], Some(script))
            .map(|_| ())
    }
}

/// Whether `name` is table `table` or one of its shard tables (`<table>-s<digits>`).
pub(crate) fn is_owned(name: &str, table: &str) -> bool {
    name == table
        || name
            .strip_prefix(table)
            .and_then(|rest| rest.strip_prefix("-s"))
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// The (table, name) of the chains, sets or maps of family `ip` in `nft -j list ...` output
/// that belong to table `table` or its shards.
fn names_in(json: &[u8], table: &str) -> serde_json::Result<Vec<(String, String)>> {
    let root: Value = serde_json::from_slice(json)?;
    let items = root
        .get("nftables")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(items
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|item| item.values())
        .filter(|obj| obj.get("family").and_then(Value::as_str) == Some("ip"))
        .filter_map(|obj| {
            let t = obj.get("table").and_then(Value::as_str)?;
            let name = obj.get("name").and_then(Value::as_str)?;
            is_owned(t, table).then(|| (t.to_owned(), name.to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_keeps_only_the_tables_objects() {
        let json = br#"{"nftables": [
            {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"chain": {"family": "ip", "table": "capstan", "name": "services", "handle": 2}},
            {"chain": {"family": "ip", "table": "other", "name": "foreign", "handle": 3}},
            {"chain": {"family": "ip", "table": "capstan-s3", "name": "svc-1", "handle": 4}},
            {"chain": {"family": "ip", "table": "capstan-sx", "name": "not-ours", "handle": 5}},
            {"chain": {"family": "ip", "table": "capstan-s", "name": "not-ours", "handle": 6}},
            {"set": {"family": "ip", "name": "aff-1", "table": "capstan", "type": "ipv4_addr"}},
            {"map": {"family": "ip", "name": "service-ips", "table": "capstan", "map": "verdict"}}
        ]}"#;
        assert_eq!(
            names_in(json, "capstan").unwrap(),
            [
                ("capstan", "services"),
                ("capstan-s3", "svc-1"),
                ("capstan", "aff-1"),
                ("capstan", "service-ips")
            ]
            .map(|(t, n)| (t.to_owned(), n.to_owned()))
        );
        assert!(names_in(br#"{"nftables": []}"#, "capstan")
            .unwrap()
            .is_empty());
        assert!(names_in(b"Error", "capstan").is_err());
    }
}
