"""What PostgreSQL's catalog says a schema is, as plain data two databases can be compared by:
tables and their row-level security flags and privileges, columns (type, default, nullability,
identity, generation), indexes, constraints, triggers, policies, functions and sequences."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_QUERIES = {
    "tables": """
        SELECT c.relname, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity,
               coalesce(c.relacl::text, '') AS acl
        FROM pg_class c WHERE c.relnamespace = to_regnamespace(:schema) AND c.relkind IN ('r', 'p', 'v', 'm')
    """,
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity::text, a.attgenerated::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = to_regnamespace(:schema) AND c.relkind IN ('r', 'p') AND a.attnum > 0
          AND NOT a.attisdropped
    """,
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :schema
    """,
    "constraints": """
        SELECT c.relname, k.conname, k.contype::text, pg_get_constraintdef(k.oid) AS definition
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        WHERE c.relnamespace = to_regnamespace(:schema)
    """,
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) AS definition
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = to_regnamespace(:schema) AND NOT t.tgisinternal
    """,
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd, qual, with_check
        FROM pg_policies WHERE schemaname = :schema
    """,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS arguments,
               pg_get_functiondef(p.oid) AS definition
        FROM pg_proc p WHERE p.pronamespace = to_regnamespace(:schema)
    """,
    "sequences": """
        SELECT sequencename, data_type::text, start_value, min_value, max_value, increment_by, cycle, cache_size
        FROM pg_sequences WHERE schemaname = :schema
    """,
}


async def catalog(conn: AsyncConnection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every object of `schema`, each kind as a sorted list of rows."""
    return {
        kind: sorted(tuple(row) for row in (await conn.execute(text(query), {"schema": schema})).all())
        for kind, query in _QUERIES.items()
    }


def differences(left: dict[str, list[tuple[Any, ...]]], right: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    """One line per row only one side has, by kind: empty when the two are the same schema."""
    lines = []
    for kind in _QUERIES:
        only_left, only_right = set(left[kind]) - set(right[kind]), set(right[kind]) - set(left[kind])
        lines += [f"{kind}, only in the first: {row}" for row in sorted(only_left, key=repr)]
        lines += [f"{kind}, only in the second: {row}" for row in sorted(only_right, key=repr)]
    return lines
