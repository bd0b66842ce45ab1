//! The dirty pages of a write transaction, by provisional id (`TxnPages`).

use super::PROVISIONAL_IDS;
use crate::dirty_page::DirtyPage;
use crate::page::PageId;

/// The dirty pages of a transaction, in a table indexed by provisional id. Provisional
/// ids are handed out one after another from [`PROVISIONAL_IDS`], so the table is
/// dense; a lookup is one index where a hash map took two cache misses on the large
/// tables of big transactions (about 10 % of removing half of a 1M-entry tree).
#[derive(Default)]
pub(super) struct DirtyPages {
    slots: Vec<Option<DirtyPage>>,
    len: usize,
}

impl DirtyPages {
    /// The slot of `id`; `None` for an id below the provisional ones (a committed page).
    fn slot(id: PageId) -> Option<usize> {
        let i = id.0.checked_sub(PROVISIONAL_IDS)?;
        usize::try_from(i).ok()
    }

    pub(super) fn get(&self, id: PageId) -> Option<&DirtyPage> {
        self.slots.get(Self::slot(id)?)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: PageId) -> Option<&mut DirtyPage> {
        self.slots.get_mut(Self::slot(id)?)?.as_mut()
    }

    pub(super) fn contains(&self, id: PageId) -> bool {
        self.get(id).is_some()
    }

    /// Files `page` under the provisional id `id` (one `add_page` gave out), returning
    /// the page it replaces.
    pub(super) fn insert(&mut self, id: PageId, page: DirtyPage) -> Option<DirtyPage> {
        let i = Self::slot(id).expect("dirty pages have provisional ids");
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        let old = self.slots[i].replace(page);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(super) fn remove(&mut self, id: PageId) -> Option<DirtyPage> {
        let page = self.slots.get_mut(Self::slot(id)?)?.take()?;
        self.len -= 1;
        Some(page)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (PageId, &mut DirtyPage)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, slot)| {
            let page = slot.as_mut()?;
            Some((PageId(PROVISIONAL_IDS + i as u64), page))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::page_buf::PageBox;

    fn page(mark: u8) -> DirtyPage {
        let mut page = PageBox::zeroed(64);
        page[0] = mark;
        DirtyPage::new(page)
    }

    #[test]
    fn dirty_pages_behave_as_a_map_of_provisional_ids() {
        let mut table = DirtyPages::default();
        let mut model: HashMap<u64, u8> = HashMap::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..5_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = PageId(PROVISIONAL_IDS + x % 300);
            let mark = step as u8;
            match x % 3 {
                0 => {
                    let old = table.insert(id, page(mark)).map(|p| p.bytes()[0]);
                    assert_eq!(old, model.insert(id.0, mark));
                }
                1 => {
                    let old = table.remove(id).map(|p| p.bytes()[0]);
                    assert_eq!(old, model.remove(&id.0));
                }
                _ => {
                    if let Some(p) = table.get_mut(id) {
                        p.bytes_mut()[0] = mark;
                        model.insert(id.0, mark);
                    }
                }
            }
            assert_eq!(
                table.get(id).map(|p| p.bytes()[0]),
                model.get(&id.0).copied()
            );
            assert_eq!(table.len(), model.len());
        }
        let mut listed: Vec<(u64, u8)> = (table.iter_mut())
            .map(|(id, p)| (id.0, p.bytes()[0]))
            .collect();
        let mut want: Vec<(u64, u8)> = model.into_iter().collect();
        listed.sort_unstable();
        want.sort_unstable();
        assert_eq!(listed, want);
        // Committed ids and ids past the table are never dirty.
        for id in [
            0,
            2,
            PROVISIONAL_IDS - 1,
            PROVISIONAL_IDS + 10_000,
            u64::MAX,
        ] {
            assert!(!table.contains(PageId(id)) && table.get(PageId(id)).is_none());
        }
    }
}
