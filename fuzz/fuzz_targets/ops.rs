//! Arbitrary sequences of operations against a `BTreeMap` model: inserts, removes, gets,
//! ranges in both directions (front and back mixed), trees opened and deleted, commits,
//! aborts, reopens (with another mmap_size, durability, read-only), long-lived snapshots,
//! at every page size; `check()` after the run. Mostly on an in-memory backend (fast, no
//! files); one input in sixteen on a real temporary file, so the map is exercised too.
//!
//! What safe code may do to handles is fuzzed too: a `WriteTree` forgotten
//! (`mem::forget`) after some changes, a panic from user code while a tree is borrowed
//! (caught), and the database, readers and the writer dropped, aborted or committed in
//! any order, the database first included.

#![no_main]

#[path = "common/mem.rs"]
mod mem;

// The model's digest and a full read of a database, shared with the crash target.
#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "ops/checks.rs"]
mod checks;
#[path = "ops/handles.rs"]
mod handles;
#[path = "ops/harness.rs"]
mod harness;
#[path = "ops/input.rs"]
mod input;
#[path = "ops/trees.rs"]
mod trees;

use libfuzzer_sys::fuzz_target;
use mapkv::{Durability, Error};

use checks::{check_all, check_view};
use handles::{let_user_panics_through, lifecycle};
use harness::{Harness, Store};
use input::{Input, MmapSize, Op, bound, key_bytes, page_size_of, value_bytes};
use trees::{OpenModelTree, Tree, Trees, name};

fuzz_target!(init: let_user_panics_through(), |input: Input| {
    let page_size = page_size_of(input.page_size);
    let store = if input.file.is_multiple_of(16) {
        Store::File(tempfile::tempdir().expect("tempdir"))
    } else {
        Store::Mem(mem::file(Vec::new()))
    };
    let mut h = Harness {
        store,
        page_size,
        db: None,
        read_only: false,
        wtx: None,
        durability: Durability::Immediate,
        committed: Trees::new(),
        pending: Trees::new(),
        snapshot: None,
        forgot: false,
        chain: None,
        track_chain: input.ops.iter().any(|op| matches!(op, Op::Lifecycle(_))),
    };
    h.open(input.mmap, page_size, false);
    for op in input.ops.iter().take(200) {
        match op {
            Op::Insert { tree, key, value } => {
                h.insert(name(*tree), key_bytes(key), value_bytes(value))
            }
            Op::InsertRun {
                tree,
                start,
                count,
                value_len,
                long,
            } => {
                for i in 0..*count as u16 {
                    let n = start.wrapping_add(i) % 400;
                    let k = if *long {
                        format!("run-{n:04}-{}", "r".repeat(n as usize % 300)).into_bytes()
                    } else {
                        format!("k{n:04}").into_bytes()
                    };
                    let v = vec![(n % 251) as u8; *value_len as usize % 2500];
                    h.insert(name(*tree), k, v);
                }
            }
            Op::Remove { tree, key } => h.remove(name(*tree), &key_bytes(key)),
            Op::RemoveRun {
                tree,
                start,
                count,
                step,
            } => {
                let step = (*step as usize % 4) + 1;
                for i in (0..*count as u16).step_by(step) {
                    let n = start.wrapping_add(i) % 400;
                    h.remove(name(*tree), format!("k{n:04}").as_bytes());
                }
            }
            Op::Get {
                tree,
                key,
                committed,
            } => {
                let k = key_bytes(key);
                h.read(name(*tree), *committed, |t, m| {
                    assert_eq!(t.get(&k), m.and_then(|m| m.get(&k).cloned()), "get {k:?}");
                });
            }
            Op::Range {
                tree,
                lo,
                hi,
                pattern,
                take,
                committed,
            } => {
                let (lo, hi) = (bound(lo), bound(hi));
                h.read(name(*tree), *committed, |t, m| {
                    t.check_range(
                        m.unwrap_or(&Tree::new()),
                        lo,
                        hi,
                        *pattern,
                        *take as usize + 1,
                    )
                });
            }
            Op::Len { tree, committed } => {
                h.read(name(*tree), *committed, |t, m| {
                    assert_eq!(t.len(), m.map_or(0, |m| m.len() as u64), "len");
                });
            }
            Op::OpenTree { tree } => {
                if let Some(w) = h.wtx() {
                    drop(w.open_model_tree(name(*tree)).expect("open_tree"));
                    h.pending.entry(name(*tree).to_string()).or_default();
                }
            }
            Op::DeleteTree { tree } => {
                if let Some(w) = h.wtx() {
                    let existed = w.delete_tree(name(*tree)).expect("delete_tree");
                    assert_eq!(
                        existed,
                        h.pending.remove(name(*tree)).is_some(),
                        "delete_tree"
                    );
                }
            }
            Op::TreeNames { committed } => {
                let (names, model) = match (&h.wtx, committed) {
                    (Some(w), false) => (w.tree_names().expect("tree_names"), &h.pending),
                    _ => (
                        h.db()
                            .begin_read()
                            .and_then(|r| r.tree_names())
                            .expect("tree_names"),
                        &h.committed,
                    ),
                };
                assert_eq!(
                    names,
                    model.keys().cloned().collect::<Vec<_>>(),
                    "tree names"
                );
            }
            Op::Commit => h.commit(),
            Op::Abort => h.abort(),
            Op::Durability(immediate) => {
                h.durability = if *immediate {
                    Durability::Immediate
                } else {
                    Durability::None
                };
                let d = h.durability;
                if let Some(w) = h.wtx.as_mut() {
                    w.set_durability(d);
                }
            }
            Op::Reopen {
                mmap,
                immediate,
                read_only,
                page_size,
            } => {
                h.close();
                h.durability = if *immediate {
                    Durability::Immediate
                } else {
                    Durability::None
                };
                // Another page size is ignored: the file's wins.
                h.open(*mmap, page_size_of(*page_size), *read_only);
            }
            Op::Snapshot => {
                let r = h.db().begin_read().expect("begin_read");
                h.snapshot = Some((r, h.committed.clone()));
            }
            Op::CheckSnapshot => {
                if let Some((r, model)) = &h.snapshot {
                    check_view(r, model, "the snapshot");
                }
            }
            Op::Compact if h.wtx.is_none() => {
                // Commits that move pages and cut the file: all durable, content unchanged.
                match h.db().compact() {
                    Ok(_) => h.note_commit(Durability::Immediate),
                    Err(Error::ReadOnly) if h.read_only => {}
                    Err(e) => panic!("compact: {e}"),
                }
                h.db().check().expect("check after compact");
                let r = h.db().begin_read().expect("begin_read");
                check_view(&r, &h.committed, "after compact");
            }
            Op::Compact => {}
            Op::Append { tree, key, value } => {
                h.append(name(*tree), key_bytes(key), value_bytes(value))
            }
            // (A read-only handle has no write transaction: nothing to append to.)
            Op::AppendRun {
                tree,
                count,
                value_len,
            } if h.wtx().is_some() => {
                let tree = name(*tree);
                for i in 0..*count {
                    let v = vec![i; *value_len as usize % 9000];
                    h.append(tree, h.successor(tree), v);
                }
                if let Some(last) = h.pending.get(tree).and_then(|m| m.keys().next_back()) {
                    h.append(tree, last.clone(), b"refused".to_vec());
                }
            }
            Op::AppendRun { .. } => {}
            Op::Check => {
                h.db().check().expect("check");
            }
            Op::Rmw {
                tree,
                key,
                value,
                kind,
            } => h.rmw(name(*tree), key_bytes(key), value_bytes(value), *kind),
            Op::Ends {
                tree,
                key,
                committed,
            } => {
                let k = key_bytes(key);
                for len in [0, 1, k.len() / 2, k.len()] {
                    let p = &k[..len.min(k.len())];
                    h.read(name(*tree), *committed, |t, m| {
                        t.check_ends(m.unwrap_or(&Tree::new()), p)
                    });
                }
            }
            Op::TwoTrees {
                a,
                b,
                start,
                count,
                value_len,
            } => h.two_trees(name(*a), name(*b), *start, *count, *value_len),
            Op::InsertFrom {
                tree,
                key,
                value,
                short,
            } => h.insert_from(name(*tree), key_bytes(key), value_bytes(value), *short),
            Op::InsertReserve {
                tree,
                key,
                value,
                filled,
                freeze,
            } => h.insert_reserve(
                name(*tree),
                name(tree.wrapping_add(1)),
                key_bytes(key),
                value_bytes(value),
                *filled,
                *freeze,
            ),
            Op::ForgetTree {
                tree,
                start,
                count,
                value_len,
                remove_every,
            } => h.forget_tree(name(*tree), *start, *count, *value_len, *remove_every),
            Op::UserPanic {
                tree,
                key,
                value,
                point,
            } => h.user_panic(name(*tree), key_bytes(key), value_bytes(value), *point),
            Op::Lifecycle(plan) => lifecycle(&mut h, plan),
            Op::RemoveRange { tree, lo, hi } => h.remove_range(name(*tree), bound(lo), bound(hi)),
            Op::Retain {
                tree,
                modulus,
                seed,
                panic_at,
            } => h.retain(name(*tree), *modulus, *seed, *panic_at),
        }
    }
    if input.ops.len().is_multiple_of(2) {
        h.commit();
    }
    h.wtx = None;
    h.snapshot = None;
    check_all(h.db(), &h.committed);
    // What a clean close leaves must reopen to the same content.
    h.close();
    h.open(MmapSize::Whole, page_size, false);
    check_all(h.db(), &h.committed);
});
