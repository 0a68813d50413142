"""Generated KServe v2 / Triton gRPC stubs (package ``inference``).

Do not edit: regenerate with ``python scripts/generate_protos.py`` from ../proto/*.proto.
"""
