"""The live chain's and pipeline's tensor paths without Ray: the slices a chain's devices run
compose to the whole model, activations are priced at the bytes they really take on the wire,
and the end device's quantized payload is, once decoded on the cloud, exactly the tensor the
planners evaluated (``fake_quantize``)."""
import numpy as np
import pytest
import torch

from vip_ray.core.deployment import Chain
from vip_ray.core.quant import fake_quantize
from vip_ray.models import build_model
from vip_ray.models.cuts import block_modules, block_profile, slice_module
from vip_ray.serve.chain import chain_config, wire
from vip_ray.serve.config import DeployError, ServeOptions
from vip_ray.serve.pipeline import decode, encode


def test_chain_slices_compose_to_the_model_and_the_cut_tensors_have_the_profiled_size():
    torch.manual_seed(0)
    model = build_model("vp_v3", 10, in_channels=1, input_size=8, pretrained="never").eval()
    blocks = block_profile(model, in_channels=1, image_size=8)
    n = len(block_modules(model))
    assert n == len(blocks) and n >= 3
    bounds = [(0, 1), (1, n - 1), (n - 1, n)]
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        h = x
        for a, e in bounds:
            h = slice_module(model, a, e)(h)
            # what crosses after the slice is the tensor the strategy priced (block e - 1's output)
            assert tuple(h.shape[1:]) == blocks[e - 1].out_shape
        np.testing.assert_allclose(h.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_activations_are_priced_at_their_bytes_on_the_wire():
    x = np.ones((16, 4, 4), dtype=np.float32)            # 256 values
    sent, size = wire(x, "float32")
    assert sent is x and size == 256 * 4
    sent, size = wire(x, "float16")
    assert sent.dtype == np.float16 and size == sent.nbytes == 256 * 2
    assert wire(x, "int8")[1] == 256 and wire(x, "bfloat16")[1] == 512


@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
def test_the_decoded_payload_is_the_planners_quantized_tensor(bits):
    torch.manual_seed(bits)
    t = torch.randn(1, 8, 5, 5) * 3.0
    msg = encode(t, bits, layer=7)
    assert msg[0] == "q" and msg[1].dtype == (np.uint8 if bits <= 8 else np.uint16)
    assert msg[1].max() <= (1 << bits) - 1
    assert torch.equal(decode(msg), fake_quantize(t, bits))
    # the raw frame (layer 0) and fp32 travel as they are
    assert torch.equal(decode(encode(t, bits, layer=0)), t)
    assert torch.equal(decode(encode(t, 32, layer=7)), t)


def test_a_chain_the_live_engine_cannot_emulate_is_refused_before_deploying():
    dep = Chain(strategy="mp", scenario="s", seed=0, pool=None, top_m=2, on_failure="stall", blocks=((0, 1),))
    with pytest.raises(DeployError, match="on_failure 'stall' is not emulated live"):
        chain_config(dep, input_shape=(1, 8, 8), options=ServeOptions())
