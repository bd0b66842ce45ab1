//! The tree options a dump's header line records (`align=N`; the format is in the
//! `dump` module doc), and how `dump` finds them.
//!
//! A tree's options are fixed when it is created and are part of how its values are
//! stored: a tree loaded without them is one its application cannot open
//! (`open_tree_with`: `Error::InvalidOptions`). `ReadTree::options` says what a tree was
//! created with. A typed table's tree also records its value type's layout, which no
//! public `TreeOptions` can ask for, so `dump` refuses it rather than write a dump that
//! `load` would turn into a plain tree.

use std::fmt;

use mapkv::{BulkStats, Database, Error, ReadTxn, TreeOptions};

/// The alignments a tree can be created with (`TreeOptions::value_align`).
const VALUE_ALIGNS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// The header field of the value alignment; its decimal value follows.
const ALIGN_FIELD: &[u8] = b"align=";
/// The header's last field: the escaped tree name, to the end of the line (a name may
/// hold spaces, so nothing can follow it).
const TREE_FIELD: &[u8] = b"tree=";

/// The options a tree header records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DumpedOptions {
    /// `TreeOptions::value_align`: one of `VALUE_ALIGNS`.
    value_align: usize,
}

impl Default for DumpedOptions {
    /// A tree created with `TreeOptions::new()`, as every tree was before options
    /// existed: its header has no option fields.
    fn default() -> DumpedOptions {
        DumpedOptions { value_align: 1 }
    }
}

impl fmt::Display for DumpedOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "align={}", self.value_align)
    }
}

impl DumpedOptions {
    /// The options tree `name` was created with, or `None` for a typed table (whose
    /// value layout a dump cannot record). `Error::TreeNotFound` if it is absent.
    pub fn of_tree(rtx: &ReadTxn, name: &str) -> mapkv::Result<Option<DumpedOptions>> {
        let created = rtx.open_tree(name)?.options();
        Ok((!created.is_typed()).then_some(DumpedOptions {
            value_align: created.alignment(),
        }))
    }

    /// The options tree `name` is dumped with; a typed table is `Error::InvalidOptions`.
    pub fn for_dump(rtx: &ReadTxn, name: &str) -> mapkv::Result<DumpedOptions> {
        DumpedOptions::of_tree(rtx, name)?.ok_or_else(|| {
            Error::InvalidOptions(format!(
                "tree {name:?} is a typed table: its tree records the value type's layout, \
                 which the dump format cannot hold (the library does not expose it), so \
                 load would make it a plain tree that the table cannot open; nothing was \
                 dumped"
            ))
        })
    }

    /// Why existing tree `name` cannot take a section with these options, if it cannot:
    /// its values are stored for the options it was created with, which stay.
    pub fn mismatch(&self, rtx: &ReadTxn, name: &str) -> mapkv::Result<Option<String>> {
        let existing = match DumpedOptions::of_tree(rtx, name)? {
            Some(options) if options == *self => return Ok(None),
            Some(options) => format!("exists with {options}"),
            None => "exists as a typed table".to_string(),
        };
        Ok(Some(format!(
            "tree {name:?} {existing}, but the header gives {self}; a tree's options are \
             fixed when it is created, so load it into another tree or database"
        )))
    }

    /// What to create the tree with, or open it with.
    pub fn tree_options(&self) -> TreeOptions {
        TreeOptions::new().value_align(self.value_align)
    }

    /// Appends the header's fields from the options to the name, `tree=` included. A
    /// tree with default options gets none but `tree=`, so its header reads as it did
    /// before options were recorded.
    pub fn write_header_fields(&self, out: &mut Vec<u8>) {
        if *self != DumpedOptions::default() {
            out.extend_from_slice(ALIGN_FIELD);
            out.extend_from_slice(self.value_align.to_string().as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(TREE_FIELD);
    }

    /// Parses a header's fields, `fields` being the line after `# mapkv-dump v1 `:
    /// options separated by single spaces, then `tree=NAME`. Returns the options and the
    /// escaped name; `Err` says what is wrong.
    pub fn parse_header(fields: &[u8]) -> Result<(DumpedOptions, &[u8]), String> {
        let mut options = DumpedOptions::default();
        let mut align_seen = false;
        let mut rest = fields;
        loop {
            if let Some(name) = rest.strip_prefix(TREE_FIELD) {
                return Ok((options, name));
            }
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            let (field, after) = rest.split_at(end);
            if let Some(value) = field.strip_prefix(ALIGN_FIELD) {
                if align_seen {
                    return Err("align= given twice".to_string());
                }
                options.value_align = parse_align(value)?;
                align_seen = true;
            } else if rest.is_empty() {
                return Err(not_v1("no tree=NAME field".to_string()));
            } else if field.is_empty() {
                return Err(not_v1("an empty field".to_string()));
            } else {
                let field = String::from_utf8_lossy(field);
                return Err(not_v1(format!("unknown field `{field}`")));
            }
            rest = after.strip_prefix(b" ").unwrap_or(after);
        }
    }
}

/// `Database::bulk_load` of tree `name`; `absent`: the options to create it with, if
/// it is absent. `bulk_load` keeps an empty tree's options but creates an absent one with
/// the defaults: so a tree with other options is first created empty, and deleted again
/// if the load fails, since a failed tree is not written (`LOAD_HELP`).
pub fn bulk_load<I, K, V>(
    db: &Database,
    name: &str,
    absent: Option<DumpedOptions>,
    entries: I,
) -> mapkv::Result<BulkStats>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let create = absent.filter(|options| *options != DumpedOptions::default());
    if let Some(options) = create {
        let wtx = db.begin_write()?;
        wtx.open_tree_with(name, options.tree_options())?;
        wtx.commit()?;
    }
    let loaded = db.bulk_load(name, entries);
    if loaded.is_err() && create.is_some() {
        let wtx = db.begin_write()?;
        wtx.delete_tree(name)?;
        wtx.commit()?;
    }
    loaded
}

/// An `align=` value: exactly one of `VALUE_ALIGNS` in decimal (no sign, no leading
/// zeros), so that each alignment has one spelling.
fn parse_align(value: &[u8]) -> Result<usize, String> {
    VALUE_ALIGNS
        .into_iter()
        .find(|align| align.to_string().as_bytes() == value)
        .ok_or_else(|| {
            format!(
                "align={}: a tree's value alignment is a power of two from 1 to 64",
                String::from_utf8_lossy(value)
            )
        })
}

/// Why a line that starts like a v1 header is none.
fn not_v1(why: String) -> String {
    format!("not a line of dump format v1: {why} (a newer mapkv wrote this dump?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_round_trip() {
        for value_align in VALUE_ALIGNS {
            let options = DumpedOptions { value_align };
            let mut line = Vec::new();
            options.write_header_fields(&mut line);
            line.extend_from_slice(b"a b");
            let parsed = DumpedOptions::parse_header(&line).unwrap();
            assert_eq!(parsed, (options, &b"a b"[..]));
        }
    }

    #[test]
    fn default_options_write_only_the_name_field() {
        let mut line = Vec::new();
        DumpedOptions::default().write_header_fields(&mut line);
        assert_eq!(line, TREE_FIELD);
    }

    #[test]
    fn bad_fields_are_refused() {
        for fields in [
            &b"align=0 tree=t"[..],
            b"align=08 tree=t",
            b"align=8",
            b"align=8  tree=t",
            b"align=8 align=8 tree=t",
            b"end",
            b"",
        ] {
            assert!(
                DumpedOptions::parse_header(fields).is_err(),
                "{:?}",
                String::from_utf8_lossy(fields)
            );
        }
    }
}
