"""`TenantLogFilter`: the current tenant on every log record."""

from __future__ import annotations

import logging

from fastapi_tenancy.context import current_tenant_or_none

__all__ = ["NO_TENANT_LOG_VALUE", "TenantLogFilter"]

# What ``%(tenant)s`` and ``%(tenant_id)s`` show outside any tenant request or scope.
NO_TENANT_LOG_VALUE = "-"


class TenantLogFilter(logging.Filter):
    """Adds ``record.tenant`` (the identifier) and ``record.tenant_id`` to every record.

    Both are ``"-"`` outside a tenant request or `tenant_scope`, so a format string using
    ``%(tenant)s`` always works. Attach it to a handler, so records of every logger that reach
    the handler carry the tenant::

        handler = logging.StreamHandler()
        handler.addFilter(TenantLogFilter())
        handler.setFormatter(logging.Formatter("%(levelname)s [%(tenant)s] %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)

    It never drops a record. A value already on the record (e.g. passed with ``extra=``) is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        tenant = current_tenant_or_none()
        if tenant is None:
            identifier = tenant_id = NO_TENANT_LOG_VALUE
        else:
            identifier, tenant_id = tenant.identifier, tenant.id
        if not hasattr(record, "tenant"):
            record.tenant = identifier
        if not hasattr(record, "tenant_id"):
            record.tenant_id = tenant_id
        return True
