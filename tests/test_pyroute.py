"""hanode.system.pyroute: pyroute2's rtnetlink socket without the package's plugin scan.

Each case runs in a fresh interpreter (what is imported is the point). The real
pyroute2 of this machine (Debian's python3-pyroute2) for the lean path and its
completion; a package made here for the fallback, since the real one never fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

TOP = Path(__file__).resolve().parent.parent

pytest.importorskip("pyroute2")


def run_python(code: str, *path: Path) -> Any:
    """Run ``code`` in a fresh interpreter with hanode (and ``path``) importable; its
    last stdout line as JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (*path, TOP))}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_socket_loads_without_the_plugin_scan_nor_iproute_and_works() -> None:
    found = run_python(
        """
        import json, socket, sys
        from hanode.system import pyroute
        with pyroute.Rtnl() as rtnl:
            links = {link["index"]: link for link in rtnl.links()}
            names = [link.get_attr("IFLA_IFNAME") for link in links.values()]
            lo_up = any(link.get_attr("IFLA_IFNAME") == "lo" and link["flags"] & 1
                        for link in links.values())
            local = [(a["index"], a.get_attr("IFA_LOCAL")) for a in rtnl.addresses(socket.AF_INET)]
        print(json.dumps({
            "lean": pyroute.lean(),
            "names": names,
            "on_links": all(index in links for index, _ in local),
            "loopback": not lo_up or "127.0.0.1" in [ip for _, ip in local],
            "metadata": "importlib.metadata" in sys.modules,
            "ndb": any(m.startswith("pyroute2.ndb") for m in sys.modules),
            "iproute": "pyroute2.iproute.linux" in sys.modules,
            "mock": "unittest.mock" in sys.modules,
            "marshal": "pyroute2.netlink.rtnl.marshal" in sys.modules,
            "tc": "pyroute2.netlink.rtnl.tcmsg" in sys.modules,
            "error": pyroute.netlink_error().__module__,
        }))
        """
    )
    assert found["lean"] is True
    assert "lo" in found["names"]  # a real netlink dump of this namespace
    # every address on one of those links; 127.0.0.1 where lo is up (a package build's
    # namespace may have it down, and no address at all)
    assert found["on_links"] and found["loopback"]
    # what the package's __init__ loads: the entry-point scan and NDB
    assert not found["metadata"] and not found["ndb"]
    # what IPRoute's module loads: pyroute2.lab's unittest.mock (and asyncio with it)
    assert not found["iproute"] and not found["mock"]
    # what IPRSocket's module loads: the decoders of every rtnetlink message
    assert not found["marshal"] and not found["tc"]
    assert found["error"] == "pyroute2.netlink.exceptions"


def test_the_lean_package_completes_itself_for_any_later_user() -> None:
    found = run_python(
        """
        import json
        from hanode.system import pyroute
        pyroute.load()
        from pyroute2.netlink.rtnl.iprsocket import IPRSocket as Lean
        from pyroute2 import IPRSocket, NetNS  # noqa: F401  (NetNS: defined by __init__ only)
        import pyroute2
        print(json.dumps({"same": IPRSocket is Lean, "version": pyroute2.__version__,
                          "all": len(pyroute2.__all__)}))
        """
    )
    whole = run_python(
        """
        import json, pyroute2
        print(json.dumps({"version": pyroute2.__version__, "all": len(pyroute2.__all__)}))
        """
    )
    assert found["same"] is True
    assert (found["version"], found["all"]) == (whole["version"], whole["all"])


def test_a_pyroute2_imported_before_is_used_as_it_is() -> None:
    found = run_python(
        """
        import json
        import pyroute2
        from hanode.system import pyroute
        pyroute.load()
        from pyroute2.netlink.rtnl.iprsocket import IPRSocket
        print(json.dumps({"lean": pyroute.lean(), "same": IPRSocket is pyroute2.IPRSocket}))
        """
    )
    assert found == {"lean": False, "same": True}


def fake_pyroute2(top: Path, socket_module: str) -> Path:
    """A pyroute2 layout made here, with ``socket_module`` as its netlink/nlsocket.py."""
    package = top / "pyroute2"
    rtnl = package / "netlink" / "rtnl"
    rtnl.mkdir(parents=True)
    (package / "__init__.py").write_text("INIT_RAN = True\n")
    (package / "netlink" / "__init__.py").write_text("NETLINK_ROUTE = 0\n")
    (package / "netlink" / "exceptions.py").write_text("class NetlinkError(Exception):\n    pass\n")
    (package / "netlink" / "nlsocket.py").write_text(socket_module)
    (rtnl / "__init__.py").write_text(
        "RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 16, 18, 20, 21, 22\n"
    )
    (rtnl / "ifinfmsg.py").write_text("class ifinfmsg:\n    pass\n")
    (rtnl / "ifaddrmsg.py").write_text("class ifaddrmsg:\n    pass\n")
    (rtnl / "iprsocket.py").write_text("class IPRSocket:\n    pass\n")
    return package


def test_a_package_that_needs_its_init_is_imported_whole(tmp_path: Path) -> None:
    # A pyroute2 whose socket module only works after the package's __init__ ran: the
    # lean import fails, every module it left is dropped, the ordinary import follows.
    package = fake_pyroute2(
        tmp_path,
        "import sys\n"
        "if not sys.modules['pyroute2'].__dict__.get('INIT_RAN'):\n"
        "    raise ImportError('needs the package __init__')\n"
        "class NetlinkSocket:\n    pass\n",
    )
    found = run_python(
        """
        import json, sys
        from hanode.system import pyroute
        pyroute.load()
        print(json.dumps({"lean": pyroute.lean(), "file": sys.modules["pyroute2"].__file__,
                          "init": sys.modules["pyroute2"].INIT_RAN,
                          "socket": sys.modules["pyroute2.netlink.nlsocket"].__file__}))
        """,
        tmp_path,
    )
    assert found["lean"] is False
    assert found["init"] is True
    assert found["file"] == str(package / "__init__.py")
    assert found["socket"] == str(package / "netlink" / "nlsocket.py")


def test_a_generic_socket_without_a_policy_gives_way_to_iprsocket(tmp_path: Path) -> None:
    # pyroute2 0.9's NetlinkSocket has no register_policy: its IPRSocket decodes rtnetlink
    fake_pyroute2(tmp_path, "class NetlinkSocket:\n    def __init__(self, family): pass\n")
    found = run_python(
        """
        import json
        from hanode.system import pyroute
        print(json.dumps({"socket": type(pyroute.Rtnl()._socket).__module__}))
        """,
        tmp_path,
    )
    assert found == {"socket": "pyroute2.netlink.rtnl.iprsocket"}


def test_the_generic_socket_decodes_links_and_addresses(tmp_path: Path) -> None:
    # register_policy as pyroute2 0.7 and 0.8 have it: the answers' classes
    fake_pyroute2(
        tmp_path,
        "class NetlinkSocket:\n"
        "    def __init__(self, family):\n        self.family, self.policy = family, {}\n"
        "    def register_policy(self, policy):\n        self.policy.update(policy)\n",
    )
    found = run_python(
        """
        import json
        from hanode.system import pyroute
        sock = pyroute.Rtnl()._socket
        print(json.dumps({"family": sock.family,
                          "policy": {k: v.__name__ for k, v in sock.policy.items()}}))
        """,
        tmp_path,
    )
    assert found["family"] == 0  # NETLINK_ROUTE
    link, address = "ifinfmsg", "ifaddrmsg"
    assert found["policy"] == {"16": link, "18": link, "20": address, "21": address, "22": address}


def test_the_collector_pauses_while_pyroute2_loads_and_is_restored() -> None:
    found = run_python(
        """
        import gc, json
        from hanode.system import pyroute
        started = []
        gc.callbacks.append(lambda phase, info: phase == "start" and started.append(1))
        pyroute.load()
        enabled_after = gc.isenabled()
        gc.disable()
        pyroute.netlink_error()  # a second load, with the collector off: it stays off
        print(json.dumps({"collections": len(started), "enabled_after": enabled_after,
                          "disabled_after": not gc.isenabled()}))
        """
    )
    # ~35 collections if it ran during the import; the one allowed comes as it is
    # enabled again (the allocation count is past the threshold by then)
    assert found["collections"] <= 1
    assert found["enabled_after"] is True
    assert found["disabled_after"] is True


def test_loading_runs_no_command_and_platform_answers_as_it_would_itself() -> None:
    """pyroute2.config records platform.uname() and platform.architecture() as it is
    imported: platform would run `uname -p` and `file -b` on the interpreter for them,
    found on the caller's PATH. Loaded through hanode, no child runs, the values recorded
    are those platform gives itself, and platform's own functions are back after."""
    found = run_python(
        """
        import json, platform, sys
        children = []
        sys.addaudithook(
            lambda event, args: event in ("subprocess.Popen", "os.posix_spawn", "os.exec")
            and children.append(str(args[0]))
        )
        uname, architecture = platform.uname, platform.architecture
        from hanode.system import pyroute
        with pyroute.Rtnl() as rtnl:
            links = len(rtnl.links())
        from pyroute2 import config
        restored = platform.uname is uname and platform.architecture is architecture
        print(json.dumps({"children": children, "links": links, "restored": restored,
                          "uname": list(config.uname), "machine": config.machine,
                          "arch": config.arch, "kernel": config.kernel}))
        """
    )
    assert found["children"] == []
    assert found["links"] >= 1  # at least lo: the socket works
    assert found["restored"] is True
    own = run_python(
        """
        import json, platform
        print(json.dumps({"uname": list(platform.uname()), "machine": platform.machine(),
                          "arch": platform.architecture()[0]}))
        """
    )
    assert found["uname"] == own["uname"]
    assert found["machine"] == own["machine"]
    assert found["arch"] == own["arch"]
    assert found["kernel"] and found["kernel"][0] >= 3
