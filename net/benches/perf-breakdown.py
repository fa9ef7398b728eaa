"""Sorts the samples of a `perf script -F comm,tid,ip,sym --no-inline` dump of the net
bench (recorded with `--call-graph dwarf`) into cost categories, by leaf symbol and
callers, and prints each category's share of the samples (set-up excluded). Used for the
breakdown in BENCHMARKS.md, section Transport.

Usage: python3 net/benches/perf-breakdown.py DUMP.txt
"""
import sys, re, collections
def samples(path):
    cur=None
    for line in open(path, errors='replace'):
        if not line.strip():
            if cur: yield cur
            cur=None; continue
        if not line.startswith('\t') and not line.startswith(' '):
            parts=line.split()
            cur={'comm':parts[0],'frames':[]}
        else:
            p=line.strip().split(None,1)
            cur['frames'].append((p[0], p[1] if len(p)>1 else '?'))
    if cur: yield cur
AEAD=re.compile(r'ring_core|ring::aead|aes_gcm|gcm_|CRYPTO_|PacketKey|HeaderProtection|header_protection|unprotect_header|encrypt_in_place|decrypt_in_place|aes_new_mask')
def anyf(fr, pat): return any(re.search(pat, s) for _,s in fr)
def cat(s):
    fr=s['frames']
    if not fr: return 'unknown'
    leaf_ip, leaf=fr[0]
    syms=[x for _,x in fr]
    if anyf(fr, r'_dl_start|dl_main|rcgen|ClusterCa|net::frames|issue_node|Quic::new|rustls::server::hs|rustls::client::hs|ring::ec::|ring::rsa'):
        return 'setup (certs, handshake, frames)'
    if any(AEAD.search(x) for x in syms[:6]) or (AEAD.search(leaf)):
        return 'packet protection (AES-GCM seal/open, header protection)'
    kernel = leaf_ip.startswith('ffffffff')
    if kernel:
        if anyf(fr, r'sendmsg|sendmmsg'): return 'kernel: UDP send (sendmsg, GSO, loopback xmit)'
        if anyf(fr, r'recvmsg|recvmmsg'): return 'kernel: UDP receive (recvmsg, GRO)'
        if anyf(fr, r'futex|epoll|schedule|__x64_sys_sched|finish_task_switch|sched_yield|nanosleep|clock_nanosleep'): return 'wakeups and scheduling (futex, epoll, context switches)'
        if anyf(fr, r'net_rx_action|softirq|do_softirq'): return 'kernel: UDP receive (softirq)'
        return 'kernel: other'
    if re.search(r'memmove|memcpy', leaf):
        if anyf(fr, r'write_stream_frames'): return 'copy: quinn packet assembly (send buffer -> packet)'
        if anyf(fr, r'poll_socket|RecvState'): return 'copy: quinn copy of each received datagram batch'
        if anyf(fr, r'read_lane|Source::fill'): return 'copy: frame reassembly (stream chunks -> frame)'
        if anyf(fr, r'write_batch'): return 'copy: batch coalescing (frames -> one chunk)'
        return 'copy: other'
    if re.search(r'malloc|free|cfree|realloc|_int_|unlink_chunk|rust_alloc|rust_dealloc', leaf): return 'allocation'
    if anyf(fr, r'net::verify'): return 'bench: verify'
    if re.search(r'tokio::|parking|mio::|futex|^syscall|std::sync::mpmc|Notify|notify|waker|Waker', leaf):
        return 'wakeups and scheduling (futex, epoll, context switches)'
    if anyf(fr, r'on_ack_received|on_packet_acked|detect_lost'): return 'quinn: ACK processing (sent-packet bookkeeping)'
    if anyf(fr, r'poll_transmit|drive_transmit'): return 'quinn: packet building (frames, headers, pacing, cc)'
    if anyf(fr, r'handle_event|handle_decode|process_payload|Endpoint::handle|poll_socket|PartialDecode'): return 'quinn: packet receive (decode, stream assembly)'
    if anyf(fr, r'quinn'): return 'quinn: other (drivers, stream API)'
    if anyf(fr, r'flotilla_net'): return 'flotilla-net: frames, queues, events'
    return 'other: '+leaf[:50]
c=collections.Counter(); thr=collections.Counter(); n=0
for s in samples(sys.argv[1]):
    c[cat(s)]+=1; thr[s['comm']]+=1; n+=1
tot=n-c['setup (certs, handshake, frames)']
for k,v in c.most_common(40):
    print(f"{100*v/tot:5.1f}%  {k}" if not k.startswith('setup') else f"  ({v} setup samples excluded)")
print('threads:', {k: f"{100*v/n:.0f}%" for k,v in thr.most_common()})
