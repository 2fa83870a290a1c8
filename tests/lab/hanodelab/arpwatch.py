"""Watch the ARP frames that announce an address, as the lab's client sees them.

Run inside the lab's namespace (net.client_argv) as

    python3 -m hanodelab.arpwatch IFACE IP SECONDS

it listens on IFACE for SECONDS and prints one JSON line per ARP frame whose sender IP
is IP: {"t": seconds since the watch began, "mac": sender MAC, "target": target IP,
"op": 1 request / 2 reply}. The first line is {"ready": true}, once the socket is bound.
Stdlib only: it runs on the host with whatever python3 the host has.
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import struct
import sys
import time

ETH_P_ARP = 0x0806


def watch(interface: str, ip: str, seconds: float) -> None:
    wanted = ipaddress.IPv4Address(ip).packed
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((interface, ETH_P_ARP))
        print(json.dumps({"ready": True}), flush=True)
        began = time.monotonic()
        while (left := began + seconds - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                continue
            frame = sock.recv(2048)
            arp = frame[14:42]
            if len(arp) < 28:
                continue
            op = struct.unpack("!H", arp[6:8])[0]
            sender_mac, sender_ip, target_ip = arp[8:14], arp[14:18], arp[24:28]
            if sender_ip != wanted:
                continue
            print(
                json.dumps(
                    {
                        "t": round(time.monotonic() - began, 3),
                        "mac": sender_mac.hex(":"),
                        "target": str(ipaddress.IPv4Address(target_ip)),
                        "op": op,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    watch(sys.argv[1], sys.argv[2], float(sys.argv[3]))
