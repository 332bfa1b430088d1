"""Local stack for `make demo` and the integration tests.

`python -m sandbox up|down|status` starts a throwaway PostgreSQL, a moto server with
an ECS deployment controller, the demo Hotel Voice Bot and a real Prometheus on
loopback. See DESIGN.md, section "The sandbox". Not shipped in the collection.
"""
