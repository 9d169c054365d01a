"""COACH's tensor quantization (UAQ): lives in :mod:`vip_ray.core.quant`, shared with the live
Serve engine (which quantizes the real crossing tensors); re-exported here for the planners."""
from vip_ray.core.quant import (  # noqa: F401  (re-exported)
    FP32,
    HEADER_BYTES,
    MAX_BITS,
    MIN_BITS,
    check_bits,
    dequantize,
    fake_quantize,
    qparams,
    quantize,
    step_size,
    wire_bytes,
)
