//! Typed tables: key encodings (round trips, order), values read in place, stored bytes
//! that do not fit the value type, and a model test against `BTreeMap`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Bound;

use mapkv::{Database, Error, Key, Options, Result, Table};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

fn encode<K: Key + ?Sized>(key: &K) -> Vec<u8> {
    let mut out = Vec::new();
    key.encode(&mut out);
    out
}

fn encode_delimited<K: Key + ?Sized>(key: &K) -> Vec<u8> {
    let mut out = Vec::new();
    key.encode_delimited(&mut out);
    out
}

/// `a` and `b` encode (whole and delimited) in the order they compare, and decode back
/// to themselves.
fn sorts_like<K>(a: &K, b: &K) -> bool
where
    K: Key<Owned = K> + Ord + Debug,
{
    let whole = encode(a).cmp(&encode(b)) == a.cmp(b);
    let delimited = encode_delimited(a).cmp(&encode_delimited(b)) == a.cmp(b);
    let mut input = &encode_delimited(a)[..];
    let round_trip = K::decode(&encode(a)).unwrap() == *a
        && K::decode_delimited(&mut input).unwrap() == *a
        && input.is_empty();
    whole && delimited && round_trip
}

fn check_order<K>()
where
    K: Key<Owned = K> + Ord + Debug + Arbitrary,
{
    QuickCheck::new()
        .tests(2000)
        .quickcheck((|a: K, b: K| sorts_like(&a, &b)) as fn(K, K) -> bool);
}

#[test]
fn integers_sort_like_their_encodings() {
    check_order::<u8>();
    check_order::<u16>();
    check_order::<u32>();
    check_order::<u64>();
    check_order::<u128>();
    check_order::<i8>();
    check_order::<i16>();
    check_order::<i32>();
    check_order::<i64>();
    check_order::<i128>();
}

/// Byte strings drawn mostly from `0x00`, `0x01` and `0xFF`, the bytes the escape is
/// made of, so that embedded zeros, prefixes and escape look-alikes are common.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bytes(Vec<u8>);

impl Arbitrary for Bytes {
    fn arbitrary(g: &mut Gen) -> Bytes {
        let len = usize::arbitrary(g) % 6;
        Bytes(
            (0..len)
                .map(|_| *g.choose(&[0u8, 0, 1, 0xFF, b'a']).unwrap())
                .collect(),
        )
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Bytes>> {
        Box::new(self.0.shrink().map(Bytes))
    }
}

#[test]
fn byte_strings_and_tuples_sort_like_their_encodings() {
    check_order::<Vec<u8>>();
    check_order::<String>();
    check_order::<[u8; 3]>();
    check_order::<(u8, i32)>();
    check_order::<(String, u64)>();
    check_order::<(i16, Vec<u8>, String)>();
    check_order::<(u8, u8, Vec<u8>, i8)>();
    check_order::<(i8, String, u8, Vec<u8>, u16)>();

    fn escaped(a: (Bytes, Bytes, u8), b: (Bytes, Bytes, u8)) -> bool {
        let a = (a.0.0, a.1.0, a.2);
        let b = (b.0.0, b.1.0, b.2);
        sorts_like(&a, &b) && sorts_like(&a.0, &b.0)
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(escaped as fn(_, _) -> bool);

    // Strings with zeros inside, and a nested tuple (delimited as a whole).
    fn with_zeros(a: (Bytes, u8), b: (Bytes, u8)) -> bool {
        let to_string = |b: Bytes| String::from_utf8(b.0.iter().map(|&c| c & 0x7F).collect());
        let a = ((to_string(a.0).unwrap(), a.1), Vec::from([a.1]));
        let b = ((to_string(b.0).unwrap(), b.1), Vec::from([b.1]));
        sorts_like(&a, &b)
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(with_zeros as fn(_, _) -> bool);
}

#[test]
fn borrowed_keys_encode_like_owned_ones() -> Result<()> {
    assert_eq!(encode("ab\0c"), encode(&String::from("ab\0c")));
    assert_eq!(encode(&b"xy"[..]), encode(&b"xy".to_vec()));
    assert_eq!(encode(&("a", 5u8)), encode(&(String::from("a"), 5u8)));
    // A whole string key is its plain UTF-8, as a raw tree would hold it.
    assert_eq!(encode("ab\0c"), b"ab\0c");
    assert_eq!(
        <(&str, u8)>::decode(&encode(&("a\0", 5u8)))?,
        ("a\0".to_string(), 5)
    );
    Ok(())
}

#[test]
fn keys_that_do_not_decode_are_corrupted() {
    let corrupted = |r: Result<()>| matches!(r, Err(Error::Corrupted { .. }));
    assert!(corrupted(u64::decode(&[0; 7]).map(drop)));
    assert!(corrupted(u64::decode(&[0; 9]).map(drop)));
    assert!(corrupted(String::decode(&[0xC3]).map(drop)));
    assert!(corrupted(<(String, u8)>::decode(b"abc").map(drop)));
    assert!(corrupted(<(String, u8)>::decode(b"a\0\x07\x01").map(drop)));
    assert!(corrupted(<(u16, Vec<u8>)>::decode(&[1]).map(drop)));
}

fn temp_db() -> Result<(tempfile::TempDir, Database)> {
    let dir = tempfile::tempdir()?;
    let db = Options::new().open(dir.path().join("db"))?;
    Ok((dir, db))
}

const NAMES: Table<(String, i32), [u8]> = Table::new("names");
const PAIRS: Table<u16, [u8; 2]> = Table::new("pairs");

#[test]
fn tables_round_trip_and_are_trees() -> Result<()> {
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    let mut names = wtx.open_table(NAMES)?;
    names.insert(&("ada".into(), -1), b"first")?;
    names.insert(&("ada".into(), 3), b"")?;
    names.insert(&("ad".into(), 9), &[7; 5000])?; // overflow
    assert_eq!(names.get(&("ada".into(), -1))?, Some(&b"first"[..]));
    assert_eq!(names.len()?, 3);
    assert!(names.remove(&("ada".into(), 3))?);
    assert!(!names.remove(&("ada".into(), 3))?);
    let mut pairs = wtx.open_table(PAIRS)?;
    for k in 0..300u16 {
        pairs.insert(&k, &k.to_le_bytes())?;
    }
    drop((names, pairs));
    wtx.commit()?;

    let rtx = db.begin_read()?;
    assert_eq!(rtx.tree_names()?, ["names", "pairs"]);
    let names = rtx.open_table(NAMES)?;
    let rows: Vec<_> = names.iter()?.collect::<Result<_>>()?;
    assert_eq!(
        rows,
        [
            (("ad".to_string(), 9), &[7; 5000][..]),
            (("ada".to_string(), -1), &b"first"[..])
        ]
    );
    let pairs = rtx.open_table(PAIRS)?;
    let keys: Vec<u16> = pairs
        .range(250..=260)?
        .rev()
        .map(|r| r.map(|(k, _)| k))
        .collect::<Result<_>>()?;
    assert_eq!(keys, (250..=260).rev().collect::<Vec<_>>());
    assert_eq!(pairs.get(&299)?, Some(&299u16.to_le_bytes()));
    assert_eq!(pairs.get(&300)?, None);
    assert_eq!(pairs.first()?.map(|(k, _)| k), Some(0));
    assert_eq!(pairs.last()?.map(|(k, _)| k), Some(299));
    // The raw tree holds the encoded keys.
    assert_eq!(
        rtx.open_tree("pairs")?.get(&299u16.to_be_bytes())?,
        Some(&299u16.to_le_bytes()[..])
    );
    drop(rtx);
    db.check()?;
    Ok(())
}

#[test]
fn ranges_take_keys_by_value_or_reference() -> Result<()> {
    const WORDS: Table<str, [u8]> = Table::new("words");
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    let mut words = wtx.open_table(WORDS)?;
    for w in ["apple", "banana", "cherry", "date", "fig"] {
        words.insert(w, w.as_bytes())?;
    }
    let keys = |r: mapkv::TableRange<'_, str, [u8], _>| -> Result<Vec<String>> {
        r.map(|e| e.map(|(k, _)| k)).collect()
    };
    assert_eq!(keys(words.range("b".."d")?)?, ["banana", "cherry"]);
    assert_eq!(keys(words.range(..="banana")?)?, ["apple", "banana"]);
    let from = String::from("date");
    assert_eq!(keys(words.range(from.as_str()..)?)?, ["date", "fig"]);
    let backwards: Vec<String> = words
        .range("b"..)?
        .rev()
        .map(|e| e.map(|(k, _)| k))
        .collect::<Result<_>>()?;
    assert_eq!(backwards, ["fig", "date", "cherry", "banana"]);
    assert_eq!(
        keys(words.range((Bound::Excluded("apple"), Bound::Excluded("cherry")))?)?,
        ["banana"]
    );
    // Whole `str` keys are stored as plain UTF-8.
    assert_eq!(words.raw().get(b"fig")?, Some(&b"fig"[..]));

    let mut pairs = wtx.open_table(PAIRS)?;
    for k in [1u16, 5, 9] {
        pairs.insert(&k, &[0; 2])?;
    }
    let five = 5u16;
    assert_eq!(pairs.range(&five..)?.count(), 2);
    assert_eq!(pairs.range(five..=9)?.count(), 2);
    assert_eq!(pairs.range(..five)?.count(), 1);
    Ok(())
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<mapkv::ReadTable<'_, str, [f32]>>();
    send_sync::<mapkv::WriteTable<'_, (u64, String), [u8]>>();
    send::<mapkv::TableRange<'_, str, [f32], mapkv::Zerocopy>>();
    send_sync::<Table<str, [f32]>>();
}

#[test]
fn an_absent_table_is_not_found() -> Result<()> {
    let (_dir, db) = temp_db()?;
    let rtx = db.begin_read()?;
    assert!(matches!(rtx.open_table(PAIRS), Err(Error::TreeNotFound(_))));
    Ok(())
}

#[test]
fn stored_values_that_do_not_fit_are_corrupted() -> Result<()> {
    const WORDS: Table<u8, [u8; 4]> = Table::new("words");
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    let mut words = wtx.open_table(WORDS)?;
    words.insert(&1, &[1, 2, 3, 4])?;
    words.raw().insert(&[2], &[1, 2, 3])?;
    words.insert(&3, &[5, 6, 7, 8])?;
    assert!(matches!(words.get(&2), Err(Error::Corrupted { .. })));
    drop(words);
    wtx.commit()?;

    let rtx = db.begin_read()?;
    let words = rtx.open_table(WORDS)?;
    assert_eq!(words.get(&1)?, Some(&[1, 2, 3, 4]));
    assert!(matches!(words.get(&2), Err(Error::Corrupted { .. })));
    // Iteration yields the good entry, then the error, then nothing more.
    let rows: Vec<Result<_>> = words.iter()?.collect();
    assert!(matches!(
        rows[..],
        [Ok((1, _)), Err(Error::Corrupted { .. })]
    ));
    Ok(())
}

#[test]
fn values_written_through_the_raw_tree_are_checked() -> Result<()> {
    // Elements of 2 bytes with alignment 1: the length check, apart from alignment.
    const PAIRS_OF: Table<u32, [[u8; 2]]> = Table::new("pairs_of");
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    wtx.open_table(PAIRS_OF)?
        .insert(&1, &[[1, 2], [3, 4]][..])?;
    let mut raw = wtx.open_tree("pairs_of")?;
    raw.insert(&2u32.to_be_bytes(), &[0; 5])?; // not a whole number of elements
    raw.insert(&3u32.to_be_bytes(), &[])?; // an empty slice is fine
    drop(raw);
    wtx.commit()?;
    let rtx = db.begin_read()?;
    let pairs_of = rtx.open_table(PAIRS_OF)?;
    assert_eq!(pairs_of.get(&1)?, Some(&[[1, 2], [3, 4]][..]));
    assert!(matches!(pairs_of.get(&2), Err(Error::Corrupted { .. })));
    assert_eq!(pairs_of.get(&3)?, Some(&[][..]));
    assert!(rtx.try_open_table(PAIRS_OF)?.is_some());
    const ABSENT: Table<u32, [[u8; 2]]> = Table::new("absent");
    assert!(rtx.try_open_table(ABSENT)?.is_none());
    Ok(())
}

#[test]
fn empty_values_read_at_any_alignment() -> Result<()> {
    // An empty value has no bytes to align: the tree may return it at any address.
    const WIDE: Table<u8, [u64]> = Table::new("wide");
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    let mut wide = wtx.open_table(WIDE)?;
    for k in 0..50u8 {
        wide.insert(&k, &[])?;
    }
    for row in wide.iter()? {
        assert_eq!(row?.1, &[] as &[u64]);
    }
    Ok(())
}

#[test]
fn stored_keys_that_do_not_decode_are_corrupted() -> Result<()> {
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    let mut pairs = wtx.open_table(PAIRS)?;
    pairs.raw().insert(b"\x01", b"ab")?; // a u16 key needs 2 bytes
    let rows: Vec<Result<_>> = pairs.iter()?.collect();
    assert!(matches!(rows[..], [Err(Error::Corrupted { .. })]));
    Ok(())
}

/// A value type with alignment 8 (needs value alignment to be read in place).
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, PartialEq)]
#[repr(C)]
struct Point {
    id: u64,
    x: f32,
    y: f32,
}

/// A slice-like value type: a header and a trailing slice.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, PartialEq)]
#[repr(C)]
struct Series {
    start: u64,
    samples: [f64],
}

const EMBEDDINGS: Table<u64, [f32]> = Table::new("embeddings");
const POINTS: Table<i64, Point> = Table::new("points");
const SERIES: Table<&str, Series> = Table::new("series");

#[test]
fn aligned_values_are_read_in_place() -> Result<()> {
    /// `i`'s embedding: mostly inline, every 50th over the largest page (overflow).
    fn embedding(i: u64) -> Vec<f32> {
        let len = if i.is_multiple_of(50) { 5000 } else { i % 401 };
        (0..len).map(|j| (i + j) as f32).collect()
    }
    /// Every value of both tables read in place, aligned, and equal to what was written.
    fn check(db: &Database, keys: impl Iterator<Item = u64> + Clone, at: &str) -> Result<()> {
        let rtx = db.begin_read()?;
        let e = rtx.open_table(EMBEDDINGS)?;
        let mut want = keys.clone();
        for row in e.iter()? {
            let (i, v) = row?;
            assert_eq!(v.as_ptr() as usize % 4, 0, "{at}: embedding {i}");
            assert_eq!(Some(i), want.next(), "{at}");
            assert_eq!(v, embedding(i), "{at}: embedding {i}");
        }
        assert_eq!(want.next(), None, "{at}");
        let p = rtx.open_table(POINTS)?;
        for i in keys {
            let point = p.get(&(i as i64 - 250))?.expect("present");
            assert_eq!(std::ptr::from_ref(point) as usize % 8, 0, "{at}: point {i}");
            assert_eq!(point.id, i, "{at}");
        }
        drop(rtx);
        db.check()?;
        Ok(())
    }

    for page_size in [4096, 16384] {
        for mmap_size in [0, 1 << 20, 1 << 30] {
            let at = format!("page_size {page_size}, mmap_size {mmap_size}");
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("db");
            let options = Options::new().page_size(page_size).mmap_size(mmap_size);
            let db = options.clone().open(&path)?;
            let wtx = db.begin_write()?;
            let mut e = wtx.open_table(EMBEDDINGS)?;
            let mut p = wtx.open_table(POINTS)?;
            for i in 0..500u64 {
                e.insert(&i, &embedding(i))?;
                let (x, y) = (1.5, -2.0);
                p.insert(&(i as i64 - 250), &Point { id: i, x, y })?;
            }
            drop((e, p));
            wtx.commit()?;
            check(&db, 0..500, &format!("{at}, written"))?;
            drop(db);

            // Reopened; then half removed (leaves merge), compacted, reopened again.
            let db = options.clone().open(&path)?;
            check(&db, 0..500, &format!("{at}, reopened"))?;
            let wtx = db.begin_write()?;
            let mut e = wtx.open_table(EMBEDDINGS)?;
            let mut p = wtx.open_table(POINTS)?;
            for i in (0..500u64).filter(|i| i % 4 != 1) {
                assert!(e.remove(&i)?);
                assert!(p.remove(&(i as i64 - 250))?);
            }
            drop((e, p));
            wtx.commit()?;
            db.compact()?;
            let left = (0..500u64).filter(|i| i % 4 == 1);
            check(&db, left.clone(), &format!("{at}, compacted"))?;
            drop(db);
            let db = options.clone().open(&path)?;
            check(&db, left, &format!("{at}, reopened after compacting"))?;
        }
    }
    Ok(())
}

#[test]
fn structs_ending_in_a_slice_round_trip() -> Result<()> {
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    let mut series = wtx.open_table(SERIES)?;
    // Words, so that the bytes are aligned for `Series`.
    let words = [7, 1.0f64.to_bits(), 2.5f64.to_bits()];
    let value = Series::ref_from_bytes(words.as_bytes()).expect("aligned, whole samples");
    series.insert(&"temp", value)?;
    let got = series.get(&"temp")?.expect("present");
    assert_eq!((got.start, &got.samples[..]), (7, &[1.0, 2.5][..]));
    // A length that is not the header plus whole samples does not fit.
    series.raw().insert(b"bad", &[0; 12])?;
    assert!(matches!(series.get(&"bad"), Err(Error::Corrupted { .. })));
    Ok(())
}

#[test]
fn opening_with_another_value_type_is_invalid() -> Result<()> {
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    wtx.open_table(EMBEDDINGS)?.insert(&1, &[1.0][..])?;
    wtx.open_tree("raw")?.insert(b"k", b"v")?;
    let invalid = |r: Result<()>| matches!(r, Err(Error::InvalidOptions(_)));
    // Another alignment, another element size, sized instead of slice, raw bytes.
    const AS_BYTES: Table<u64, [u8]> = Table::new("embeddings");
    const AS_U32: Table<u64, [u32]> = Table::new("embeddings");
    const AS_ARRAY: Table<u64, [f32; 1]> = Table::new("embeddings");
    const RAW: Table<u64, [u8]> = Table::new("raw");
    assert!(invalid(wtx.open_table(AS_BYTES).map(drop)));
    assert!(invalid(wtx.open_table(AS_ARRAY).map(drop)));
    assert!(invalid(wtx.open_table(RAW).map(drop)));
    // [u32] has f32's size and alignment: the layout cannot tell them apart.
    assert!(wtx.open_table(AS_U32).is_ok());
    wtx.commit()?;
    let rtx = db.begin_read()?;
    assert!(invalid(rtx.open_table(AS_ARRAY).map(drop)));
    assert!(rtx.open_table(EMBEDDINGS)?.get(&1)?.is_some());
    Ok(())
}

/// A table whose tree handle was replaced through `raw()` by another tree's refuses its
/// typed methods: they would write values without the table's alignment into a tree
/// whose record does not describe them.
#[test]
fn a_table_whose_tree_was_swapped_through_raw_is_invalid() -> Result<()> {
    const COUNTERS: Table<u64, u64> = Table::new("counters");
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    let mut counters = wtx.open_table(COUNTERS)?;
    counters.insert(&1, &10)?;
    *counters.raw() = wtx.open_tree("plain")?;
    let invalid = |r: Result<()>| matches!(r, Err(Error::InvalidOptions(_)));
    assert!(invalid(counters.insert(&2, &20)));
    assert!(invalid(counters.get(&1).map(drop)));
    assert!(invalid(counters.remove(&1).map(drop)));
    assert!(invalid(counters.iter().map(drop)));
    assert!(invalid(counters.len().map(drop)));
    drop(counters);
    assert_eq!(
        wtx.open_tree("plain")?.len()?,
        0,
        "nothing reached the other tree"
    );
    assert_eq!(wtx.open_table(COUNTERS)?.get(&1)?, Some(&10));
    Ok(())
}

/// A value type too large for the record (over 16 MiB) is `InvalidOptions`, found
/// before anything of its size is allocated: a type of 32 TiB aborted the process.
#[test]
fn a_value_type_too_large_to_record_is_invalid() -> Result<()> {
    const HUGE: Table<u64, [u8; 1 << 45]> = Table::new("huge");
    const BIG: Table<u64, [u8; 1 << 24]> = Table::new("big");
    let (_dir, db) = temp_db()?;
    let wtx = db.begin_write()?;
    for opened in [
        wtx.open_table(HUGE).map(drop),
        wtx.open_table(BIG).map(drop),
    ] {
        assert!(
            matches!(opened, Err(Error::InvalidOptions(_))),
            "{opened:?}"
        );
    }
    wtx.commit()?;
    let rtx = db.begin_read()?;
    let opened = rtx.open_table(HUGE).map(drop);
    assert!(
        matches!(opened, Err(Error::InvalidOptions(_))),
        "{opened:?}"
    );
    Ok(())
}

// ---- model test -----------------------------------------------------------------------

type ModelKey = (Vec<u8>, i16);
const MODEL: Table<ModelKey, [u8]> = Table::new("model");

#[derive(Clone, Debug)]
enum Op {
    Insert(Bytes, i16, u16),
    Remove(Bytes, i16),
    Range(Option<(Bytes, i16)>, Option<(Bytes, i16)>, bool, bool),
    Commit,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        let key = |g: &mut Gen| (Bytes::arbitrary(g), i16::arbitrary(g) % 8);
        match u8::arbitrary(g) % 10 {
            0..=4 => {
                let (b, i) = key(g);
                Op::Insert(b, i, u16::arbitrary(g) % 3000)
            }
            5 | 6 => {
                let (b, i) = key(g);
                Op::Remove(b, i)
            }
            7 | 8 => Op::Range(
                Option::<()>::arbitrary(g).map(|()| key(g)),
                Option::<()>::arbitrary(g).map(|()| key(g)),
                bool::arbitrary(g),
                bool::arbitrary(g),
            ),
            _ => Op::Commit,
        }
    }
}

/// The same entries in two tables: as bytes (alignment 1) and as `u64`s (alignment 8,
/// every value read checked for it).
const WIDE_MODEL: Table<ModelKey, [u64]> = Table::new("wide_model");

type Rows = Vec<(ModelKey, Vec<u64>)>;

/// The entries of `range`, forwards or backwards, with their values as words.
fn rows<'a, V: ?Sized + 'a>(
    range: impl DoubleEndedIterator<Item = Result<(ModelKey, &'a V)>>,
    rev: bool,
    words: impl Fn(&V) -> Vec<u64>,
) -> Result<Rows> {
    let range: Box<dyn Iterator<Item = _>> = match rev {
        true => Box::new(range.rev()),
        false => Box::new(range),
    };
    range.map(|r| r.map(|(k, v)| (k, words(v)))).collect()
}

fn from_bytes(bytes: &[u8]) -> Vec<u64> {
    <[u64]>::ref_from_bytes(bytes)
        .map(<[u64]>::to_vec)
        .unwrap_or_else(|_| {
            bytes
                .chunks(8)
                .map(|c| u64::from_ne_bytes(c.try_into().expect("whole words")))
                .collect()
        })
}

fn aligned(words: &[u64]) -> Vec<u64> {
    assert_eq!(
        words.as_ptr() as usize % 8,
        0,
        "a [u64] value is not aligned"
    );
    words.to_vec()
}

fn run_model(ops: Vec<Op>) -> Result<()> {
    let (_dir, db) = temp_db()?;
    let mut model: BTreeMap<ModelKey, Vec<u64>> = BTreeMap::new();
    let mut wtx = db.begin_write()?;
    for op in ops {
        let mut bytes = wtx.open_table(MODEL)?;
        let mut wide = wtx.open_table(WIDE_MODEL)?;
        match op {
            Op::Insert(b, i, len) => {
                let value: Vec<u64> = (0..len / 8).map(|j| u64::from(j) << b.0.len()).collect();
                let key = (b.0, i);
                bytes.insert(&key, value.as_bytes())?;
                wide.insert(&key, &value)?;
                model.insert(key, value);
            }
            Op::Remove(b, i) => {
                let key = (b.0, i);
                let present = model.remove(&key).is_some();
                assert_eq!(bytes.remove(&key)?, present);
                assert_eq!(wide.remove(&key)?, present);
            }
            Op::Range(lo, hi, hi_inclusive, rev) => {
                let bound = |k: Option<(Bytes, i16)>, inclusive| match k {
                    Some((b, i)) if inclusive => Bound::Included((b.0, i)),
                    Some((b, i)) => Bound::Excluded((b.0, i)),
                    None => Bound::Unbounded,
                };
                let bounds = (bound(lo, true), bound(hi, hi_inclusive));
                if let (Bound::Included(a), Bound::Included(b) | Bound::Excluded(b)) = &bounds
                    && a > b
                {
                    continue; // BTreeMap::range panics on such a range
                }
                let mut want: Rows = model
                    .range(bounds.clone())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if rev {
                    want.reverse();
                }
                assert_eq!(rows(bytes.range(bounds.clone())?, rev, from_bytes)?, want);
                assert_eq!(rows(wide.range(bounds)?, rev, aligned)?, want);
            }
            Op::Commit => {
                drop((bytes, wide));
                wtx.commit()?;
                db.check()?;
                let rtx = db.begin_read()?;
                let want: Rows = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let bytes = rtx.open_table(MODEL)?;
                assert_eq!(bytes.len()?, model.len() as u64);
                assert_eq!(rows(bytes.iter()?, false, from_bytes)?, want);
                let wide = rtx.open_table(WIDE_MODEL)?;
                assert_eq!(rows(wide.iter()?, false, aligned)?, want);
                wtx = db.begin_write()?;
            }
        }
    }
    let bytes = wtx.open_table(MODEL)?;
    let wide = wtx.open_table(WIDE_MODEL)?;
    assert_eq!(wide.len()?, model.len() as u64);
    for (k, v) in &model {
        assert_eq!(bytes.get(k)?.map(from_bytes).as_ref(), Some(v));
        assert_eq!(wide.get(k)?.map(aligned).as_ref(), Some(v));
    }
    Ok(())
}

#[test]
fn model_against_btreemap() {
    fn prop(ops: Vec<Op>) -> TestResult {
        match run_model(ops) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e.to_string()),
        }
    }
    QuickCheck::new()
        .tests(150)
        .quickcheck(prop as fn(Vec<Op>) -> TestResult);
}

#[cfg(feature = "bytemuck")]
mod pod {
    use super::*;
    use mapkv::Bytemuck;

    /// A `Pod` type of bytemuck's own (a derive would need bytemuck's proc-macro crate).
    type Pixel = [u8; 4];

    const PIXELS: Table<u32, [Pixel], Bytemuck> = Table::new("pixels");
    const ONE: Table<u32, Pixel, Bytemuck> = Table::new("one");

    #[test]
    fn pod_values_round_trip() -> Result<()> {
        let (_dir, db) = temp_db()?;
        let wtx = db.begin_write()?;
        let row: [Pixel; 2] = [[1, 2, 3, 4], [5; 4]];
        wtx.open_table(PIXELS)?.insert(&7, &row[..])?;
        let mut one = wtx.open_table(ONE)?;
        one.insert(&1, &row[1])?;
        one.raw().insert(&2u32.to_be_bytes(), &[0; 5])?;
        drop(one);
        wtx.commit()?;
        let rtx = db.begin_read()?;
        assert_eq!(rtx.open_table(PIXELS)?.get(&7)?, Some(&row[..]));
        let one = rtx.open_table(ONE)?;
        assert_eq!(one.get(&1)?, Some(&row[1]));
        assert!(matches!(one.get(&2), Err(Error::Corrupted { .. })));
        Ok(())
    }

    #[test]
    fn pod_slices_of_wider_types_are_aligned() -> Result<()> {
        const SAMPLES: Table<u32, [f64], Bytemuck> = Table::new("samples");
        let (_dir, db) = temp_db()?;
        let wtx = db.begin_write()?;
        let mut t = wtx.open_table(SAMPLES)?;
        for i in 0..200u32 {
            let v: Vec<f64> = (0..i * 3).map(f64::from).collect();
            t.insert(&i, &v)?;
        }
        for row in t.iter()? {
            let (i, v) = row?;
            assert_eq!(v.as_ptr() as usize % 8, 0);
            assert_eq!(v.len() as u32, i * 3);
        }
        Ok(())
    }
}
