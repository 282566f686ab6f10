"""vodsync: declarative sync of media into Alibaba Cloud ApsaraVideo VOD."""

__version__ = "0.1.0"
