"""frameserve: a video-first deep-learning inference server (KServe v2 over HTTP and gRPC)."""

__version__ = "0.1.0"
