#!/usr/bin/env python3
"""netem substitute (kernel here lacks CONFIG_NET_SCH_NETEM): holds packets that an
iptables NFQUEUE rule sends to queue N for DELAY_MS (+/- JITTER_MS) and drops LOSS_PCT %.
Pure stdlib; talks nfnetlink_queue directly. Run inside the namespace: nfq_delay.py QNUM DELAY_MS [LOSS_PCT] [JITTER_MS]

A copy of the team's fault recipe (shared/faults/nfq_delay.py), kept in the repository so
the nemesis harness (tests/jepsen.rs) does not depend on a file outside the checkout."""
import heapq, random, select, socket, struct, sys, time

NETLINK_NETFILTER, SUBSYS_QUEUE = 12, 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG = 0, 1, 2
F_REQUEST, F_ACK = 1, 4
NF_DROP, NF_ACCEPT = 0, 1

def attr(t, data):
    n = 4 + len(data)
    return struct.pack("=HH", n, t) + data + b"\0" * ((4 - n % 4) % 4)

def msg(mtype, qnum, attrs, flags=F_REQUEST):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(qnum)) + b"".join(attrs)
    return struct.pack("=IHHII", 16 + len(body), (SUBSYS_QUEUE << 8) | mtype, flags, 0, 0) + body

def main():
    qnum, delay = int(sys.argv[1]), float(sys.argv[2]) / 1000
    loss = float(sys.argv[3]) / 100 if len(sys.argv) > 3 else 0.0
    jitter = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0.0
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((0, 0))
    s.send(msg(MSG_CONFIG, qnum, [attr(1, struct.pack("!BBH", 1, 0, 0))], F_REQUEST | F_ACK))  # CMD_BIND
    s.send(msg(MSG_CONFIG, qnum, [attr(2, struct.pack("!IB", 0, 1)),                          # COPY_META
                                  attr(3, struct.pack("!I", 8192))], F_REQUEST | F_ACK))     # QUEUE_MAXLEN
    for _ in range(2):  # the two ACKs; error != 0 means bind failed (e.g. queue already taken)
        d = s.recv(65536)
        err = struct.unpack_from("=i", d, 16)[0]
        if err:
            sys.exit(f"nfqueue config failed: errno {-err}")
    print(f"nfq_delay: queue {qnum} delay {delay*1000:.0f}ms jitter {jitter*1000:.0f}ms loss {loss*100:.0f}%", flush=True)
    heap = []
    while True:
        timeout = max(0.0, heap[0][0] - time.monotonic()) if heap else None
        if select.select([s], [], [], timeout)[0]:
            d = s.recv(1 << 20)
            off = 0
            while off + 16 <= len(d):
                ln, typ = struct.unpack_from("=IH", d, off)
                if typ == (SUBSYS_QUEUE << 8) | MSG_PACKET:
                    a = off + 20
                    while a + 4 <= off + ln:
                        alen, atype = struct.unpack_from("=HH", d, a)
                        if atype & 0x7FFF == 1:  # NFQA_PACKET_HDR: packet_id
                            pid = struct.unpack_from("!I", d, a + 4)[0]
                            verdict = NF_DROP if random.random() < loss else NF_ACCEPT
                            due = time.monotonic() + max(0.0, delay + random.uniform(-jitter, jitter))
                            heapq.heappush(heap, (due, pid, verdict))
                        a += (alen + 3) & ~3
                off += (ln + 3) & ~3
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, pid, verdict = heapq.heappop(heap)
            s.send(msg(MSG_VERDICT, qnum, [attr(2, struct.pack("!II", verdict, pid))]))

if __name__ == "__main__":
    main()
