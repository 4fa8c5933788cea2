#!/usr/bin/env python3
"""wsclient.py - a raw RFC 6455 client for testing sbxfs-server's
exec/stream the way a Wrenn client sees it (stdlib only).

usage: wsclient.py HOST PORT PATH KEY [FIRST_MESSAGE_JSON] [--stop-after N]
Prints the 101 headers as 'hdr: ...', each complete server message as
'msg: <json>', 'frag: N' when a message came in more than one frame,
'opcode: X' for non-text frames, then 'eof close_frame=0|1'.
KEY '-' sends no X-API-Key.
"""
import base64
import os
import socket
import struct
import sys


def send_frame(s, payload, opcode=1):
    mask = os.urandom(4)
    n = len(payload)
    hdr = bytes([0x80 | opcode])
    if n < 126:
        hdr += bytes([0x80 | n])
    elif n < 65536:
        hdr += bytes([0x80 | 126]) + struct.pack('!H', n)
    else:
        hdr += bytes([0x80 | 127]) + struct.pack('!Q', n)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(hdr + mask + data)


def recv_exact(s, n):
    buf = b''
    while len(buf) < n:
        c = s.recv(n - len(buf))
        if not c:
            raise EOFError
        buf += c
    return buf


def main():
    host, port, path, key = sys.argv[1:5]
    first = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != '-' else None
    stop_after = None
    if '--stop-after' in sys.argv:
        stop_after = int(sys.argv[sys.argv.index('--stop-after') + 1])
    s = socket.create_connection((host, int(port)), timeout=30)
    k = base64.b64encode(os.urandom(16)).decode()
    req = ('GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n'
           'Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n'
           'Sec-WebSocket-Version: 13\r\n' % (path, host, port, k))
    if key != '-':
        req += 'X-API-Key: %s\r\n' % key
    s.sendall((req + '\r\n').encode())
    head = b''
    while b'\r\n\r\n' not in head:
        c = s.recv(1)
        if not c:
            print('eof before response')
            return
        head += c
    lines = head.decode(errors='replace').split('\r\n')
    print('status: ' + lines[0])
    for l in lines[1:]:
        if l:
            print('hdr: ' + l.lower())
    if ' 101 ' not in lines[0]:
        body = s.recv(65536)
        print('body: ' + body.decode(errors='replace').strip())
        return
    if first:
        send_frame(s, first.encode())
    msg, frames, close_frame, nmsg, maxf, maxm = b'', 0, 0, 0, 0, 0
    try:
        while True:
            b0, b1 = recv_exact(s, 2)
            op, fin, n = b0 & 15, b0 & 0x80, b1 & 127
            if n == 126:
                n = struct.unpack('!H', recv_exact(s, 2))[0]
            elif n == 127:
                n = struct.unpack('!Q', recv_exact(s, 8))[0]
            data = recv_exact(s, n)
            maxf = max(maxf, n)
            if op == 8:
                close_frame = 1
                break
            if op not in (0, 1):
                print('opcode: %d' % op)
                continue
            msg += data
            frames += 1
            if fin:
                if frames > 1:
                    print('frag: %d' % frames)
                print('msg: ' + msg.decode('utf-8', errors='replace')
                      .rstrip('\n') + ('' if msg.endswith(b'\n')
                                       else ' NO-NEWLINE'))
                maxm = max(maxm, len(msg))
                msg, frames = b'', 0
                nmsg += 1
                if stop_after is not None and nmsg == stop_after:
                    send_frame(s, b'{"type":"stop"}')
    except (EOFError, ConnectionResetError):
        pass
    except socket.timeout:
        print('timeout')
    print('maxframe: %d' % maxf)
    print('maxmsg: %d' % maxm)
    print('eof close_frame=%d' % close_frame)


main()
