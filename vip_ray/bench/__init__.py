"""Benchmarks that print the figures quoted in issues and closing notes (``python -m vip_ray.bench.<name>``)."""
