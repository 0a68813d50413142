"""Triton's ``ModelConfig`` message (generated from api/grpc/proto/model_config.proto).

It lives below every layer because two layers need it: ``serving/`` reads a model folder's
``config.pbtxt`` into it (serving must not import ``api/``), and ``api/`` writes it for
``GET /v2/models/{m}/config`` and gRPC ``ModelConfig``. The gRPC service stubs in
``api/grpc/generated`` import it from here.

Do not edit: regenerate with ``python scripts/generate_protos.py``.
"""
