//! The shape of the target table, shared by every stage.
//!
//! Binary COPY does no conversion on the server: every value must arrive in the exact binary
//! format of its column's type. So the target's PostgreSQL types are decided once, before the
//! first record is decoded, and then drive both the decoder (which Arrow array each column
//! becomes) and the encoder (which send format each array is written in).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Field metadata key carrying the column's [`PgType`], read by the decoder factory.
///
/// Several PostgreSQL types share one Arrow type (text, json, jsonb and numeric are all Utf8),
/// so the Arrow type alone cannot pick the decoder.
pub(crate) const PG_TYPE_KEY: &str = "apitap.pg_type";

/// The PostgreSQL column types apitap reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PgType {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Bool,
    /// text, varchar, char(n), name and citext: all take UTF-8 bytes in binary COPY.
    Text,
    Timestamptz,
    Timestamp,
    Date,
    Time,
    Uuid,
    Json,
    Jsonb,
    Bytea,
}

impl PgType {
    #[cfg(any(feature = "sql", test))]
    const ALL: [PgType; 16] = [
        PgType::Int2,
        PgType::Int4,
        PgType::Int8,
        PgType::Float4,
        PgType::Float8,
        PgType::Numeric,
        PgType::Bool,
        PgType::Text,
        PgType::Timestamptz,
        PgType::Timestamp,
        PgType::Date,
        PgType::Time,
        PgType::Uuid,
        PgType::Json,
        PgType::Jsonb,
        PgType::Bytea,
    ];

    /// Maps a `pg_type.typname` to the type apitap encodes it as, or `None` when unsupported.
    pub(crate) fn from_typname(typname: &str) -> Option<PgType> {
        Some(match typname {
            "int2" => PgType::Int2,
            "int4" => PgType::Int4,
            "int8" => PgType::Int8,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "numeric" => PgType::Numeric,
            "bool" => PgType::Bool,
            "text" | "varchar" | "bpchar" | "name" | "citext" => PgType::Text,
            "timestamptz" => PgType::Timestamptz,
            "timestamp" => PgType::Timestamp,
            "date" => PgType::Date,
            "time" => PgType::Time,
            "uuid" => PgType::Uuid,
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            "bytea" => PgType::Bytea,
            _ => return None,
        })
    }

    /// The SQL spelling used in DDL and in messages.
    pub fn sql_name(self) -> &'static str {
        match self {
            PgType::Int2 => "smallint",
            PgType::Int4 => "integer",
            PgType::Int8 => "bigint",
            PgType::Float4 => "real",
            PgType::Float8 => "double precision",
            PgType::Numeric => "numeric",
            PgType::Bool => "boolean",
            PgType::Text => "text",
            PgType::Timestamptz => "timestamptz",
            PgType::Timestamp => "timestamp",
            PgType::Date => "date",
            PgType::Time => "time",
            PgType::Uuid => "uuid",
            PgType::Json => "json",
            PgType::Jsonb => "jsonb",
            PgType::Bytea => "bytea",
        }
    }

    #[cfg(any(feature = "sql", test))]
    fn from_sql_name(name: &str) -> Option<PgType> {
        PgType::ALL.into_iter().find(|t| t.sql_name() == name)
    }

    /// Whether `=` holds between two values of this type exactly when they are the same value,
    /// sent the same way in binary COPY: integers, booleans, dates, times, timestamps, uuids
    /// and bytea. Not numeric (`1.0 = 1.00`), floats (`0 = -0`), JSON (jsonb compares numbers
    /// by value), nor [`PgType::Text`], which also stands for citext (`'A' = 'a'`), char(n)
    /// (trailing spaces) and text under a nondeterministic collation.
    pub(crate) fn equal_means_identical(self) -> bool {
        match self {
            PgType::Int2
            | PgType::Int4
            | PgType::Int8
            | PgType::Bool
            | PgType::Timestamptz
            | PgType::Timestamp
            | PgType::Date
            | PgType::Time
            | PgType::Uuid
            | PgType::Bytea => true,
            PgType::Float4
            | PgType::Float8
            | PgType::Numeric
            | PgType::Text
            | PgType::Json
            | PgType::Jsonb => false,
        }
    }

    /// The Arrow type a column of this PostgreSQL type is decoded into.
    ///
    /// numeric stays text (canonical decimal digits): PostgreSQL numerics outgrow Decimal128.
    /// Timestamps are microseconds, PostgreSQL's own resolution.
    pub(crate) fn arrow_type(self) -> DataType {
        match self {
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Bool => DataType::Boolean,
            PgType::Numeric | PgType::Text | PgType::Json | PgType::Jsonb => DataType::Utf8,
            PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Uuid => DataType::FixedSizeBinary(16),
            PgType::Bytea => DataType::Binary,
        }
    }

    /// Reads the type back from a field built by [`TableSchema::arrow_schema`].
    #[cfg(any(feature = "sql", test))]
    pub(crate) fn of_field(field: &Field) -> Option<PgType> {
        field
            .metadata()
            .get(PG_TYPE_KEY)
            .and_then(|name| PgType::from_sql_name(name))
    }
}

impl fmt::Display for PgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// One column that records are loaded into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name in PostgreSQL.
    pub name: String,
    pub pg_type: PgType,
    /// The record field it is read from, when that is not `name` (a key PostgreSQL cannot
    /// take as a column name as it is, see [`column_name`]; or a field inside an object).
    pub key: Option<String>,
    /// The objects the field lies in, outermost first (`["user"]` for the column
    /// `user__screen_name` of `--nested flatten`); empty for a field of the record itself.
    pub parents: Vec<String>,
}

impl Column {
    /// A column read from the field of the same name.
    pub(crate) fn new(name: impl Into<String>, pg_type: PgType) -> Column {
        Column {
            name: name.into(),
            pg_type,
            key: None,
            parents: Vec::new(),
        }
    }

    /// The key the column is read from, in the record or in the object it lies in.
    pub(crate) fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.name)
    }

    /// The field's name as a column's would be before [`column_name`] maps it: its key, or
    /// its path joined with `__` for a field inside objects.
    pub(crate) fn field_name(&self) -> std::borrow::Cow<'_, str> {
        if self.parents.is_empty() {
            return self.key().into();
        }
        let mut name = self.parents.join("__");
        name.push_str("__");
        name.push_str(self.key());
        name.into()
    }

    /// The field as messages name it: its key, or its path with dots (`user.screen_name`).
    pub(crate) fn field_path(&self) -> std::borrow::Cow<'_, str> {
        if self.parents.is_empty() {
            return self.key().into();
        }
        let mut path = self.parents.join(".");
        path.push('.');
        path.push_str(self.key());
        path.into()
    }
}

/// The longest name PostgreSQL keeps (NAMEDATALEN - 1 bytes); longer ones it cuts.
pub(crate) const MAX_NAME_BYTES: usize = 63;

/// System column names, which no table may use for its own column.
const SYSTEM_COLUMNS: [&str; 6] = ["tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"];

/// A record field that can be no column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {key:?} {problem}")]
pub(crate) struct FieldNameError {
    pub key: String,
    pub problem: String,
}

/// The column a record field is loaded into: the field's own name when PostgreSQL can take
/// it as it is, and otherwise one fixed, documented mapping, so that every run of the same
/// data finds the same columns:
///
/// - a name longer than 63 bytes (PostgreSQL would cut it, and two long names could become
///   one) is cut at a character boundary to 54 bytes and ends in `_` and the eight hex digits
///   of the CRC-32 of the whole name;
/// - a system column's name (`tableoid`, `xmin`, `cmin`, `xmax`, `cmax`, `ctid`) gets a `_`
///   appended (`xmin` → `xmin_`: GIS bounding boxes have `xmin`);
/// - the empty name becomes `_`.
///
/// # Errors
/// A name holding the character U+0000, which no PostgreSQL name can.
pub(crate) fn column_name(key: &str) -> Result<std::borrow::Cow<'_, str>, FieldNameError> {
    use std::borrow::Cow;
    if key.contains('\0') {
        return Err(FieldNameError {
            key: key.to_string(),
            problem: "contains the character U+0000, which no PostgreSQL name can hold".into(),
        });
    }
    if key.is_empty() {
        return Ok(Cow::Borrowed("_"));
    }
    if SYSTEM_COLUMNS.contains(&key) {
        return Ok(Cow::Owned(format!("{key}_")));
    }
    if key.len() <= MAX_NAME_BYTES {
        return Ok(Cow::Borrowed(key));
    }
    let mut cut = MAX_NAME_BYTES - 9;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    Ok(Cow::Owned(format!(
        "{}_{:08x}",
        &key[..cut],
        crc32fast::hash(key.as_bytes())
    )))
}

/// The columns a load writes, in COPY order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableSchema {
    pub columns: Vec<Column>,
}

impl TableSchema {
    /// The Arrow schema records are decoded into: one nullable field per column, tagged with
    /// its PostgreSQL type.
    pub(crate) fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> =
            self.columns
                .iter()
                .map(|c| {
                    Field::new(&c.name, c.pg_type.arrow_type(), true).with_metadata(HashMap::from(
                        [(PG_TYPE_KEY.to_string(), c.pg_type.sql_name().to_string())],
                    ))
                })
                .collect();
        Arc::new(Schema::new(fields))
    }

    pub fn pg_types(&self) -> Vec<PgType> {
        self.columns.iter().map(|c| c.pg_type).collect()
    }
}

/// A schema-qualified table name as the user wrote it (`schema.table`, `"Mixed Case".t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName {
    /// `None` means the connection's `current_schema()`.
    pub schema: Option<String>,
    pub table: String,
}

impl TableName {
    /// Parses `table`, `schema.table`, with either part optionally in double quotes.
    ///
    /// Unquoted parts are folded to lower case, as PostgreSQL itself does, so
    /// `--table Demo.Items` and `SELECT * FROM Demo.Items` mean the same table.
    pub(crate) fn parse(text: &str) -> Result<TableName, TableNameError> {
        let error = |problem: &'static str| TableNameError {
            text: text.to_string(),
            problem,
        };
        let mut parts = Vec::new();
        let mut rest = text.trim();
        loop {
            let (part, after) = if let Some(quoted) = rest.strip_prefix('"') {
                let mut name = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => {
                            if quoted[i + 1..].starts_with('"') {
                                name.push('"');
                                chars.next();
                            } else {
                                break i + 1;
                            }
                        }
                        Some((_, c)) => name.push(c),
                        None => return Err(error("has a quote that is never closed")),
                    }
                };
                (name, &quoted[end..])
            } else {
                let end = rest.find('.').unwrap_or(rest.len());
                (rest[..end].to_lowercase(), &rest[end..])
            };
            if part.is_empty() {
                return Err(error("has an empty part"));
            }
            parts.push(part);
            match after.strip_prefix('.') {
                Some(next) => rest = next,
                None if after.is_empty() => break,
                None => return Err(error("has text after a quoted part; use [schema.]table")),
            }
        }
        match parts.len() {
            1 => Ok(TableName {
                schema: None,
                table: parts.pop().unwrap_or_default(),
            }),
            2 => {
                let table = parts.pop().unwrap_or_default();
                Ok(TableName {
                    schema: parts.pop(),
                    table,
                })
            }
            _ => Err(error("has too many parts; use [schema.]table")),
        }
    }
}

/// A table name that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table name {text:?} {problem}")]
pub(crate) struct TableNameError {
    pub text: String,
    pub problem: &'static str,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// Quotes an identifier for SQL, always: API field names are mixed case, contain spaces and
/// collide with keywords often enough that "quote when needed" is a bug waiting to happen.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_table_names_like_postgres() {
        let t = TableName::parse("Demo.Items").unwrap();
        assert_eq!(t.schema.as_deref(), Some("demo"));
        assert_eq!(t.table, "items");
        let t = TableName::parse(r#""My ""S"".x"."T.1""#).unwrap();
        assert_eq!(t.schema.as_deref(), Some(r#"My "S".x"#));
        assert_eq!(t.table, "T.1");
        assert_eq!(TableName::parse("events").unwrap().schema, None);
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("a.").is_err());
        assert!(TableName::parse("\"a").is_err());
    }

    #[test]
    fn every_type_round_trips_through_field_metadata() {
        for t in PgType::ALL {
            let schema = TableSchema {
                columns: vec![Column::new("c", t)],
            };
            assert_eq!(PgType::of_field(schema.arrow_schema().field(0)), Some(t));
        }
    }

    #[test]
    fn field_names_postgres_cannot_take_map_to_one_fixed_column_name() {
        assert_eq!(column_name("id").unwrap(), "id");
        assert_eq!(column_name("xmin").unwrap(), "xmin_");
        assert_eq!(column_name("XMIN").unwrap(), "XMIN");
        assert_eq!(column_name("").unwrap(), "_");
        let long = "a".repeat(63);
        assert_eq!(column_name(&long).unwrap(), long.as_str());
        let longer = format!("{long}b");
        let mapped = column_name(&longer).unwrap();
        assert_eq!(mapped.len(), 63);
        assert_eq!(
            mapped,
            format!(
                "{}_{:08x}",
                "a".repeat(54),
                crc32fast::hash(longer.as_bytes())
            )
        );
        // Two names equal in their first 63 bytes stay apart.
        assert_ne!(column_name(&format!("{long}c")).unwrap(), mapped);
        // Cut at a character boundary.
        let wide = "é".repeat(40);
        let mapped = column_name(&wide).unwrap();
        assert!(mapped.len() <= 63 && mapped.starts_with(&"é".repeat(27)));
        assert!(column_name("a\0b").is_err());
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
    }
}
