"""SimPy entities of the reference engine: links (Cable style), devices, availability, master."""
from .availability import UrgentTimeout, availability_process
from .device import Device
from .link import Link, SharedMedium
from .master import Master

__all__ = ["UrgentTimeout", "availability_process", "Device", "Link", "SharedMedium", "Master"]
