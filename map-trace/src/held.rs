//! The memory a map holds: classic maps' bucket arrays and overflow buckets, swiss maps'
//! small group, or their tables' groups, table headers and directory. Worked out from the
//! map type's bucket or group size, the header read at the last event, and (swiss) the
//! tables its `make` and grows built, as the runtime sizes them; each allocation rounded to
//! the Go heap's size classes, so the bytes compare with the heap's own accounting.

use crate::{
    events::{Detail, TraceEvent},
    goruntime::{HeaderLayout, MapState, Storage},
};

/// swiss: the tables a map's events built, from a point where they were known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableHistory {
    /// The hint it was made with, or 0 when first seen small; `None` when it had tables
    /// before tracing began (what they were is not known).
    pub start_hint: Option<u64>,
    /// Small maps turned into one table.
    pub to_table: u64,
    /// Capacity the table grows added (new − old).
    pub capacity_added: u64,
    pub splits: u64,
    /// (total capacity, tables) read from the target's memory at the end, when the events
    /// could not tell.
    pub read: Option<(u64, u64)>,
}

impl TableHistory {
    /// The history of a map first seen at `state` without its `make`.
    #[must_use]
    pub fn first_seen(state: Option<MapState>) -> Self {
        let small = matches!(state, Some(MapState::Swiss { tables: 0, .. }));
        Self {
            start_hint: small.then_some(0),
            ..Self::default()
        }
    }

    /// A map made with `hint` at `make`.
    #[must_use]
    pub fn made(hint: u64) -> Self {
        Self {
            start_hint: Some(hint),
            ..Self::default()
        }
    }

    pub fn record(&mut self, event: &TraceEvent) {
        match event.detail {
            Some(Detail::ToTable) => self.to_table += 1,
            Some(Detail::Table { old, new }) => {
                self.capacity_added += u64::from(new.saturating_sub(old));
            }
            Some(Detail::Split) => self.splits += 1,
            _ => {}
        }
    }

    /// Total slot capacity and number of tables, if known.
    #[must_use]
    pub fn tables(&self, storage: &Storage) -> Option<(u64, u64)> {
        let Storage::Swiss {
            slots_per_group,
            max_table_capacity,
            ..
        } = *storage
        else {
            return None;
        };
        if let Some(read) = self.read {
            return Some(read);
        }
        let (cap, n) = made_tables(storage, self.start_hint?)?;
        // growToTable makes one table of two groups; a split replaces one full table with
        // two of the largest capacity.
        let cap = cap
            + self.to_table * 2 * slots_per_group
            + self.capacity_added
            + self.splits * max_table_capacity;
        Some((cap, n + self.to_table + self.splits))
    }
}

/// A swiss map's tables as its memory has them now: (total capacity, tables). `read` reads
/// the target's memory; `dir_len` is the directory's length the last event saw, and a map
/// whose header says otherwise (changed since, or freed and reused) is not guessed at.
pub fn read_tables(
    read: impl Fn(u64, usize) -> Option<Vec<u8>>,
    header: &HeaderLayout,
    storage: &Storage,
    map: u64,
    dir_len: u64,
) -> Option<(u64, u64)> {
    let (
        HeaderLayout::Swiss {
            dir_ptr: dir_ptr_at,
            dir_len: dir_len_at,
            table_capacity,
            ..
        },
        Storage::Swiss {
            slots_per_group,
            max_table_capacity,
            ..
        },
    ) = (header, storage)
    else {
        return None;
    };
    let word = |bytes: &[u8], at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let head = read(map, dir_len_at.max(dir_ptr_at) + 8)?;
    if word(&head, *dir_len_at)? != dir_len || dir_len == 0 || dir_len > 1 << 20 {
        return None;
    }
    let dir = read(
        word(&head, *dir_ptr_at)?,
        usize::try_from(dir_len).ok()? * 8,
    )?;
    let mut tables: Vec<u64> = dir.chunks_exact(8).filter_map(|w| word(w, 0)).collect();
    tables.sort_unstable();
    tables.dedup();
    let mut capacity = 0;
    for &t in &tables {
        let bytes = read(t, table_capacity + 2)?;
        let cap = u64::from(u16::from_le_bytes(
            bytes
                .get(*table_capacity..table_capacity + 2)?
                .try_into()
                .ok()?,
        ));
        // A table's capacity is a power of two from one group to the largest table.
        if !cap.is_power_of_two() || cap < *slots_per_group || cap > *max_table_capacity {
            return None;
        }
        capacity += cap;
    }
    Some((capacity, u64::try_from(tables.len()).ok()?))
}

/// What `make(map[K]V, hint)` builds, as `maps.NewMap` sizes it: (total capacity, tables).
fn made_tables(storage: &Storage, hint: u64) -> Option<(u64, u64)> {
    let Storage::Swiss {
        slots_per_group,
        max_table_capacity,
        load_num,
        load_den,
        ..
    } = *storage
    else {
        return None;
    };
    if hint <= slots_per_group {
        return Some((0, 0));
    }
    let target = hint.checked_mul(load_den)? / load_num;
    let dir = target
        .div_ceil(max_table_capacity)
        .checked_next_power_of_two()?;
    let per_table = (target / dir)
        .max(slots_per_group)
        .checked_next_power_of_two()?;
    Some((per_table.checked_mul(dir)?, dir))
}

/// The Go heap's size classes (`runtime/sizeclasses.go`, the same in every supported
/// release): a small allocation takes the smallest class that fits it.
const SIZE_CLASSES: [u64; 67] = [
    8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352,
    384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048,
    2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472, 9728,
    10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264, 28672,
    32768,
];
/// Larger allocations take whole pages.
const PAGE: u64 = 8192;

/// The heap bytes an allocation of `n` bytes takes.
#[must_use]
pub fn allocated(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    SIZE_CLASSES
        .iter()
        .copied()
        .find(|&c| c >= n)
        .unwrap_or_else(|| n.div_ceil(PAGE).saturating_mul(PAGE))
}

/// A classic bucket array of `2^b` buckets, with the overflow buckets the runtime makes
/// along with it from b = 4 on: (buckets, of which preallocated overflow).
fn classic_array(b: u8) -> (u64, u64) {
    let b = u32::from(b.min(62));
    let prealloc = if b >= 4 { 1 << (b - 4) } else { 0 };
    ((1 << b) + prealloc, prealloc)
}

/// The bytes a map holds now; `None` where its shape is not known (a swiss map that had
/// tables before tracing began, or a type whose sizes the binary does not give).
#[must_use]
pub fn bytes(
    storage: &Storage,
    unit: Option<u64>,
    state: &MapState,
    history: &TableHistory,
) -> Option<u64> {
    // Made without a hint and never written: nothing allocated yet, whatever the type
    // (`makemap_small` names none, and a map never written has no event that does).
    let empty = match *state {
        MapState::Classic {
            count,
            b,
            noverflow,
            growing,
            ..
        } => b == 0 && count == 0 && !growing && noverflow == 0,
        MapState::Swiss {
            tables, dir_ptr, ..
        } => tables == 0 && dir_ptr == 0,
    };
    if empty {
        return Some(0);
    }
    let unit = unit.filter(|&u| u > 0)?;
    match (*storage, *state) {
        (
            Storage::Classic { .. },
            MapState::Classic {
                b,
                noverflow,
                growing,
                same_size,
                ..
            },
        ) => {
            let (buckets, prealloc) = classic_array(b);
            // From B = 16 the runtime counts one overflow bucket in 2^(B-15).
            let overflow = u64::from(noverflow) << u32::from(b.saturating_sub(15).min(48));
            let mut held = allocated(buckets.checked_mul(unit)?)
                + overflow.saturating_sub(prealloc) * allocated(unit);
            if growing {
                let old_b = if same_size { b } else { b.saturating_sub(1) };
                held += allocated(classic_array(old_b).0.checked_mul(unit)?);
            }
            Some(held)
        }
        (
            Storage::Swiss {
                slots_per_group,
                table_bytes,
                ..
            },
            MapState::Swiss { tables, .. },
        ) => {
            if tables == 0 {
                return Some(allocated(unit));
            }
            let (cap, n) = history.tables(storage)?;
            if n == 0 {
                return None;
            }
            let groups = (cap / n).div_ceil(slots_per_group);
            Some(
                n * (allocated(groups.checked_mul(unit)?) + allocated(table_bytes))
                    + allocated(tables.checked_mul(8)?),
            )
        }
        _ => None,
    }
}

/// What a map of `count` elements made with that size holds: the floor a rebuilt map
/// would come down to.
#[must_use]
pub fn needed(storage: &Storage, unit: u64, count: u64) -> Option<u64> {
    match *storage {
        Storage::Classic {
            load_num, load_den, ..
        } => {
            let mut b = 0_u8;
            // makemap: the smallest B whose buckets hold `count` under the load factor.
            while count > 8 && count.saturating_mul(load_den) > (load_num << b) && b < 62 {
                b += 1;
            }
            let state = MapState::Classic {
                count,
                b,
                noverflow: 0,
                growing: false,
                same_size: false,
                nevacuate: 0,
            };
            bytes(storage, Some(unit), &state, &TableHistory::default())
        }
        Storage::Swiss { .. } => {
            let history = TableHistory::made(count);
            let (_, tables) = history.tables(storage)?;
            let state = MapState::Swiss {
                used: count,
                tables,
                global_depth: 0,
                dir_ptr: u64::from(count > 0),
            };
            bytes(storage, Some(unit), &state, &history)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goruntime::{CLASSIC_STORAGE, SWISS_STORAGE};

    fn classic(count: u64, b: u8, noverflow: u16) -> MapState {
        MapState::Classic {
            count,
            b,
            noverflow,
            growing: false,
            same_size: false,
            nevacuate: 0,
        }
    }

    #[test]
    fn allocations_round_to_size_classes_and_pages() {
        assert_eq!(allocated(0), 0);
        assert_eq!(allocated(1), 8);
        assert_eq!(allocated(144), 144);
        assert_eq!(allocated(145), 160);
        assert_eq!(allocated(17_408), 18_432);
        assert_eq!(allocated(32_769), 40_960);
    }

    #[test]
    fn classic_buckets_with_their_preallocated_overflow() {
        // map[int]int: 144-byte buckets. B = 15: 32768 + 2048 buckets in one array.
        let held = bytes(
            &CLASSIC_STORAGE,
            Some(144),
            &classic(200_000, 15, 0),
            &TableHistory::default(),
        );
        assert_eq!(held, Some(allocated(34_816 * 144)));
        // Overflow past the preallocated ones are one bucket each.
        let more = bytes(
            &CLASSIC_STORAGE,
            Some(144),
            &classic(200_000, 15, 2048 + 10),
            &TableHistory::default(),
        );
        assert_eq!(more, Some(allocated(34_816 * 144) + 10 * 144));
        // A map made without a hint and never written holds nothing yet.
        assert_eq!(
            bytes(
                &CLASSIC_STORAGE,
                Some(144),
                &classic(0, 0, 0),
                &TableHistory::default()
            ),
            Some(0)
        );
        assert_eq!(
            bytes(
                &CLASSIC_STORAGE,
                None,
                &classic(9, 1, 0),
                &TableHistory::default()
            ),
            None
        );
    }

    #[test]
    fn swiss_tables_as_make_and_grows_built_them() {
        let state = |tables| MapState::Swiss {
            used: 1,
            tables,
            global_depth: 0,
            dir_ptr: 1,
        };
        // make(map[int]int, 100_000): 114_285 slots in 128 tables of 1024.
        let made = TableHistory::made(100_000);
        assert_eq!(made.tables(&SWISS_STORAGE), Some((128 * 1024, 128)));
        assert_eq!(
            bytes(&SWISS_STORAGE, Some(136), &state(128), &made),
            Some(128 * (18_432 + 32) + 1024)
        );
        // Grown from small: 16 → 1024 by table grows, then three splits.
        let grown = TableHistory {
            start_hint: Some(0),
            to_table: 1,
            capacity_added: 1024 - 16,
            splits: 3,
            read: None,
        };
        assert_eq!(grown.tables(&SWISS_STORAGE), Some((4 * 1024, 4)));
        // A small map holds its one group once written.
        assert_eq!(
            bytes(
                &SWISS_STORAGE,
                Some(136),
                &state(0),
                &TableHistory::default()
            ),
            Some(144) // the 144-byte size class
        );
        // Tables made before tracing: not known.
        assert_eq!(
            bytes(
                &SWISS_STORAGE,
                Some(136),
                &state(4),
                &TableHistory::first_seen(Some(state(4)))
            ),
            None
        );
    }

    #[test]
    fn tables_read_from_memory_are_checked_against_the_header() {
        // A map at 0x1000 with a directory at 0x2000 of four entries over three tables.
        let mut memory = std::collections::HashMap::<u64, Vec<u8>>::new();
        let mut head = vec![0_u8; 40];
        head[16..24].copy_from_slice(&0x2000_u64.to_le_bytes());
        head[24..32].copy_from_slice(&4_u64.to_le_bytes());
        memory.insert(0x1000, head);
        let dir: Vec<u8> = [0x3000_u64, 0x3000, 0x4000, 0x5000]
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect();
        memory.insert(0x2000, dir);
        for (at, cap) in [(0x3000, 1024_u16), (0x4000, 1024), (0x5000, 512)] {
            let mut t = vec![0_u8; 8];
            t[2..4].copy_from_slice(&cap.to_le_bytes());
            memory.insert(at, t);
        }
        let read = |addr: u64, len: usize| {
            memory
                .get(&addr)
                .and_then(|b| b.get(..len))
                .map(<[u8]>::to_vec)
        };
        let header = crate::goruntime::SWISS_HEADER;
        assert_eq!(
            read_tables(read, &header, &SWISS_STORAGE, 0x1000, 4),
            Some((2560, 3))
        );
        // The header no longer says what the last event saw: no guess.
        assert_eq!(read_tables(read, &header, &SWISS_STORAGE, 0x1000, 8), None);
        // Unreadable memory: none.
        assert_eq!(read_tables(read, &header, &SWISS_STORAGE, 0x9000, 4), None);
        // Read tables override the events' history.
        let history = TableHistory {
            read: Some((2560, 3)),
            ..TableHistory::first_seen(None)
        };
        assert_eq!(history.tables(&SWISS_STORAGE), Some((2560, 3)));
    }

    #[test]
    fn a_rebuilt_map_needs_what_make_gives_it() {
        assert_eq!(
            needed(&CLASSIC_STORAGE, 144, 1000),
            Some(allocated((256 + 16) * 144))
        );
        assert_eq!(needed(&CLASSIC_STORAGE, 144, 5), Some(144));
        // 1000 × 8/7 slots: two tables of 1024.
        assert_eq!(
            needed(&SWISS_STORAGE, 136, 1000),
            Some(2 * (18_432 + 32) + 16)
        );
        assert_eq!(needed(&SWISS_STORAGE, 136, 0), Some(0));
    }
}
