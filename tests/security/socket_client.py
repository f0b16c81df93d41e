#!/usr/bin/env python3
"""Raw clients of digestd's control socket for the security suite (run as root or as nobody).

Usage: socket_client.py SOCKET CASE   prints one JSON object with what happened.
Cases:
  flood N PATHLEN   N POSTs to /v1/pull<garbage of PATHLEN bytes>, one connection each
  raw HEX           sends the bytes (hex) and reports the status line
  rawfile FILE      the same with the bytes of FILE
  idle N            opens N idle connections, then a real GET /v1/health on a new one
  hold N            opens up to N connections (fewer when the daemon stops accepting), holds
                    them a second, closes them
  slow              one connection sending its headers a byte per 100 ms for 2 s while
                    another GET /v1/health is served
"""
import json
import socket
import sys
import time


def connect(path, timeout=10):
    # A full listen backlog answers EAGAIN at once: retry for a while, as a client would.
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def status_of(sock):
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def request(path, raw):
    s = connect(path)
    try:
        try:
            s.sendall(raw)
        except OSError:
            pass  # the server may answer (413, 431) and close before taking all of it
        return status_of(s)
    except OSError:
        return -1
    finally:
        s.close()


def health(path):
    return request(path, b"GET /v1/health HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")


def main():
    path, case = sys.argv[1], sys.argv[2]
    out = {}
    if case == "flood":
        n, plen = int(sys.argv[3]), int(sys.argv[4])
        statuses = {}
        target = "/v1/pull/" + "x" * plen
        raw = ("POST %s HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
               % target).encode()
        for _ in range(n):
            st = request(path, raw)
            statuses[st] = statuses.get(st, 0) + 1
        out["statuses"] = statuses
    elif case == "raw":
        out["status"] = request(path, bytes.fromhex(sys.argv[3]))
    elif case == "rawfile":
        with open(sys.argv[3], "rb") as f:
            out["status"] = request(path, f.read())
    elif case == "idle":
        n = int(sys.argv[3])
        held = []
        for _ in range(n):
            try:
                held.append(connect(path))
            except OSError:
                break  # the listen backlog is full: the daemon is out of fds and backing off
        out["held"] = len(held)
        t0 = time.monotonic()
        out["status"] = health(path)
        out["ms"] = (time.monotonic() - t0) * 1000
        for s in held:
            s.close()
    elif case == "hold":
        n = int(sys.argv[3])
        held = []
        for _ in range(n):
            try:
                held.append(connect(path, timeout=2))
            except OSError:
                break
        out["held"] = len(held)
        time.sleep(1)  # the daemon at its fd limit meanwhile: it must back off, not spin
        for s in held:
            s.close()
    elif case == "slow":
        s = connect(path)
        head = b"GET /v1/health HTTP/1.1\r\nHost: d\r\n"
        served = None
        for i, b in enumerate(head[:20]):
            s.sendall(bytes([b]))
            time.sleep(0.1)
            if i == 5:
                served = health(path)
        s.close()
        out["other_status"] = served
    print(json.dumps(out))


if __name__ == "__main__":
    main()
