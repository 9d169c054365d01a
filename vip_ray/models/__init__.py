"""Model zoo: VP's MobileNetV2 variants, VIP's ResNet50 slices and baselines, behind one registry.

Importing the family modules registers their names, in table order.
"""

from vip_ray.models import vp, baselines, resnet_slices  # noqa: F401  (registration side effects)
from vip_ray.models.adapter import InputAdapter, crop_size
from vip_ray.models.profile import profile_model
from vip_ray.models.registry import MODELS, ModelSpec, VariantNet, build_model, list_models, model_spec, register_model

__all__ = [
    "InputAdapter", "MODELS", "ModelSpec", "VariantNet", "build_model", "crop_size", "list_models", "model_spec",
    "profile_model", "register_model",
]
