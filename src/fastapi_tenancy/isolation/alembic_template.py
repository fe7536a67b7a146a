"""Provisioning at the Alembic head: new tenants copied from a template the revisions built.

With ``alembic_config`` set, Alembic owns the tenant tables, and a new tenant must hold exactly
what ``migrate upgrade`` would have put in its storage: the tables, the rows the revisions
insert, and ``alembic_version`` at head. Running the revisions for every new tenant does that,
slowly (Alembic's machinery and dozens of round trips). So the revisions run once, through the
library's migration runner (`fastapi_tenancy.migrations.invoke.run_alembic`, under its locks),
in a template named after the head revisions (``<prefix>alembic_<digest>_tpl``: a new revision
makes a new template, and those of earlier heads of the same history are dropped once it
exists), and each tenant is a copy:

* database isolation on PostgreSQL: the template is a database (built under a name of its own
  and renamed into place, refusing connections); a tenant is ``CREATE DATABASE ... TEMPLATE``,
  which copies everything, functions and sequences' values included
  (`AlembicDatabaseTemplate`);
* schema isolation on PostgreSQL: the template is a schema in the central database, built in
  one transaction under an advisory lock. It is reflected once per process and rendered with
  `render_tables` (``create_all``'s DDL for the reflected tables), followed by an ``INSERT ...
  SELECT`` of each table's rows and ``setval`` of each sequence: one simple-protocol query per
  tenant (`AlembicSchemas`);
* schema isolation on MariaDB/MySQL: the template is a database on the central server; each
  table's ``SHOW CREATE TABLE`` is its exact DDL, followed by ``INSERT ... SELECT``.

A copy must never silently differ from what the revisions make. What the rendering cannot
carry (views, functions, triggers, rules, policies, standalone sequences, extensions, ...) is not
listed by hand: once per process the copy is made into a scratch schema and a catalog dump of it
(`catalog_dump`: every object in the schema, each column, constraint, index, sequence value and
a digest of each table's rows) is compared with the template's. When they differ, the template
is not copied: every tenant's revisions run in its own new storage instead (correct, slower), and
the reason is logged once. Any other failure of a copy takes the same path.

Where the copy is not possible at all (database isolation on MariaDB/MySQL or SQLite, a
template that cannot be built) the revisions run in the new storage too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, Table, bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy.isolation.naming import checked_storage_name
from fastapi_tenancy.isolation.ownership import check_owner
from fastapi_tenancy.isolation.templates import DatabaseTemplate, render_tables, run_script
from fastapi_tenancy.models import Tenant

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from fastapi_tenancy.migrations.targets import MigrationTarget

__all__ = [
    "AlembicDatabaseTemplate",
    "AlembicRevisions",
    "AlembicSchemas",
    "catalog_dump",
]

logger = logging.getLogger("fastapi_tenancy.lifecycle")

# The lock a template is built under (`fastapi_tenancy.migrations.locks`); tenant ids are hex.
_TEMPLATE_LOCK = "template:"
# Long enough for a history of many revisions on a busy server.
_LOCK_WAIT = 300.0
_PLACEHOLDER = "TenancyAlembicTemplate"
_QUOTED = f'"{_PLACEHOLDER}"'


class AlembicRevisions:
    """The app's Alembic script directory: its heads, and running it on a connection."""

    def __init__(self, path: str, prefix: str) -> None:
        self._path = path
        self._prefix = prefix
        self._config: Config | None = None
        self._script: ScriptDirectory | None = None
        self._fingerprint: tuple[Any, ...] | None = None
        self._heads: frozenset[str] = frozenset()

    @property
    def config(self) -> Config:
        if self._config is None:
            from alembic.config import Config

            self._config = Config(self._path)
        return self._config

    def heads(self) -> frozenset[str]:
        """The script directory's heads, read again only when its files change."""
        from alembic.script import ScriptDirectory

        if self._script is None:
            self._script = ScriptDirectory.from_config(self.config)
        fingerprint = _fingerprint(self._script)
        if fingerprint != self._fingerprint:
            # A fresh ScriptDirectory: the old one caches the revision map it read.
            self._script = ScriptDirectory.from_config(self.config)
            self._heads = frozenset(self._script.get_heads())
            self._fingerprint = fingerprint
        return self._heads

    def template_name(self) -> str:
        """``<prefix>alembic_<digest of the heads>_tpl``: a new revision makes a new template."""
        return self._name(self.heads())

    def _name(self, heads: frozenset[str]) -> str:
        digest = hashlib.sha256(",".join(sorted(heads)).encode()).hexdigest()[:16]
        return checked_storage_name(f"{self._prefix}alembic_{digest}_tpl")

    def older_templates(self) -> set[str]:
        """The names the templates of earlier heads of this history had (one head each).

        Dropped once the current template is built: no process of this release copies them.
        """
        self.heads()
        assert self._script is not None
        current = self.template_name()
        older = {self._name(frozenset({r.revision})) for r in self._script.walk_revisions()}
        return older - {current}

    async def upgrade(self, conn: AsyncConnection, target: MigrationTarget) -> None:
        """Run the revisions to the heads on ``conn`` in the runner's locked transaction."""
        from fastapi_tenancy.migrations.locks import migration_transaction

        async with migration_transaction(conn, target.lock_key, wait_seconds=_LOCK_WAIT):
            await self.upgrade_in_transaction(conn, target)

    async def upgrade_in_transaction(self, conn: AsyncConnection, target: MigrationTarget) -> None:
        from fastapi_tenancy.migrations.invoke import run_alembic

        await run_alembic(conn, self.config, target, "heads", "upgrade")

    async def revisions(self, conn: AsyncConnection, schema: str | None) -> frozenset[str]:
        from fastapi_tenancy.migrations.versions import read_revisions

        return await read_revisions(conn, schema)


def _fingerprint(script: ScriptDirectory) -> tuple[Any, ...]:
    """The names and modification times of the revision files: cheap, and changes with them."""
    found: list[tuple[str, int]] = []
    for location in script._version_locations:
        try:
            with os.scandir(location) as entries:
                found += [(entry.path, entry.stat().st_mtime_ns) for entry in entries]
        except FileNotFoundError:
            continue
    return tuple(sorted(found))


def _target(
    tenant: Tenant | None, url: str | None, schema: str | None, lock: str
) -> MigrationTarget:
    from fastapi_tenancy.migrations.targets import MigrationTarget

    return MigrationTarget(tenant=tenant, url=url, schema=schema, lock_key=lock)


# Database isolation


class AlembicDatabaseTemplate(DatabaseTemplate):
    """Database isolation: tenant databases copied from a database the revisions built.

    Where no template can be copied (not PostgreSQL, no CREATEDB right, ...) the caller creates
    an empty database and `complete` runs the revisions in it.
    """

    def __init__(self, revisions: AlembicRevisions, prefix: str) -> None:
        super().__init__(prefix)
        self._revisions = revisions

    def _template(
        self, url: str, metadatas: list[MetaData], dialect: Any
    ) -> tuple[str, Callable[[str], Awaitable[None]]] | None:
        return self._revisions.template_name(), self._fill

    async def _fill(self, url: str) -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                await self._revisions.upgrade(conn, _target(None, url, None, _TEMPLATE_LOCK))
        finally:
            await engine.dispose()

    async def _built(self, conn: AsyncConnection, template: str) -> None:
        # Templates of earlier heads: no process of this release copies them any more. One
        # still being copied by an older process is busy and stays (dropped next time).
        older = self._revisions.older_templates()
        names = await conn.scalars(
            text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
            {"names": sorted(older)},
        )
        for name in names.all():
            if name != template:
                try:
                    await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                except Exception:
                    logger.info("old template %s is in use; it stays for now", name)

    async def complete(self, url: str, tenant: Tenant) -> None:
        """Run the revisions in ``tenant``'s database (made empty by the caller)."""
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                await self._revisions.upgrade(conn, _target(tenant, url, None, tenant.id))
        finally:
            await engine.dispose()


# Schema isolation


@dataclass(frozen=True, slots=True)
class _Copy:
    """How to make a tenant's storage from one template: statements with a placeholder."""

    statements: tuple[str, ...]


class AlembicSchemas:
    """Schema isolation: tenant schemas (PostgreSQL) or databases (MariaDB/MySQL) at head."""

    def __init__(self, revisions: AlembicRevisions) -> None:
        self._revisions = revisions
        # Per template name: how to copy it, or None when it cannot be copied faithfully.
        self._copies: dict[str, _Copy | None] = {}
        self._lock = asyncio.Lock()

    async def provision(self, engine: AsyncEngine, tenant: Tenant, name: str, mark: str) -> None:
        """Make ``tenant``'s schema ``name`` (commented ``mark``) at the heads; safe to repeat."""
        template = self._revisions.template_name()
        copy = await self._copy(engine, template)
        if copy is not None:
            try:
                await self._run_copy(engine, copy, name, mark)
                return
            except Exception:
                # The schema exists (an interrupted attempt, someone else's), the template went
                # away (a newer release dropped it), the server hiccupped: the step-by-step path
                # decides, reusing or refusing what it finds.
                logger.debug("copying template %s to %s failed", template, name, exc_info=True)
        if engine.dialect.name == "postgresql":
            await self._migrate_postgres(engine, tenant, name, mark)
        else:
            await self._migrate_mysql(engine, tenant, name, mark)

    async def script(self, engine: AsyncEngine, name: str, mark: str) -> str | None:
        """The one script making schema ``name`` (commented ``mark``) a copy of the template.

        PostgreSQL through asyncpg, when the template can be copied faithfully; ``None``
        otherwise (`provision` then makes the tenant). Lets the caller run it in the same
        transaction as the tenant's record.
        """
        if engine.dialect.name != "postgresql" or engine.dialect.driver != "asyncpg":
            return None
        copy = await self._copy(engine, self._revisions.template_name())
        return None if copy is None else _postgres_script(copy, name, mark)

    async def _copy(self, engine: AsyncEngine, template: str) -> _Copy | None:
        if template in self._copies:
            return self._copies[template]
        async with self._lock:
            if template not in self._copies:
                try:
                    await self._build(engine, template)
                    self._copies[template] = await self._plan(engine, template)
                except Exception:
                    logger.warning(
                        "template %s could not be built or read: each new tenant runs the "
                        "revisions itself",
                        template,
                        exc_info=True,
                    )
                    self._copies[template] = None
        return self._copies[template]

    # Building the template

    async def _build(self, engine: AsyncEngine, template: str) -> None:
        """Make sure ``template`` holds the revisions at the heads (one process builds it)."""
        heads = self._revisions.heads()
        lock = _TEMPLATE_LOCK + template
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                async with conn.begin():
                    if await self._revisions.revisions(conn, template) == heads:
                        return
                from fastapi_tenancy.migrations.locks import migration_transaction

                # One transaction: the template appears whole or not at all.
                async with migration_transaction(conn, lock, wait_seconds=_LOCK_WAIT):
                    if await self._revisions.revisions(conn, template) == heads:
                        return
                    await conn.execute(text(f'DROP SCHEMA IF EXISTS "{template}" CASCADE'))
                    await conn.execute(text(f'CREATE SCHEMA "{template}"'))
                    await conn.execute(
                        text(f"COMMENT ON SCHEMA \"{template}\" IS 'fastapi-tenancy template'")
                    )
                    await self._revisions.upgrade_in_transaction(
                        conn, _target(None, None, template, lock)
                    )
                    await self._drop_old(conn, template, "SCHEMA", "CASCADE")
            return
        url = engine.url.set(database=template).render_as_string(hide_password=False)
        async with engine.connect() as conn, conn.begin():
            if await _mysql_revisions(conn, template) == heads:
                return
        from fastapi_tenancy.migrations.locks import migration_transaction

        async with engine.connect() as conn:
            # The named lock belongs to this session: held until the template is complete.
            async with migration_transaction(conn, lock, wait_seconds=_LOCK_WAIT):
                if await _mysql_revisions(conn, template) == heads:
                    return
                # MariaDB/MySQL commit each DDL statement: a build cut off halfway left a
                # template without its version row at the heads, rebuilt from scratch here.
                await conn.execute(text(f"DROP DATABASE IF EXISTS `{template}`"))
                await conn.execute(text(f"CREATE DATABASE `{template}` CHARACTER SET utf8mb4"))
                own = create_async_engine(url, poolclass=NullPool)
                try:
                    async with own.connect() as tpl:
                        await self._revisions.upgrade(tpl, _target(None, url, None, lock + ":r"))
                finally:
                    await own.dispose()
                await self._drop_old(conn, template, "DATABASE", "")

    async def _drop_old(self, conn: AsyncConnection, template: str, kind: str, tail: str) -> None:
        """Drop the templates of earlier heads (no process of this release copies them)."""
        older = self._revisions.older_templates()
        rows = await conn.execute(
            text(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name IN :n"
            ).bindparams(bindparam("n", expanding=True)),
            {"n": sorted(older) or [""]},
        )
        quote = '"' if conn.dialect.name == "postgresql" else "`"
        for (name,) in rows.all():
            if name != template:
                await conn.execute(text(f"DROP {kind} IF EXISTS {quote}{name}{quote} {tail}"))

    # Planning the copy, and checking it once

    async def _plan(self, engine: AsyncEngine, template: str) -> _Copy | None:
        if engine.dialect.name == "postgresql":
            copy = await self._plan_postgres(engine, template)
        else:
            copy = await self._plan_mysql(engine, template)
        probe = checked_storage_name(f"{template[:40]}_probe_{secrets.token_hex(4)}")
        try:
            await self._run_copy(engine, copy, probe, "fastapi-tenancy template probe")
            async with engine.connect() as conn:
                expected = await catalog_dump(conn, template)
                found = await catalog_dump(conn, probe)
        except Exception as exc:
            logger.warning(
                "template %s cannot be copied (%s: %s): each new tenant runs the revisions itself",
                template,
                type(exc).__name__,
                exc,
            )
            return None
        finally:
            await _drop_storage(engine, probe)
        if expected != found:
            missing = sorted(set(expected) - set(found))[:5]
            logger.warning(
                "template %s cannot be copied faithfully (the copy lacks or differs in: %s): "
                "each new tenant runs the revisions itself",
                template,
                "; ".join(missing) or "order",
            )
            return None
        return copy

    async def _plan_postgres(self, engine: AsyncEngine, template: str) -> _Copy:
        async with engine.connect() as conn:
            reflected = await conn.run_sync(_reflect, template)
            tables = [t for t in reflected.sorted_tables if t.schema == template]
            statements = render_tables(reflected, tables, conn.dialect, {template: _PLACEHOLDER})
            for table in tables:
                has_rows = await conn.scalar(
                    text(f'SELECT EXISTS (SELECT FROM "{template}"."{table.name}")')
                )
                if has_rows:
                    statements.append(_postgres_rows(table, template))
            sequences = await conn.scalars(
                text("SELECT sequencename FROM pg_sequences WHERE schemaname = :s"),
                {"s": template},
            )
            for sequence in sequences.all():
                row = (
                    await conn.execute(
                        text(f'SELECT last_value, is_called FROM "{template}"."{sequence}"')
                    )
                ).one()
                statements.append(
                    f"SELECT setval('{_QUOTED}.\"{sequence}\"', {int(row[0])}, "
                    f"{'true' if row[1] else 'false'})"
                )
        return _Copy(statements=tuple(statements))

    async def _plan_mysql(self, engine: AsyncEngine, template: str) -> _Copy:
        statements: list[str] = []
        copies: list[str] = []
        async with engine.connect() as conn:
            names = await conn.scalars(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = :s AND table_type = 'BASE TABLE' ORDER BY table_name"
                ),
                {"s": template},
            )
            for name in names.all():
                row = (await conn.execute(text(f"SHOW CREATE TABLE `{template}`.`{name}`"))).one()
                ddl = str(row[1])
                # The DDL names the table and the tables it references without a database.
                ddl = ddl.replace(
                    f"CREATE TABLE `{name}`", f"CREATE TABLE `{_PLACEHOLDER}`.`{name}`", 1
                )
                ddl = re.sub(
                    r"REFERENCES `([^`]+)` \(", rf"REFERENCES `{_PLACEHOLDER}`.`\1` (", ddl
                )
                statements.append(ddl)
                if await conn.scalar(text(f"SELECT EXISTS (SELECT 1 FROM `{template}`.`{name}`)")):
                    copies.append(
                        f"INSERT INTO `{_PLACEHOLDER}`.`{name}` SELECT * FROM `{template}`.`{name}`"
                    )
        return _Copy(statements=tuple(statements + copies))

    async def _run_copy(self, engine: AsyncEngine, copy: _Copy, name: str, mark: str) -> None:
        name = checked_storage_name(name)
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                await run_script(conn, _postgres_script(copy, name, mark))
            return
        comment = f" COMMENT '{mark}'" if getattr(engine.dialect, "is_mariadb", False) else ""
        async with engine.connect() as conn:
            await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4{comment}"))
            try:
                # Rows go in table by table: foreign keys are checked once all are there.
                await conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
                try:
                    for statement in copy.statements:
                        await conn.exec_driver_sql(statement.replace(_PLACEHOLDER, name))
                finally:
                    await conn.exec_driver_sql("SET SESSION foreign_key_checks = 1")
                await conn.commit()
            except BaseException:
                await conn.rollback()
                await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                await conn.commit()
                raise

    # Running the revisions in the new storage (no faithful template)

    async def _migrate_postgres(
        self, engine: AsyncEngine, tenant: Tenant, name: str, mark: str
    ) -> None:
        from fastapi_tenancy.migrations.locks import migration_transaction

        async with engine.connect() as conn:
            # One transaction: the schema, its mark and the revisions' work appear together.
            async with migration_transaction(conn, tenant.id, wait_seconds=_LOCK_WAIT):
                found = await _postgres_mark(conn, name)
                if found is None:
                    await conn.execute(text(f'CREATE SCHEMA "{name}"'))
                    await conn.execute(text(f"COMMENT ON SCHEMA \"{name}\" IS '{mark}'"))
                else:
                    check_owner(f"schema {name}", tenant, found, await _count_tables(conn, name))
                await self._revisions.upgrade_in_transaction(
                    conn, _target(tenant, None, name, tenant.id)
                )

    async def _migrate_mysql(
        self, engine: AsyncEngine, tenant: Tenant, name: str, mark: str
    ) -> None:
        mariadb = getattr(engine.dialect, "is_mariadb", False)
        async with engine.begin() as conn:
            column = "SCHEMA_COMMENT" if mariadb else "''"
            row = (
                await conn.execute(
                    text(
                        f"SELECT {column} FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"
                    ),
                    {"n": name},
                )
            ).first()
            if row is not None:
                check_owner(
                    f"database {name}", tenant, str(row[0] or ""), await _count_tables(conn, name)
                )
            else:
                comment = f" COMMENT '{mark}'" if mariadb else ""
                await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4{comment}"))
        url = engine.url.set(database=name).render_as_string(hide_password=False)
        own = create_async_engine(url, poolclass=NullPool)
        try:
            async with own.connect() as tenant_conn:
                await self._revisions.upgrade(tenant_conn, _target(tenant, url, None, tenant.id))
        except BaseException:
            if row is None:
                await _drop_storage(engine, name)  # created just above by this call
            raise
        finally:
            await own.dispose()


def _postgres_script(copy: _Copy, name: str, mark: str) -> str:
    quoted = f'"{checked_storage_name(name)}"'
    head = [f"CREATE SCHEMA {quoted}", f"COMMENT ON SCHEMA {quoted} IS '{mark}'"]
    return ";\n".join(head + [s.replace(_QUOTED, quoted) for s in copy.statements])


def _postgres_rows(table: Table, template: str) -> str:
    """``INSERT ... SELECT`` of ``table``'s rows from the template into the placeholder schema.

    Generated columns are left to the server; a value of a type the template schema holds (an
    enum) is cast through text to the new schema's type of the same name.
    """
    names: list[str] = []
    values: list[str] = []
    for column in table.columns:
        if column.computed is not None:
            continue
        names.append(f'"{column.name}"')
        own_type = getattr(column.type, "schema", None) == template
        type_name = getattr(column.type, "name", None)
        if own_type and type_name:
            values.append(f'"{column.name}"::text::{_QUOTED}."{type_name}"')
        else:
            values.append(f'"{column.name}"')
    return (
        f'INSERT INTO {_QUOTED}."{table.name}" ({", ".join(names)}) OVERRIDING SYSTEM VALUE '
        f'SELECT {", ".join(values)} FROM "{template}"."{table.name}"'
    )


def _reflect(conn: Connection, schema: str) -> MetaData:
    metadata = MetaData()
    metadata.reflect(conn, schema=schema)
    return metadata


async def _postgres_mark(conn: AsyncConnection, name: str) -> str | None:
    row = (
        await conn.execute(
            text(
                "SELECT coalesce(obj_description(oid, 'pg_namespace'), '') "
                "FROM pg_namespace WHERE nspname = :name"
            ),
            {"name": name},
        )
    ).first()
    return None if row is None else str(row[0])


async def _count_tables(conn: AsyncConnection, name: str) -> int:
    statement = text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :name")
    return int((await conn.execute(statement, {"name": name})).scalar_one())


async def _mysql_revisions(conn: AsyncConnection, database: str) -> frozenset[str]:
    exists = await conn.scalar(
        text(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = :s AND table_name = 'alembic_version'"
        ),
        {"s": database},
    )
    if not exists:
        return frozenset()
    found = await conn.scalars(text(f"SELECT version_num FROM `{database}`.alembic_version"))
    return frozenset(found.all())


async def _drop_storage(engine: AsyncEngine, name: str) -> None:
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        else:
            await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))


# The catalog dump: what a schema holds, without its name


_POSTGRES_DUMP = """
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = :schema),
rel AS (SELECT c.* FROM pg_class c JOIN ns ON c.relnamespace = ns.oid)
SELECT line FROM (
  SELECT format('object %s %s', i.type, i.identity) AS line
  FROM pg_depend d JOIN ns ON d.refobjid = ns.oid,
       LATERAL pg_identify_object(d.classid, d.objid, d.objsubid) i
  WHERE d.refclassid = 'pg_namespace'::regclass
  UNION ALL
  SELECT format('relation %s kind=%s persistence=%s rls=%s/%s options=%s comment=%s acl=%s',
                c.relname, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
                c.reloptions, obj_description(c.oid, 'pg_class'), c.relacl)
  FROM rel c
  UNION ALL
  SELECT format('column %s.%s #%s %s notnull=%s default=%s identity=%s generated=%s '
                'collation=%s comment=%s',
                c.relname, a.attname,
                row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                format_type(a.atttypid, a.atttypmod), a.attnotnull,
                pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
                a.attcollation, col_description(c.oid, a.attnum))
  FROM pg_attribute a JOIN rel c ON a.attrelid = c.oid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('constraint %s.%s %s', c.relname, k.conname, pg_get_constraintdef(k.oid))
  FROM pg_constraint k JOIN rel c ON k.conrelid = c.oid
  UNION ALL
  SELECT format('type constraint %s.%s %s', t.typname, k.conname, pg_get_constraintdef(k.oid))
  FROM pg_constraint k JOIN pg_type t ON k.contypid = t.oid JOIN ns ON t.typnamespace = ns.oid
  UNION ALL
  SELECT format('index %s', pg_get_indexdef(i.indexrelid)) FROM pg_index i JOIN rel c
  ON i.indrelid = c.oid
  UNION ALL
  SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid)) FROM rel c
  WHERE c.relkind IN ('v', 'm')
  UNION ALL
  SELECT format('sequence %s %s %s %s %s %s %s %s last=%s', s.sequencename, s.data_type,
                s.start_value, s.min_value, s.max_value, s.increment_by, s.cycle,
                s.cache_size, s.last_value)
  FROM pg_sequences s WHERE s.schemaname = :schema
  UNION ALL
  SELECT format('owned %s by %s.%s', s.relname, t.relname, a.attname)
  FROM pg_depend d JOIN rel s ON d.objid = s.oid AND s.relkind = 'S'
  JOIN pg_class t ON d.refobjid = t.oid
  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
    AND d.deptype IN ('a', 'i')
  UNION ALL
  SELECT format('type %s %s %s %s', t.typname, t.typtype, format_type(t.typbasetype, NULL),
                (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                 FROM pg_enum e WHERE e.enumtypid = t.oid))
  FROM pg_type t JOIN ns ON t.typnamespace = ns.oid
  UNION ALL
  SELECT format('function %s(%s) %s returns %s %s', p.proname,
                pg_get_function_identity_arguments(p.oid), p.prokind,
                format_type(p.prorettype, NULL), md5(p.prosrc))
  FROM pg_proc p JOIN ns ON p.pronamespace = ns.oid
  UNION ALL
  SELECT format('trigger %s', pg_get_triggerdef(t.oid)) FROM pg_trigger t JOIN rel c
  ON t.tgrelid = c.oid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT format('policy %s.%s %s %s %s %s %s', c.relname, p.polname, p.polcmd, p.polpermissive,
                p.polroles, pg_get_expr(p.polqual, p.polrelid),
                pg_get_expr(p.polwithcheck, p.polrelid))
  FROM pg_policy p JOIN rel c ON p.polrelid = c.oid
  UNION ALL
  SELECT format('rule %s', pg_get_ruledef(r.oid)) FROM pg_rewrite r JOIN rel c
  ON r.ev_class = c.oid WHERE r.rulename <> '_RETURN'
  UNION ALL
  SELECT format('rows %s %s', c.relname,
                (xpath('/row/d/text()', query_to_xml(format(
                  'SELECT md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) AS d '
                  'FROM %I.%I t', '|', '', :schema, c.relname), false, true, '')))[1]::text)
  FROM rel c WHERE c.relkind IN ('r', 'p')
) dump ORDER BY line
"""

_MYSQL_DUMP = [
    "SELECT table_name, table_type, engine, row_format, table_collation, create_options, "
    "table_comment FROM information_schema.tables WHERE table_schema = :schema",
    "SELECT table_name, column_name, ordinal_position, column_default, is_nullable, "
    "column_type, collation_name, extra, column_comment, generation_expression "
    "FROM information_schema.columns WHERE table_schema = :schema",
    "SELECT table_name, index_name, non_unique, seq_in_index, column_name, sub_part, "
    "index_type, index_comment FROM information_schema.statistics WHERE table_schema = :schema",
    "SELECT k.table_name, k.constraint_name, k.column_name, k.ordinal_position, "
    "k.referenced_table_name, k.referenced_column_name, r.update_rule, r.delete_rule "
    "FROM information_schema.key_column_usage k LEFT JOIN "
    "information_schema.referential_constraints r ON r.constraint_schema = k.constraint_schema "
    "AND r.constraint_name = k.constraint_name AND r.table_name = k.table_name "
    "WHERE k.table_schema = :schema",
    "SELECT constraint_name, check_clause FROM information_schema.check_constraints "
    "WHERE constraint_schema = :schema",
    "SELECT table_name, view_definition FROM information_schema.views WHERE table_schema = :schema",
    "SELECT trigger_name, event_manipulation, event_object_table, action_statement, "
    "action_timing FROM information_schema.triggers WHERE trigger_schema = :schema",
    "SELECT routine_name, routine_type, routine_definition FROM information_schema.routines "
    "WHERE routine_schema = :schema",
    "SELECT event_name, event_definition FROM information_schema.events "
    "WHERE event_schema = :schema",
]


_DUMPED_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


async def catalog_dump(conn: AsyncConnection, schema: str) -> list[str]:
    """Every object in ``schema`` (PostgreSQL) or database (MariaDB/MySQL), one line each, with
    a digest of each table's rows and each sequence's value, and ``schema``'s name taken out:
    two storages built alike give equal dumps."""
    if _DUMPED_NAME.fullmatch(schema) is None:
        raise ValueError(f"{schema!r} is not a schema name to dump")
    if conn.dialect.name == "postgresql":
        async with conn.begin():
            # Definitions render the schema's own objects unqualified.
            await conn.execute(
                text("SELECT set_config('search_path', :p, true)"), {"p": f'"{schema}"'}
            )
            lines = list(await conn.scalars(text(_POSTGRES_DUMP), {"schema": schema}))
    else:
        lines = []
        async with conn.begin():
            for query in _MYSQL_DUMP:
                rows = await conn.execute(text(query), {"schema": schema})
                lines += [query.split()[1] + " " + repr(tuple(row)) for row in rows]
            tables = await conn.scalars(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = :s AND table_type = 'BASE TABLE'"
                ),
                {"s": schema},
            )
            for table in tables.all():
                rows = await conn.execute(text(f"SELECT * FROM `{schema}`.`{table}`"))
                digest = hashlib.sha256(
                    "\n".join(sorted(repr(tuple(row)) for row in rows)).encode()
                ).hexdigest()
                lines.append(f"rows {table} {digest}")
    own = re.compile(rf"\b{re.escape(schema)}\b")
    return sorted(own.sub("<schema>", line) for line in lines)
