"""TensorFlow's TensorProto read with protobuf and numpy only (the load generator has no TensorFlow)."""

from __future__ import annotations

from typing import Any

import numpy as np


class NotFloatTensor(ValueError):
    """The tensor's dtype is not DT_FLOAT."""


def decode_float_tensor(proto: Any) -> np.ndarray:
    """A float32 array from a DT_FLOAT TensorProto: packed (tensor_content) or repeated (float_val).

    Works on TensorFlow's generated class and on one built from a descriptor set alike: the
    DataType enum is read from the message's own descriptor. Raises NotFloatTensor for other dtypes
    and ValueError when the values do not fill the shape.
    """
    data_type = proto.DESCRIPTOR.fields_by_name["dtype"].enum_type
    if proto.dtype != data_type.values_by_name["DT_FLOAT"].number:
        known = data_type.values_by_number.get(proto.dtype)
        raise NotFloatTensor(f"expected a DT_FLOAT tensor, got {known.name if known else proto.dtype}")
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype="<f4").astype(np.float32).reshape(shape)
    values = np.asarray(proto.float_val, dtype=np.float32)
    if values.size == 1:  # TF's shorthand: one value repeated to fill the shape
        return np.full(shape, values[0], dtype=np.float32)
    return values.reshape(shape)
