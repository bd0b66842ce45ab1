//! What safe code may do to handles: a `WriteTree` forgotten after some changes, a panic
//! from user code while a tree is borrowed (caught), and the database, readers and the
//! writer ended in any order (`Lifecycle`).

use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind, panic_any};
use std::sync::atomic::Ordering;

use mapkv::testing::open_with_backend;
use mapkv::{Database, Durability, Options, ReadTxn, WriteTxn};

use crate::checks::{check_all, check_view};
use crate::harness::{Harness, Store};
use crate::input::{Fate, Lifecycle, PanicPoint, WriterEnd};
use crate::mem;
use crate::support::model::{digest, read_all};
use crate::trees::{OpenModelTree, Tree, Trees, key_max, name};

impl Harness {
    /// Changes made through a tree that is then forgotten are kept, as if it had been
    /// dropped: the transaction must know every change at every moment.
    pub fn forget_tree(&mut self, tree: &str, start: u16, count: u8, value_len: u16, every: u8) {
        let Some((wtx, pending)) = self.wtx_and_pending() else {
            return;
        };
        let m = pending.entry(tree.to_string()).or_default();
        forget_write_tree(wtx, m, tree, start, count, value_len, every);
        self.forgot = true;
    }

    /// A panic from user code while a tree is borrowed, caught by the user: it strikes
    /// between changes, so the transaction goes on with every change made before it.
    pub fn user_panic(&mut self, tree: &str, k: Vec<u8>, v: Vec<u8>, point: PanicPoint) {
        let key_max = key_max(self.page_size, tree);
        let in_memory = matches!(self.store, Store::Mem(_));
        let Some((wtx, pending)) = self.wtx_and_pending() else {
            return;
        };
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let mut t = wtx.open_model_tree(tree).expect("open_tree");
            let m = pending.entry(tree.to_string()).or_default();
            match point {
                PanicPoint::Opened => {}
                PanicPoint::AfterInsert if k.len() <= key_max => {
                    t.insert(&k, &v).expect("insert");
                    m.insert(k, v);
                }
                PanicPoint::AfterInsert => {}
                PanicPoint::AfterRemove => {
                    let was = t.remove(&k).expect("remove");
                    assert_eq!(was, m.remove(&k).is_some(), "remove {k:?}");
                }
                PanicPoint::InRange => {
                    let mut range = t.range(..).expect("range");
                    let first = range.next().map(|e| e.expect("range entry").0.to_vec());
                    assert_eq!(first.as_ref(), m.keys().next(), "first key");
                    panic_any(UserPanic);
                }
                PanicPoint::AfterRun | PanicPoint::MidChange(_) => {
                    if let (PanicPoint::MidChange(n), true) = (point, in_memory) {
                        mem::PANIC_IN_OPS.store(u64::from(n % 8) + 1, Ordering::Relaxed);
                    }
                    let start = v.len() as u16;
                    for i in 0..24u16 {
                        let n = start.wrapping_add(i * 7) % 400;
                        let key = format!("k{n:04}").into_bytes();
                        if i % 3 == 2 {
                            let was = t.remove(&key).expect("remove");
                            assert_eq!(was, m.remove(&key).is_some(), "remove {key:?}");
                        } else {
                            let value = vec![i as u8; (i as usize * 211) % 3000];
                            t.insert(&key, &value).expect("insert");
                            m.insert(key, value);
                        }
                    }
                }
            }
            panic_any(UserPanic);
        }));
        mem::PANIC_IN_OPS.store(0, Ordering::Relaxed);
        let payload = caught.expect_err("the closure panics");
        if payload.is::<mem::InjectedPanic>() {
            self.end_interrupted(tree);
            return;
        }
        assert!(payload.is::<UserPanic>(), "not our panic");
    }
}

/// The payload of the panics this target raises on purpose, as user code would. The
/// panic hook lets them through to `catch_unwind`; any other panic still aborts, as
/// libFuzzer's hook makes every panic do.
pub struct UserPanic;

pub fn let_user_panics_through() {
    let fuzzer_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let ours = info.payload().is::<UserPanic>() || info.payload().is::<mem::InjectedPanic>();
        if !ours {
            fuzzer_hook(info);
        }
    }));
}

/// Makes `count` changes through a `WriteTree` of `tree` (model: `m`), then forgets it.
/// Not inlined: LeakSanitizer is told, by this function's name, that what a forgotten
/// tree owns (its name) is leaked on purpose.
#[inline(never)]
fn forget_write_tree(
    wtx: &mut WriteTxn,
    m: &mut Tree,
    tree: &str,
    start: u16,
    count: u8,
    value_len: u16,
    remove_every: u8,
) {
    let mut t = wtx.open_model_tree(tree).expect("open_tree");
    for i in 0..u16::from(count) {
        let n = start.wrapping_add(i) % 400;
        let key = format!("k{n:04}").into_bytes();
        if remove_every > 0 && i % u16::from(remove_every) == 0 {
            let was = t.remove(&key).expect("remove");
            assert_eq!(was, m.remove(&key).is_some(), "remove {key:?}");
        } else {
            let value = vec![(n % 251) as u8; (value_len as usize + i as usize) % 5000];
            t.insert(&key, &value).expect("insert");
            m.insert(key, value);
        }
    }
    std::mem::forget(t);
}

/// LeakSanitizer's default suppressions (it calls this at start): a forgotten `WriteTree`
/// leaks what it owns by definition.
#[unsafe(no_mangle)]
pub extern "C" fn __lsan_default_suppressions() -> *const c_char {
    c"leak:forget_write_tree\n".as_ptr()
}

/// A handle alive in a `Lifecycle`.
#[expect(
    clippy::large_enum_variant,
    reason = "a lifecycle holds a few handles; boxing the writer would buy nothing"
)]
enum Handle {
    Db(Database),
    /// A reader and the state it must see.
    Reader(ReadTxn, Trees),
    /// The writer, its view, and its end (None: dropped as it is).
    Writer(WriteTxn, Trees, Option<WriterEnd>),
}

/// Ends every handle in the order the input gives, then reopens the file: it must hold
/// the last commit (a clean close makes `Durability::None` commits durable too). The file
/// as it was before the last handle ended (a kill -9 then) must hold the last durable
/// commit or a later one.
pub fn lifecycle(h: &mut Harness, plan: &Lifecycle) {
    let db = h.db.take().expect("open");
    let mut handles = Vec::new();
    if let Some((r, m)) = h.snapshot.take() {
        handles.push(Handle::Reader(r, m));
    }
    for _ in 0..plan.readers % 4 {
        let r = db.begin_read().expect("begin_read");
        handles.push(Handle::Reader(r, h.committed.clone()));
    }
    match (h.wtx.take(), plan.writer) {
        (Some(w), end) => handles.push(Handle::Writer(w, std::mem::take(&mut h.pending), end)),
        (None, Some(end)) if !h.read_only => {
            let w = db.begin_write().expect("begin_write");
            handles.push(Handle::Writer(w, h.committed.clone(), Some(end)));
        }
        (None, _) => {}
    }
    handles.push(Handle::Db(db));
    let mut order = plan.order.iter();
    let mut kill = None;
    while !handles.is_empty() {
        if handles.len() == 1 {
            kill = Some((h.image(), h.chain.clone()));
        }
        let next = order.next().map_or(0, |&o| o as usize % handles.len());
        match handles.remove(next) {
            Handle::Db(db) => drop(db),
            Handle::Reader(r, m) => {
                check_view(&r, &m, "a reader");
                drop(r);
            }
            Handle::Writer(w, _, None) => drop(w),
            Handle::Writer(mut w, mut m, Some(end)) => {
                let tree = name(end.tree);
                let key_max = key_max(h.page_size, tree);
                {
                    let mut t = w.open_model_tree(tree).expect("open_tree");
                    let mt = m.entry(tree.to_string()).or_default();
                    for i in 0..u16::from(end.count) {
                        let n = end.start.wrapping_add(i) % 400;
                        let key = format!("k{n:04}").into_bytes();
                        let value = vec![i as u8; (i as usize * 37) % 3000];
                        assert!(key.len() <= key_max);
                        t.insert(&key, &value).expect("insert");
                        mt.insert(key, value);
                    }
                }
                let durability = if end.immediate {
                    Durability::Immediate
                } else {
                    Durability::None
                };
                w.set_durability(durability);
                match end.fate {
                    Fate::Commit => {
                        w.commit().expect("commit");
                        h.committed = m;
                        // After the reopen, `check_all` checks it (and any forgotten tree).
                        h.note_commit(durability);
                    }
                    Fate::Abort => w.abort(),
                    Fate::Drop => drop(w),
                }
            }
        }
    }
    h.forgot = false;
    // Every handle is gone: the last one closed the file.
    h.open(plan.mmap, h.page_size, false);
    check_all(h.db(), &h.committed);
    if let Some((image, Some(chain))) = kill {
        let db = open_with_backend(mem::file(image).backend(), Options::new())
            .expect("open the file as a kill -9 before the last handle ended leaves it");
        db.check().expect("check the kill -9 image");
        let got = digest(&read_all(&db).expect("read the kill -9 image"));
        assert!(
            chain.contains(&got),
            "the kill -9 image holds neither the last durable commit nor a later one"
        );
    }
}
