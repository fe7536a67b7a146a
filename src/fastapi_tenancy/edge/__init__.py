"""Edge routing: every active tenant's hosts published to Traefik through its Redis KV provider.

Traefik's Redis provider reads its dynamic configuration from keys under a root key and reloads
when they change (it needs Redis keyspace notifications). For each active tenant this module keeps
one router there::

    traefik/http/routers/tenant-acme/rule              Host(`acme.example.com`) || Host(`acme.com`)
    traefik/http/routers/tenant-acme/service           tenancy-app
    traefik/http/routers/tenant-acme/entryPoints/0     websecure          (edge_entrypoints)
    traefik/http/routers/tenant-acme/tls/certResolver  le                 (edge_cert_resolver)

plus, with ``edge_service_urls``, the service itself
(``traefik/http/services/tenancy-app/loadBalancer/servers/0/url``).

Routes follow the lifecycle through the hooks (`TenantChanged`, `DomainChanged`): a tenant's
router appears when it becomes active, changes with its domains and disappears when it is
suspended, deleted or purged. `TraefikEdge.sync` reconciles everything (at start, and with
``fastapi-tenancy edge sync``). Only routers named ``<edge_router_prefix><identifier>`` (and the
service, when this module defines it) are ever written or removed, each change in one MULTI
transaction, so Traefik never reads half a router.
"""

from fastapi_tenancy.edge.traefik import EdgePlan, EdgeSettings, TraefikEdge, desired_keys

__all__ = ["EdgePlan", "EdgeSettings", "TraefikEdge", "desired_keys"]
