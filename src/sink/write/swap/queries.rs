//! The catalog queries of a swap: what would break, how to make the new table like the old
//! one, and what to carry over to it. Each says what its parameters are.

/// What a swap would break, one line each; `$1` is the table's OID.
pub(super) const IN_THE_WAY: &str = "
SELECT format('%s %s depends on it',
              CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, v.oid::regclass)
FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = $1 AND r.ev_class <> $1
GROUP BY v.oid, v.relkind
UNION ALL
SELECT format('foreign key %I of table %s references it', conname, conrelid::regclass)
FROM pg_constraint WHERE confrelid = $1 AND conrelid <> $1 AND contype = 'f'
UNION ALL
SELECT format('it is in publication %I', p.pubname)
FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE pr.prrelid = $1
UNION ALL
SELECT format('row security policy %I is defined on it', polname) FROM pg_policy WHERE polrelid = $1
UNION ALL
SELECT format('rule %I is defined on it', rulename) FROM pg_rewrite WHERE ev_class = $1
UNION ALL
SELECT 'it is partitioned' FROM pg_class WHERE oid = $1 AND relkind = 'p'
UNION ALL
SELECT 'it is a partition' FROM pg_class WHERE oid = $1 AND relispartition
UNION ALL
SELECT 'it takes part in table inheritance' WHERE EXISTS (
  SELECT 1 FROM pg_inherits WHERE inhrelid = $1 OR inhparent = $1)
UNION ALL
SELECT format('it is a table of type %s', reloftype::regtype) FROM pg_class WHERE oid = $1 AND reloftype <> 0";

/// `CREATE TABLE new (LIKE old …)` with the old table's persistence, storage options and
/// tablespace; `$1` is its OID, `$2` the new name and `$3` the old one. Indexes (and the
/// constraints they back) are left to be built after the rows.
pub(super) const CREATE_LIKE: &str = "
SELECT format('CREATE %sTABLE %s (LIKE %s INCLUDING ALL EXCLUDING INDEXES)%s%s',
              CASE c.relpersistence WHEN 'u' THEN 'UNLOGGED ' ELSE '' END, $2::text, $3::text,
              (SELECT ' WITH (' || string_agg(format('%I = %L', split_part(o, '=', 1),
                                                     substr(o, strpos(o, '=') + 1)), ', ') || ')'
               FROM unnest(c.reloptions) o),
              (SELECT ' TABLESPACE ' || quote_ident(spcname) FROM pg_tablespace WHERE oid = c.reltablespace))
FROM pg_class c WHERE c.oid = $1";

/// For each identity column: the `setval` that starts the new table's (`$2`) sequence where
/// the old table's (`$1`) stands, the new sequence, and the old one's name, which the new
/// one takes after the swap.
pub(super) const IDENTITIES: &str = "
SELECT format('SELECT setval(%L, last_value, is_called) FROM %s',
              pg_get_serial_sequence($2, a.attname), s.oid::regclass),
       pg_get_serial_sequence($2, a.attname), s.relname::text
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = $1 AND d.deptype = 'i'";

/// The old table's (`$1`) owner given to the new one (`$2`), and then the serial sequences
/// owned by the old table's columns handed to the new table's (a sequence must have its
/// table's owner), before the old one is dropped, or they would be dropped with it.
pub(super) const ADOPT: &str = "
SELECT statement FROM (
  SELECT 1 AS step, format('ALTER TABLE %s OWNER TO %I', $2::text, pg_get_userbyid(relowner)) AS statement
  FROM pg_class WHERE oid = $1 AND pg_get_userbyid(relowner) <> current_user
  UNION ALL
  SELECT 2, format('ALTER SEQUENCE %s OWNED BY %s.%I', s.oid::regclass, $2::text, a.attname)
  FROM pg_depend d
  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
    AND d.refobjid = $1 AND d.deptype = 'a'
) s ORDER BY step";

/// The old table's indexes, constraint-backing ones as their constraint: name, definition,
/// the start pg_get_indexdef gives a plain index's definition, whether it is a constraint,
/// and whether it is unique.
pub(super) const INDEXES: &str = "
SELECT k.conname::text, pg_get_constraintdef(k.oid), '', true, false
FROM pg_constraint k WHERE k.conrelid = $1 AND k.contype IN ('p', 'u', 'x')
UNION ALL
SELECT ic.relname::text, pg_get_indexdef(i.indexrelid),
       format('CREATE %sINDEX %s ON %s.%s USING ',
              CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END,
              quote_ident(ic.relname), quote_ident(n.nspname), quote_ident(c.relname)),
       false, i.indisunique
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE i.indrelid = $1
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = $1)
ORDER BY 4 DESC, 1";

/// The old table's (`$1`) foreign keys to other tables, added to the new one (`$2`).
pub(super) const FOREIGN_KEYS: &str = "
SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s', $2::text, conname, pg_get_constraintdef(oid))
FROM pg_constraint WHERE conrelid = $1 AND contype = 'f' AND confrelid <> $1
ORDER BY conname";

/// Everything else to re-apply once the new table has the old one's name (`$2`), read from
/// the old one (`$1`) just before it is dropped, in the order it must run.
pub(super) const RESTORE: &str = "
SELECT statement FROM (
  SELECT 2 AS step, format('REVOKE ALL ON %s FROM %I', $2::text, pg_get_userbyid(c.relowner)) AS statement
  FROM pg_class c WHERE c.oid = $1 AND c.relacl IS NOT NULL
  UNION ALL
  SELECT 3, format('GRANT %s ON %s TO %s%s', a.privilege_type, $2::text,
                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                   CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
  FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = $1
  UNION ALL
  SELECT 4, format('GRANT %s (%I) ON %s TO %s%s', a.privilege_type, att.attname, $2::text,
                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                   CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
  FROM pg_attribute att, aclexplode(att.attacl) a
  WHERE att.attrelid = $1 AND att.attnum > 0 AND NOT att.attisdropped
  UNION ALL
  SELECT 5, format('COMMENT ON TABLE %s IS %L', $2::text, obj_description($1, 'pg_class'))
  WHERE obj_description($1, 'pg_class') IS NOT NULL
  UNION ALL
  SELECT 6, format('COMMENT ON CONSTRAINT %I ON %s IS %L', k.conname, $2::text, obj_description(k.oid, 'pg_constraint'))
  FROM pg_constraint k
  WHERE k.conrelid = $1 AND k.contype IN ('p', 'u', 'x', 'f') AND obj_description(k.oid, 'pg_constraint') IS NOT NULL
  UNION ALL
  SELECT 7, format('COMMENT ON INDEX %I.%I IS %L', n.nspname, ic.relname, obj_description(ic.oid, 'pg_class'))
  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
  WHERE i.indrelid = $1 AND obj_description(ic.oid, 'pg_class') IS NOT NULL
  UNION ALL
  SELECT 8, format('ALTER TABLE %s ADD CONSTRAINT %I %s', $2::text, conname, pg_get_constraintdef(oid))
  FROM pg_constraint WHERE conrelid = $1 AND contype = 'f' AND confrelid = $1
  UNION ALL
  SELECT 9, format('ALTER TABLE %s CLUSTER ON %I', $2::text, ic.relname)
  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = $1 AND i.indisclustered
  UNION ALL
  SELECT 10, format('ALTER TABLE %s REPLICA IDENTITY %s', $2::text,
                    CASE c.relreplident WHEN 'f' THEN 'FULL' WHEN 'n' THEN 'NOTHING'
                      ELSE (SELECT 'USING INDEX ' || quote_ident(ic.relname)
                            FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                            WHERE i.indrelid = $1 AND i.indisreplident) END)
  FROM pg_class c WHERE c.oid = $1 AND c.relreplident <> 'd'
  UNION ALL
  SELECT 11, format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', $2::text)
  FROM pg_class c WHERE c.oid = $1 AND c.relrowsecurity
  UNION ALL
  SELECT 12, format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', $2::text)
  FROM pg_class c WHERE c.oid = $1 AND c.relforcerowsecurity
  UNION ALL
  SELECT 13, pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE t.tgrelid = $1 AND NOT t.tgisinternal
  UNION ALL
  SELECT 14, format('ALTER TABLE %s %s TRIGGER %I', $2::text,
                    CASE t.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE ALWAYS' END,
                    t.tgname)
  FROM pg_trigger t WHERE t.tgrelid = $1 AND NOT t.tgisinternal AND t.tgenabled <> 'O'
  UNION ALL
  SELECT 15, format('ALTER TABLE %s ALTER COLUMN %I SET STATISTICS %s', $2::text, attname, attstattarget)
  FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attstattarget >= 0
  UNION ALL
  SELECT 16, format('ALTER TABLE %s ALTER COLUMN %I SET (%s)', $2::text, attname, options)
  FROM (SELECT attname, string_agg(format('%I = %L', split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)), ', ') AS options
        FROM pg_attribute, unnest(attoptions) o
        WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped
          AND split_part(o, '=', 1) IN ('n_distinct', 'n_distinct_inherited')
        GROUP BY attname) a
) s ORDER BY step";
