"""Generated gRPC stubs: KServe v2 / Triton (``inference``) and ours (``frameserve.v1``).

Do not edit: regenerate with ``python scripts/generate_protos.py`` from ../proto/*.proto.
"""
