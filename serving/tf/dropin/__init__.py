"""A local drop-in for TF Serving's tensorflow_model_server, for machines without the official binary.

It mirrors TF Serving's seams in miniature: a *source* polls the file system
for version directories (source.py), a *loader* turns a version into a
*servable* (servable.py), a *manager* decides which versions serve
(manager.py), batching is its own module (batching.py), core.py makes TF
Serving's request checks, and the front ends only translate requests:
grpc_api.py, and for REST rest_api.py (router), json_tensor.py (JSON <->
tensors) and rest_server.py (HTTP). profiler.py answers TensorFlow's profiler.

It is NOT the official binary; every response, log line and status says so.
"""

SERVER_NAME = "tf-serving-dropin"
SERVER_IDENTITY = "tf-serving-dropin (local drop-in for tensorflow_model_server, not the official binary)"
