"""The HTTP layer: the ASGI app and its lifespan (``app``), the routes (``routes``), the
chat fast path and body limits (``fastpath``), serving results turned into JSON and SSE
responses (``responses``), and uvicorn with a graceful stop (``server``).

Everything the router decides happens in :mod:`router.serving`; this package only maps
HTTP to it and back.
"""
