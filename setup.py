"""hanode: active/standby failover for a two-node DRBD cluster."""

from setuptools import find_packages, setup

setup(
    name="hanode",
    version="0.1.0",
    description="Bring a two-node DRBD active/standby cluster node up and down, safely",
    license="GPL-2.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["hanode", "hanode.*"]),
    install_requires=[
        "pyroute2>=0.7.2",
        "systemd-python>=235",
        "psutil>=5.9.4",
        "tomlkit>=0.11.7",
        "jeepney>=0.8.0",
    ],
    entry_points={"console_scripts": ["hanode = hanode.entry:run"]},
)
