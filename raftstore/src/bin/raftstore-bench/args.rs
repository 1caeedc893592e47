//! Command-line parsing (by hand: the library carries no CLI dependency). Pure, so the rules are
//! unit-tested here.

use std::path::PathBuf;

use crate::error::{BenchError, Result};

/// Which systems a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Only {
    /// Both, raftstore first.
    Both,
    /// Raftstore alone.
    Raftstore,
    /// etcd alone.
    Etcd,
}

/// Options of a benchmark run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunArgs {
    /// Short phases, for a smoke run.
    pub quick: bool,
    /// Only the put phases and memory (for measuring write-path changes quickly).
    pub puts_only: bool,
    /// Which systems to measure.
    pub only: Only,
    /// The etcd server binary.
    pub etcd: PathBuf,
    /// Where the members' temporary data directories go.
    pub data_root: PathBuf,
}

/// Options of the hidden `member` mode: one raftstore member with the etcd API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberArgs {
    /// The member's name in the initial cluster.
    pub name: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where its peer service listens.
    pub listen_peer_url: String,
    /// Where its etcd client API listens.
    pub listen_client_url: String,
    /// `n1=http://..,n2=..,n3=..`.
    pub initial_cluster: String,
}

/// What the process was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Run the benchmark.
    Run(RunArgs),
    /// Run one raftstore member (re-executed by the benchmark itself).
    Member(MemberArgs),
    /// Print the usage.
    Help,
}

/// The usage text.
pub const USAGE: &str = "\
usage: raftstore-bench [--quick] [--puts-only] [--only raftstore|etcd] [--etcd PATH]
                       [--data-root DIR]

Starts a three-member raftstore and a three-member etcd on 127.0.0.1, drives both with the same
etcd v3 client code and prints their figures side by side.

  --quick        short phases (a smoke run, figures are noisy)
  --puts-only    only the put phases and memory (no gets, txns, watches or fail-overs)
  --only SYSTEM  measure only raftstore or only etcd
  --etcd PATH    the etcd server binary (default /usr/bin/etcd)
  --data-root D  where the members' temporary data directories go (default: the temp dir)
";

fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String> {
    args.next().ok_or_else(|| BenchError::Usage {
        arg: flag.to_string(),
        reason: "needs a value".to_string(),
    })
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Mode> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("member") {
        args.next();
        return parse_member(args).map(Mode::Member);
    }
    let mut run = RunArgs {
        quick: false,
        puts_only: false,
        only: Only::Both,
        etcd: PathBuf::from("/usr/bin/etcd"),
        data_root: std::env::temp_dir(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => run.quick = true,
            "--puts-only" => run.puts_only = true,
            "--only" => {
                run.only = match value(&mut args, "--only")?.as_str() {
                    "raftstore" => Only::Raftstore,
                    "etcd" => Only::Etcd,
                    other => {
                        return Err(BenchError::Usage {
                            arg: "--only".to_string(),
                            reason: format!("{other:?} is neither raftstore nor etcd"),
                        })
                    }
                }
            }
            "--etcd" => run.etcd = value(&mut args, "--etcd")?.into(),
            "--data-root" => run.data_root = value(&mut args, "--data-root")?.into(),
            "-h" | "--help" => return Ok(Mode::Help),
            other => {
                return Err(BenchError::Usage {
                    arg: other.to_string(),
                    reason: "unknown argument (see --help)".to_string(),
                })
            }
        }
    }
    Ok(Mode::Run(run))
}

fn parse_member(mut args: impl Iterator<Item = String>) -> Result<MemberArgs> {
    let (mut name, mut data_dir, mut peer, mut client, mut cluster) =
        (None, None, None, None, None);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--name" => &mut name,
            "--data-dir" => &mut data_dir,
            "--listen-peer-url" => &mut peer,
            "--listen-client-url" => &mut client,
            "--initial-cluster" => &mut cluster,
            other => {
                return Err(BenchError::Usage {
                    arg: other.to_string(),
                    reason: "unknown member argument".to_string(),
                })
            }
        };
        *slot = Some(value(&mut args, &arg)?);
    }
    let need = |v: Option<String>, flag: &str| {
        v.ok_or_else(|| BenchError::Usage {
            arg: flag.to_string(),
            reason: "required in member mode".to_string(),
        })
    };
    Ok(MemberArgs {
        name: need(name, "--name")?,
        data_dir: need(data_dir, "--data-dir")?.into(),
        listen_peer_url: need(peer, "--listen-peer-url")?,
        listen_client_url: need(client, "--listen-client-url")?,
        initial_cluster: need(cluster, "--initial-cluster")?,
    })
}

impl MemberArgs {
    /// The arguments that make [`parse`] return these member args.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "member".to_string(),
            "--name".to_string(),
            self.name.clone(),
            "--data-dir".to_string(),
            self.data_dir.display().to_string(),
            "--listen-peer-url".to_string(),
            self.listen_peer_url.clone(),
            "--listen-client-url".to_string(),
            self.listen_client_url.clone(),
            "--initial-cluster".to_string(),
            self.initial_cluster.clone(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn run_flags_are_parsed_and_unknown_ones_rejected() -> Result<()> {
        let Mode::Run(run) = parse(strings(&["--quick", "--only", "etcd"]))? else {
            panic!("not a run");
        };
        assert!(run.quick);
        assert!(!run.puts_only);
        assert_eq!(run.only, Only::Etcd);
        let Mode::Run(run) = parse(strings(&["--puts-only"]))? else {
            panic!("not a run");
        };
        assert!(run.puts_only && !run.quick);
        assert!(parse(strings(&["--only", "zookeeper"])).is_err());
        assert!(parse(strings(&["--only"])).is_err());
        assert!(parse(strings(&["--fast"])).is_err());
        Ok(())
    }

    #[test]
    fn member_args_round_trip_through_the_command_line() -> Result<()> {
        let member = MemberArgs {
            name: "n2".into(),
            data_dir: "/tmp/x".into(),
            listen_peer_url: "http://127.0.0.1:1".into(),
            listen_client_url: "http://127.0.0.1:2".into(),
            initial_cluster: "n1=http://127.0.0.1:3,n2=http://127.0.0.1:1".into(),
        };
        assert_eq!(parse(member.to_args())?, Mode::Member(member));
        assert!(parse(strings(&["member", "--name", "n1"])).is_err());
        Ok(())
    }
}
