#!/usr/bin/env python3
"""Reads TLS ServerHellos off a network interface (AF_PACKET, no tcpdump needed) and
prints what the two proxies of a pair negotiated: version, cipher suite, key-exchange
group, and how many handshakes were resumptions (pre_shared_key) or HelloRetryRequests.

usage: sniff.py IFACE SERVER_IP SECONDS   (run inside the client pod's netns)
Prints one JSON object when SECONDS have passed (or on SIGTERM)."""
import json
import signal
import socket
import struct
import sys
import time

SUITES = {0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
          0x1303: "TLS_CHACHA20_POLY1305_SHA256"}
GROUPS = {0x001D: "X25519", 0x0017: "secp256r1", 0x0018: "secp384r1", 0x0019: "secp521r1",
          0x001E: "X448", 0x11EC: "X25519MLKEM768", 0x11EB: "SecP256r1MLKEM768"}
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")


def server_hello(payload):
    """Parses a TCP payload that starts with a ServerHello record; None if it does not."""
    if len(payload) < 5 + 4 + 2 + 32 + 1 or payload[0] != 0x16 or payload[5] != 0x02:
        return None
    p = 5 + 4
    legacy_version = struct.unpack_from("!H", payload, p)[0]
    random = payload[p + 2:p + 34]
    p += 34
    p += 1 + payload[p]                       # legacy_session_id
    suite = struct.unpack_from("!H", payload, p)[0]
    p += 3                                    # suite + compression
    if p + 2 > len(payload):
        return None
    end = min(len(payload), p + 2 + struct.unpack_from("!H", payload, p)[0])
    p += 2
    version, group, psk = legacy_version, None, False
    while p + 4 <= end:
        typ, ln = struct.unpack_from("!HH", payload, p)
        body = payload[p + 4:p + 4 + ln]
        if typ == 0x002B and ln == 2:         # supported_versions
            version = struct.unpack("!H", body)[0]
        elif typ == 0x0033 and ln >= 2:       # key_share (or the HRR's selected group)
            group = struct.unpack_from("!H", body)[0]
        elif typ == 0x0029:                   # pre_shared_key: a resumed session
            psk = True
        p += 4 + ln
    return {"version": {0x0304: "TLSv1.3", 0x0303: "TLSv1.2"}.get(version, hex(version)),
            "cipher": SUITES.get(suite, hex(suite)),
            "group": GROUPS.get(group, hex(group) if group is not None else None),
            "psk": psk, "hrr": random == HRR_RANDOM}


def main():
    iface, server_ip, seconds = sys.argv[1], socket.inet_aton(sys.argv[2]), float(sys.argv[3])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0800))
    s.bind((iface, 0))
    s.settimeout(0.1)
    stop = [time.monotonic() + seconds]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, 0))
    print("listening", file=sys.stderr, flush=True)
    seen = {"handshakes": 0, "resumed": 0, "hello_retry": 0, "negotiated": {}}
    while time.monotonic() < stop[0]:
        try:
            frame = s.recv(65535)
        except socket.timeout:
            continue
        ip = frame[14:]
        if len(ip) < 20 or ip[9] != 6 or ip[12:16] != server_ip:
            continue
        tcp = ip[(ip[0] & 0x0F) * 4:]
        hello = server_hello(tcp[(tcp[12] >> 4) * 4:]) if len(tcp) >= 20 else None
        if hello is None:
            continue
        if hello["hrr"]:
            seen["hello_retry"] += 1
            continue
        seen["handshakes"] += 1
        seen["resumed"] += hello["psk"]
        key = f'{hello["version"]} {hello["cipher"]} {hello["group"]}'
        seen["negotiated"][key] = seen["negotiated"].get(key, 0) + 1
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
