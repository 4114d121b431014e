//! Moves record batches between our Arrow and DataFusion's.
//!
//! The decoder is built on arrow-json's custom decoder hooks, which first shipped in Arrow 60;
//! DataFusion 55 is still built on Arrow 59. Two versions of a crate are two unrelated sets of
//! Rust types, so batches cross between them through the Arrow C Data Interface, which exists
//! for exactly this: a stable, versionless struct layout. Crossing is zero-copy (the buffers
//! are shared, ownership moves with the release callback) and costs a few small allocations
//! per column per batch. When DataFusion moves to our Arrow, this module goes away.

use std::sync::Arc;

use arrow_array::{Array as _, RecordBatch, StructArray};
use arrow_schema::{ArrowError, Schema, SchemaRef};
use datafusion::arrow::array::{
    Array as _, RecordBatch as DfRecordBatch, StructArray as DfStructArray,
};
use datafusion::arrow::datatypes::{Schema as DfSchema, SchemaRef as DfSchemaRef};

type DfArrowArray = datafusion::arrow::ffi::FFI_ArrowArray;
type DfArrowSchema = datafusion::arrow::ffi::FFI_ArrowSchema;
type OurArrowArray = arrow_array::ffi::FFI_ArrowArray;
type OurArrowSchema = arrow_array::ffi::FFI_ArrowSchema;

// Both sides must be the C structs of the interface, byte for byte.
const _: () = assert!(size_of::<DfArrowArray>() == size_of::<OurArrowArray>());
const _: () = assert!(size_of::<DfArrowSchema>() == size_of::<OurArrowSchema>());

/// Why a batch could not cross; only an Arrow type one side does not know can cause it.
#[derive(Debug, thiserror::Error)]
#[error("moving a record batch to or from DataFusion failed: {0}")]
pub struct BridgeError(String);

fn error(e: impl std::fmt::Display) -> BridgeError {
    BridgeError(e.to_string())
}

/// Our schema as DataFusion's (field metadata included).
pub fn schema_to_df(schema: &Schema) -> Result<DfSchemaRef, BridgeError> {
    let mut ours = OurArrowSchema::try_from(schema).map_err(error)?;
    // SAFETY: both types are #[repr(C)] mirrors of the C Data Interface's ArrowSchema (sizes
    // asserted above); `from_raw` takes ownership, leaving an empty, released struct behind.
    let theirs = unsafe { DfArrowSchema::from_raw((&raw mut ours).cast()) };
    Ok(Arc::new(DfSchema::try_from(&theirs).map_err(error)?))
}

/// DataFusion's schema as ours.
pub fn schema_from_df(schema: &DfSchema) -> Result<SchemaRef, BridgeError> {
    let mut theirs = DfArrowSchema::try_from(schema).map_err(error)?;
    // SAFETY: as in `schema_to_df`.
    let ours = unsafe { OurArrowSchema::from_raw((&raw mut theirs).cast()) };
    Ok(Arc::new(Schema::try_from(&ours).map_err(error)?))
}

/// One of our batches as DataFusion's, sharing its buffers.
pub fn batch_to_df(batch: RecordBatch, schema: &DfSchemaRef) -> Result<DfRecordBatch, BridgeError> {
    let rows = batch.num_rows();
    let data = StructArray::from(batch).into_data();
    let (mut array, mut array_schema) = arrow_array::ffi::to_ffi(&data).map_err(error)?;
    // SAFETY: as in `schema_to_df`, for both the array and its schema; `from_ffi` then reads
    // an array the other side exported, which is what the interface guarantees is valid.
    let data = unsafe {
        let array = DfArrowArray::from_raw((&raw mut array).cast());
        let array_schema = DfArrowSchema::from_raw((&raw mut array_schema).cast());
        datafusion::arrow::ffi::from_ffi(array, &array_schema).map_err(error)?
    };
    let columns = DfStructArray::from(data).into_parts().1;
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    DfRecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(error)
}

/// One of DataFusion's batches as ours, sharing its buffers.
pub fn batch_from_df(batch: DfRecordBatch, schema: &SchemaRef) -> Result<RecordBatch, BridgeError> {
    let rows = batch.num_rows();
    let data = DfStructArray::from(batch).into_data();
    let (mut array, mut array_schema) = datafusion::arrow::ffi::to_ffi(&data).map_err(error)?;
    // SAFETY: as in `batch_to_df`, the other way round.
    let data = unsafe {
        let array = OurArrowArray::from_raw((&raw mut array).cast());
        let array_schema = OurArrowSchema::from_raw((&raw mut array_schema).cast());
        arrow_array::ffi::from_ffi(array, &array_schema).map_err(error)?
    };
    let columns = StructArray::from(data).into_parts().1;
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
        .map_err(|e: ArrowError| error(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, TimeUnit};
    use std::collections::HashMap;

    #[test]
    fn batches_cross_both_ways_unchanged() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true).with_metadata(HashMap::from([(
                "apitap.pg_type".to_string(),
                "jsonb".to_string(),
            )])),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(5), Some(6), None])
                        .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let df_schema = schema_to_df(&schema).unwrap();
        assert_eq!(
            df_schema
                .field(1)
                .metadata()
                .get("apitap.pg_type")
                .map(String::as_str),
            Some("jsonb")
        );
        let theirs = batch_to_df(batch.slice(1, 2), &df_schema).unwrap();
        assert_eq!(theirs.num_rows(), 2);
        let back = batch_from_df(theirs, &schema_from_df(&df_schema).unwrap()).unwrap();
        assert_eq!(back, batch.slice(1, 2));
    }

    #[test]
    fn a_batch_without_columns_keeps_its_row_count() {
        let schema = Arc::new(Schema::empty());
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            vec![],
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(4)),
        )
        .unwrap();
        let df_schema = schema_to_df(&schema).unwrap();
        let theirs = batch_to_df(batch, &df_schema).unwrap();
        assert_eq!(theirs.num_rows(), 4);
    }
}
