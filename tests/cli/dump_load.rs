//! `mapkv dump` and `mapkv load`: byte-exact round trips, hand-written input, bad and
//! truncated input refused with the line.

use super::*;

#[test]
fn dump_load_round_trip_is_byte_exact() {
    let _serial = serial();
    let (dir, source) = temp_db();
    awkward_db(&source);
    let dump = mapkv(["dump", arg(&source)]);
    dump.ok();
    let text = &dump.stdout;
    assert!(text.starts_with(b"# mapkv-dump v1 tree=#hash\\x09tab\\x5c\n"));
    assert!(
        text.windows(b"# mapkv-dump v1 tree=my tree\n".len())
            .any(|w| w == b"# mapkv-dump v1 tree=my tree\n")
    );
    assert!(
        text.split(|&b| b == b'\n').all(|line| line
            .iter()
            .all(|b| (0x20..=0x7e).contains(b) || *b == b'\t')),
        "only printable ASCII and tabs"
    );

    // From stdin, into a new file (bulk load: sorted keys, empty trees).
    let from_stdin = dir.path().join("from-stdin.mapkv");
    let loaded = mapkv_with_input(["load", arg(&from_stdin)], text).ok();
    assert!(loaded.contains("into 4 trees"), "{loaded}");
    assert_eq!(contents(&from_stdin), contents(&source));

    // From a file, into a database whose trees exist (write transactions).
    let dump_file = dir.path().join("all.dump");
    std::fs::write(&dump_file, text).expect("write dump");
    let merged = dir.path().join("merged.mapkv");
    mapkv(["put", arg(&merged), "plain", "k\u{1}", "old value"]).ok();
    mapkv(["load", arg(&merged), "--file", arg(&dump_file)]).ok();
    assert_eq!(contents(&merged), contents(&source));

    // Tiny buffers: the streaming paths (bulk load and write transaction).
    for target in ["stream-bulk.mapkv", "stream-write.mapkv"] {
        let path = dir.path().join(target);
        if target == "stream-write.mapkv" {
            mapkv(["put", arg(&path), "plain", "k\u{1}", "old value"]).ok();
        }
        mapkv([
            "load",
            arg(&path),
            "--buffer-bytes",
            "100",
            "--file",
            arg(&dump_file),
        ])
        .ok();
        assert_eq!(contents(&path), contents(&source), "{target}");
    }

    // A second dump is the same bytes; so is a dump of one tree.
    assert_eq!(&mapkv(["dump", arg(&from_stdin)]).stdout, text);
    let one = mapkv(["dump", arg(&source), "my tree"]);
    let one_loaded = dir.path().join("one.mapkv");
    mapkv_with_input(["load", arg(&one_loaded)], &one.stdout).ok();
    let all = contents(&source);
    assert_eq!(
        contents(&one_loaded),
        all.into_iter()
            .filter(|(n, _)| n == "my tree")
            .collect::<Vec<_>>()
    );
}

#[test]
fn load_accepts_hand_written_input() {
    let _serial = serial();
    let (_dir, db) = temp_db();
    let input = "# a comment\n\
                 # mapkv-dump v1 tree=fruit\n\
                 pear\tgreen\n\
                 apple\tred\n\
                 \n\
                 caf\u{e9}\t\\x4A\\x4a\n\
                 apple\tred again\n\
                 # mapkv-dump v1 tree=veg\n\
                 kale\tleaf";
    // Without end lines and the last newline, it looks like a truncated dump.
    let strict = mapkv_with_input(["load", arg(&db)], input.as_bytes());
    let line = strict.failed();
    assert!(
        line.contains("line 8: tree \"fruit\" has no end line"),
        "{line}"
    );
    assert!(line.contains("--allow-unterminated"), "{line}");
    assert_eq!(contents(&db), []);
    let out = mapkv_with_input(["load", arg(&db), "--allow-unterminated"], input.as_bytes()).ok();
    assert!(
        out.contains("loaded 5 entries into 2 trees (1 by bulk load)"),
        "{out}"
    );
    assert_eq!(
        contents(&db),
        [
            (
                "fruit".to_string(),
                vec![
                    (b"apple".to_vec(), b"red again".to_vec()),
                    ("café".as_bytes().to_vec(), b"JJ".to_vec()),
                    (b"pear".to_vec(), b"green".to_vec()),
                ]
            ),
            (
                "veg".to_string(),
                vec![(b"kale".to_vec(), b"leaf".to_vec())]
            ),
        ]
    );
}

#[test]
fn load_rejects_bad_input_with_the_line() {
    let _serial = serial();
    let (dir, db) = temp_db();
    let cases: [(&str, &str); 7] = [
        ("k\tv\n", "line 1: record before the first"),
        (
            "# mapkv-dump v1 tree=t\nk\\q\tv\n",
            "line 2: key: invalid escape",
        ),
        (
            "# mapkv-dump v1 tree=t\nk\tv\r\n",
            "line 2: value: raw carriage return",
        ),
        (
            "# mapkv-dump v1 tree=t\nkv\n",
            "line 2: expected KEY<TAB>VALUE",
        ),
        (
            "# mapkv-dump v1 tree=t\nk\tv\tw\n",
            "line 2: value: more than one tab",
        ),
        (
            "# mapkv-dump v1 tree=t\nk\tv\n# mapkv-dump v1 end entries=2\n",
            "line 3: tree \"t\" should have 2 entries",
        ),
        (
            "# mapkv-dump v2 tree=t\n",
            "line 1: not a line of dump format v1",
        ),
    ];
    for (input, expected) in cases {
        let run = mapkv_with_input(["load", arg(&db)], input.as_bytes());
        let line = run.failed();
        assert!(line.contains(expected), "{input:?}: {line}");
        assert!(line.contains("<stdin>"), "{line}");
    }
    // Nothing was written by the failed loads.
    assert_eq!(contents(&db), []);

    // A long tree, sorted for more than the buffer and then not, into an empty tree:
    // the streamed bulk load is abandoned.
    let mut input = b"# mapkv-dump v1 tree=t\n".to_vec();
    for i in 0..300u32 {
        input.extend_from_slice(format!("{i:05}\tvalue\n").as_bytes());
    }
    input.extend_from_slice(b"00150x\tlate\n# mapkv-dump v1 end entries=301\n");
    let file = dir.path().join("unsorted.dump");
    std::fs::write(&file, &input).expect("write");
    let run = mapkv([
        "load",
        arg(&db),
        "--buffer-bytes",
        "20",
        "--file",
        arg(&file),
    ]);
    assert!(run.failed().contains("must be sorted"), "{}", run.stderr);
    assert_eq!(contents(&db), []);
    // The same with the default buffer loads it in a write transaction.
    mapkv(["load", arg(&db), "--file", arg(&file)]).ok();
    assert_eq!(contents(&db)[0].1.len(), 301);
}

/// A dump cut short anywhere but right after a tree's end line is refused, naming the
/// line, and nothing of the cut tree is written, whichever way load would write it.
#[test]
fn load_refuses_a_truncated_dump() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("source.mapkv");
    mapkv(["put", arg(&source), "alpha", "k1", "value one"]).ok();
    mapkv(["put", arg(&source), "alpha", "k2", "value two"]).ok();
    mapkv(["put", arg(&source), "beta", "k3", "value three"]).ok();
    let full = mapkv(["dump", arg(&source)]).stdout;
    // The number of bytes up to the end of `needle` in the dump.
    let at = |needle: &str| {
        let start = full
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("needle in the dump");
        start + needle.len()
    };
    let alpha_end = at("entries=2\n");
    // Bytes kept, what the error says, and whether tree alpha, before the cut, is
    // loaded. Lines: 1 alpha's header, 2-3 its records, 4 its end line, 5 beta's
    // header, 6 its record, 7 its end line.
    let cuts = [
        (at("# mapkv-d"), "line 1: no newline", false),
        (at("tree=al"), "line 1: no newline", false),
        (
            at("k2\tvalue t") - "2\tvalue t".len(),
            "line 3: no newline",
            false,
        ),
        (at("k2\tvalue t"), "line 3: no newline", false),
        (
            at("value two\n"),
            "input ends after line 3 without tree \"alpha\"'s end line",
            false,
        ),
        (at("entries=2"), "line 4: no newline", false),
        // Alpha's section is whole, but it is written only once the next line is read.
        (alpha_end + 5, "line 5: no newline", false),
        // Trees before the cut one stay loaded, as after any failure (LOAD_HELP).
        (at("k3\tval"), "line 6: no newline", true),
        (
            at("value three\n"),
            "input ends after line 6 without tree \"beta\"'s end line",
            true,
        ),
        (full.len() - 1, "line 7: no newline", true),
    ];
    let alpha = |path: &Path| contents(path).into_iter().find(|(n, _)| n == "alpha");
    let dump_file = dir.path().join("cut.dump");
    // A buffer of one byte: the paths that stream a tree (bulk load, write transaction).
    let modes = [("fresh", "1000"), ("fresh", "1"), ("filled", "1")];
    for (i, (mode, buffer_bytes)) in modes.into_iter().enumerate() {
        for (j, &(keep, expected, alpha_loaded)) in cuts.iter().enumerate() {
            let db = dir.path().join(format!("target-{i}-{j}.mapkv"));
            drop(Database::open(&db).expect("database created"));
            if mode == "filled" {
                mapkv(["put", arg(&db), "alpha", "k1", "old"]).ok();
            }
            let load = |dump: &[u8]| {
                std::fs::write(&dump_file, dump).expect("write dump");
                let file = arg(&dump_file);
                mapkv([
                    "load",
                    arg(&db),
                    "--buffer-bytes",
                    buffer_bytes,
                    "--file",
                    file,
                ])
            };
            let case = format!("{mode}, --buffer-bytes {buffer_bytes}, {keep} bytes");
            let before = contents(&db);
            let run = load(&full[..keep]);
            let line = run.failed();
            assert!(line.contains(expected), "{case}: {line}");
            assert!(line.contains("truncated dump"), "{line}");
            if alpha_loaded {
                assert_eq!(alpha(&db), alpha(&source), "{case}");
                assert_eq!(contents(&db).len(), 1, "{case}: no tree beta");
            } else {
                assert_eq!(contents(&db), before, "{case}");
            }
            // Cut right after a tree's end line, a dump is a whole dump of fewer trees.
            load(&full[..alpha_end]).ok();
            assert_eq!(alpha(&db), alpha(&source), "{case}");
            load(&full).ok();
            assert_eq!(mapkv(["dump", arg(&db)]).stdout, full, "{case}: byte-exact");
        }
    }
}

/// A tree created with `value_align(8)`, with entries and empty, and a plain tree.
fn aligned_db(path: &Path) {
    let db = Database::open(path).expect("open");
    let wtx = db.begin_write().expect("write");
    let align8 = TreeOptions::new().value_align(8);
    let mut aligned = wtx.open_tree_with("aligned", align8).expect("aligned");
    for i in 0..50u64 {
        aligned
            .insert(
                format!("k{i:03}").as_bytes(),
                &i.to_le_bytes()[..(i % 9) as usize],
            )
            .expect("insert");
    }
    drop(aligned);
    drop(wtx.open_tree_with("empty64", TreeOptions::new().value_align(64)));
    wtx.open_tree("plain")
        .expect("plain")
        .insert(b"k", b"v")
        .expect("insert");
    wtx.commit().expect("commit");
}

/// Opens `path`'s tree `name` as its application would, with `value_align(align)`, and
/// checks that every value is aligned.
fn open_aligned(path: &Path, name: &str, align: usize) -> mapkv::Result<u64> {
    let db = Database::open(path)?;
    let rtx = db.begin_read()?;
    let tree = rtx.open_tree_with(name, TreeOptions::new().value_align(align))?;
    for entry in tree.iter()? {
        let (_, value) = entry?;
        assert_eq!(value.as_ptr() as usize % align, 0, "{name}: value aligned");
    }
    tree.len()
}

#[test]
fn dump_load_keeps_value_alignment() {
    let _serial = serial();
    let (dir, source) = temp_db();
    aligned_db(&source);
    let dump = mapkv(["dump", arg(&source)]).stdout;

    let dump_file = dir.path().join("aligned.dump");
    std::fs::write(&dump_file, &dump).expect("write dump");
    // A new file (bulk load, whole and streamed); one whose aligned tree has entries
    // already (a write transaction).
    for (target, buffer_bytes) in [
        ("new", "1000000"),
        ("streamed", "10"),
        ("filled", "1000000"),
    ] {
        let path = dir.path().join(format!("{target}.mapkv"));
        if target == "filled" {
            aligned_db(&path);
            mapkv(["put", arg(&path), "aligned", "extra", "v"]).ok();
        }
        let file = arg(&dump_file);
        mapkv([
            "load",
            arg(&path),
            "--buffer-bytes",
            buffer_bytes,
            "--file",
            file,
        ])
        .ok();
        let extra = u64::from(target == "filled");
        assert_eq!(open_aligned(&path, "aligned", 8).expect(target), 50 + extra);
        assert_eq!(open_aligned(&path, "empty64", 64).expect(target), 0);
        assert_eq!(open_aligned(&path, "plain", 1).expect(target), 1);
        if target != "filled" {
            assert_eq!(
                mapkv(["dump", arg(&path)]).stdout,
                dump,
                "{target}: byte-exact"
            );
        }
    }

    // The header records the alignment; a default tree's is as before.
    let text = String::from_utf8(dump.clone()).expect("text");
    assert!(
        text.starts_with("# mapkv-dump v1 align=8 tree=aligned\n"),
        "{text}"
    );
    assert!(
        text.contains("\n# mapkv-dump v1 align=64 tree=empty64\n# mapkv-dump v1 end entries=0\n"),
        "{text}"
    );
    assert!(text.contains("\n# mapkv-dump v1 tree=plain\n"), "{text}");
}

/// A dump of trees with default options, byte for byte: what every reader of format v1
/// reads, so it must not change.
#[test]
fn dump_of_default_trees_is_unchanged() {
    let _serial = serial();
    let (_dir, db) = temp_db();
    mapkv(["put", arg(&db), "users", "alice", "admin"]).ok();
    mapkv(["put", "--hex", arg(&db), "blobs", "00ff", "0a0b"]).ok();
    assert_eq!(
        mapkv(["dump", arg(&db)]).ok(),
        "# mapkv-dump v1 tree=blobs\n\
         \\x00\\xff\t\\x0a\\x0b\n\
         # mapkv-dump v1 end entries=1\n\
         # mapkv-dump v1 tree=users\n\
         alice\tadmin\n\
         # mapkv-dump v1 end entries=1\n"
    );
}

#[test]
fn load_refuses_bad_or_mismatched_tree_options_with_the_line() {
    let _serial = serial();
    let (_dir, db) = temp_db();
    let cases: [(&str, &str); 6] = [
        (
            "# mapkv-dump v1 align=3 tree=t\n",
            "line 1: align=3: a tree's value alignment is a power of two from 1 to 64",
        ),
        ("# mapkv-dump v1 align=128 tree=t\n", "line 1: align=128: "),
        ("# mapkv-dump v1 align=+8 tree=t\n", "line 1: align=+8: "),
        ("# mapkv-dump v1 align= tree=t\n", "line 1: align=: "),
        (
            "# mapkv-dump v1 tree=s\n# mapkv-dump v1 end entries=0\n\
             # mapkv-dump v1 align=8 align=8 tree=t\n",
            "line 3: align= given twice",
        ),
        (
            "# mapkv-dump v1 colour=red tree=t\n",
            "line 1: not a line of dump format v1: unknown field `colour=red`",
        ),
    ];
    for (input, expected) in cases {
        let line = mapkv_with_input(["load", arg(&db)], input.as_bytes())
            .failed()
            .to_string();
        assert!(line.contains(expected), "{input:?}: {line}");
    }
    // Nothing was written: a tree is written once the line after its end is read.
    assert_eq!(contents(&db), []);

    // A tree that exists with other options than its header's is refused, not
    // changed: its values are stored for its own alignment.
    mapkv(["put", arg(&db), "plain", "k", "v"]).ok();
    let database = Database::open(&db).expect("open");
    let wtx = database.begin_write().expect("write");
    drop(wtx.open_tree_with("aligned", TreeOptions::new().value_align(8)));
    wtx.commit().expect("commit");
    drop(database);
    let mismatches = [
        (
            "# mapkv-dump v1 tree=s\n# mapkv-dump v1 end entries=0\n\
             # mapkv-dump v1 align=4 tree=plain\nk\tw\n# mapkv-dump v1 end entries=1\n",
            "line 3: tree \"plain\" exists with align=1, but the header gives align=4",
        ),
        (
            "# mapkv-dump v1 tree=aligned\nk\tw\n# mapkv-dump v1 end entries=1\n",
            "line 1: tree \"aligned\" exists with align=8, but the header gives align=1",
        ),
    ];
    for (input, expected) in mismatches {
        let line = mapkv_with_input(["load", arg(&db)], input.as_bytes())
            .failed()
            .to_string();
        assert!(line.contains(expected), "{input:?}: {line}");
    }
    assert_eq!(open_aligned(&db, "plain", 1).expect("plain"), 1);
    assert_eq!(open_aligned(&db, "aligned", 8).expect("aligned"), 0);

    // An aligned tree is created before its bulk load: a load that fails removes it.
    let mut input = b"# mapkv-dump v1 align=8 tree=late\n".to_vec();
    for i in 0..300u32 {
        input.extend_from_slice(format!("{i:05}\tvalue\n").as_bytes());
    }
    input.extend_from_slice(b"00150x\tlate\n# mapkv-dump v1 end entries=301\n");
    let run = mapkv_with_input(["load", arg(&db), "--buffer-bytes", "20"], &input);
    assert!(run.failed().contains("must be sorted"), "{}", run.stderr);
    assert!(contents(&db).iter().all(|(name, _)| name != "late"));
}

/// A typed table's tree records its value type's layout, which the dump format cannot
/// (the library does not say what it is): dump refuses it before writing anything,
/// rather than dump a tree that load would recreate as one its table cannot open.
#[test]
fn dump_refuses_a_typed_table() {
    const VECTORS: Table<u64, [f32]> = Table::new("vectors");
    let _serial = serial();
    let (_dir, db) = temp_db();
    mapkv(["put", arg(&db), "a", "k", "v"]).ok();
    let database = Database::open(&db).expect("open");
    let wtx = database.begin_write().expect("write");
    let mut table = wtx.open_table(VECTORS).expect("table");
    table.insert(&1, &[0.5, 1.5][..]).expect("insert");
    drop(table);
    wtx.commit().expect("commit");
    drop(database);
    for args in [vec!["dump", arg(&db)], vec!["dump", arg(&db), "vectors"]] {
        let run = mapkv(&args);
        let line = run.failed();
        assert!(
            line.contains("tree \"vectors\" is a typed table"),
            "{args:?}: {line}"
        );
        assert!(run.stdout.is_empty(), "{args:?}: nothing written");
    }
    mapkv(["dump", arg(&db), "a"]).ok();
}
