//! The highest value of the incremental cursor column among the rows loaded.
//!
//! Kept in the column's own type (a timestamp compares as time, a number as a number) and
//! written out as the text the next run sends back to the API.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{ArrayRef, ArrowPrimitiveType};

use super::LoadError;
use crate::schema::PgType;
use crate::sink::SinkError;
use crate::sink::plan::LoadPlan;
use crate::sink::state::StateSettings;

/// The running maximum of the incremental cursor column, if the load keeps one; a resumed
/// backfill starts from what its earlier commits saw.
pub(super) fn cursor_tracker(
    state: &StateSettings,
    plan: &LoadPlan,
) -> Result<Option<(usize, CursorMax)>, LoadError> {
    let Some(inc) = state.incremental.as_ref().filter(|_| plan.copy_columns > 0) else {
        return Ok(None);
    };
    let plan_error = |reason: String| {
        LoadError::Sink(SinkError::Plan {
            table: plan.table.to_string(),
            reason,
        })
    };
    let names = plan.copy_names();
    // The cursor field may be given as the record's field name (or a flattened field's
    // path) or its column's.
    let field = inc.cursor_field.as_str();
    let column = plan.decode.columns[..plan.copy_columns]
        .iter()
        .position(|c| c.name == field || c.field_name() == field || c.field_path() == field)
        .ok_or_else(|| {
            plan_error(format!(
                "the cursor field {:?} is not a field of the records (fields: {})",
                inc.cursor_field,
                names.join(", ")
            ))
        })?;
    let mut max =
        CursorMax::new(plan.copy_types()[column]).map_err(|e| plan_error(e.to_string()))?;
    if let Some(seen) = &state.resumed_cursor {
        max.seed(seen);
    }
    Ok(Some((column, max)))
}

/// The running maximum of one column.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CursorMax {
    pg_type: PgType,
    best: Option<Best>,
}

#[derive(Debug, Clone, PartialEq)]
enum Best {
    Int(i64),
    Float(f64),
    Micros(i64),
    Days(i32),
    Text(String),
    /// numeric: compared by value, written as loaded.
    Decimal(f64, String),
}

fn max_of<T: ArrowPrimitiveType>(array: &ArrayRef) -> Option<T::Native>
where
    T::Native: PartialOrd,
{
    let a = array.as_primitive::<T>();
    a.iter().flatten().fold(None, |best, v| match best {
        Some(b) if b >= v => Some(b),
        _ => Some(v),
    })
}

/// A column whose values do not order as a cursor's must.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a {0} column cannot be an incremental cursor; use a timestamp, date, number or text field"
)]
pub(super) struct NotACursor(PgType);

impl CursorMax {
    /// # Errors
    /// A column type that makes no sense as a cursor.
    pub(super) fn new(pg_type: PgType) -> Result<CursorMax, NotACursor> {
        match pg_type {
            PgType::Bool | PgType::Uuid | PgType::Bytea | PgType::Time => Err(NotACursor(pg_type)),
            _ => Ok(CursorMax {
                pg_type,
                best: None,
            }),
        }
    }

    /// Takes in a value seen before (a resumed backfill's committed maximum), as written by
    /// [`CursorMax::value`]; text that does not parse as the column's type is ignored.
    pub(super) fn seed(&mut self, text: &str) {
        use crate::decode::values::{parse_date, parse_timestamp};
        let seen = match self.pg_type {
            PgType::Int2 | PgType::Int4 | PgType::Int8 => text.parse().ok().map(Best::Int),
            PgType::Float4 | PgType::Float8 => text.parse().ok().map(Best::Float),
            PgType::Timestamptz | PgType::Timestamp => parse_timestamp(text)
                .and_then(|t| t.utc_micros(None))
                .map(Best::Micros),
            PgType::Date => parse_date(text).map(Best::Days),
            PgType::Numeric => text
                .parse()
                .ok()
                .map(|v| Best::Decimal(v, text.to_string())),
            _ => Some(Best::Text(text.to_string())),
        };
        if let Some(seen) = seen {
            self.offer(seen);
        }
    }

    /// Takes in one batch's column.
    pub(super) fn update(&mut self, array: &ArrayRef) {
        let candidate = match self.pg_type {
            PgType::Int2 => max_of::<Int16Type>(array).map(|v| Best::Int(v.into())),
            PgType::Int4 => max_of::<Int32Type>(array).map(|v| Best::Int(v.into())),
            PgType::Int8 => max_of::<Int64Type>(array).map(Best::Int),
            PgType::Float4 => max_of::<Float32Type>(array).map(|v| Best::Float(v.into())),
            PgType::Float8 => max_of::<Float64Type>(array).map(Best::Float),
            PgType::Timestamptz | PgType::Timestamp => {
                max_of::<TimestampMicrosecondType>(array).map(Best::Micros)
            }
            PgType::Date => max_of::<Date32Type>(array).map(Best::Days),
            PgType::Numeric => array
                .as_string::<i32>()
                .iter()
                .flatten()
                .filter_map(|t| t.parse::<f64>().ok().map(|v| (v, t)))
                .fold(None, |best: Option<(f64, &str)>, (v, t)| match best {
                    Some((b, _)) if b >= v => best,
                    _ => Some((v, t)),
                })
                .map(|(v, t)| Best::Decimal(v, t.to_string())),
            _ => array
                .as_string::<i32>()
                .iter()
                .flatten()
                .max()
                .map(|t| Best::Text(t.to_string())),
        };
        if let Some(candidate) = candidate {
            self.offer(candidate);
        }
    }

    fn offer(&mut self, candidate: Best) {
        let better = match (&self.best, &candidate) {
            (None, _) => true,
            (Some(Best::Int(a)), Best::Int(b)) => b > a,
            (Some(Best::Float(a)), Best::Float(b)) => b > a,
            (Some(Best::Micros(a)), Best::Micros(b)) => b > a,
            (Some(Best::Days(a)), Best::Days(b)) => b > a,
            (Some(Best::Text(a)), Best::Text(b)) => b > a,
            (Some(Best::Decimal(a, _)), Best::Decimal(b, _)) => b > a,
            _ => false,
        };
        if better {
            self.best = Some(candidate);
        }
    }

    /// The maximum as the API will get it back: RFC 3339 for timestamps (UTC for
    /// timestamptz), `YYYY-MM-DD` for dates, the number or text itself otherwise.
    pub(super) fn value(&self) -> Option<String> {
        Some(match self.best.as_ref()? {
            Best::Int(v) => v.to_string(),
            Best::Float(v) => v.to_string(),
            Best::Micros(v) => {
                let at = chrono::DateTime::from_timestamp_micros(*v)?;
                if self.pg_type == PgType::Timestamptz {
                    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                } else {
                    at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()
                }
            }
            Best::Days(v) => (chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
                + chrono::Duration::days((*v).into()))
            .format("%Y-%m-%d")
            .to_string(),
            Best::Text(v) | Best::Decimal(_, v) => v.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray, TimestampMicrosecondArray};

    #[test]
    fn keeps_the_maximum_in_the_column_type() {
        let mut m = CursorMax::new(PgType::Timestamptz).unwrap();
        let batch: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None, Some(5)])
                .with_timezone("UTC"),
        );
        m.update(&batch);
        let older: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(vec![Some(7)]).with_timezone("UTC"));
        m.update(&older);
        assert_eq!(m.value().as_deref(), Some("2023-11-14T22:13:20.123456Z"));

        let mut m = CursorMax::new(PgType::Int8).unwrap();
        m.update(&(Arc::new(Int64Array::from(vec![9, 100, -3])) as ArrayRef));
        m.update(&(Arc::new(Int64Array::from(vec![Some(99), None])) as ArrayRef));
        assert_eq!(m.value().as_deref(), Some("100"));

        // numeric compares by value, not as text ("9.5" > "10" as text).
        let mut m = CursorMax::new(PgType::Numeric).unwrap();
        m.update(&(Arc::new(StringArray::from(vec!["9.5", "10.25"])) as ArrayRef));
        assert_eq!(m.value().as_deref(), Some("10.25"));

        // A resumed backfill starts from the maximum its committed pages held.
        let mut m = CursorMax::new(PgType::Timestamptz).unwrap();
        m.seed("2024-05-01T00:00:00Z");
        m.update(&older);
        assert_eq!(m.value().as_deref(), Some("2024-05-01T00:00:00Z"));
        let mut m = CursorMax::new(PgType::Int8).unwrap();
        m.seed("41");
        m.update(&(Arc::new(Int64Array::from(vec![40])) as ArrayRef));
        assert_eq!(m.value().as_deref(), Some("41"));

        let empty = CursorMax::new(PgType::Text).unwrap();
        assert_eq!(empty.value(), None);
        assert!(CursorMax::new(PgType::Bool).is_err());
    }
}
