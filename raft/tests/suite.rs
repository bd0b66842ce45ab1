//! openraft's own storage conformance suite, unchanged, over fresh mapkv stores.

use mapkv_raft::{LogStore, LogStoreOptions, StateMachineStore, TypeConfig};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

/// Makes fresh stores in a temporary folder, with group commit on or off.
struct Builder {
    group_commit: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = LogStoreOptions {
            group_commit: self.group_commit,
        };
        let (log, sm) = mapkv_raft::open_with(dir.path(), options)
            .await
            .expect("open stores");
        Ok((dir, log, sm))
    }
}

/// `test_all` runs the suite's 35 cases one after another, each on fresh stores, and
/// stops at the first failure.
#[test]
fn openraft_suite_group_commit() {
    if let Err(e) = Suite::test_all(Builder { group_commit: true }) {
        panic!("openraft storage suite, group commit: {e}");
    }
}

#[test]
fn openraft_suite_commit_per_append() {
    if let Err(e) = Suite::test_all(Builder {
        group_commit: false,
    }) {
        panic!("openraft storage suite, a commit per append: {e}");
    }
}
