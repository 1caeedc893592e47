//! `capstan store` as a command with subcommands: without one it runs a member (the flags of
//! [`StoreArgs`], plus etcd's `--auto-compaction-mode` / `--auto-compaction-retention`);
//! `capstan store snapshot save|restore|status` backs up a running member over the etcd API and
//! turns a backup into the data directory of a new member, as `etcdctl snapshot save` and
//! `etcdutl snapshot restore` do.
//!
//! Owns only flag parsing and printing; backups themselves live in `raftstore`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use raftstore::{BackupInfo, ClusterConfig, CompactionPolicy};

use super::store::{self, StoreArgs};

/// The peer URL `capstan store` listens on by default.
const DEFAULT_PEER_URL: &str = "http://127.0.0.1:2380";

/// `capstan store`: run a member, or a subcommand.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct StoreCommand {
    #[command(subcommand)]
    command: Option<StoreSubcommand>,
    #[command(flatten)]
    member: StoreArgs,
    #[command(flatten)]
    compaction: CompactionArgs,
}

/// etcd's automatic compaction flags.
#[derive(Args, Debug)]
struct CompactionArgs {
    /// `periodic`: keep the history of the last --auto-compaction-retention (a duration such as
    /// 1h or 30m, or whole hours); `revision`: keep the last --auto-compaction-retention
    /// revisions. Only the leader compacts, through the Raft log.
    #[arg(long, default_value = "periodic")]
    auto_compaction_mode: String,
    /// How much history to keep (see --auto-compaction-mode); 0 turns automatic compaction off.
    #[arg(long, default_value = "0")]
    auto_compaction_retention: String,
}

#[derive(Subcommand, Debug)]
enum StoreSubcommand {
    /// Back up a running member and restore backups.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Stream a consistent backup of the whole store from a running member into FILE (written
    /// to FILE.part, fsynced, verified, then renamed).
    Save {
        /// The backup file to write.
        file: PathBuf,
        /// The member's etcd client URL (exactly one, as with etcdctl).
        #[arg(long, alias = "endpoint", default_value = "http://127.0.0.1:2379")]
        endpoints: String,
    },
    /// Create the data directory of a new member from a backup (verifies its checksum first).
    /// Restore every member of the new cluster from the same file with the same
    /// --initial-cluster, then start each with `capstan store`.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The new member's data directory; must not exist or be empty.
        #[arg(long)]
        data_dir: PathBuf,
        /// The new member's name; must be listed in --initial-cluster.
        #[arg(long, default_value = "default")]
        name: String,
        /// All members of the new cluster as name=peer-url pairs (default: this member alone
        /// at --initial-advertise-peer-urls, else at http://127.0.0.1:2380).
        #[arg(long)]
        initial_cluster: Option<String>,
        /// The new member's peer URL; must match its entry in --initial-cluster (default: that
        /// entry).
        #[arg(long)]
        initial_advertise_peer_urls: Option<String>,
    },
    /// Verify a backup file and show what it holds.
    Status {
        /// The backup file.
        file: PathBuf,
    },
}

/// Runs `capstan store` or one of its subcommands.
pub async fn run(a: StoreCommand) -> anyhow::Result<()> {
    match a.command {
        None => {
            let policy = CompactionPolicy::from_flags(
                &a.compaction.auto_compaction_mode,
                &a.compaction.auto_compaction_retention,
            )?;
            store::run(a.member, policy).await
        }
        Some(StoreSubcommand::Snapshot(SnapshotCommand::Save { file, endpoints })) => {
            save(&file, &endpoints).await
        }
        Some(StoreSubcommand::Snapshot(SnapshotCommand::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_advertise_peer_urls,
        })) => {
            let advertise = initial_advertise_peer_urls.as_deref();
            let spec = initial_cluster
                .unwrap_or_else(|| format!("{name}={}", advertise.unwrap_or(DEFAULT_PEER_URL)));
            // The listen URL does not matter for a restore; `capstan store` is told it later.
            let mut cfg = ClusterConfig::new(&name, data_dir, DEFAULT_PEER_URL, &spec)
                .context("--name / --initial-cluster")?;
            if let Some(url) = advertise {
                cfg = cfg
                    .with_advertise_peer_url(url)
                    .context("--initial-advertise-peer-urls")?;
            }
            restore(&file, &cfg).await
        }
        Some(StoreSubcommand::Snapshot(SnapshotCommand::Status { file })) => {
            let bytes = read(&file)?;
            let info =
                raftstore::verify_backup(&bytes).with_context(|| format!("{}", file.display()))?;
            println!("{}", describe(&info, bytes.len()));
            Ok(())
        }
    }
}

async fn save(file: &std::path::Path, endpoints: &str) -> anyhow::Result<()> {
    let endpoints: Vec<&str> = endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let [endpoint] = endpoints[..] else {
        anyhow::bail!(
            "--endpoints: a snapshot is taken from exactly one member, got {}",
            endpoints.len()
        );
    };
    let saved = raftstore::save_snapshot(endpoint, file).await?;
    println!(
        "Snapshot saved at {} ({} bytes, revision {})",
        saved.path.display(),
        saved.size,
        saved.revision
    );
    if saved.info.is_none() {
        println!("(not a Capstan backup: an etcd snapshot, restore it with etcdutl)");
    }
    Ok(())
}

async fn restore(file: &std::path::Path, cfg: &ClusterConfig) -> anyhow::Result<()> {
    let bytes = read(file)?;
    let info = raftstore::restore_backup(&bytes, cfg)
        .await
        .with_context(|| format!("restoring {}", file.display()))?;
    println!(
        "Restored {} into {} as member {} ({:x}): {}",
        file.display(),
        cfg.data_dir.display(),
        cfg.name,
        cfg.node_id,
        describe(&info, bytes.len())
    );
    Ok(())
}

fn read(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// `revision 42, compact revision 7, 4096 bytes, taken from member 1f.. at <time>`.
fn describe(info: &BackupInfo, size: usize) -> String {
    let taken = chrono::DateTime::from_timestamp_millis(
        i64::try_from(info.created_unix_ms).unwrap_or(i64::MAX),
    )
    .map_or_else(|| "?".to_string(), |t| t.to_rfc3339());
    format!(
        "revision {}, compact revision {}, {size} bytes, taken from member {:x} at {taken}",
        info.revision, info.compact_revision, info.member
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreCommand,
    }

    fn parse(args: &[&str]) -> Result<StoreCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("store").chain(args.iter().copied())).map(|c| c.store)
    }

    #[test]
    fn member_flags_still_parse_without_a_subcommand() -> anyhow::Result<()> {
        let a = parse(&[
            "--name",
            "n1",
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "100",
        ])?;
        assert!(a.command.is_none());
        assert_eq!(a.compaction.auto_compaction_retention, "100");
        Ok(())
    }

    #[test]
    fn snapshot_subcommands_take_etcd_flags() -> anyhow::Result<()> {
        let a = parse(&["snapshot", "save", "b.db", "--endpoints", "127.0.0.1:2379"])?;
        assert!(matches!(
            a.command,
            Some(StoreSubcommand::Snapshot(SnapshotCommand::Save { ref endpoints, .. }))
                if endpoints == "127.0.0.1:2379"
        ));
        let a = parse(&[
            "snapshot",
            "restore",
            "b.db",
            "--data-dir",
            "/tmp/x",
            "--name",
            "n2",
            "--initial-cluster",
            "n1=http://127.0.0.1:2380,n2=http://127.0.0.2:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.2:2380",
        ])?;
        assert!(matches!(
            a.command,
            Some(StoreSubcommand::Snapshot(SnapshotCommand::Restore { ref name, .. })) if name == "n2"
        ));
        // Member flags do not mix with a subcommand.
        assert!(parse(&["--name", "n1", "snapshot", "status", "b.db"]).is_err());
        Ok(())
    }
}
