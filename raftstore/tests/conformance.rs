//! Runs openraft's storage conformance suite against the sled log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use raftstore::{LogStore, StateMachineStore, TypeConfig};

/// Builds a fresh pair of stores on its own temporary sled database per test case.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), openraft::StorageError<u64>> {
        let io = |e: &dyn std::error::Error| {
            openraft::StorageError::from(openraft::StorageIOError::write(
                openraft::AnyError::error(e),
            ))
        };
        let dir = tempfile::tempdir().map_err(|e| io(&e))?;
        let db = sled::Config::new()
            .path(dir.path().join("sled"))
            .open()
            .map_err(|e| io(&e))?;
        let log = LogStore::open(&db).map_err(|e| io(&e))?;
        let sm = StateMachineStore::open(&db).map_err(|e| io(&e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_stores_pass_openraft_storage_suite() -> anyhow::Result<()> {
    Suite::test_all(SledBuilder)?;
    Ok(())
}
