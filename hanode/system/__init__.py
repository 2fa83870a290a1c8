"""What the resources stand on: the kernel's and the system tools' own words, read and
spoken (mount tables, /proc holders, DRBD's outputs, raw ARP frames, systemd's D-Bus API).

Nothing here knows hanode.toml or the start/stop pipeline: resources use these modules,
never the other way round.
"""
