"""A PXE client's DHCPDISCOVER, for the DHCP tests: run in a network namespace as
`python dhcp_probe.py IFACE MAC ARCH [USER_CLASS]`; prints one JSON line per answer (server, siaddr, file,
message type). Its own packet code (RFC 2131 fixed part, RFC 2132 options, RFC 4578 option 93): it reuses nothing of
the product's."""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time


def discover(mac: str, arch: int, user_class: str | None, xid: int) -> bytes:
    hw = bytes.fromhex(mac.replace(":", ""))
    fixed = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(4), bytes(4), bytes(4),
                        bytes(4), hw + bytes(10), bytes(64), bytes(128))
    vendor = f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode()
    options = bytes([99, 130, 83, 99, 53, 1, 1, 93, 2]) + struct.pack("!H", arch)
    options += bytes([94, 3, 1, 2, 1, 60, len(vendor)]) + vendor + bytes([97, 17, 0]) + bytes(16)
    if user_class:
        options += bytes([77, len(user_class)]) + user_class.encode()
    return fixed + options + b"\xff"


def parse(packet: bytes) -> dict:
    siaddr = socket.inet_ntoa(packet[20:24])
    file = packet[108:236].split(b"\0", 1)[0].decode(errors="replace")
    options, i = {}, 240
    while i < len(packet) and packet[i] != 255:
        if packet[i] == 0:
            i += 1
            continue
        code, length = packet[i], packet[i + 1]
        options[code] = packet[i + 2:i + 2 + length]
        i += 2 + length
    return {"xid": struct.unpack("!I", packet[4:8])[0], "siaddr": siaddr, "file": file,
            "type": options.get(53, b"\0")[0], "server": socket.inet_ntoa(options[54]) if 54 in options else None,
            "vendor": options.get(60, b"").decode(errors="replace"), "yiaddr": socket.inet_ntoa(packet[16:20])}


def main() -> None:
    iface, mac, arch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    user_class = sys.argv[4] if len(sys.argv) > 4 else None
    xid = int.from_bytes(os.urandom(4), "big")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    sock.bind(("0.0.0.0", 68))
    sock.settimeout(0.5)
    deadline = time.time() + float(os.environ.get("PROBE_SECONDS", "4"))
    next_send = 0.0
    while time.time() < deadline:
        if time.time() >= next_send:  # clients repeat a DISCOVER nobody answered (RFC 2131 4.1)
            sock.sendto(discover(mac, arch, user_class, xid), ("255.255.255.255", 67))
            next_send = time.time() + 1.5
        try:
            data, _ = sock.recvfrom(4096)
        except socket.timeout:
            continue
        if len(data) >= 240 and data[0] == 2:
            answer = parse(data)
            if answer["xid"] == xid:
                print(json.dumps(answer), flush=True)
                return


if __name__ == "__main__":
    main()
