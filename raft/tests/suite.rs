//! openraft's own storage conformance suite, unchanged, over fresh mapkv stores.

use mapkv_raft::{LogStore, StateMachineStore, TypeConfig};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = mapkv_raft::open(dir.path()).await.expect("open stores");
        Ok((dir, log, sm))
    }
}

/// `test_all` runs the suite's 35 cases one after another, each on fresh stores, and
/// stops at the first failure.
#[test]
fn openraft_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite: {e}");
    }
}
