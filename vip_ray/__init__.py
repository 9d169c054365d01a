"""vip_ray: simulate and train variant parallelism (VP / VIP) ensembles of small DNNs on edge devices."""

__version__ = "0.1.0"
