"""① Resolution: ASGI scope -> tenant identifier. Pure, synchronous, no I/O."""
