//! Which rows of a merge hold a key the load may have met before.
//!
//! A merge into an empty table COPYs each key's first record straight into the table and
//! stages only the records that may repeat a key, to be applied after them with
//! `ON CONFLICT` (`sink::write::merge_empty`): the last record still wins, and the common load —
//! every key once — skips the staging table and its second pass entirely. That is only
//! right if no repeat is ever missed, so the keys go through a Bloom filter, which has no
//! false negatives; its false positives only send a first record the slow way.
//!
//! Keys are compared as Arrow values, which is comparing them as PostgreSQL stores them only
//! for types whose equal values are identical ([`PgType::equal_means_identical`]) and text
//! under a deterministic collation: the sink checks the column types before it COPYs into
//! the table, and never does so for other keys.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use fastbloom::BloomFilter;
use std::hash::Hash;

use crate::schema::PgType;

/// Bits in the filter: 16 MiB, zeroed up front (fastbloom writes them all: a millisecond or
/// two) and held for the load, however few its rows.
/// With [`HASHES`] bits per key, a key met for the first time looks met with probability
/// (1 - e^(-2n/2^27))^2 after n keys: 0.02% at a million keys, 2% at ten million, 60% at a
/// hundred million (a ten-million-row load staged 0.35% of its rows for nothing, half what
/// the formula predicts).
const BITS: usize = 1 << 27;
/// Bits set per key. Each is a likely cache miss on a filter this size; two keep the
/// filter's cost per row near one miss (the CPU overlaps them).
const HASHES: u32 = 2;

/// Remembers the merge keys of every row so far, and marks the rows whose key it may have
/// met before.
pub struct RepeatedKeys {
    filter: Filter,
    /// The key columns' positions in the batches.
    keys: Vec<usize>,
    hashes: Vec<u64>,
}

impl RepeatedKeys {
    /// For batches whose key columns are at `keys`, of types `types` (one per key): `None`
    /// when a key's type is not one whose values compare as they are stored, or there is
    /// no key.
    pub fn new(keys: Vec<usize>, types: &[PgType]) -> Option<RepeatedKeys> {
        let comparable = |t: &PgType| t.equal_means_identical() || *t == PgType::Text;
        if keys.is_empty() || keys.len() != types.len() || !types.iter().all(comparable) {
            return None;
        }
        Some(RepeatedKeys {
            filter: BloomFilter::with_num_bits(BITS)
                .hasher(foldhash::fast::RandomState::default())
                .hashes(HASHES),
            keys,
            hashes: Vec::new(),
        })
    }

    /// Remembers the keys of `batch`'s rows, and returns which rows hold a key that may
    /// have come before (in an earlier row of this batch or an earlier batch), or `None`
    /// if none does. Never misses a repeated key; now and then marks a key met for the
    /// first time. A row with a NULL in its key is always marked: whether two NULL keys
    /// conflict depends on the index (`NULLS NOT DISTINCT`), which the upsert knows.
    pub fn mark(&mut self, batch: &RecordBatch) -> Option<Vec<bool>> {
        let rows = batch.num_rows();
        let mut marked = vec![false; rows];
        self.hashes.clear();
        self.hashes.resize(rows, 0);
        for (i, &key) in self.keys.iter().enumerate() {
            hash_column(
                &self.filter,
                batch.column(key).as_ref(),
                i == 0,
                &mut self.hashes,
                &mut marked,
            );
        }
        let mut any = false;
        for (marked, &hash) in marked.iter_mut().zip(&self.hashes) {
            if !*marked {
                *marked = self.filter.insert_hash(hash);
            }
            any |= *marked;
        }
        any.then_some(marked)
    }
}

/// Mixes each row's value of one key column into its hash (`first`: the row's hash starts
/// here), and marks the rows where it is NULL. A column of a type not listed is never
/// compared: every row is marked.
fn hash_column(
    filter: &Filter,
    array: &dyn Array,
    first: bool,
    hashes: &mut [u64],
    marked: &mut [bool],
) {
    let mix = Mix {
        filter,
        first,
        hashes,
    };
    match array.data_type() {
        DataType::Int16 => mix.each(array.as_primitive::<Int16Type>().values()),
        DataType::Int32 => mix.each(array.as_primitive::<Int32Type>().values()),
        DataType::Int64 => mix.each(array.as_primitive::<Int64Type>().values()),
        DataType::Date32 => mix.each(array.as_primitive::<Date32Type>().values()),
        DataType::Time64(TimeUnit::Microsecond) => {
            mix.each(array.as_primitive::<Time64MicrosecondType>().values())
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            mix.each(array.as_primitive::<TimestampMicrosecondType>().values())
        }
        DataType::Boolean => {
            let values = array.as_boolean();
            mix.by_row(|row| values.value(row));
        }
        DataType::Utf8 => {
            let values = array.as_string::<i32>();
            mix.by_row(|row| values.value(row));
        }
        DataType::Binary => {
            let values = array.as_binary::<i32>();
            mix.by_row(|row| values.value(row));
        }
        DataType::FixedSizeBinary(_) => {
            let values = array.as_fixed_size_binary();
            mix.by_row(|row| values.value(row));
        }
        _ => {
            marked.fill(true);
            return;
        }
    }
    if let Some(nulls) = array.logical_nulls() {
        for (marked, valid) in marked.iter_mut().zip(nulls.iter()) {
            *marked |= !valid;
        }
    }
}

type Filter = BloomFilter<foldhash::fast::RandomState>;

/// Hashing one key column into the rows' hashes, in one loop per column type.
struct Mix<'a> {
    filter: &'a Filter,
    first: bool,
    hashes: &'a mut [u64],
}

impl Mix<'_> {
    fn each<V: Hash>(self, values: &[V]) {
        self.by_row(|row| &values[row]);
    }

    fn by_row<V: Hash>(self, value: impl Fn(usize) -> V) {
        if self.first {
            for (row, hash) in self.hashes.iter_mut().enumerate() {
                *hash = self.filter.source_hash(&value(row));
            }
        } else {
            for (row, hash) in self.hashes.iter_mut().enumerate() {
                *hash = self.filter.source_hash(&(*hash, value(row)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn batch(ids: &[Option<i64>], names: &[&str]) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
            (
                "name",
                Arc::new(StringArray::from(names.to_vec())) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn only_keys_that_compare_as_stored_are_tracked() {
        assert!(RepeatedKeys::new(vec![0], &[PgType::Int8]).is_some());
        assert!(RepeatedKeys::new(vec![0, 1], &[PgType::Uuid, PgType::Text]).is_some());
        assert!(RepeatedKeys::new(vec![0], &[PgType::Numeric]).is_none());
        assert!(RepeatedKeys::new(vec![0], &[PgType::Float8]).is_none());
        assert!(RepeatedKeys::new(vec![0], &[PgType::Jsonb]).is_none());
        assert!(RepeatedKeys::new(vec![], &[]).is_none());
    }

    /// Every key type's column, as the decoder builds it: its first value repeated in the
    /// second row, a different one in the third. Marked: the second row only.
    #[test]
    fn a_repeat_is_marked_in_every_key_type() {
        use arrow_array::{
            BinaryArray, BooleanArray, Date32Array, FixedSizeBinaryArray, Int16Array, Int32Array,
            Time64MicrosecondArray, TimestampMicrosecondArray,
        };
        let columns: Vec<(PgType, ArrayRef)> = vec![
            (PgType::Int2, Arc::new(Int16Array::from(vec![7, 7, 8]))),
            (PgType::Int4, Arc::new(Int32Array::from(vec![7, 7, 8]))),
            (PgType::Int8, Arc::new(Int64Array::from(vec![7, 7, 8]))),
            (
                PgType::Bool,
                Arc::new(BooleanArray::from(vec![true, true, false])),
            ),
            (PgType::Date, Arc::new(Date32Array::from(vec![7, 7, 8]))),
            (
                PgType::Time,
                Arc::new(Time64MicrosecondArray::from(vec![7, 7, 8])),
            ),
            (
                PgType::Timestamp,
                Arc::new(TimestampMicrosecondArray::from(vec![7, 7, 8])),
            ),
            (
                PgType::Timestamptz,
                Arc::new(TimestampMicrosecondArray::from(vec![7, 7, 8]).with_timezone("UTC")),
            ),
            (
                PgType::Uuid,
                Arc::new(
                    FixedSizeBinaryArray::try_from_iter(
                        [[1u8; 16], [1u8; 16], [2u8; 16]].into_iter(),
                    )
                    .unwrap(),
                ),
            ),
            (
                PgType::Bytea,
                Arc::new(BinaryArray::from(vec![&b"k"[..], b"k", b"k\0"])),
            ),
            (
                PgType::Text,
                Arc::new(StringArray::from(vec!["k", "k", "K"])),
            ),
        ];
        for (pg_type, column) in columns {
            assert_eq!(column.data_type(), &pg_type.arrow_type(), "{pg_type}");
            let mut keys = RepeatedKeys::new(vec![0], &[pg_type]).unwrap();
            let batch = RecordBatch::try_from_iter([("k", column)]).unwrap();
            assert_eq!(
                keys.mark(&batch),
                Some(vec![false, true, false]),
                "{pg_type}"
            );
        }
    }

    /// A column of a type no key is tracked in is never compared: every row is marked.
    #[test]
    fn a_column_of_another_type_marks_every_row() {
        use arrow_array::Float64Array;
        let mut keys = RepeatedKeys::new(vec![0], &[PgType::Int8]).unwrap();
        let column = Arc::new(Float64Array::from(vec![1.0, 2.0])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([("k", column)]).unwrap();
        assert_eq!(keys.mark(&batch), Some(vec![true, true]));
    }

    #[test]
    fn null_keys_are_always_marked() {
        let mut keys = RepeatedKeys::new(vec![0], &[PgType::Int8]).unwrap();
        let marked = keys.mark(&batch(&[Some(1), None, Some(2)], &["a", "b", "c"]));
        assert_eq!(marked, Some(vec![false, true, false]));
    }

    #[test]
    fn a_two_column_key_repeats_only_as_a_whole() {
        let mut keys = RepeatedKeys::new(vec![0, 1], &[PgType::Int8, PgType::Text]).unwrap();
        let first = batch(&[Some(1), Some(1), Some(2)], &["a", "b", "a"]);
        assert_eq!(keys.mark(&first), None);
        let second = batch(&[Some(2), Some(2), Some(1)], &["b", "a", "b"]);
        assert_eq!(keys.mark(&second), Some(vec![false, true, true]));
    }

    proptest! {
        /// Every repeat is marked, across batches and within one; of the keys met for the
        /// first time, hardly any (a few thousand keys in a filter built for millions).
        #[test]
        fn every_repeat_is_marked(
            batches in prop::collection::vec(prop::collection::vec(0i64..300, 0..200), 1..6)
        ) {
            let mut keys = RepeatedKeys::new(vec![0], &[PgType::Int8]).unwrap();
            let mut seen = std::collections::HashSet::new();
            let mut false_marks = 0;
            for ids in batches {
                let ids: Vec<Option<i64>> = ids.into_iter().map(Some).collect();
                let names = vec!["x"; ids.len()];
                let marked = keys.mark(&batch(&ids, &names)).unwrap_or(vec![false; ids.len()]);
                for (id, marked) in ids.iter().zip(marked) {
                    let repeat = !seen.insert(id.unwrap());
                    prop_assert!(marked || !repeat, "repeat of {id:?} not marked");
                    false_marks += usize::from(marked && !repeat);
                }
            }
            prop_assert!(false_marks <= 1, "{false_marks} first keys marked");
        }
    }
}
