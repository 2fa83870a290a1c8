"""labctl demo: the README's first command, a switchover on the lab with a narrative."""

from __future__ import annotations

import time

from hanodelab import lab, net
from hanodelab.progress import say


def _show(title: str, text: str) -> None:
    say(title)
    for line in text.rstrip().splitlines():
        say("    " + line)


def _hanode(name: str, arguments: str) -> tuple[int, str, float]:
    result = lab.node(name).agent.sh(f"hanode {arguments}", timeout=900)
    return result.exitcode, (result.stdout + result.stderr), result.seconds


def _who_answers() -> str:
    done = lab.client(
        [
            "/usr/bin/python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen("
            f"'http://{lab.VIP}/cgi-bin/node', timeout=10).read().decode().strip())",
        ]
    )
    answer = done.stdout.strip() if done.returncode == 0 else "no answer"
    return f"{answer}; client's ARP entry for {lab.VIP}: {net.neighbour_mac(lab.VIP)}"


def demo() -> int:
    """Build what is missing, boot both nodes, status, switchover, status, shut down."""
    started = time.monotonic()
    say("hanode demo: two Debian 12 VMs (qemu) with real DRBD, apache2 and PostgreSQL.")
    say("node1 is the preferred primary: hanode-primary.service runs `hanode start` at boot.")
    say("")
    was_up = bool(lab.load_state().get("ready"))
    try:
        state = lab.up()
        timings = state.get("timings", {})
        if was_up:
            say("The lab was already up: both nodes back to the state right after boot.")
            lab.reset()
        else:
            built = timings.get("image build", 0)
            image = "cached" if timings.get("image cached") else f"built in {built:.0f}s"
            say(
                f"Lab up in {timings.get('total', 0):.0f}s: image {image}, "
                f"hanode .deb built in {timings.get('deb build', 0):.0f}s, "
                f"boot {timings.get('boot', 0):.0f}s, "
                f"provisioning {timings.get('provision', 0):.0f}s (dpkg -i hanode, DRBD, /srv), "
                f"node1 reboot + hanode-primary "
                f"{timings.get('reboot node1 + hanode-primary', 0):.0f}s."
            )
        say("")
        for name in lab.NODES:
            _show(f"$ labctl exec {name} hanode status", _hanode(name, "status")[1])
        say(f"The client asks {lab.VIP}: {_who_answers()}")
        say("")
        say("Planned switchover: `hanode stop` on node1, then `hanode start` on node2.")
        switch = time.monotonic()
        code, output, seconds = _hanode("node1", "stop")
        _show(f"$ labctl exec node1 hanode stop    (exit {code}, {seconds:.1f}s)", output)
        if code != 0:
            return 1
        code, output, seconds = _hanode("node2", "start")
        _show(f"$ labctl exec node2 hanode start   (exit {code}, {seconds:.1f}s)", output)
        if code != 0:
            return 1
        say(f"Switchover done in {time.monotonic() - switch:.1f}s.")
        say("")
        for name in lab.NODES:
            _show(f"$ labctl exec {name} hanode status", _hanode(name, "status")[1])
        say(f"The client asks {lab.VIP}: {_who_answers()}")
        say(f"(node1's MAC is {lab.node('node1').mac()}, node2's {lab.node('node2').mac()})")
        say("")
    finally:
        say("Shutting the lab down.")
        lab.down(quiet=True)
    say(f"Demo done in {time.monotonic() - started:.0f}s.")
    return 0
