"""hanode: active/standby failover for a two-node DRBD cluster."""

__version__ = "0.1.0"
