"""fastapi-tenancy."""
