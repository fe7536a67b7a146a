"""Print a development JWT for a tenant, signed with ``TENANCY_JWT_SECRET``.

    python -m examples.saas.issue_token acme --subject alice

In production your identity provider issues the tokens; the app only verifies them.
"""

from __future__ import annotations

import argparse
import time

import jwt

from examples.saas.settings import tenancy_config


def issue_token(identifier: str, *, subject: str = "dev", lifetime: int = 3600) -> str:
    config = tenancy_config()
    if config.jwt_secret is None:  # tenancy_config() refuses this already; mypy needs the check
        raise SystemExit("set TENANCY_JWT_SECRET")
    claims: dict[str, str | int] = {
        config.jwt_tenant_claim: identifier,
        "sub": subject,
        "exp": int(time.time()) + lifetime,
    }
    if config.jwt_audience is not None:
        claims["aud"] = config.jwt_audience
    if config.jwt_issuer is not None:
        claims["iss"] = config.jwt_issuer
    return jwt.encode(claims, config.jwt_secret.get_secret_value(), algorithm=config.jwt_algorithm)


def main() -> None:
    parser = argparse.ArgumentParser(description="Print a development JWT for a tenant.")
    parser.add_argument("identifier")
    parser.add_argument("--subject", default="dev")
    args = parser.parse_args()
    print(issue_token(args.identifier, subject=args.subject))


if __name__ == "__main__":
    main()
