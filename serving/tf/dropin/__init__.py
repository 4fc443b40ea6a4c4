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

import os

# TensorFlow's oneDNN custom kernels abort the whole process on some CPUs (a CHECK in
# tensor_format.h) when a convolution gets an input of the wrong rank, where TensorFlow's own
# kernels answer InvalidArgument: a server must not die of one bad request. Set before
# TensorFlow runs anything, which is why it lives here, at the package's import;
# TF_ENABLE_ONEDNN_OPTS=1 in the environment opts back in.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
os.environ.setdefault(ONEDNN_VARIABLE, "0")

SERVER_NAME = "tf-serving-dropin"
SERVER_IDENTITY = "tf-serving-dropin (local drop-in for tensorflow_model_server, not the official binary)"
