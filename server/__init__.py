"""The OpenAI-compatible HTTP server, by concern: the protocol edge (protocol/), what an engine is
(engine.py) and the engines (engines/, upstream/), serving (serving/: one interface, two
implementations), state (state/), admin routes (admin/), operations (ops/); the one router
(router.py); and the two composition roots, `guard serve` (app.py) and `guard proxy` (proxy.py)."""
