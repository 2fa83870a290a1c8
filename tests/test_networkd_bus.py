"""hanode.system.dbus's questions to systemd-networkd, on a real dbus-daemon.

A private bus (dbus-daemon with a config of the test's own) stands in for the system bus.
On it, a small jeepney service owns org.freedesktop.network1 and answers GetLinkByIndex
and Describe with what a lab guest's networkd answered (tests/data/networkd/): the host
has no networkd. The bus also knows an activatable org.freedesktop.network1 whose
activation would leave a mark: hanode's questions must never start networkd.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import missing, wait_for

from hanode.system import networkd
from hanode.system.dbus import Systemd

DESCRIBED = json.loads((Path(__file__).parent / "data/networkd/describe-eth0.json").read_text())
LINK_PATH = "/org/freedesktop/network1/link/_32"

BUS_CONFIG = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

ACTIVATABLE = """\
[D-BUS Service]
Name=org.freedesktop.network1
Exec=/usr/bin/touch {mark}
"""


@pytest.fixture
def bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private dbus-daemon, as the system bus of this process; the activation mark."""
    daemon = shutil.which("dbus-daemon", path="/usr/bin:/bin")
    if daemon is None:
        missing("dbus-daemon is not installed (tests/setup-host installs dbus)")
    socket, services, mark = tmp_path / "bus", tmp_path / "services", tmp_path / "activated"
    services.mkdir()
    (services / "org.freedesktop.network1.service").write_text(ACTIVATABLE.format(mark=mark))
    (tmp_path / "bus.conf").write_text(BUS_CONFIG.format(socket=socket, services=services))
    proc = subprocess.Popen(
        [daemon, "--nofork", "--nopidfile", f"--config-file={tmp_path / 'bus.conf'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(socket.exists, 10), "dbus-daemon did not listen"
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={socket}")
        yield mark
    finally:
        proc.terminate()
        proc.wait(10)


def serve_networkd(address: str, ready: threading.Event, stop: threading.Event) -> None:
    """Own org.freedesktop.network1 and answer as the lab's networkd did, until ``stop``."""
    from jeepney import HeaderFields, MessageType, new_error, new_method_return
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    with open_dbus_connection(address) as conn:
        conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.network1"))
        ready.set()
        while not stop.is_set():
            try:
                message = conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            if message.header.message_type != MessageType.method_call:
                continue
            member = message.header.fields[HeaderFields.member]
            if member == "GetLinkByIndex" and message.body == (2,):
                conn.send(new_method_return(message, "so", ("eth0", LINK_PATH)))
            elif member == "GetLinkByIndex":
                text = f"Link {message.body[0]} not known"
                error = "org.freedesktop.network1.NoSuchLink"
                conn.send(new_error(message, error, "s", (text,)))
            elif member == "Describe":
                conn.send(new_method_return(message, "s", (json.dumps(DESCRIBED),)))


def test_no_networkd_on_the_bus_is_none_and_never_activates_it(bus: Path) -> None:
    with Systemd.connect() as connection:
        assert connection.network_link(2) is None
    assert networkd.describe_link(2) is None
    assert not bus.exists(), "asking for networkd's links activated it"


def test_networkd_describes_its_link_and_knows_no_other(bus: Path) -> None:
    ready, stop = threading.Event(), threading.Event()
    server = threading.Thread(
        target=serve_networkd,
        args=(os.environ["DBUS_SYSTEM_BUS_ADDRESS"], ready, stop),
        daemon=True,
    )
    server.start()
    try:
        assert ready.wait(10)
        with Systemd.connect() as connection:
            assert connection.network_link(2) == DESCRIBED
            assert connection.network_link(99) is None  # NoSuchLink
        assert networkd.describe_link(2) == DESCRIBED
    finally:
        stop.set()
        server.join(10)
    assert not bus.exists()
