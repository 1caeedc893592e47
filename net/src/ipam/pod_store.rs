//! The node-local pod address file: a [`PodPool`] kept as JSON under a state directory,
//! re-read and rewritten under an exclusive `flock` on every change, written atomically
//! (temp file, fsync, rename, fsync of the directory). Holding no truth in memory, any
//! number of handles and processes can share one directory. It must not configure the
//! kernel. All calls block; async callers use `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};

use super::pod_pool::PodPool;
use crate::error::{Error, Result};
use crate::subnet::validate_pod_subnet;

const STATE_FILE: &str = "pod-ips.json";
const LOCK_FILE: &str = "pod-ips.lock";
const TEMP_FILE: &str = "pod-ips.json.tmp";

/// Pod address allocation for one node, persisted in `<state_dir>/pod-ips.json`.
#[derive(Debug, Clone)]
pub struct PodIpam {
    dir: PathBuf,
    subnet: Ipv4Net,
}

impl PodIpam {
    /// Opens (creating if missing) the pod address state in `state_dir` for `subnet`. A
    /// state of another subnet is taken over when it holds no allocation, else it is an
    /// [`Error::IpamSubnetMismatch`].
    pub fn open(state_dir: impl Into<PathBuf>, subnet: Ipv4Net) -> Result<PodIpam> {
        validate_pod_subnet(subnet)?;
        let dir = state_dir.into();
        fs::create_dir_all(&dir).map_err(|source| io("create ipam dir", &dir, source))?;
        let ipam = PodIpam { dir, subnet };
        ipam.update(|_| Ok(()))?;
        Ok(ipam)
    }

    /// The node subnet addresses come from.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The address of `pod_uid`, allocating one if it holds none. Idempotent per uid.
    pub fn allocate(&self, pod_uid: &str) -> Result<Ipv4Addr> {
        let ip = self.update(|pool| pool.allocate(pod_uid))?;
        tracing::debug!(message = "pod address allocated", pod = pod_uid, address = %ip);
        Ok(ip)
    }

    /// Frees the address of `pod_uid`; returns it, or `None` if it held none. Idempotent.
    pub fn release(&self, pod_uid: &str) -> Result<Option<Ipv4Addr>> {
        let freed = self.update(|pool| Ok(pool.release(pod_uid)))?;
        if let Some(ip) = freed {
            tracing::debug!(message = "pod address released", pod = pod_uid, address = %ip);
        }
        Ok(freed)
    }

    /// Frees the address of every pod not in `live_uids` and returns what it freed.
    pub fn reconcile<'a>(
        &self,
        live_uids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<(String, Ipv4Addr)>> {
        let freed = self.update(|pool| Ok(pool.reconcile(live_uids)))?;
        for (uid, ip) in &freed {
            tracing::info!(message = "leaked pod address freed", pod = %uid, address = %ip);
        }
        Ok(freed)
    }

    /// The current allocations, read from disk.
    pub fn snapshot(&self) -> Result<PodPool> {
        self.update(|pool| Ok(pool.clone()))
    }

    /// Runs `change` on the pool under the lock and writes the result back if it changed.
    fn update<T>(&self, change: impl FnOnce(&mut PodPool) -> Result<T>) -> Result<T> {
        let lock_path = self.dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| io("open ipam lock", &lock_path, source))?;
        let _lock =
            Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, source)| Error::Sys {
                op: "lock ipam state",
                path: lock_path.clone(),
                source,
            })?;
        let before = self.load()?;
        let mut pool = before.clone();
        let out = change(&mut pool)?;
        if pool != before {
            self.store(&pool)?;
        }
        Ok(out)
    }

    fn load(&self) -> Result<PodPool> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(source) if source.kind() == ErrorKind::NotFound => {
                return PodPool::new(self.subnet)
            }
            Err(source) => return Err(io("read ipam state", &path, source)),
        };
        let pool: PodPool =
            serde_json::from_slice(&bytes).map_err(|source| Error::IpamCorrupt {
                path: path.clone(),
                source,
            })?;
        if pool.subnet() == self.subnet {
            Ok(pool)
        } else if pool.allocations().is_empty() {
            PodPool::new(self.subnet)
        } else {
            Err(Error::IpamSubnetMismatch {
                path,
                stored: pool.subnet(),
                requested: self.subnet,
            })
        }
    }

    fn store(&self, pool: &PodPool) -> Result<()> {
        let temp = self.dir.join(TEMP_FILE);
        let path = self.dir.join(STATE_FILE);
        let bytes = serde_json::to_vec_pretty(pool).map_err(|source| Error::IpamCorrupt {
            path: path.clone(),
            source,
        })?;
        let mut file =
            File::create(&temp).map_err(|source| io("create ipam temp", &temp, source))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|source| io("write ipam temp", &temp, source))?;
        fs::rename(&temp, &path).map_err(|source| io("rename ipam state", &path, source))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| io("fsync ipam dir", &self.dir, source))
    }
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashSet;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocations_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = PodIpam::open(dir.path(), net("10.244.5.0/24")).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        drop(ipam);
        let again = PodIpam::open(dir.path(), net("10.244.5.0/24")).unwrap();
        assert_eq!(again.allocate("pod-a").unwrap(), a);
        assert_ne!(again.allocate("pod-b").unwrap(), a);
        assert!(
            !dir.path().join(TEMP_FILE).exists(),
            "temp file renamed away"
        );
    }

    #[test]
    fn concurrent_handles_never_hand_out_one_address_twice() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = net("10.244.5.0/24");
        PodIpam::open(dir.path(), subnet).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = dir.path().to_path_buf();
                // Each thread has its own handle, like separate processes would.
                std::thread::spawn(move || {
                    let ipam = PodIpam::open(path, subnet).unwrap();
                    (0..20)
                        .map(|i| {
                            (
                                format!("pod-{t}-{i}"),
                                ipam.allocate(&format!("pod-{t}-{i}")).unwrap(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<(String, Ipv4Addr)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let distinct: HashSet<Ipv4Addr> = all.iter().map(|(_, ip)| *ip).collect();
        assert_eq!(distinct.len(), 160, "no address handed out twice");
        let stored = PodIpam::open(dir.path(), subnet)
            .unwrap()
            .snapshot()
            .unwrap();
        assert_eq!(
            stored.allocations().len(),
            160,
            "every allocation persisted"
        );
        for (uid, ip) in all {
            assert_eq!(stored.get(&uid), Some(ip));
        }
    }

    #[test]
    fn reconcile_and_release_persist() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = PodIpam::open(dir.path(), net("10.244.5.0/24")).unwrap();
        ipam.allocate("live").unwrap();
        let leaked = ipam.allocate("leaked").unwrap();
        ipam.allocate("gone").unwrap();
        assert!(ipam.release("gone").unwrap().is_some());
        assert_eq!(ipam.release("gone").unwrap(), None);
        assert_eq!(
            ipam.reconcile(["live"]).unwrap(),
            vec![("leaked".to_owned(), leaked)]
        );
        let reopened = PodIpam::open(dir.path(), net("10.244.5.0/24")).unwrap();
        let stored = reopened.snapshot().unwrap();
        let uids: Vec<&str> = stored.allocations().keys().map(String::as_str).collect();
        assert_eq!(uids, vec!["live"]);
    }

    #[test]
    fn a_changed_subnet_is_refused_while_pods_hold_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = PodIpam::open(dir.path(), net("10.244.5.0/24")).unwrap();
        ipam.allocate("a").unwrap();
        assert!(matches!(
            PodIpam::open(dir.path(), net("10.244.6.0/24")),
            Err(Error::IpamSubnetMismatch { .. })
        ));
        ipam.release("a").unwrap();
        let moved = PodIpam::open(dir.path(), net("10.244.6.0/24")).unwrap();
        assert_eq!(moved.allocate("b").unwrap(), Ipv4Addr::new(10, 244, 6, 2));
    }

    #[test]
    fn a_corrupt_state_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(
            PodIpam::open(dir.path(), net("10.244.5.0/24")),
            Err(Error::IpamCorrupt { .. })
        ));
    }
}
