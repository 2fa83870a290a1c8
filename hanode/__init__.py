"""hanode: active/standby failover for a two-node DRBD cluster."""

__version__ = "0.1.0"

# Where every command is looked up (hanode.run), and the PATH hanode's own process keeps
# (hanode.entry): never the caller's. Not /usr/local: on Debian the group staff may
# write there.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
