"""Where a checkpoint can be, fastest first. Loading cost depends only on the source tier."""

from enum import IntEnum


class Tier(IntEnum):
    """Storage tiers; the integer value is what the wire carries."""

    GPU = 0
    HOST = 1
    DISK = 2
    REMOTE = 3
